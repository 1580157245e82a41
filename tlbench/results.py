"""Results: an append-only ``runs.jsonl`` in, pandas DataFrames and summaries out."""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

import numpy as np

from tlbench.files import TEMP_PREFIX, open_regular, open_writable, read_regular, write_text
from tlbench.grid.loading import PATH_OPTIONS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
RUNS_FILE = "runs.jsonl"
COMBINED_FILE = "combined.json"  # marks a directory `tlbench report ... --out` made
ENV_FILE = "env.json"
LOCK_FILE = ".lock"  # held by the one process writing into a run directory
FINISHED = ("ok", "not-applicable")
MAX_LINE_BYTES = 16 << 20  # a longer line of runs.jsonl is skipped unread (a record of 1,000 epochs is ~200 KB)
LISTED_SKIPS = 5  # skipped lines warned about one by one; the rest are counted
REPORT_SETTING_KINDS: dict[str, Callable[[Any], bool]] = {  # what a stored `report:` may hold (tlbench.report.document.ReportSettings)
    "small_per_class": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "set_by": lambda v: v in ("flag", "grid", "grids", "default"),
}
MAX_KEPT_BYTES = 4 << 30  # kept test predictions larger than this are not loaded (1M images x 1000 classes of float32)
SUMMARY_COLUMNS = [
    "cell_id", "status", "test_accuracy", "test_loss", "epoch_seconds", "epochs",
    "train_images", "test_images", "trainable_params", "non_trainable_params", "wall_seconds", "error",
]
RECORD_FIELDS = {"cell_id": str, "key": str, "dataset": str, "backbone": str, "strategy": str,
                 "seed": int, "status": str, "params": dict, "metrics": dict}
_NUMBER = (int, float)
# the metrics the report reads, when present and not null (history: a list of epoch objects)
METRIC_FIELDS: dict[str, type | tuple[type, ...]] = {
    "history": list, "best_epoch": int, "confusion_matrix": list, "trained_blocks": list, "predictions_file": str,
    "transferability": dict, "dataset_info": dict, "family": str,
    **dict.fromkeys(("test_accuracy", "test_loss", "epoch_seconds", "wall_seconds", "trainable_params", "epochs",
                     "non_trainable_params", "test_images", "train_images", "blocks", "trainable_blocks"), _NUMBER)}


