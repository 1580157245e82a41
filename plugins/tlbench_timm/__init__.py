"""Built-in timm backbones (PyTorch): every model timm knows, as ``timm/<model>``."""

from __future__ import annotations

from functools import cache, partial
from typing import Any

from tlbench.hookspecs import hookimpl
from tlbench.types import BackboneSpec

from .names import cached_model_names


def build(model_name: str, weights: str = "pretrained", image_size: int | None = None) -> Any:
    from .backbone import TimmBackbone

    return TimmBackbone(model_name, weights=weights, image_size=image_size)


@cache
def block_names(model_name: str, **options: Any) -> tuple[str, ...]:
    """The block names of ``timm/<model_name>``, from the architecture alone (no weights)."""
    import timm

    from .backbone import block_groups

    return tuple(name for name, _, _ in block_groups(timm.create_model(model_name, pretrained=False)))


def block_count(model_name: str, **options: Any) -> int:
    return len(block_names(model_name))


@hookimpl
def tlbench_register_backbones():
    for model_name in cached_model_names():
        yield BackboneSpec(
            f"timm/{model_name}",
            framework="torch",
            build=partial(build, model_name),
            description=f"timm {model_name} (PyTorch)",
            block_count=partial(block_count, model_name),
            block_names=partial(block_names, model_name),
        )
