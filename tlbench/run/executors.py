"""Executors: where the cells of a run execute. The driver hands them tasks and writes every
record they return into ``runs.jsonl`` itself (one writer, the same format everywhere).

- ``local`` (default): a worker subprocess serves the cells one after another, so imports
  and data load once; a cell that kills its worker becomes a ``failed`` record naming the
  signal or exit code, a new worker starts, the grid goes on.
- ``ray``: each cell is a Ray task on a local Ray instance or an existing cluster, asking for
  the CPUs (and GPU) it needs; results stream back to the driver.
- ``inline``: in the driver's own process, without isolation (for debugging, and as the
  baseline of the isolation-overhead benchmark).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tlbench.grid.blocks import BlockRequest
from tlbench.plugin.specs import BadSetting, PluginError
from tlbench.run.execution import cell_record
from tlbench.run.worker import CellTask, EpochCallback, Session, process_session, serve

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnProcess

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray", "inline")
RAY_ANSWER_SECONDS = 5  # a Ray address must accept a TCP connection within this
# Ray's own limits when it connects to a cluster that accepts connections but does not answer: one
# try at the GCS, 10 s to get its cluster id (by default 20 tries of about 35 s: ten minutes).
RAY_CONNECT_LIMITS = {"RAY_gcs_server_port_wait_time_s": "1", "RAY_py_gcs_connect_timeout_s": "10"}


class WorkerDied(Exception):
    """The process running a cell ended without answering."""


class Executor:
    """Runs tasks; a context manager around the workers it starts."""

    name = ""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        """What env.json records about the executor."""
        return {"executor": self.name}

    def blocks(self, requests: Sequence[BlockRequest]) -> list[Any]:
        """Backbone blocks for grid validation, looked up where the frameworks are."""
        raise NotImplementedError

    def prepare(self, frameworks: Sequence[str], device: str, threads: int) -> dict[str, Any]:
        """Configure the engines the run needs (threads, determinism) and resolve the device."""
        raise NotImplementedError

    def run(self, tasks: Sequence[CellTask], on_epoch: EpochCallback) -> Iterator[dict[str, Any]]:
        """The record of every task, as each finishes."""
        raise NotImplementedError


class InlineExecutor(Executor):
    """In this process: no isolation from a crashing cell."""

    name = "inline"

    def __init__(self) -> None:
        self.session = Session()

    def blocks(self, requests: Sequence[BlockRequest]) -> list[Any]:
        return self.session.blocks(requests)

    def prepare(self, frameworks: Sequence[str], device: str, threads: int) -> dict[str, Any]:
        return self.session.prepare(frameworks, device, threads)

    def run(self, tasks: Sequence[CellTask], on_epoch: EpochCallback) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield self.session.run(task, on_epoch)


class LocalExecutor(Executor):
    """A worker subprocess (spawned: a fresh interpreter), replaced when a cell kills it."""

    name = "local"

    def __init__(self, retries: int = 1) -> None:
        self.retries = retries
        self.process: SpawnProcess | None = None
        self.connection: Connection[Any, Any] | None = None
        self.prepared: tuple[list[str], str, int] | None = None  # replayed into a replacement worker

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def blocks(self, requests: Sequence[BlockRequest]) -> list[Any]:
        answers: list[Any] = self._call(("blocks", list(requests)))
        return answers

    def prepare(self, frameworks: Sequence[str], device: str, threads: int) -> dict[str, Any]:
        self.prepared = (list(frameworks), device, threads)
        prepared: dict[str, Any] = self._call(("prepare", self.prepared))
        return prepared

    def run(self, tasks: Sequence[CellTask], on_epoch: EpochCallback) -> Iterator[dict[str, Any]]:
        for task in tasks:
            yield self._run_task(task, on_epoch)

    def _run_task(self, task: CellTask, on_epoch: EpochCallback) -> dict[str, Any]:
        started = time.perf_counter()
        for attempt in range(self.retries + 1):
            try:
                record: dict[str, Any] = self._call(("cell", task), on_epoch)
                return record
            except WorkerDied as died:
                cause = str(died)
                log.error("cell %s: %s%s", task.cell.cell_id, cause,
                          "; retrying in a new worker" if attempt < self.retries else "")
        return cell_record(task.cell, "failed", f"WorkerDied: {cause} (tried {self.retries + 1} times)",
                           {"wall_seconds": time.perf_counter() - started})

    def _call(self, message: tuple[str, Any], on_epoch: EpochCallback | None = None) -> Any:
        connection = self._worker()
        try:
            connection.send(message)
            while True:
                kind, payload = connection.recv()
                if kind == "epoch" and on_epoch is not None:
                    on_epoch(*payload)
                elif kind == "done":
                    return payload
                elif kind == "error":
                    raise PluginError(payload)
        except (EOFError, OSError):
            raise WorkerDied(self._cause_of_death()) from None

    def _worker(self) -> Connection[Any, Any]:
        if self.process is None or not self.process.is_alive():
            self._stop()
            context = multiprocessing.get_context("spawn")
            self.connection, child = context.Pipe()
            self.process = context.Process(target=serve, args=(child,), name="tlbench-worker", daemon=True)
            self.process.start()
            child.close()
            if self.prepared is not None:
                self.connection.send(("prepare", self.prepared))
                self.connection.recv()
        assert self.connection is not None  # set with the process
        return self.connection

    def _cause_of_death(self) -> str:
        assert self.process is not None  # _call started it
        self.process.join(timeout=10)
        code = self.process.exitcode
        self._stop()
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = " (out of memory, or killed from outside)" if -code == signal.SIGKILL else ""
            return f"the worker process running the cell was killed by {name} (signal {-code}){why}"
        return f"the worker process running the cell exited with code {code}"

    def _stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)
        self.process = self.connection = None


class RayExecutor(Executor):
    """Each cell a Ray task; without an address, a local Ray instance (no dashboard, loopback only)."""

    name = "ray"

    def __init__(self, address: str | None = None, retries: int = 1) -> None:
        self.address, self.source = ray_address(address)
        if self.address:  # before Ray loads, which reads some of its limits then
            for name, value in RAY_CONNECT_LIMITS.items():
                os.environ.setdefault(name, value)
        try:
            import ray
        except ImportError:
            raise PluginError("--executor ray needs Ray, which is not installed: pip install 'tlbench[ray]'") from None
        self.ray, self.retries = ray, retries
        self.threads = 1

    def __enter__(self) -> RayExecutor:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_worker_niceness", "0")  # Ray workers run at the local worker's priority
        options: dict[str, Any] = {"address": self.address} if self.address else {
            "include_dashboard": False, "_node_ip_address": "127.0.0.1"}
        try:
            self.ray.init(log_to_driver=False, configure_logging=False, ignore_reinit_error=True, **options)
        except ConnectionError as exc:
            raise BadSetting(f"{self.source} {self.address!r}: cannot connect to a Ray cluster there ({first_line(exc)}); "
                             "check that the cluster is up and the address is its head's, or leave the option out "
                             "to start a local Ray instance") from None
        self.remote = self.ray.remote(_on_ray)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.ray.shutdown()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "ray_address": self.address or "local"}

    def blocks(self, requests: Sequence[BlockRequest]) -> list[Any]:
        answers: list[Any] = self.ray.get(self.remote.remote("blocks", list(requests)))
        return answers

    def prepare(self, frameworks: Sequence[str], device: str, threads: int) -> dict[str, Any]:
        self.threads = threads
        gpus = 1 if device == "cuda" else 0
        prepared: dict[str, Any] = self.ray.get(self.remote.options(num_cpus=threads, num_gpus=gpus).remote(
            "prepare", (list(frameworks), device, threads)))
        return prepared

    def run(self, tasks: Sequence[CellTask], on_epoch: EpochCallback) -> Iterator[dict[str, Any]]:
        started = time.perf_counter()
        futures = {self.remote.options(num_cpus=self.threads, num_gpus=1 if task.device == "cuda" else 0,
                                       max_retries=self.retries).remote("cell", task): task for task in tasks}
        pending = list(futures)
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                task = futures[done[0]]
                try:
                    yield self.ray.get(done[0])
                except self.ray.exceptions.RayError as exc:
                    yield cell_record(task.cell, "failed", f"WorkerDied: the Ray worker running the cell died "
                                      f"(tried {self.retries + 1} times): {first_line(exc)}",
                                      {"wall_seconds": time.perf_counter() - started})
        finally:
            for future in pending:  # interrupted: nothing more runs
                self.ray.cancel(future, force=True)


def ray_address(address: str | None) -> tuple[str | None, str]:
    """The Ray cluster to connect to (None: start a local instance) and the setting that named it:
    ``address``, else ``$RAY_ADDRESS`` (which Ray itself reads). ``local`` and ``auto`` (the
    cluster ``ray start`` started on this machine) pass to Ray; ``HOST:PORT`` (a head's GCS) and
    ``ray://HOST:PORT`` (Ray Client) must answer a TCP connection within a few seconds."""
    source = "--ray-address" if address else "RAY_ADDRESS"
    address = (address or os.environ.get("RAY_ADDRESS", "")).strip()
    if address in ("", "local"):
        return None, source
    if address == "auto":
        return address, source
    split = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = split.hostname, split.port
    except ValueError:
        host = port = None
    if split.scheme not in ("", "ray") or not host or not port or split.path or split.query or split.fragment:
        raise BadSetting(f"{source} {address!r} is not a Ray address: give HOST:PORT (a head node's GCS, "
                         "e.g. 10.0.0.5:6379), ray://HOST:PORT (Ray Client, e.g. ray://10.0.0.5:10001), "
                         "auto (the cluster `ray start` started on this machine) or local")
    try:
        socket.create_connection((host, port), timeout=RAY_ANSWER_SECONDS).close()
    except OSError as exc:
        raise BadSetting(f"{source} {address!r}: nothing answers at {host}:{port} within {RAY_ANSWER_SECONDS} s "
                         f"({exc.strerror or exc}); start the cluster (`ray start --head`) or fix the address") from None
    return address, source


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 500 characters (its type's name when it has none)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def _on_ray(kind: str, payload: Any) -> Any:
    """A Ray task: the request on this Ray worker process's session (prepared once per process)."""
    session = process_session()
    if kind == "cell":
        session.prepare([payload.framework], payload.device, payload.threads)
        return session.run(payload, lambda *epoch: None)
    return session.blocks(payload) if kind == "blocks" else session.prepare(*payload)


def make_executor(name: str, *, retries: int = 1, ray_address: str | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(retries)
    if name == "ray":
        return RayExecutor(ray_address, retries)
    if name == "inline":
        return InlineExecutor()
    raise PluginError(f"unknown executor {name!r}: {', '.join(EXECUTORS)}")
