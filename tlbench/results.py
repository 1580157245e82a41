"""Results: an append-only ``runs.jsonl`` in, pandas DataFrames and summaries out."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .grid import PATH_OPTIONS

log = logging.getLogger(__name__)
RUNS_FILE = "runs.jsonl"
FINISHED = ("ok", "not-applicable")
SUMMARY_COLUMNS = [
    "cell_id", "status", "test_accuracy", "test_loss", "epoch_seconds", "epochs",
    "train_images", "test_images", "trainable_params", "non_trainable_params", "wall_seconds", "error",
]


class RunsLog:
    """``DIR/runs.jsonl``: one JSON line per finished cell, each flushed and fsynced."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / RUNS_FILE

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (from a killed process) is cut off."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping an incomplete last line (%d bytes) from an interrupted run",
                        self.path, len(data) - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
        records = []
        for number, line in enumerate(data[:end].splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    log.warning("%s:%d: skipping an unreadable line (%s)", self.path, number, exc)
        return records

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=_jsonable, allow_nan=True) + "\n"
        with open(self.path, "ab") as f:
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def finished_keys(self) -> set[str]:
        return {r["key"] for r in self.read() if r.get("status") in FINISHED}


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


def merge_runs(run_dirs: Iterable[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write ``out/runs.jsonl`` with the latest record of every cell of several runs, so that
    one report compares them. A cell found in more than one run (the same options and seed;
    dataset paths may differ between machines) keeps its later-finished record. ``out`` is a
    derived run directory: its ``runs.jsonl`` is replaced."""
    out = Path(out)
    sources = [Path(d) for d in run_dirs]
    if any(out.resolve() == d.resolve() for d in sources):
        raise ValueError(f"--out {out} is one of the runs being merged; choose a new directory")
    chosen: dict[str, dict[str, Any]] = {}
    for source in sources:
        if not (source / RUNS_FILE).exists():
            raise FileNotFoundError(f"{source / RUNS_FILE} does not exist: is {source} a tlbench run directory?")
        for record in latest_per_cell(RunsLog(source).read()):
            identity = _identity_across_machines(record)
            kept = chosen.get(identity)
            if kept is None or record.get("finished", "") >= kept.get("finished", ""):
                chosen[identity] = record
    out.mkdir(parents=True, exist_ok=True)
    temporary = out / f".{RUNS_FILE}.tmp"
    temporary.write_text("".join(json.dumps(r) + "\n" for r in chosen.values()))
    os.replace(temporary, out / RUNS_FILE)
    return out / RUNS_FILE


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
