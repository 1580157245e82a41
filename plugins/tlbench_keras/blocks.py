"""Each Keras application's blocks (names, parameter counts), catalogued in blocks.json so that
listing them and checking a grid's depths need no TensorFlow.

Regenerate after upgrading Keras: ``python -m tlbench_keras.blocks``. A Keras of another
version than the one recorded, or a model missing from the file, is built instead.
"""

from __future__ import annotations

from pathlib import Path

from tlbench.plugin.catalogue import Catalogue, block_rows, catalogued_blocks
from tlbench.plugin.specs import Block

from .catalog import MODELS

CATALOGUE = Catalogue(Path(__file__).with_name("blocks.json"), "keras")


def structure(name: str) -> tuple[Block, ...]:
    """The blocks of ``keras/<name>``: from blocks.json when it holds them for this Keras, else built."""
    return catalogued_blocks(CATALOGUE, name, built)


def built(name: str) -> tuple[Block, ...]:
    """The blocks of a Keras application built with random weights (TensorFlow loads)."""
    from .network import structure as of_network

    return of_network(name)


def write_blocks() -> dict:
    """Build every model of the catalogue and record its blocks."""
    return CATALOGUE.write({name: block_rows(built(name)) for name in MODELS})


if __name__ == "__main__":
    written = write_blocks()
    print(f"blocks of {len(written['models'])} Keras {written['version']} models -> {CATALOGUE.path}")
