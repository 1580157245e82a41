"""Run the cells of a grid: isolated, resumable, one flushed JSON line per finished cell."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import fnmatch
import importlib.metadata
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator, Mapping

from .cache import ArrayCache, default_cache_dir
from .data import train_subset
from .engine import THREADS_ENV, intra_op_threads
from .grid import Grid, load_grid
from .plugins import tlbench_version
from .registry import Registries, collect
from .report import write_report
from .results import RunsLog, load_results, write_summaries
from .training import run_cell
from .types import Cell, CellContext, ImageDataset, NotApplicable, PluginError, UnusableDir, content_hash

log = logging.getLogger(__name__)
FRAMEWORK_DISTRIBUTIONS = ("numpy", "torch", "torchvision", "timm", "tensorflow", "keras",
                           "tensorflow-datasets", "pandas")


class RunLocked(UnusableDir):
    """Another tlbench process is writing into the same run directory."""


class CellTimeout(Exception):
    """The cell ran past its ``timeout``."""


def make_run_dir(path: str | os.PathLike) -> Path:
    """``path`` as a run directory, created if need be; a file in the way is an :class:`UnusableDir`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnusableDir(f"cannot use {path} as a run directory ({_reason(exc)}); give --out a "
                          "folder that can be created and written") from None
    return path


