"""The ``split`` / ``split_seed`` options shared by datasets that make their own splits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tlbench.data.splits import stratified_split
from tlbench.plugin.specs import PluginError, quote

SPLITS = ("train", "valid", "test")
DEFAULT_SPLIT = [0.7, 0.15, 0.15]


def split_problems(dataset: str, split: Any, split_seed: Any) -> list[str]:
    """Problems with the ``split`` fractions and ``split_seed`` options, if any."""
    problems = []
    if not (
        isinstance(split, Sequence)
        and not isinstance(split, str)
        and len(split) == 3
        and all(_is_number(f) and f > 0 for f in split)
        and math.isclose(sum(split), 1.0, abs_tol=1e-6)
    ):
        problems.append(
            f"{dataset}: option split must be three positive fractions [train, valid, test] "
            f"summing to 1, e.g. {DEFAULT_SPLIT}; got {quote(split)}"
        )
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        problems.append(f"{dataset}: option split_seed must be an integer; got {quote(split_seed)}")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def stratified_parts(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int, names: Sequence[str] = SPLITS
) -> dict[str, np.ndarray]:
    """{part name: sorted indices}, every class divided by ``fractions`` (normalised)."""
    total = float(sum(fractions))
    parts = stratified_split(labels, [f / total for f in fractions], seed)
    return dict(zip(names, parts, strict=True))


def raise_problems(problems: list[str]) -> None:
    """``load`` reports the same problems as ``check``, as one PluginError."""
    if problems:
        raise PluginError("\n".join(problems))
