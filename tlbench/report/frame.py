"""A run's records as frames: one row per cell (identity, scenario, metrics, kept test predictions),
then one row per series (mean accuracy with its 95% CI over seeds, costs, each seed's predictions).
The names the report groups by (:data:`SCENARIO`, :data:`SERIES`) and the families it judges live here.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlbench.grid.tuning import Pick, best_validation, picks, tested_records
from tlbench.plugin.options import set_block_options
from tlbench.plugin.specs import PluginError, resolved_family
from tlbench.report import stats
from tlbench.results import (
    KeptPredictions,
    RunsLog,
    latest_per_cell,
    load_test_predictions,
    portable_options,
)
from tlbench.train.metrics import stopped_improving

if TYPE_CHECKING:
    import pandas as pd

    from tlbench.plugin.registry import Registries


log = logging.getLogger(__name__)
SCENARIO = ["dataset", "train_size", "backbone"]
SERIES = [*SCENARIO, "strategy_label"]
TRAINED_FAMILIES = ("extractor", "finetune-part", "finetune-all", "scratch")  # judged; evidence never
TRANSFER_FAMILIES = ("extractor", "finetune-part", "finetune-all")  # what a transferability score predicts
SCORES = {"logme": "LogME", "leep": "LEEP", "leep_gain": "LEEP gain", "nce": "NCE", "hscore": "H-score"}  # record key: as shown


@dataclass(frozen=True)
class RunCells:
    """A run's latest record per cell, its tuned series' picks, and the cells that enter the test
    statistics (:func:`~tlbench.grid.tuning.tested_records`) as a :func:`cells_frame`."""

    records: list[dict[str, Any]]
    tuned: list[Pick]
    tested: list[Mapping[str, Any]]
    cells: pd.DataFrame


def read_run(run_dir: Path, registries: Registries | None = None) -> RunCells:
    """The :class:`RunCells` of the run in ``run_dir`` (its ``runs.jsonl``)."""
    records = latest_per_cell(RunsLog(run_dir).records())
    tuned = picks(records)
    tested = tested_records(records, tuned)
    return RunCells(records, tuned, tested, cells_frame(tested, run_dir, registries, tuned))


def cells_frame(records: Sequence[Mapping[str, Any]], run_dir: Path | None = None, registries: Registries | None = None,
                tuned: Iterable[Pick] = ()) -> pd.DataFrame:
    """One row per cell with the identity, scenario, metrics and kept test predictions the report uses.

    A record's predictions lie under its own run directory: ``record["run_dir"]`` in a combined
    ``runs.jsonl``, else ``run_dir``. The evaluation cells of a tuned series (``tuned``) are
    labelled by their series, and carry their pick's validation accuracy over the selection seeds.
    """
    import pandas as pd

    registries = _registries(registries)  # collected once, not once per row that asks
    # a dataset is its name and options, not where it lies: runs made on other machines compare
    dataset_keys = _varying_keys((r["dataset"], _without(portable_options(r["params"]["dataset"]), "train_size"))
                                 for r in records)
    backbone_keys = _varying_keys((r["backbone"], r["params"]["backbone"]) for r in records)
    chosen: dict[str | None, Pick] = {p.series_id: p for p in tuned if p.chosen is not None}  # looked up with None too
    rows = []
    for r in records:
        params, metrics = r["params"], r.get("metrics") or {}
        pick = chosen.get((r.get("tune") or {}).get("series_id"))
        info = metrics.get("dataset_info") or {}
        scores = metrics.get("transferability") or {}
        home = r.get("run_dir") or run_dir
        rows.append({
            "dataset": _label(r["dataset"], params["dataset"], dataset_keys[r["dataset"]]),
            "dataset_name": r["dataset"], "dataset_plugin": (r.get("plugins") or {}).get("dataset", r["dataset"]),
            "train_size": str(params["dataset"].get("train_size", "all")),
            "train_images": info.get("train_size_real", metrics.get("train_images")),
            "classes": len(metrics["confusion_matrix"]) if metrics.get("confusion_matrix") else None,
            "domain_option": params["dataset"].get("domain"), "domain_info": info.get("domain"),
            "backbone": _label(r["backbone"], params["backbone"], backbone_keys[r["backbone"]]),
            "backbone_plugin": (r.get("plugins") or {}).get("backbone", r["backbone"]),
            "backbone_weights": params["backbone"].get("weights"),
            "strategy": r["strategy"], "family": strategy_family(r, registries),
            "strategy_params": {**params.get("train", {}), **params["strategy"]},
            "strategy_plugin": (r.get("plugins") or {}).get("strategy", r["strategy"]),
            "seed": r["seed"], "status": r["status"], "val_accuracy": best_validation_accuracy(metrics),
            "converged": record_converged(metrics, params.get("train") or {}),
            "series_label": pick.series if pick else None, "selection_val": pick.chosen.val_accuracy if pick and pick.chosen else None,
            "best_epoch": _best_of_run(metrics),
            "measures": bool(scores), **{name: scores.get(name) for name in SCORES},
            "shift": metrics.get("shift"), "shift_profile": metrics.get("shift_profile"),
            "trained_blocks": tuple(metrics["trained_blocks"]) if metrics.get("trained_blocks") is not None else None,
            "confusion_matrix": metrics.get("confusion_matrix"), "class_names": info.get("class_names"),
            "predictions": (load_test_predictions(Path(home), metrics.get("predictions_file"))
                            if home is not None and r["status"] == "ok" else None),
            **{k: metrics.get(k) for k in ("test_accuracy", "test_loss", "epoch_seconds", "wall_seconds",
                                          "trainable_params", "non_trainable_params", "test_images", "blocks",
                                          "trainable_blocks", "image_size")},
        })
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    strategy_keys = _varying_keys(((row.dataset, row.backbone, row.strategy), row.strategy_params)
                                  for row in frame.itertuples())
    # the options that differ, and always which blocks train; a tuned series' own label (a missing one
    # reads NaN, not None, in a column of strings under pandas 3)
    frame["strategy_label"] = [
        _label(row.strategy, row.strategy_params, _shown_options(
            row.strategy_plugin, row.strategy_params, strategy_keys[(row.dataset, row.backbone, row.strategy)],
            registries)) if pd.isna(row.series_label) else row.series_label for row in frame.itertuples()]
    domains = {name: dataset_domain(frame[frame.dataset_name == name], registries)
               for name in frame.dataset_name.unique()}
    frame["domain"] = frame.dataset_name.map(lambda n: domains[n][0])
    frame["domain_source"] = frame.dataset_name.map(lambda n: domains[n][1])
    for column in ("test_accuracy", "val_accuracy", "test_loss", "epoch_seconds", "wall_seconds", "trainable_params",
                   "non_trainable_params", "test_images", "train_images", "classes", "blocks", "trainable_blocks",
                   "shift", *SCORES):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["classes"] = _class_counts(frame, registries)
    return frame


def _class_counts(cells: pd.DataFrame, registries: Registries | None) -> pd.Series:
    """Each cell's number of classes: its confusion matrix's, else its dataset's (another cell's
    matrix, else what the dataset plugin declares); a transferability cell has no matrix."""
    known = cells.groupby("dataset").classes.transform("max")
    missing = known.isna()
    if missing.any():
        declared = {p: _declared_classes(p, registries) for p in cells.dataset_plugin[missing].unique()}
        known = known.fillna(cells.dataset_plugin.map(declared))
    return cells.classes.fillna(known)


def _declared_classes(plugin: str, registries: Registries | None) -> float:
    try:
        return _registries(registries).datasets.get(plugin).num_classes or math.nan
    except PluginError:
        return math.nan


def best_validation_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """Validation accuracy of the best (restored) epoch; None without training or validation."""
    best = best_validation(metrics)
    return best[0] if best else None


def _best_of_run(metrics: Mapping[str, Any]) -> str | None:
    """'best epoch/epochs run' (``3/3``: the last epoch was the best), None without a history."""
    history = metrics.get("history")
    return f"{metrics.get('best_epoch')}/{len(history)}" if isinstance(history, list) and history else None


def record_converged(metrics: Mapping[str, Any], train: Mapping[str, Any]) -> bool | None:
    """``metrics.converged`` as recorded; for a record written before it, from its history and
    ``patience`` (:func:`tlbench.train.metrics.stopped_improving`); None for a cell that did not train."""
    if isinstance(metrics.get("converged"), bool):
        converged: bool = metrics["converged"]
        return converged
    history = metrics.get("history")
    if not isinstance(history, list) or not history:
        return None
    patience = train.get("patience")
    return stopped_improving(len(history), metrics.get("best_epoch"), patience if isinstance(patience, int) else None)


def strategy_family(record: Mapping[str, Any], registries: Registries | None = None) -> str:
    """The cell's family in the four-scenario rule: the one it recorded (``metrics.family``), else
    the one its strategy plugin declares (``finetune`` resolved by the blocks that trained)."""
    metrics = record.get("metrics") or {}
    if metrics.get("family"):
        recorded: str = metrics["family"]
        return recorded
    plugin = (record.get("plugins") or {}).get("strategy", record["strategy"])
    strategies = _registries(registries).strategies
    family = strategies.get(plugin).family if plugin in strategies else None
    return resolved_family(family, metrics.get("trainable_blocks"), metrics.get("blocks")) if family else "unknown"


def _registries(registries: Registries | None) -> Registries:
    if registries is None:
        from tlbench.plugin.registry import collect

        registries = collect()
    return registries


def dataset_domain(cells: pd.DataFrame, registries: Registries | None = None) -> tuple[str, str]:
    """The domain of one dataset and where it was read: grid option, record, plugin, or unknown."""
    for column, source in (("domain_option", "dataset option"), ("domain_info", "dataset record")):
        known = [d for d in cells[column] if isinstance(d, str) and d and d != "unknown"]
        if known:
            return known[0], source
    plugin = cells.dataset_plugin.iloc[0]
    try:
        domain = _registries(registries).datasets.get(plugin).domain
    except PluginError as exc:  # a dataset plugin no longer installed only costs the domain
        log.info("no domain for dataset plugin %r: %s", plugin, exc)
        return "unknown", "named nowhere"
    return (domain, f"dataset plugin {plugin}") if domain and domain != "unknown" else ("unknown", "named nowhere")


def series_stats(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, train size, backbone, strategy label): mean accuracy with its 95% CI,
    costs, and ``by_seed`` (seed -> (accuracy, kept test predictions or None)) for comparisons."""
    import pandas as pd

    rows = []
    for key, group in cells.groupby(SERIES, sort=False):
        ok = group[group.status == "ok"]
        scored = ok[ok.test_accuracy.notna()]
        by_seed = {int(r.seed): (float(r.test_accuracy), r.predictions) for r in scored.itertuples()}
        accuracy = _interval([a for a, _ in by_seed.values()], [p for _, p in by_seed.values()])
        validation = _interval(list(ok.val_accuracy.dropna()))
        selected = group.selection_val.dropna()
        rows.append({
            **dict(zip(SERIES, key, strict=True)),
            "family": group.family.iloc[0], "domain": group.domain.iloc[0],
            "domain_source": group.domain_source.iloc[0], "measures": bool(group.measures.any()),
            "train_images": group.train_images.max(), "classes": group.classes.max(),
            "test_images": scored.test_images.min(), "seeds": len(by_seed), "by_seed": by_seed,
            "converged_seeds": int((scored.converged == True).sum()),  # noqa: E712 (None is not True)
            "best_epochs": list(scored.best_epoch),
            "accuracy": accuracy.mean, "ci_low": accuracy.low, "ci_high": accuracy.high,
            "val_accuracy": validation.mean, "val_low": validation.low, "val_high": validation.high,
            "ranking_val": float(selected.iloc[0]) if len(selected) else validation.mean,
            "loss": ok.test_loss.mean(), "epoch_seconds": ok.epoch_seconds.mean(), "wall_seconds": ok.wall_seconds.mean(),
            "trainable_params": _span(ok.trainable_params), "non_trainable_params": _span(ok.non_trainable_params),
            "blocks": ok.blocks.max(),
            "trainable_blocks": ok.trainable_blocks.median(),
            "shift_cells": [(r.shift, r.backbone_plugin, r.backbone_weights, number(r.image_size))
                            for r in ok[ok["shift"].notna()].itertuples()],
            "score_values": {score: list(ok[score].dropna()) for score in SCORES},
            "status": ", ".join(f"{s} {n}" for s, n in group.status.value_counts(sort=False).items()),
        })
    frame = pd.DataFrame(rows)
    frame["images_per_class"] = frame.train_images / frame.classes
    return frame


