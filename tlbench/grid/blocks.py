"""A backbone's blocks, asked for while a grid is validated: their names, else their count.

Grid validation checks block options (``depth``, ``blocks``) against these answers. Where the
frameworks should not load in the driver, a worker process answers the same requests
(:meth:`tlbench.run.worker.Session.blocks`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tlbench.plugin.registry import Registries


@dataclass(frozen=True)
class BlockRequest:
    """Grid validation asks a worker for a backbone's blocks: their names, else their count."""

    plugin: str
    options: Mapping[str, Any]
    names: bool


def backbone_blocks(registries: Registries, requests: Sequence[BlockRequest]) -> list[Any]:
    """Per request: the block names (a list), the block count (an int) or why not (a str)."""
    answers: list[list[str] | int | str] = []
    for request in requests:
        spec = registries.backbones.get(request.plugin)
        try:
            if request.names and spec.block_names is not None:
                answers.append(list(spec.block_names(**request.options)))
            else:
                assert spec.block_count is not None, "grid validation asks only backbones with a block_count"
                answers.append(int(spec.block_count(**request.options)))
        except Exception as exc:  # a plugin's own error, e.g. an architecture it does not know
            answers.append(f"cannot count blocks: {exc}")
    return answers
