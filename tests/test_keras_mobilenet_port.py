"""The port of torchvision's ImageNet MobileNetV2 to Keras is faithful: through the tlbench Keras
backbone, real photos get the pooled features torchvision computes with the same checkpoint when
it pads as Keras does (with its own padding the sampling grid moves, which is only printed)."""

from __future__ import annotations

import numpy as np
import pytest
from keras_mobilenet_port import (
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    torchvision_checkpoint,
    torchvision_mobilenet_v2_weights_for_keras,
)
from test_shift import DATA, SIZE, photos


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def pad_as_keras(model) -> None:
    """Make torchvision's stride-2 convolutions pad as Keras's do: one row and column after,
    none before; the stem pads with the colour that is Keras's zero input (grey 127.5)."""
    from torch import nn
    from torch.nn.functional import pad

    grey = torch_input(np.full((1, 1, 1, 3), 127.5))
    for conv in model.modules():
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            value = grey if conv.in_channels == 3 else 0.0
            conv.padding = (0, 0)
            conv.register_forward_pre_hook(lambda _, args, v=value: (pad(args[0] - v, (0, 1, 0, 1)) + v,))


def torch_input(images: np.ndarray):
    """uint8 (or float) NHWC -> torchvision's normalisation, NCHW float32."""
    import torch

    x = (np.asarray(images, np.float64) / 255 - TORCHVISION_MEAN) / TORCHVISION_STD
    return torch.from_numpy(x.astype(np.float32)).permute(0, 3, 1, 2)


def test_ported_keras_features_are_torchvisions_on_real_photos(tmp_path):
    import torch
    import torchvision

    import tlbench_keras

    if not DATA.is_dir():
        pytest.skip(f"real test images not found at {DATA}")
    images = photos("train", 4)
    path = torchvision_mobilenet_v2_weights_for_keras(tmp_path / "mobilenet_v2.weights.h5", SIZE)
    backbone = tlbench_keras.build("MobileNetV2", weights=str(path), image_size=SIZE)
    ported = np.asarray(backbone.build_network().model(backbone.preprocess(images), training=False)).mean(axis=(1, 2))
    reference = torchvision.models.mobilenet_v2().eval()
    reference.load_state_dict(torch.load(torchvision_checkpoint(), weights_only=True))
    with torch.no_grad():
        as_torchvision = reference.features(torch_input(images)).mean(dim=(2, 3)).numpy()
        pad_as_keras(reference)
        padded_as_keras = reference.features(torch_input(images)).mean(dim=(2, 3)).numpy()
    faithful, grid_moved = cosine(ported, padded_as_keras), cosine(ported, as_torchvision)
    print(f"keras/torchvision cosine per photo, torchvision padding as Keras's: 1 - {1 - faithful.min():.1e} at worst; "
          f"its own padding (the sampling grid moves): {np.round(grid_moved, 3)}")
    assert faithful.min() > 0.9999
