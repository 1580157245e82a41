"""Results: an append-only ``runs.jsonl`` in, pandas DataFrames and summaries out."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .grid import PATH_OPTIONS

log = logging.getLogger(__name__)
RUNS_FILE = "runs.jsonl"
COMBINED_FILE = "combined.json"  # marks a directory `tlbench report ... --out` made
ENV_FILE = "env.json"
FINISHED = ("ok", "not-applicable")
SUMMARY_COLUMNS = [
    "cell_id", "status", "test_accuracy", "test_loss", "epoch_seconds", "epochs",
    "train_images", "test_images", "trainable_params", "non_trainable_params", "wall_seconds", "error",
]
RECORD_FIELDS = {"cell_id": str, "key": str, "dataset": str, "backbone": str, "strategy": str,
                 "seed": int, "status": str, "params": dict, "metrics": dict}


class RunsLog:
    """``DIR/runs.jsonl``: one JSON line per finished cell, each flushed and fsynced.

    Anyone may :meth:`read`; only the writer, holding :func:`tlbench.runner.run_lock`, may
    :meth:`repair` and :meth:`append`.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / RUNS_FILE

    def read(self) -> list[dict[str, Any]]:
        """Every record; lines that are not one are skipped with a warning, the file is untouched.

        A last line without its newline is kept when it is a complete record; otherwise it is
        torn (a run is writing it now, or was killed while writing it) and skipped.
        """
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records = []
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record, problem = _parse(line)
            if record is not None:
                records.append(record)
            elif number == len(lines):
                log.warning("%s:%d: skipping an incomplete last line (%d bytes): a run is writing it or "
                            "was killed; the next `tlbench run` into this directory repairs it",
                            self.path, number, len(line))
            else:
                log.warning("%s:%d: skipping a line that is %s", self.path, number, problem)
        return records

    def repair(self) -> None:
        """End the file on a newline: complete a whole last record, cut off a torn one (writer only)."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end == len(data):
            return
        with open(self.path, "r+b") as f:
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
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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


def merge_runs(run_dirs: Iterable[str | os.PathLike], out: str | os.PathLike,
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
    _replace(out / COMBINED_FILE, json.dumps(marker, indent=2))
    _replace(out / RUNS_FILE, "".join(json.dumps(r) + "\n" for r in chosen.values()))
    return out / RUNS_FILE


def stored_report_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The report settings kept with a run: ``combined.json``'s ``report`` in a combined directory,
    else ``env.json``'s (the grid's ``report:``); ``{}`` when there are none or the file is unreadable."""
    run_dir = Path(run_dir)
    path = run_dir / COMBINED_FILE if (run_dir / COMBINED_FILE).is_file() else run_dir / ENV_FILE
    try:
        settings = json.loads(path.read_text()).get("report") or {}
    except (OSError, ValueError, AttributeError) as exc:
        if path.exists():
            log.warning("%s: cannot read its report settings (%s); using the defaults", path, exc)
        return {}
    return settings if isinstance(settings, dict) else {}


@dataclass(frozen=True)
class KeptPredictions:
    """A cell's kept test labels and, per test image, whether its top prediction was right."""

    labels: np.ndarray
    correct: np.ndarray


def load_test_predictions(run_dir: str | os.PathLike, predictions_file: str | None) -> KeptPredictions | None:
    """The test predictions a cell kept (``metrics.predictions_file``, relative to its run directory);
    None when it kept none or the file is missing or unreadable."""
    if not predictions_file:
        return None
    path = Path(run_dir) / predictions_file
    try:
        with np.load(path) as kept:
            probabilities, labels = kept["test_probabilities"], kept["test_labels"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        log.info("%s: no kept predictions (%s); accuracy-only statistics for this cell", path, exc)
        return None
    return KeptPredictions(labels, probabilities.argmax(axis=1) == labels)


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def portable_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset options without where the data lies, which differs between machines."""
    return {k: v for k, v in options.items() if k not in PATH_OPTIONS}


def _identity_across_machines(record: dict[str, Any]) -> str:
    params = {**record["params"], "dataset": portable_options(record["params"]["dataset"])}
    return json.dumps([record.get("plugins"), params, record["seed"]], sort_keys=True, default=str)


def load_results(run_dir: str | os.PathLike):
    """A DataFrame with one row per cell: identity columns plus the scalar metrics."""
    import pandas as pd

    rows = []
    for record in latest_per_cell(RunsLog(run_dir).read()):
        row = {k: record.get(k) for k in ("cell_id", "key", "dataset", "backbone", "strategy", "seed", "status", "error")}
        row.update({k: v for k, v in (record.get("metrics") or {}).items() if _scalar(v)})
        row["params"] = record.get("params")
        rows.append(row)
    return pd.DataFrame(rows)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def write_summaries(run_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``summary.csv`` (pandas) and ``summary.md`` (tabulate), one row per cell."""
    from tabulate import tabulate

    run_dir = Path(run_dir)
    frame = load_results(run_dir)
    columns = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    table = frame[columns] if len(frame) else frame
    csv_path, md_path = run_dir / "summary.csv", run_dir / "summary.md"
    table.to_csv(csv_path, index=False)
    if len(frame) and "error" in table:
        table = table.assign(error=table["error"].fillna("").map(lambda e: e.splitlines()[0][:80] if e else ""))
    md_path.write_text(tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g") + "\n")
    return csv_path, md_path
