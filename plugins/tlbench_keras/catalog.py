"""The Keras applications this plugin offers, described without importing Keras.

Each entry says how to build the model, its input sizes, the files Keras downloads for its
ImageNet weights, and how its layers group into blocks (``block_of``: layer name -> block).

Blocks are cut at single-tensor boundaries of the graph (see ``network.py``): a block ends
at the *last* boundary layer whose name maps to it, so only the names of boundary layers
decide where blocks end. That is why InceptionV3, whose conv layers have automatic names,
can map every name that is not ``mixedN`` to ``stem``: after the stem the only boundaries
are the ``mixedN`` concatenations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tlbench.plugin.specs import PluginError

# MobileNetV2 stages (channels 16, 24, 32, 64, 96, 160, 320), as timm groups them:
# expanded_conv = stage of 16 channels, then block_1..block_16 by output width.
_MOBILENET_V2_STAGES = {1: "1-2", 2: "1-2", 3: "3-5", 4: "3-5", 5: "3-5", 6: "6-9", 7: "6-9",
                        8: "6-9", 9: "6-9", 10: "10-12", 11: "10-12", 12: "10-12",
                        13: "13-15", 14: "13-15", 15: "13-15", 16: "16"}


def _vgg_block(layer: str) -> str:
    return layer.split("_")[0]  # block1_conv1 -> block1


def _resnet_block(layer: str) -> str:
    match = re.match(r"(conv[2-5])_", layer)
    return match.group(1) if match else "stem"  # conv1_*, pool1_* form the stem


def _inception_block(layer: str) -> str:
    return layer if re.fullmatch(r"mixed\d+", layer) else "stem"


def _mobilenet_v2_block(layer: str) -> str:
    if layer.startswith("Conv_1") or layer == "out_relu":
        return "top"
    if layer.startswith("expanded_conv"):
        return "expanded_conv"
    match = re.match(r"block_(\d+)_", layer)
    return f"block_{_MOBILENET_V2_STAGES[int(match.group(1))]}" if match else "stem"


def _efficientnet_block(layer: str) -> str:
    if layer.startswith("top_"):
        return "top"
    match = re.match(r"block(\d)", layer)
    return f"block{match.group(1)}" if match else "stem"  # block2a, block2b -> block2


def _standard_files(stem: str) -> Callable[[int], tuple[str, str]]:
    return lambda size: (f"{stem}.h5", f"{stem}_notop.h5")


def _mobilenet_v2_files(size: int) -> tuple[str, str]:
    rows = size if size in (96, 128, 160, 192, 224) else 224  # as Keras chooses
    stem = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}"
    return f"{stem}.h5", f"{stem}_no_top.h5"


@dataclass(frozen=True)
class KerasModel:
    """One ``keras.applications`` model."""

    name: str  # constructor in keras.applications, e.g. "VGG16"
    module: str  # keras.applications submodule holding preprocess_input
    default_size: int
    min_size: int
    block_of: Callable[[str], str]
    weight_files: Callable[[int], tuple[str, str]]  # image size -> (with top, without top)
    description: str = ""

    def input_size(self, image_size: int | None) -> int:
        """The input size to use: the default when None; too small is a PluginError."""
        size = self.default_size if image_size is None else int(image_size)
        if size < self.min_size:
            raise PluginError(
                f"keras/{self.name}: image_size {size} is too small; the smallest input this "
                f"model accepts is {self.min_size} (default {self.default_size})"
            )
        return size

    @property
    def preprocessing(self) -> str:
        return f"keras.applications.{self.module}.preprocess_input"


MODELS: dict[str, KerasModel] = {
    m.name: m
    for m in [
        KerasModel("VGG16", "vgg16", 224, 32, _vgg_block,
                   _standard_files("vgg16_weights_tf_dim_ordering_tf_kernels"),
                   description="VGG16 (Simonyan & Zisserman 2014); blocks block1..block5"),
        KerasModel("VGG19", "vgg19", 224, 32, _vgg_block,
                   _standard_files("vgg19_weights_tf_dim_ordering_tf_kernels"),
                   description="VGG19; blocks block1..block5"),
        KerasModel("ResNet50", "resnet", 224, 32, _resnet_block,
                   _standard_files("resnet50_weights_tf_dim_ordering_tf_kernels"),
                   description="ResNet50 (He et al. 2015); blocks stem, conv2..conv5"),
        KerasModel("InceptionV3", "inception_v3", 299, 75, _inception_block,
                   _standard_files("inception_v3_weights_tf_dim_ordering_tf_kernels"),
                   description="Inception v3 (Szegedy et al. 2015); blocks stem, mixed0..mixed10"),
        KerasModel("MobileNetV2", "mobilenet_v2", 224, 32, _mobilenet_v2_block,
                   _mobilenet_v2_files,
                   description="MobileNetV2 (alpha 1.0); blocks stem, 7 stages, top conv"),
        KerasModel("EfficientNetB0", "efficientnet", 224, 32, _efficientnet_block,
                   _standard_files("efficientnetb0"),
                   description="EfficientNet-B0; blocks stem, block1..block7, top conv"),
    ]
}
