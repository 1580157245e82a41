"""A worker: the process where cells run, with their framework imports, datasets and engines.

The driver (``tlbench run``) imports no ML framework; it sends a worker its requests over a
pipe and gets back records. A worker serves many cells, so imports and data load once; a
cell that kills its worker (a segfault, the OOM killer, ``os._exit``) costs only the worker.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlbench.grid.blocks import BlockRequest, backbone_blocks
from tlbench.plugin.registry import Registries, collect
from tlbench.plugin.specs import Cell, CellContext, PluginError
from tlbench.run.execution import DatasetLoader, execute_cell, resolve_device

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

EpochCallback = Callable[[int, int, dict[str, float]], None]  # (epoch, total, logs) while a cell trains


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable: it crosses processes and machines)."""

    cell: Cell
    framework: str  # of its backbone: the engine to prepare
    device: str
    threads: int  # intra-op threads: the same for every cell of a run, wherever it runs
    cache_dir: str | None
    save_dir: str | None
    predictions_path: str | None


class Session:
    """One worker process's registries and dataset loader, kept across its cells."""

    def __init__(self) -> None:
        self.registries: Registries = collect()
        self.loader = DatasetLoader(self.registries)

    def prepare(self, frameworks: Sequence[str], device: str, threads: int) -> dict[str, Any]:
        """Tune the allocator, load and configure the engines of ``frameworks``, resolve
        ``device``. What env.json records."""
        allocator = reuse_freed_memory()
        for framework in frameworks:
            self.registries.engine_for(framework, threads)
        settings: dict[str, Any] = {}
        for configured in self.registries.engine_settings.values():
            settings.update(configured)
        resolved = resolve_device(device)
        found = {"device": resolved, "threads": settings, "gpu": None, "allocator": allocator}
        if "torch" in sys.modules:
            torch = sys.modules["torch"]
            found["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            if resolved == "cuda":
                found["gpu"] = torch.cuda.get_device_name(0)
        return found

    def blocks(self, requests: Sequence[BlockRequest]) -> list[Any]:
        return backbone_blocks(self.registries, requests)

    def run(self, task: CellTask, on_epoch: EpochCallback) -> dict[str, Any]:
        ctx = CellContext(seed=task.cell.seed, device=task.device, cache_dir=task.cache_dir, save_dir=task.save_dir,
                          predictions_path=task.predictions_path, on_epoch=on_epoch)
        return execute_cell(task.cell, self.registries, self.loader, ctx)


@functools.lru_cache(maxsize=1)
def process_session() -> Session:
    """The session of this process (a Ray worker serves many tasks)."""
    return Session()


def serve(connection: Connection[Any, Any]) -> None:
    """The worker's loop: answer ``(kind, payload)`` requests until the pipe closes.

    Replies: ``("epoch", (epoch, total, logs))`` while a cell trains, then ``("done", result)``;
    ``("error", message)`` for bad input (a plugin error), which the driver raises.
    """
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    session = Session()
    handlers: dict[str, Callable[[Any], Any]] = {
        "prepare": lambda payload: session.prepare(*payload),
        "blocks": session.blocks,
        "cell": lambda task: session.run(task, lambda *epoch: connection.send(("epoch", epoch))),
    }
    while True:
        try:
            kind, payload = connection.recv()
        except (EOFError, OSError):
            return
        try:
            result = handlers[kind](payload)
        except PluginError as exc:
            connection.send(("error", str(exc)))
        except Exception:
            connection.send(("error", traceback.format_exc()))
        else:
            connection.send(("done", result))


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
ALLOCATOR_KEEPS = 1 << 30  # bytes of freed memory a worker keeps for reuse before it returns any to the OS


def reuse_freed_memory() -> str:
    """Linux (glibc): serve large blocks from the heap, and keep up to ALLOCATOR_KEEPS freed bytes for reuse.

    By default glibc maps every block over 32 MiB (over 128 KiB at first) afresh and unmaps it
    when freed, so each layer output of a network's forward pass is new memory the kernel must
    fault in and zero. Reusing it is bit-identical and spares those page faults (measured:
    ``benchmarks/test_benchmark_levers.py -k reused``, figures in benchmarks/README.md). What the
    worker set, for env.json."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator as it is
        return "system default"
    if mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, ALLOCATOR_KEEPS) != 1:
        return "system default"
    return f"glibc: heap only (mmap_max 0), trim above {ALLOCATOR_KEEPS >> 20} MiB"


def _die_with_parent() -> None:
    """Linux: end this worker when the driver ends, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