def _reason(exc: OSError) -> str:
    """The error and the file it names: 'File exists: /x/y'."""
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``run_dir``; the OS drops it when the process dies (even kill -9)."""
    path = run_dir / ".lock"
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise UnusableDir(f"cannot write into the run directory {run_dir} ({_reason(exc)}); "
                          "make it writable or give another --out") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(
            f"{run_dir} is in use by {holder}; wait for that run to finish or use another --out"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {platform.node()}")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def writing(target: str | os.PathLike, advice: str) -> Iterator[None]:
    """Turn a failed write (full disk, read-only, a file in the way) into an :class:`UnusableDir`."""
    try:
        yield
    except OSError as exc:
        raise UnusableDir(f"cannot write {target} ({_reason(exc)}); {advice}") from None


@contextlib.contextmanager
def deferred_interrupts(doing: str) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then stop the process as usual; a
    second one during the block stops it at once, so the block stays interruptible."""
    if not _main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def hold(signum, frame) -> None:
        if held:
            restore()
            signal.raise_signal(signum)
        held.append(signum)
        log.warning("%s before stopping (signal again to stop at once)", doing)

    for signum in previous:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        restore()
    if held:
        signal.raise_signal(held[0])


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CellTimeout` in the main thread after ``seconds``."""
    if not seconds or not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return

    def expire(signum, frame):
        raise CellTimeout(f"cell timed out after {seconds:g} s (train.timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _main_thread() -> bool:
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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def versions() -> dict[str, str]:
    found = {"tlbench": tlbench_version(), "python": platform.python_version()}
    for name in FRAMEWORK_DISTRIBUTIONS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    return found


def environment(registries: Registries, device: str, argv: list[str]) -> dict[str, Any]:
    """What env.json records about the machine and software of a run."""
    threads: dict[str, Any] = {"cpu_count": os.cpu_count(), "intra_op": intra_op_threads()}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", THREADS_ENV):
        if var in os.environ:
            threads[var] = os.environ[var]
    for settings in registries.engine_settings.values():
        threads.update(settings)
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": argv,
        "versions": versions(),
        "plugins": {name: {"distribution": d, "version": v}
                    for name, (d, v) in registries.plugin_manager.distributions.items()},
        "git": _git_hash(),
        "device": device,
        "gpu": _gpu_name() if device == "cuda" else None,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "threads": threads,
    }


def _cpu_model() -> dict[str, Any]:
    """The CPU model and the vector instructions the kernels can pick (they change float results)."""
    found: dict[str, Any] = {"machine": platform.machine()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                found["model"] = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                found["isa"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
                break
    if "torch" in sys.modules:
        found["torch_cpu_capability"] = sys.modules["torch"].backends.cpu.get_cpu_capability()
    return found


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0)


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
            splits["train"] = train.subset(chosen)
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
            result.dataset_info = {**data.info, "domain": data.domain, **sizes}
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
    return {
        "cell_id": cell.cell_id, "key": cell.key, "dataset": cell.dataset.name,
        "backbone": cell.backbone.name, "strategy": cell.strategy.name,
        "plugins": {"dataset": cell.dataset.plugin, "backbone": cell.backbone.plugin,
                    "strategy": cell.strategy.plugin},
        "params": cell.params, "seed": cell.seed, "status": status, "error": error,
        "metrics": metrics, "versions": versions(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
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


def select_cells(cells: list[Cell], only: str | None) -> list[Cell]:
    """``--only``: the cells whose id contains the text as written (``finetune[depth=2]``),
    else those whose id matches it as shell wildcards (``*seed=0``)."""
    if not only:
        return cells
    return ([c for c in cells if only in c.cell_id]
            or [c for c in cells if fnmatch.fnmatchcase(c.cell_id, only)])


class Runner:
    """Runs a validated grid into a run directory."""

    def __init__(self, grid: Grid, registries: Registries, out: str | os.PathLike | None = None, *,
                 device: str = "auto", cache_dir: str | os.PathLike | None = None,
                 save_models: bool = False, progress=None, argv: list[str] | None = None):
        self.grid = grid
        self.registries = registries
        self.out = Path(out) if out else Path("results") / grid.name
        self.requested_device = device
        self.cache_dir = str(cache_dir or default_cache_dir())
        self.save_models = save_models
        self.progress = progress
        self.argv = argv or sys.argv

    def run(self, cells: list[Cell], rerun: bool = False) -> list[dict[str, Any]]:
        """Run every cell without a finished record (all with ``rerun``); return the new records."""
        make_run_dir(self.out)
        with run_lock(self.out):
            runs = RunsLog(self.out)
            with writing(runs.path, f"make {self.out} writable or give another --out"):
                runs.repair()
            done = set() if rerun else runs.finished_keys()
            pending = [c for c in cells if c.key not in done]
            log.info("%d cells in the grid, %d already finished, %d to run, into %s",
                     len(cells), len(cells) - len(pending), len(pending), self.out)
            device = resolve_device(self.requested_device) if pending else "n/a"
            for framework in sorted({self.registries.backbones.get(c.backbone.plugin).framework for c in pending}):
                self.registries.engine_for(framework)  # threads and determinism set before any cell
            if pending:
                ArrayCache(self.cache_dir).check_writable()
                with writing(self.out / "env.json", f"make {self.out} writable or give another --out"):
                    environment_record = {**environment(self.registries, device, self.argv), "report": dict(self.grid.report)}
                    (self.out / "env.json").write_text(json.dumps(environment_record, indent=2))
            try:
                return self._run_pending(pending, runs, device)
            finally:  # interrupted too: the tables and report show the cells finished so far
                stopping = sys.exc_info()[1] is not None
                with deferred_interrupts(f"writing the summaries and report of {self.out}"):
                    self._write_tables(raise_errors=not stopping)

    def _write_tables(self, raise_errors: bool = True) -> None:
        try:
            with writing(f"the summaries of {self.out}", f"the records are safe in {RunsLog(self.out).path}; "
                         f"`tlbench report {self.out}` rebuilds the tables once it can write there"):
                write_summaries(self.out)
        except UnusableDir as exc:
            if raise_errors:
                raise
            log.error("%s", exc)
            return
        try:
            write_report(self.out, grid=self.grid.report, registries=self.registries)
        except Exception:  # a report bug must never cost results: they are in runs.jsonl
            log.warning("could not write the report of %s; the results are safe, retry with "
                        "`tlbench report %s`", self.out, self.out, exc_info=True)

    def _run_pending(self, pending: list[Cell], runs: RunsLog, device: str) -> list[dict[str, Any]]:
        loader = DatasetLoader(self.registries)
        hook = self.registries.plugin_manager.hook
        records = []
        for index, cell in enumerate(pending):
            ctx = CellContext(
                seed=cell.seed, device=device, cache_dir=self.cache_dir,
                save_dir=str(self.out / "models" / cell.key[:16]) if self.save_models else None,
                predictions_path=str(self.out / predictions_file(cell)),
                on_epoch=self.progress.epoch if self.progress else (lambda *a: None),
            )
            if self.progress:
                self.progress.cell_started(index, len(pending), cell)
            record = execute_cell(cell, self.registries, loader, ctx)
            with deferred_interrupts(f"writing the record of {cell.cell_id}"), writing(
                    f"the record of {cell.cell_id} to {runs.path}", "every earlier record is kept; "
                    "free space (or make it writable) and run the same command again to resume"):
                runs.append(record)
            records.append(record)
            if self.progress:
                self.progress.cell_finished(record)
            hook.tlbench_cell_finished(cell=cell, result=record)
        return records


def run_grid(grid: str | os.PathLike | Mapping, out=None, *, only: str | None = None, rerun: bool = False,
             device: str = "auto", cache_dir=None, save_models: bool = False, registries: Registries | None = None):
    """Validate and run a grid; return ``load_results(out)`` (one row per cell)."""
    registries = registries or collect()
    loaded = load_grid(grid, registries)
    runner = Runner(loaded, registries, out, device=device, cache_dir=cache_dir, save_models=save_models)
    runner.run(select_cells(loaded.cells(), only), rerun=rerun)
    return load_results(runner.out)
