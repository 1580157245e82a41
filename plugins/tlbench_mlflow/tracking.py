"""Writing tlbench records into an MLflow tracking store."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from tlbench.plugin.specs import BadSetting
from tlbench.run.executors import first_line

KEY_TAG = "tlbench.key"
PARAM_CHARS = 500  # what every MLflow store accepts as a parameter value
HISTORY = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
ANSWER_SECONDS = 5  # an http(s) store must answer, a locked SQLite file free up, within this
STORES = "sqlite:///PATH in a writable folder, http(s)://HOST:PORT of a running `mlflow server`, or no --tracking-uri"


class MlflowTracker:
    """One MLflow experiment per grid; each record becomes (or replaces) the run tagged with its key."""

    def __init__(self, run) -> None:
        out = Path(run.out).resolve()
        uri = run.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
        check_store(uri)
        try:  # the first contact: any failure here is the store's, before a cell runs
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(run.name)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                run.name, artifact_location=(out / "mlflow-artifacts").as_uri())
        except Exception as exc:
            raise BadSetting(f"--tracking-uri {uri!r}: MLflow cannot use this store; give {STORES} "
                             f"(MLflow: {first_line(exc)})") from None

    def log_cell(self, cell, record: Mapping[str, Any]) -> None:
        for earlier in self.client.search_runs([self.experiment_id], f"tags.`{KEY_TAG}` = '{record['key']}'"):
            self.client.delete_run(earlier.info.run_id)  # the cell ran again: its newer record replaces it
        tags = {KEY_TAG: record["key"], "tlbench.cell_id": record["cell_id"], "tlbench.status": record["status"],
                **{f"tlbench.{k}": str(record[k]) for k in ("dataset", "backbone", "strategy", "seed")}}
        started = self.client.create_run(self.experiment_id, run_name=record["cell_id"], tags=tags)
        run_id = started.info.run_id
        metrics = record.get("metrics") or {}
        self.client.log_batch(run_id, params=[Param(k, str(v)[:PARAM_CHARS]) for k, v in flat(record["params"])],
                              metrics=list(epoch_metrics(metrics)) + list(final_metrics(metrics)),
                              tags=[RunTag(k, v) for k, v in tags.items()])
        if metrics.get("confusion_matrix") is not None:
            self.client.log_dict(run_id, {"rows: true class, columns: predicted": metrics["confusion_matrix"]},
                                 "confusion_matrix.json")
        self.client.log_text(run_id, json.dumps(record, indent=2, default=str), "result.json")
        self.client.set_terminated(run_id, "FAILED" if record["status"] == "failed" else "FINISHED")


def check_store(uri: str) -> None:
    """Refuse, within seconds, a SQLite file that cannot be written or an http(s) server that does
    not answer (MLflow itself retries each for minutes); other stores MLflow checks at once."""
    sqlite = uri.split("?")[0].removeprefix("sqlite:///") if uri.startswith("sqlite:///") else ""
    if sqlite not in ("", ":memory:"):
        path = Path(sqlite)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(path, timeout=ANSWER_SECONDS)) as db:
                db.execute("BEGIN IMMEDIATE")  # takes the write lock: fails on a file that cannot be written
                db.rollback()
        except (OSError, sqlite3.Error) as exc:
            raise BadSetting(f"--tracking-uri {uri!r}: cannot write the SQLite file {path} ({exc}); "
                             f"give {STORES}") from None
    elif urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=ANSWER_SECONDS).close()
        except urllib.error.HTTPError:
            pass  # a server answered
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BadSetting(f"--tracking-uri {uri!r}: no server answers within {ANSWER_SECONDS} s "
                             f"({getattr(reason, 'strerror', None) or reason}); give {STORES}") from None


def flat(params: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"train": {"lr": 0.1}}`` -> ``("train.lr", 0.1)``."""
    for key, value in params.items():
        if isinstance(value, Mapping):
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", json.dumps(value) if isinstance(value, (list, dict)) else value


def epoch_metrics(metrics: Mapping[str, Any]) -> Iterator[Metric]:
    """Each history value with step = its epoch."""
    now = int(time.time() * 1000)
    for epoch in metrics.get("history") or ():
        for name in HISTORY:
            if isinstance(epoch.get(name), (int, float)):
                yield Metric(name, float(epoch[name]), timestamp=now, step=int(epoch["epoch"]))


def final_metrics(metrics: Mapping[str, Any]) -> Iterator[Metric]:
    """The record's scalar metrics (and transferability scores), step 0."""
    now = int(time.time() * 1000)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    scalars.update({f"transferability.{k}": v for k, v in (metrics.get("transferability") or {}).items()
                    if isinstance(v, (int, float))})
    for name, value in scalars.items():
        yield Metric(name, float(value), timestamp=now, step=0)