def _interval(accuracies: list[float], predictions: list[KeptPredictions | None] | None = None) -> stats.Interval:
    """The mean with its 95% CI (:func:`tlbench.report.stats.mean_ci`); NaN without values."""
    if not accuracies:
        return stats.Interval(math.nan, math.nan, math.nan, "no finished seed")
    return stats.mean_ci(accuracies, [None if p is None else p.correct for p in predictions] if predictions else None)


def _varying_keys(items: Iterable[tuple[Any, Mapping[str, Any]]]) -> dict[Any, list[str]]:
    """For each group, the option names whose values differ between its records (an option
    some records lack differs too)."""
    seen: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for group, options in items:
        seen[group].append(options)
    varying = {}
    for group, records in seen.items():
        names = {name for options in records for name in options}
        varying[group] = sorted(name for name in names if len({json.dumps(options.get(name, "<absent>"), sort_keys=True,
                                                                          default=str) for options in records}) > 1)
    return defaultdict(list, varying)


def _shown_options(plugin: str, options: Mapping[str, Any], varying: Iterable[str],
                   registries: Registries | None = None) -> list[str]:
    """The options a strategy label shows: those that differ within its group, and always the
    strategy's block options (``depth``, ``blocks``); a selection hides the option it replaces."""
    strategies = _registries(registries).strategies
    kinds = strategies.get(plugin).option_kinds if plugin in strategies else {}
    blocks = set_block_options(kinds, options)
    replaced = {getattr(kind, "replaces", None) for kind in blocks.values()}
    return sorted((set(varying) | set(blocks)) - replaced)


def _label(name: str, options: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``name[key=value,...]`` for the ``keys`` the options hold."""
    inner = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                     for k in keys if k in options for v in [options[k]])
    return f"{name}[{inner}]" if inner else name


def _without(options: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != key}


def _span(values: pd.Series) -> str:
    found = sorted({int(v) for v in values.dropna()})
    if not found:
        return "-"
    return f"{found[0]:,}" if len(found) == 1 else f"{found[0]:,}-{found[-1]:,}"


def known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def number(value: Any) -> float | None:
    return float(value) if known(value) else None


def mean_of(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


