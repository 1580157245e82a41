"""Built-in timm backbones (PyTorch): every model timm knows, as ``timm/<model>``."""

from __future__ import annotations

from functools import partial
from typing import Any

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.specs import BackboneSpec, Block

from .names import cached_model_names


def build(model_name: str, weights: str = "pretrained", image_size: int | None = None) -> Any:
    from .backbone import TimmBackbone

    return TimmBackbone(model_name, weights=weights, image_size=image_size)


def block_structure(model_name: str, **options: Any) -> tuple[Block, ...]:
    """The blocks of ``timm/<model_name>``, from the architecture alone (no weights; catalogued)."""
    from .blocks import structure

    return structure(model_name)


@hookimpl
def tlbench_register_backbones():
    for model_name in cached_model_names():
        yield BackboneSpec(
            f"timm/{model_name}",
            framework="torch",
            build=partial(build, model_name),
            description=f"timm {model_name} (PyTorch)",
            blocks=partial(block_structure, model_name),
        )
