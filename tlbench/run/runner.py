"""Run the cells of a grid: isolated, resumable, one flushed JSON line per finished cell."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import platform
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from tlbench.data.cache import ArrayCache, Timings, default_cache_dir
from tlbench.files import NotRegularFile, open_writable, write_text
from tlbench.grid.loading import Grid, load_grid
from tlbench.grid.tuning import evaluation_cells
from tlbench.plugin.engine import THREADS_ENV, intra_op_threads
from tlbench.plugin.registry import Registries, collect
from tlbench.plugin.specs import Cell, PluginError, RunInfo, UnusableDir
from tlbench.report.document import write_report
from tlbench.results import ENV_FILE, LOCK_FILE, RunsLog, foreign_files, load_results, write_summaries
from tlbench.run.execution import in_main_thread, predictions_file, versions
from tlbench.run.executors import Executor, make_executor
from tlbench.run.worker import CellTask

if TYPE_CHECKING:
    import pandas as pd

    from tlbench.run.progress import Progress

log = logging.getLogger(__name__)


class RunLocked(UnusableDir):
    """Another tlbench process is writing into the same run directory."""


def make_run_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a run directory, created if need be; a file in the way, or a folder of files
    that are not a tlbench run (tlbench would overwrite them), is an :class:`UnusableDir`."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        found = foreign_files(path)
    except OSError as exc:
        raise UnusableDir(f"cannot use {path} as a run directory ({_reason(exc)}); give --out a "
                          "folder that can be created and written") from None
    if found:
        listed = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise UnusableDir(f"--out {path} holds files that are not a tlbench run ({listed}); tlbench would "
                          "overwrite them: give --out a new or empty folder, or an earlier run's directory")
    return path


def _reason(exc: OSError) -> str:
    """The error and the file it names: 'File exists: /x/y'."""
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc.strerror or exc)


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on ``run_dir``; the OS drops it when the process dies (even kill -9)."""
    path = run_dir / LOCK_FILE
    try:
        handle = os.fdopen(open_writable(path, os.O_RDWR | os.O_CREAT), "r+", encoding="utf-8")
    except NotRegularFile:
        raise
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
def writing(target: str | os.PathLike[str], advice: str) -> Iterator[None]:
    """Turn a failed write (full disk, read-only, a file in the way) into an :class:`UnusableDir`;
    a link or a FIFO where a file should be says so itself."""
    try:
        yield
    except NotRegularFile:
        raise
    except OSError as exc:
        raise UnusableDir(f"cannot write {target} ({_reason(exc)}); {advice}") from None