class RunsLog:
    """``DIR/runs.jsonl``: one JSON line per finished cell, each flushed and fsynced.

    Anyone may :meth:`read`; only the writer, holding :func:`tlbench.run.runner.run_lock`, may
    :meth:`repair` and :meth:`append`.
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / RUNS_FILE

    def read(self) -> list[dict[str, Any]]:
        """Every record (see :meth:`records`)."""
        return list(self.records())

    def records(self) -> Iterator[dict[str, Any]]:
        """Each record, read a line at a time; the file is untouched and must be a regular file.

        A line that is not a record, or longer than ``MAX_LINE_BYTES`` (read past, never held),
        is skipped with a warning: the first ``LISTED_SKIPS`` one by one, then how many more.
        A process warns about an unchanged file once, however often it reads it (``tlbench report``
        reads it for the summaries and for the report). A last line without its newline is kept
        when it is a complete record; otherwise it is torn (a run is writing it now, or was
        killed while writing it) and skipped.
        """
        try:
            f = open_regular(self.path)
        except FileNotFoundError:
            return
        with f:
            skips = _Skips(self.path, os.fstat(f.fileno()))
            number = 0
            try:
                while line := f.readline(MAX_LINE_BYTES + 1):
                    number += 1
                    if len(line) > MAX_LINE_BYTES:
                        length = len(line) + _skip_line(f)
                        skips.add(number, f"a line of {length:,} bytes, longer than the {MAX_LINE_BYTES:,} a record may be")
                        continue
                    if not line.strip():
                        continue
                    record, problem = _parse(line)
                    if record is not None:
                        yield record
                    elif not line.endswith(b"\n"):
                        skips.add(number, f"an incomplete last line ({len(line)} bytes): a run is writing it or "
                                  "was killed; the next `tlbench run` into this directory repairs it")
                    else:
                        skips.add(number, f"a line that is {problem}")
            finally:
                skips.close()

    def repair(self) -> None:
        """End the file on a newline: complete a whole last record, cut off a torn one (writer only)."""
        try:
            fd = open_writable(self.path, os.O_RDWR)  # a link or a FIFO here is refused, even when nothing is torn
        except FileNotFoundError:
            return
        with os.fdopen(fd, "r+b") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end == len(data):
                return
            if _parse(data[end:])[0] is not None:
                f.seek(len(data))
                f.write(b"\n")
            else:
                log.warning("%s: dropping an incomplete last line (%d bytes) from an interrupted run",
                            self.path, len(data) - end)
                f.truncate(end)
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Add one line; if it cannot be written whole (a full disk), the file is cut back to where it was."""
        data = (json.dumps(record, default=_jsonable, allow_nan=True) + "\n").encode()
        fd = open_writable(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            start, written = os.fstat(fd).st_size, 0
            try:
                while written < len(data):
                    written += os.write(fd, data[written:])
            finally:
                if written < len(data):
                    os.ftruncate(fd, start)
            os.fsync(fd)
        finally:
            os.close(fd)

    def finished_keys(self) -> set[str]:
        return {r["key"] for r in self.read() if r.get("status") in FINISHED}


def _skip_line(f: IO[bytes]) -> int:
    """Read past the rest of a line, a chunk at a time; the bytes skipped."""
    skipped = 0
    while chunk := f.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


class _Skips:
    """The lines one read of ``runs.jsonl`` skips: the first ``LISTED_SKIPS`` warned about one by
    one, then a count. A process warns about a file once while it is unchanged (the same
    device, inode, size and modification time)."""

    _warned: ClassVar[set[tuple[int, ...]]] = set()

    def __init__(self, path: Path, status: os.stat_result):
        self.path, self.count = path, 0
        self.state = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        self.quiet = self.state in self._warned

    def add(self, number: int, what: str) -> None:
        self.count += 1
        if self.count <= LISTED_SKIPS and not self.quiet:
            log.warning("%s:%d: skipping %s", self.path, number, what)

    def close(self) -> None:
        if self.count > LISTED_SKIPS and not self.quiet:
            log.warning("%s: and %d more lines skipped", self.path, self.count - LISTED_SKIPS)
        if self.count:
            self._warned.add(self.state)


def _parse(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")``, or ``(None, what the line is instead)``."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested too deep
        return None, f"unreadable ({exc})"
    fields_ok = isinstance(value, dict) and all(isinstance(value.get(k), t) for k, t in RECORD_FIELDS.items())
    if not fields_ok or not all(isinstance(value["params"].get(p), dict) for p in ("dataset", "backbone", "strategy")):
        return None, (f"not a tlbench record (a {type(value).__name__}; a record is an object with "
                      f"{', '.join(RECORD_FIELDS)}, ...)")
    metrics = value["metrics"]
    wrong = [name for name, kind in METRIC_FIELDS.items()
             if metrics.get(name) is not None and not isinstance(metrics[name], kind)]
    if not wrong and not all(isinstance(epoch, dict) for epoch in metrics.get("history") or []):
        wrong = ["history"]
    if wrong:
        return None, f"not a tlbench record (its metrics.{', metrics.'.join(wrong)} of the wrong type)"
    return value, ""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def latest_per_cell(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each cell key, in first-seen order."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest.pop(record["key"], None)
        latest[record["key"]] = record
    return list(latest.values())


def merge_runs(run_dirs: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str],
               report: Mapping[str, Any] | None = None) -> Path:
    """Write ``out/runs.jsonl`` with the latest record of every cell of several runs, so that
    one report compares them. A cell found in more than one run (the same options and seed;
    dataset paths may differ between machines) keeps its later-finished record, annotated with
    ``run_dir``: the absolute path of the run it came from, where its predictions lie (kept
    when the source is itself combined). ``out`` is a combined run directory, marked by
    ``combined.json`` (its sources and the ``report`` settings used): its ``runs.jsonl`` is
    replaced. A directory holding another run's records is refused. The caller holds
    ``out``'s lock."""
    out = Path(out)
    sources = [Path(d) for d in run_dirs]
    if any(out.resolve() == d.resolve() for d in sources):
        raise ValueError(f"--out {out} is one of the runs being merged; choose a new directory")
    if (out / RUNS_FILE).exists() and not (out / COMBINED_FILE).is_file():
        raise ValueError(f"--out {out} holds the records of a run ({out / RUNS_FILE}) that is not a combined "
                         f"report; choose a new directory for the combined report")
    chosen: dict[str, dict[str, Any]] = {}
    for source in sources:
        if not (source / RUNS_FILE).exists():
            raise FileNotFoundError(f"{source / RUNS_FILE} does not exist: is {source} a tlbench run directory?")
        for record in latest_per_cell(RunsLog(source).read()):
            record = {**record, "run_dir": record.get("run_dir") or str(source.resolve())}
            identity = _identity_across_machines(record)
            kept = chosen.get(identity)
            if kept is None or record.get("finished", "") >= kept.get("finished", ""):
                chosen[identity] = record
    marker = {"combined_from": [str(d.resolve()) for d in sources], **({"report": dict(report)} if report else {})}
    write_text(out / COMBINED_FILE, json.dumps(marker, indent=2))
    write_text(out / RUNS_FILE, "".join(json.dumps(r) + "\n" for r in chosen.values()))
    return out / RUNS_FILE


def foreign_files(folder: Path) -> list[str]:
    """The names in ``folder`` when it holds files but no tlbench run (no record in ``runs.jsonl``,
    no ``env.json`` or ``combined.json`` of tlbench's, no lock tlbench took): someone's own
    files, which a run or a report would overwrite. ``[]`` for an empty folder or a run directory."""
    names = sorted(p.name for p in folder.iterdir() if not p.name.startswith(TEMP_PREFIX))
    if not names:
        return []

    def first_line(name: str) -> bytes:
        try:
            with open_regular(folder / name) as f:
                return f.readline(MAX_LINE_BYTES)
        except OSError:
            return b""

    def json_object(name: str) -> dict[str, Any]:
        try:
            value = json.loads(read_regular(folder / name, limit=2**20))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    env_versions = json_object(ENV_FILE).get("versions")
    ours = ((isinstance(env_versions, dict) and "tlbench" in env_versions) or "combined_from" in json_object(COMBINED_FILE)
            or _parse(first_line(RUNS_FILE))[0] is not None or first_line(LOCK_FILE).startswith(b"pid "))
    return [] if ours else names


def stored_grid_name(run_dir: str | os.PathLike[str]) -> str | None:
    """The name of the grid a run ran (``env.json``'s ``grid``); None for a combined or an older run."""
    try:
        name = json.loads(read_regular(Path(run_dir) / ENV_FILE, MAX_LINE_BYTES)).get("grid")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name.strip() else None


def stored_report_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The report settings kept with a run: ``combined.json``'s ``report`` in a combined directory,
    else ``env.json``'s (the grid's ``report:``); ``{}`` when there are none, and ``{}`` with a
    warning naming the file when it is unreadable, not a regular file or its settings are not
    of the kinds :data:`REPORT_SETTING_KINDS` allows."""
    run_dir = Path(run_dir)
    path = run_dir / COMBINED_FILE if (run_dir / COMBINED_FILE).is_file() else run_dir / ENV_FILE
    try:
        settings = json.loads(read_regular(path, MAX_LINE_BYTES)).get("report") or {}
        if not isinstance(settings, dict):
            raise ValueError(f"report is a {type(settings).__name__}, not an object")
        wrong = [name for name, allowed in REPORT_SETTING_KINDS.items() if name in settings and not allowed(settings[name])]
        if wrong:
            raise ValueError(f"report.{', report.'.join(wrong)} of the wrong kind")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("%s: cannot read its report settings (%s); using the defaults", path, exc)
        return {}
    return settings


@dataclass(frozen=True)
class KeptPredictions:
    """A cell's kept test labels and, per test image, whether its top prediction was right."""

    labels: np.ndarray
    correct: np.ndarray


def load_test_predictions(run_dir: str | os.PathLike[str], predictions_file: str | None) -> KeptPredictions | None:
    """The test predictions a cell kept (``metrics.predictions_file``, relative to its run directory);
    None when it kept none or the file is missing; None with a warning when it is not a regular
    file or not the ``(N, classes)`` probabilities and ``N`` labels that tlbench keeps (checked
    from each array's header before anything is loaded)."""
    if not predictions_file:
        return None
    path = Path(run_dir) / predictions_file
    try:
        with open_regular(path) as f:
            probabilities_shape, labels_shape = _npz_shapes(f, {"test_probabilities": "fiu", "test_labels": "iu"})
            if not (len(probabilities_shape) == 2 and labels_shape == probabilities_shape[:1] and probabilities_shape[1]):
                raise ValueError(f"test_probabilities of shape {probabilities_shape} and test_labels of shape "
                                 f"{labels_shape}, not (N, classes) and (N,)")
            f.seek(0)
            with np.load(f) as kept:
                probabilities, labels = kept["test_probabilities"], kept["test_labels"]
    except FileNotFoundError as exc:
        log.info("%s: no kept predictions (%s); accuracy-only statistics for this cell", path, exc)
        return None
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("%s: not usable kept predictions (%s); accuracy-only statistics for this cell", path, exc)
        return None
    return KeptPredictions(labels, probabilities.argmax(axis=1) == labels)


def _npz_shapes(f: IO[bytes], kinds: Mapping[str, str]) -> list[tuple[int, ...]]:
    """The shape of each array of the ``.npz`` in ``f`` named in ``kinds`` (name -> dtype kinds
    allowed), read from its ``.npy`` header; a ValueError when an array is missing, of another
    dtype, or declares more (or fewer) bytes than its member holds, or more than ``MAX_KEPT_BYTES``."""
    shapes = []
    with zipfile.ZipFile(f) as archive:
        for name, allowed in kinds.items():
            try:
                info = archive.getinfo(f"{name}.npy")
            except KeyError:
                raise ValueError(f"no array {name}") from None
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"{name}: .npy format version {version} is not one numpy writes by default")
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                declared = member.tell() + math.prod(shape) * dtype.itemsize
            if dtype.kind not in allowed or declared != info.file_size or declared > MAX_KEPT_BYTES:
                raise ValueError(f"{name}: a {dtype} array of shape {shape} ({declared:,} bytes) in a member of "
                                 f"{info.file_size:,} bytes")
            shapes.append(shape)
    return shapes


