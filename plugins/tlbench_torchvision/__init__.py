"""Built-in torchvision backbones (PyTorch): ``torchvision/<name>`` for its classification
networks whose stages tlbench knows (MobileNet, EfficientNet, ResNet and its variants, VGG,
ConvNeXt, RegNet). torch and torchvision load only when a backbone is built or counted.
"""

from __future__ import annotations

from functools import cache, partial
from typing import Any

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.specs import BackboneSpec

_FAMILIES = {
    "mobilenet": ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"),
    "efficientnet": (*(f"efficientnet_b{i}" for i in range(8)), "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"),
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
               "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"),
    "vgg": tuple(f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")),
    "convnext": ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"),
    "regnet": tuple(f"regnet_{kind}_{size}" for kind, sizes in (
        ("x", ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")),
        ("y", ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf"))) for size in sizes),
}
MODEL_NAMES = tuple(name for names in _FAMILIES.values() for name in names)


def build(model_name: str, weights: str = "pretrained", image_size: int | None = None) -> Any:
    from .backbone import TorchvisionBackbone

    return TorchvisionBackbone(model_name, weights=weights, image_size=image_size)


@cache
def block_names(model_name: str, **options: Any) -> tuple[str, ...]:
    """The block names of ``torchvision/<model_name>``, from the architecture alone."""
    from .backbone import architecture, stages

    return tuple(name for name, _ in stages(architecture(model_name)))


def block_count(model_name: str, **options: Any) -> int:
    return len(block_names(model_name))


@hookimpl
def tlbench_register_backbones():
    for model_name in MODEL_NAMES:
        yield BackboneSpec(
            f"torchvision/{model_name}", framework="torch", build=partial(build, model_name),
            description=f"torchvision {model_name} (PyTorch), preprocessing from its weight metadata",
            block_count=partial(block_count, model_name), block_names=partial(block_names, model_name),
        )
