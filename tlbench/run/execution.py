"""One cell, start to end, where it runs: its dataset, plan, backbone and engine, and its record.

This is what a worker process (or a Ray task) does; the driver only ever sees the records.
Every failure of a cell becomes a ``failed`` record, never an exception.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import logging
import math
import platform
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, cast

from tlbench.data.splits import train_subset
from tlbench.plugin.manager import package_version, tlbench_version
from tlbench.plugin.registry import Registries
from tlbench.plugin.specs import Cell, CellContext, ImageDataset, NotApplicable, PluginError, content_hash
from tlbench.train.protocol import run_cell

log = logging.getLogger(__name__)
FRAMEWORK_DISTRIBUTIONS = ("numpy", "torch", "torchvision", "timm", "tensorflow", "keras",
                           "tensorflow-datasets", "pandas")


class CellTimeout(Exception):
    """The cell ran past its ``timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the main thread after ``seconds``."""
    if not seconds or not hasattr(signal, "setitimer") or not in_main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> NoReturn:
        raise CellTimeout(f"cell timed out after {seconds:g} s (train.timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def resolve_device(requested: str) -> str:
    """``auto`` -> cuda when PyTorch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    if requested == "cpu":
        return "cpu"
    available = _cuda_available()
    if requested == "cuda" and not available:
        raise PluginError("--device cuda was asked for, but no CUDA GPU is visible (use --device cpu or auto)")
    return "cuda" if available else "cpu"


# Device files a CUDA (or ROCm) GPU shows on Linux: NVIDIA's, WSL's GPU bridge, AMD's compute node
GPU_DEVICE_FILES = ("/dev/nvidia[0-9]*", "/dev/dxg", "/dev/kfd")


def linux_without_gpu_device_files() -> bool:
    """True on Linux when no GPU device file exists: then no GPU can be used, whatever is installed."""
    return sys.platform.startswith("linux") and not any(glob.glob(pattern) for pattern in GPU_DEVICE_FILES)


def _cuda_available() -> bool:
    """Whether PyTorch sees a GPU. On Linux without any GPU device file there is none, and
    torch is not imported just to say so (its import is seconds of a worker whose engines are not torch's)."""
    if linux_without_gpu_device_files():
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def versions() -> dict[str, str]:
    found = {"tlbench": tlbench_version(), "python": platform.python_version()}
    for name in FRAMEWORK_DISTRIBUTIONS:
        if (installed := package_version(name)) is not None:
            found[name] = installed
    return found


class DatasetLoader:
    """Loads each dataset once per run; applies ``train_size`` with the cell's seed."""

    def __init__(self, registries: Registries):
        self.registries = registries
        self.loaded: dict[str, ImageDataset] = {}

    def for_cell(self, cell: Cell) -> tuple[ImageDataset, dict[str, Any]]:
        """The cell's dataset (sharing ``info`` with the loaded one) and its train-size record."""
        options = {k: v for k, v in cell.dataset.options.items() if k != "train_size"}
        key = content_hash([cell.dataset.plugin, options])
        if key not in self.loaded:
            spec = self.registries.datasets.get(cell.dataset.plugin)
            self.loaded[key] = spec.load(**options)
        full = self.loaded[key]
        train_size = cell.dataset.options.get("train_size", "all")
        train = full.splits["train"]
        chosen = train_subset(train.labels, train_size, cell.seed)
        splits = dict(full.splits)
        if len(chosen) != len(train.labels):
            splits["train"] = train.subset(cast("Sequence[int]", chosen))  # an index array: every split's subset takes one
        data = ImageDataset(full.name, full.class_names, splits, full.domain, full.imagenet_classes, full.info)
        return data, {"train_size_requested": train_size, "train_size_real": len(chosen)}


def execute_cell(cell: Cell, registries: Registries, loader: DatasetLoader, ctx: CellContext) -> dict[str, Any]:
    """Run one cell; every failure becomes a ``failed`` record, never an exception."""
    start = time.perf_counter()
    status, error, metrics = "ok", None, {}
    try:
        with time_limit(cell.settings.timeout):
            data, sizes = loader.for_cell(cell)
            strategy = registries.strategies.get(cell.strategy.plugin)
            plan = strategy.plan(cell.strategy.options, data)
            spec = registries.backbones.get(cell.backbone.plugin)
            options = dict(cell.backbone.options)
            options["image_size"] = options.get("image_size") or cell.settings.image_size
            backbone = spec.build(**options)
            engine = registries.engine_for(spec.framework)
            ctx = dataclasses.replace(ctx, backbone=cell.backbone.plugin, backbone_options=options)
            result = run_cell(engine, backbone, plan, data, cell.settings, ctx, strategy, cell.strategy.options)
            # after the cell: files skipped while decoding are counted
            result.dataset_info = {**data.info, "domain": data.domain, "class_names": list(data.class_names), **sizes}
            if ctx.predictions_path and Path(ctx.predictions_path).is_file():
                result.predictions_file = predictions_file(cell)
            metrics = result.as_dict()
            _check_finite(metrics)
    except NotApplicable as exc:
        status, error = "not-applicable", str(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # MemoryError, CUDA OOM, timeouts, plugin bugs: the grid goes on
        status, error = "failed", _error_text(exc)
        log.error("cell %s failed: %s", cell.cell_id, error.splitlines()[0])
    metrics["wall_seconds"] = time.perf_counter() - start
    return cell_record(cell, status, error, metrics)


def cell_record(cell: Cell, status: str, error: str | None, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One line of ``runs.jsonl`` (results/README.md)."""
    return {
        "cell_id": cell.cell_id, "key": cell.key, "dataset": cell.dataset.name,
        "backbone": cell.backbone.name, "strategy": cell.strategy.name,
        "plugins": {"dataset": cell.dataset.plugin, "backbone": cell.backbone.plugin,
                    "strategy": cell.strategy.plugin},
        "params": cell.params, "seed": cell.seed, "status": status, "error": error,
        "metrics": dict(metrics), "versions": versions(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **({"tune": cell.tune} if cell.tune else {}),
    }


def predictions_file(cell: Cell) -> str:
    """Where a cell's predicted probabilities are kept, relative to its run directory."""
    return f"predictions/{cell.key[:16]}.npz"


def _check_finite(metrics: Mapping[str, Any]) -> None:
    for epoch in metrics.get("history", []):
        if not math.isfinite(epoch.get("train_loss", 0.0)):
            raise FloatingPointError(f"training loss became {epoch['train_loss']} at epoch {epoch['epoch']}")
    if metrics.get("test_loss") is not None and not math.isfinite(metrics["test_loss"]):
        raise FloatingPointError(f"test loss is {metrics['test_loss']}")


def _error_text(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return f"{type(exc).__name__}: {exc}\n" + "".join(lines[-6:])