def portable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset options without where the data lies, which differs between machines."""
    return {k: v for k, v in options.items() if k not in PATH_OPTIONS}


def _identity_across_machines(record: dict[str, Any]) -> str:
    params = {**record["params"], "dataset": portable_options(record["params"]["dataset"])}
    return json.dumps([record.get("plugins"), params, record["seed"]], sort_keys=True, default=str)


def load_results(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """A DataFrame with one row per cell (its latest record): identity columns plus the scalar
    metrics, kept as the records stream by (lists such as the history are never held)."""
    import pandas as pd

    return pd.DataFrame(latest_per_cell(_summary_row(record) for record in RunsLog(run_dir).records()))


def _summary_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in ("cell_id", "key", "dataset", "backbone", "strategy", "seed", "status", "error")}
    return {**row, **{k: v for k, v in record["metrics"].items() if _scalar(v)}, "params": record["params"]}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def write_summaries(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``summary.csv`` (pandas) and ``summary.md`` (tabulate), one row per cell."""
    from tabulate import tabulate

    run_dir = Path(run_dir)
    frame = load_results(run_dir)
    columns = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    table = frame[columns] if len(frame) else frame
    csv_path, md_path = run_dir / "summary.csv", run_dir / "summary.md"
    write_text(csv_path, table.to_csv(index=False))
    if len(frame) and "error" in table:
        table = table.assign(error=table["error"].fillna("").map(lambda e: e.splitlines()[0][:80] if e else ""))
    write_text(md_path, tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g") + "\n")
    return csv_path, md_path
