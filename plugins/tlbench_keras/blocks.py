"""Each Keras application's blocks (names, parameter counts), cached in blocks.json so that
listing them and checking a grid's depths need no TensorFlow.

Regenerate after upgrading Keras: ``python -m tlbench_keras.blocks``. A Keras of another
version than the one recorded, or a model missing from the file, is built instead.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tlbench.files import write_text
from tlbench.types import Block

from .catalog import MODELS

BLOCKS_FILE = Path(__file__).with_name("blocks.json")


def structure(name: str) -> tuple[Block, ...]:
    """The blocks of ``keras/<name>``: from blocks.json when it holds them for this Keras, else built."""
    cached = _cached()
    if name in cached["models"] and cached["keras_version"] == _keras_version():
        return tuple(Block(block, params) for block, params in cached["models"][name])
    from .network import structure as built

    return built(name)


def write_blocks(path: Path = BLOCKS_FILE) -> dict[str, Any]:
    """Build every model of the catalogue (random init) and write its blocks to ``path``."""
    from .network import structure as built

    rows = ",\n".join(f"  {json.dumps(name)}: {json.dumps([[b.name, b.params] for b in built(name)])}" for name in MODELS)
    text = f'{{"keras_version": {json.dumps(_keras_version())}, "models": {{\n{rows}\n}}}}\n'
    write_text(path, text)
    _cached.cache_clear()
    return json.loads(text)


def _keras_version() -> str | None:
    try:
        return version("keras")
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _cached() -> dict[str, Any]:
    return json.loads(BLOCKS_FILE.read_text(encoding="utf-8"))


if __name__ == "__main__":
    written = write_blocks()
    print(f"blocks of {len(written['models'])} Keras {written['keras_version']} models -> {BLOCKS_FILE}")
