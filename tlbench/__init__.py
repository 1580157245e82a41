"""tlbench: measure which transfer-learning strategy works best for a dataset, and its cost."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.manager import tlbench_version

if TYPE_CHECKING:
    import pandas as pd

__version__ = tlbench_version()
__all__ = ["__version__", "hookimpl", "load_results", "run_grid"]


def run_grid(grid: str | os.PathLike[str] | Mapping[str, Any], out: str | os.PathLike[str] | None = None,
             **options: Any) -> pd.DataFrame:
    """Run a grid (a YAML path or a dict) and return its results as a pandas DataFrame.

    ``options`` are those of ``tlbench run``: only, rerun, device, cache_dir, save_models.
    """
    from tlbench.run.runner import run_grid as _run_grid

    return _run_grid(grid, out=out, **options)


def load_results(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per cell of ``run_dir/runs.jsonl`` (latest line per cell), metrics flattened."""
    from tlbench.results import load_results as _load_results

    return _load_results(run_dir)