@contextlib.contextmanager
def deferred_interrupts(doing: str) -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then stop the process as usual; a
    second one during the block stops it at once, so the block stays interruptible."""
    if not in_main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(s) is not signal.SIG_IGN}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def hold(signum: int, frame: FrameType | None) -> None:
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


def environment(registries: Registries, prepared: Mapping[str, Any], executor: Mapping[str, Any],
                argv: list[str]) -> dict[str, Any]:
    """What env.json records about the machine and software of a run (``prepared``: what the
    executor's worker set and found)."""
    threads: dict[str, Any] = {"cpu_count": os.cpu_count(), "intra_op": intra_op_threads()}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", THREADS_ENV):
        if var in os.environ:
            threads[var] = os.environ[var]
    threads.update(prepared["threads"])
    cpu = _cpu_model()
    if prepared.get("torch_cpu_capability"):
        cpu["torch_cpu_capability"] = prepared["torch_cpu_capability"]
    return {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": argv,
        "versions": versions(),
        "plugins": {name: {"distribution": d, "version": v}
                    for name, (d, v) in registries.plugin_manager.distributions.items()},
        "git": _git_hash(),
        "device": prepared["device"],
        "gpu": prepared["gpu"],
        **executor,
        "platform": platform.platform(),
        "cpu": cpu,
        "threads": threads,
        "allocator": prepared.get("allocator"),
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
    return found


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_dir_for(grid: Grid, out: str | os.PathLike[str] | None) -> Path:
    """The run directory: ``out``, else ``results/<grid name>``."""
    return Path(out) if out else Path("results") / grid.name


def select_cells(cells: list[Cell], only: str | None) -> list[Cell]:
    """``--only``: the cells whose id contains the text as written (``finetune[depth=2]``),
    else those whose id matches it with ``*`` and ``?`` as wildcards (``*[train_size=10]*seed=0``;
    brackets are literal, as in cell ids)."""
    if not only:
        return cells
    return ([c for c in cells if only in c.cell_id]
            or [c for c in cells if wildcard_match(only, c.cell_id)])


def wildcard_match(pattern: str, text: str) -> bool:
    """Whether all of ``text`` matches ``pattern`` (``*`` any run, ``?`` any one character, the rest
    literal), in at most len(pattern) x len(text) steps: on a mismatch only the last ``*`` takes
    one more character (the earlier ones need never change), so no pattern can backtrack for ever."""
    p = t = 0
    star = resume = -1  # the last `*` seen, and where in `text` its run ends now
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, resume, p = p, t, p + 1
        elif p < len(pattern) and pattern[p] in ("?", text[t]):
            p, t = p + 1, t + 1
        elif star >= 0:
            p, resume = star + 1, resume + 1
            t = resume
        else:
            return False
    return pattern[p:].strip("*") == ""


class Runner:
    """Drives a validated grid into a run directory: the lock, what is pending, env.json, the
    records the executor returns (written here, by one writer), the tables."""

    def __init__(self, grid: Grid, registries: Registries, executor: Executor, out: str | os.PathLike[str] | None = None, *,
                 device: str = "auto", cache_dir: str | os.PathLike[str] | None = None,
                 save_models: bool = False, progress: Progress | None = None, argv: list[str] | None = None,
                 track: tuple[str, ...] = (), tracking_uri: str | None = None, report: bool = True) -> None:
        self.grid = grid
        self.report = report  # False: the summaries only (a caller that reports the records its own way)
        self.registries = registries
        self.executor = executor
        self.out = run_dir_for(grid, out)
        self.requested_device = device
        self.cache_dir = str(cache_dir or default_cache_dir())
        self.save_models = save_models
        self.progress = progress
        self.argv = argv or sys.argv
        self.info = RunInfo(grid.name, str(self.out), executor.name, tuple(track), tracking_uri)

    def run(self, cells: list[Cell], rerun: bool = False) -> list[dict[str, Any]]:
        """Run every cell without a finished record (all with ``rerun``), then the evaluation cells
        that their records decide for tuned series (:mod:`tlbench.grid.tuning`); return the new records."""
        make_run_dir(self.out)
        with run_lock(self.out):
            runs = RunsLog(self.out)
            with writing(runs.path, f"make {self.out} writable or give another --out"):
                runs.repair()
            done = set() if rerun else runs.finished_keys()
            pending = [c for c in cells if c.key not in done]
            finished = len(cells) - len(pending)
            decided = []  # the evaluation cells of tuned series whose selection cells all ran before
            if not rerun:
                decided = [c for c in evaluation_cells(self.grid, cells, runs.read(), pending)[0] if c.key not in done]
            pending = self.grid.in_run_order(pending + decided)
            log.info("%d cells in the grid, %d already finished, %d to run%s, into %s (executor %s)",
                     len(cells), finished, len(pending),
                     f" ({len(decided)} of them the evaluation cells of picks tuned before)" if decided else "",
                     self.out, self.executor.name)
            device = "n/a"
            if pending:
                self.start_trackers()
                ArrayCache(self.cache_dir).check_writable()
                prepared = self.executor.prepare(sorted({self.framework(c) for c in pending}), self.requested_device,
                                                 intra_op_threads())  # threads and determinism before any cell
                device = prepared["device"]
                env = environment(self.registries, prepared, self.executor.describe(), self.argv)
                with writing(self.out / ENV_FILE, f"make {self.out} writable or give another --out"):
                    write_text(self.out / ENV_FILE, json.dumps({**env, "grid": self.grid.name, "report": dict(self.grid.report)},
                                                                   indent=2))
            try:
                records = self._run_pending(pending, runs, device)
                ran = {c.key for c in pending} | done
                return records + self._run_evaluations(cells, runs, device, ran)
            finally:  # interrupted too: the tables and report show the cells finished so far
                stopping = sys.exc_info()[1] is not None
                with deferred_interrupts(f"writing the summaries and report of {self.out}"):
                    self._write_tables(raise_errors=not stopping)

    def start_trackers(self) -> None:
        """Tell observers the run starts; every tracker asked for must be served by a plugin."""
        served = {name for names in self.registries.plugin_manager.hook.tlbench_run_started(run=self.info)
                  for name in names or ()}
        missing = [name for name in self.info.track if name not in served]
        if missing:
            raise PluginError(f"--track {', '.join(missing)}: no installed plugin tracks that "
                              f"(served: {', '.join(sorted(served)) or 'none'}); e.g. pip install 'tlbench[mlflow]'")

    def framework(self, cell: Cell) -> str:
        return self.registries.backbones.get(cell.backbone.plugin).framework

    def _write_tables(self, raise_errors: bool = True) -> None:
        """The summaries and the report; a failed write (a full disk) is an :class:`UnusableDir`
        naming the file, logged instead when the run is stopping."""
        safe = (f"the records are safe in {RunsLog(self.out).path}; `tlbench report {self.out}` rebuilds the "
                "tables and the report once it can write there")
        try:
            with writing(f"the summaries of {self.out}", safe):
                write_summaries(self.out)
            if self.report:
                with writing(f"the report of {self.out}", safe):
                    self._write_report()
        except UnusableDir as exc:
            if raise_errors:
                raise
            log.error("%s", exc)

    def _write_report(self) -> None:
        """``write_report``; a bug in it (not a failed write) is logged with its traceback: results are never lost to one."""
        try:
            write_report(self.out, grid=self.grid.report, registries=self.registries)
        except OSError:
            raise
        except Exception:
            log.warning("could not write the report of %s; the results are safe, retry with "
                        "`tlbench report %s`", self.out, self.out, exc_info=True)

    def _run_evaluations(self, cells: list[Cell], runs: RunsLog, device: str, ran: set[str]) -> list[dict[str, Any]]:
        """Stage 2: the evaluation cells that the selection cells now decide, except those in ``ran``."""
        found, notes = evaluation_cells(self.grid, cells, runs.read())
        for note in notes:
            log.info("tuned series %s", note)
        later = self.grid.in_run_order([c for c in found if c.key not in ran])
        if later:
            log.info("%d evaluation cells of the picks to run (stage 2)", len(later))
        return self._run_pending(later, runs, device) if later else []

    def _run_pending(self, pending: list[Cell], runs: RunsLog, device: str) -> list[dict[str, Any]]:
        hook = self.registries.plugin_manager.hook
        threads = intra_op_threads()
        tasks = [CellTask(cell, self.framework(cell), device, threads, self.cache_dir,
                          str(self.out / "models" / cell.key[:16]) if self.save_models else None,
                          str(self.out / predictions_file(cell))) for cell in pending]
        by_key = {cell.key: cell for cell in pending}
        records = []
        if self.progress:
            self.progress.started(pending)
        on_epoch = self.progress.epoch if self.progress else (lambda *a: None)
        for record in self.executor.run(tasks, on_epoch):
            cell = by_key[record["key"]]
            with deferred_interrupts(f"writing the record of {cell.cell_id}"), writing(
                    f"the record of {cell.cell_id} to {runs.path}", "every earlier record is kept; "
                    "free space (or make it writable) and run the same command again to resume"):
                runs.append(record)
            records.append(record)
            Timings(self.cache_dir).record(cell, record)  # for `--dry-run`'s estimate
            if self.progress:
                self.progress.cell_finished(record)
            hook.tlbench_cell_finished(cell=cell, result=record, run=self.info)
        return records


def run_grid(grid: str | os.PathLike[str] | Mapping[str, Any], out: str | os.PathLike[str] | None = None, *,
             only: str | None = None, rerun: bool = False, device: str = "auto",
             cache_dir: str | os.PathLike[str] | None = None, save_models: bool = False, registries: Registries | None = None,
             executor: str = "local", retries: int = 1, ray_address: str | None = None,
             track: tuple[str, ...] = (), tracking_uri: str | None = None,
             progress: Progress | None = None) -> pd.DataFrame:
    """Validate and run a grid; return ``load_results(out)`` (one row per cell). ``progress`` logs each cell and epoch."""
    registries = registries or collect()
    with make_executor(executor, retries=retries, ray_address=ray_address) as running:
        loaded = load_grid(grid, registries, block_lookup=running.blocks)
        runner = Runner(loaded, registries, running, out, device=device, cache_dir=cache_dir, save_models=save_models,
                        track=track, tracking_uri=tracking_uri, progress=progress)
        runner.run(select_cells(loaded.cells(), only), rerun=rerun)
    return load_results(runner.out)
