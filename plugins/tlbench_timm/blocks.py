"""Each timm model's blocks (names, parameter counts), catalogued in blocks.json so that listing
them and checking a grid's depths need neither torch nor timm.

Regenerate after upgrading timm: ``python -m tlbench_timm.blocks`` (every model is built on
PyTorch's meta device: no memory for weights, no download). A timm of another version than the
one recorded, or a model missing from the file, is built that way when asked.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tlbench.plugin.catalogue import Catalogue, block_rows, catalogued_blocks
from tlbench.plugin.specs import Block

from .names import cached_model_names

CATALOGUE = Catalogue(Path(__file__).with_name("blocks.json"), "timm")
log = logging.getLogger(__name__)


def structure(model_name: str) -> tuple[Block, ...]:
    """The blocks of ``timm/<model_name>``: from blocks.json when it holds them for this timm, else built."""
    return catalogued_blocks(CATALOGUE, model_name, built)


def built(model_name: str) -> list[Block]:
    """The blocks of a model built on the meta device (shapes only)."""
    import timm
    import torch

    from .backbone import block_groups

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    return [Block(name, params) for name, params, _ in block_groups(model)]


def write_blocks() -> dict:
    """Record the blocks of every timm model that builds on the meta device."""
    rows = {}
    for model_name in cached_model_names():
        try:
            rows[model_name] = block_rows(built(model_name))
        except Exception as exc:  # an architecture that needs more than timm (an optional package): built when asked
            log.warning("timm/%s: not catalogued: %s", model_name, exc)
    return CATALOGUE.write(rows)


if __name__ == "__main__":
    written = write_blocks()
    print(f"blocks of {len(written['models'])} timm {written['version']} models -> {CATALOGUE.path}")
