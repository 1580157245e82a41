"""torchvision's ImageNet MobileNetV2 checkpoint ported to ``keras.applications.MobileNetV2``, since
no Keras ImageNet file is available offline while the torchvision one ships in a pip package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TORCHVISION_FILE = "mobilenet_v2-b0353104.pth"  # in the pip package the torchvision plugin names for it
TORCHVISION_MEAN = np.array([0.485, 0.456, 0.406])
TORCHVISION_STD = np.array([0.229, 0.224, 0.225])
TORCH_BATCHNORM_EPS = 1e-5


def torchvision_checkpoint() -> Path:
    """The torchvision MobileNetV2 ImageNet file, or a pytest skip saying why it is absent."""
    from tlbench_torch.weights import installed_file
    from tlbench_torchvision.backbone import PACKAGE_FILES

    path, place = installed_file(PACKAGE_FILES[TORCHVISION_FILE], TORCHVISION_FILE)
    if path is None:
        pytest.skip(f"torchvision MobileNetV2 ImageNet weights not found: {place}")
    return path


def torchvision_mobilenet_v2_weights_for_keras(out_path: str | Path, image_size: int) -> Path:
    """Write torchvision's ImageNet MobileNetV2 as a ``.weights.h5`` file for
    ``keras.applications.MobileNetV2(include_top=False)`` at ``image_size``, and return its path.

    Conv and BatchNorm layers are paired in model order (same architecture). Two differences are
    folded in so the network computes what torchvision's does: the stem kernel and the stem
    BatchNorm's moving mean take Keras's ``preprocess_input`` (x/127.5 - 1) to torchvision's
    (x/255 - mean)/std, and each gamma takes Keras's BatchNorm eps (1e-3) to torch's (1e-5);
    moving statistics are otherwise copied as they are. Not folded: padding. Zero padding of the
    stem input is another colour at the border (grey, not the mean), and Keras pads stride-2 convs
    (0, 1) where torchvision pads (1, 1), which moves the sampling grid; features then differ from
    torchvision's own run (much at 64 px), and equal those of torchvision padded as Keras pads.
    """
    import torch
    import torchvision

    from tlbench_keras._keras import keras

    state = torch.load(torchvision_checkpoint(), map_location="cpu", weights_only=True)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(state)
    torch_layers = [m for m in reference.features.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.BatchNorm2d)]
    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
    kinds = keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.BatchNormalization
    keras_layers = [layer for layer in model.layers if isinstance(layer, kinds)]
    assert len(torch_layers) == len(keras_layers) == 104, (len(torch_layers), len(keras_layers))
    for i, (source, target) in enumerate(zip(torch_layers, keras_layers, strict=True)):
        if isinstance(source, torch.nn.Conv2d):
            depthwise = isinstance(target, keras.layers.DepthwiseConv2D)
            assert depthwise == (source.groups > 1) and source.bias is None and not target.use_bias
            kernel = source.weight.detach().double().numpy()
            if i == 0:  # the stem: Keras's input x_k = 2 u - 1 for u = x/255, torchvision's (u - mean)/std
                kernel = kernel / (2 * TORCHVISION_STD)[None, :, None, None]
                stem_offset = (kernel * (1 - 2 * TORCHVISION_MEAN)[None, :, None, None]).sum(axis=(1, 2, 3))
            kernel = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(2, 3, 1, 0)
            assert kernel.shape == tuple(target.kernel.shape), (target.name, kernel.shape)
            target.set_weights([kernel])
        else:
            assert isinstance(target, keras.layers.BatchNormalization)
            mean, var, gamma, beta = (t.detach().double().numpy() for t in
                                      (source.running_mean, source.running_var, source.weight, source.bias))
            if i == 1:
                mean = mean - stem_offset  # the constant the stem conv no longer adds to its output
            gamma = gamma * np.sqrt((var + target.epsilon) / (var + TORCH_BATCHNORM_EPS))
            target.set_weights([gamma, beta, mean, var])
    out_path = Path(out_path)
    model.save_weights(out_path)
    return out_path
