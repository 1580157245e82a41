"""The comparison report of a run directory: verdicts, tables, plots, as ``report.md`` and ``report.html``.

Everything shown comes from ``DIR/runs.jsonl`` (the latest line of each cell) and the test
predictions each trained cell kept. Per dataset, train size and backbone (a *scenario row*)
the textbook's rule (small/large target data x similar/different domain) names the strategy
families to use; the best of them is compared with the best of the other trained families,
paired by seed and test image (:mod:`tlbench.report.stats`), and the row gets a verdict.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tlbench.files import read_regular, write_text
from tlbench.grid.tuning import Pick, best_validation, picks, tested_records
from tlbench.plugin.options import set_block_options
from tlbench.plugin.specs import PluginError, resolved_family
from tlbench.report import stats
from tlbench.report.render import Block, Bullets, Heading, Image, Paragraph, Section, Table
from tlbench.results import (
    KeptPredictions,
    RunsLog,
    latest_per_cell,
    load_test_predictions,
    portable_options,
    stored_grid_name,
    stored_report_settings,
)
from tlbench.train.metrics import stopped_improving

if TYPE_CHECKING:
    import pandas as pd

    from tlbench.plugin.registry import Registries

log = logging.getLogger(__name__)
REPORT_FILE, HTML_FILE, VERDICTS_FILE = "report.md", "report.html", "verdicts.json"
MANIFEST_FILE = ".tlbench-report.json"  # the files the last report wrote; a stale plot is deleted only when listed there
SMALL_PER_CLASS = 1000  # at most this many training images per class = a "small" target set (the
# textbook treats both of its projects, 101 and 171 images per class, as small)
SIMILAR_DOMAINS = ("natural-photo",)  # domains counted as similar to ImageNet
SCENARIO = ["dataset", "train_size", "backbone"]
SERIES = [*SCENARIO, "strategy_label"]
TRAINED_FAMILIES = ("extractor", "finetune-part", "finetune-all", "scratch")  # judged; evidence never
TRANSFER_FAMILIES = ("extractor", "finetune-part", "finetune-all")  # what a transferability score predicts
SCORES = {"logme": "LogME", "leep": "LEEP", "leep_gain": "LEEP gain", "nce": "NCE", "hscore": "H-score"}  # record key: as shown
VERDICT_KEYS = ("dataset", "train_size", "backbone", "images_per_class", "size", "domain", "domain_label",
                "shift", "shift_threshold", "shift_reads", "recommended", "best", "alternative", "difference", "ci_low",
                "ci_high", "p_value", "verdict", "method", "converged")


@dataclass(frozen=True)
class Rule:
    advice: str
    families: frozenset[str]  # strategy families that follow the advice


RULES = {
    ("small", "similar"): Rule("feature extractor", frozenset({"extractor"})),
    ("large", "similar"): Rule("fine-tune (a part or the whole)", frozenset({"finetune-part", "finetune-all"})),
    ("small", "different"): Rule("fine-tune a part (or extractor)", frozenset({"finetune-part", "extractor"})),
    ("large", "different"): Rule("fine-tune the whole network", frozenset({"finetune-all"})),
}


@dataclass(frozen=True)
class ShiftThreshold:
    """The summary shift (``metrics.shift``) at or below which a target reads *similar* to ImageNet.
    Shift values depend on the network and the image size: it holds for one backbone (its registered
    plugin, with its ImageNet weights) at one image size, and is compared with no other."""

    value: float
    backbone: str
    image_size: int
    chosen: str  # how the value was chosen, and on what

    def reads(self, shift: float) -> str:
        return "similar" if shift <= self.value else "different"

    def misses(self, backbone: str, weights: Any, image_size: Any) -> str | None:
        """Why a shift cell of this backbone plugin, ``weights`` option and image size cannot be compared; None if it can."""
        if backbone != self.backbone or weights not in (None, "pretrained"):
            return "no threshold for this backbone"
        return None if image_size is None or image_size == self.image_size else "no threshold for this image size"


# Chosen on the corruption ladder (benchmarks/shift-ladder.yaml, benchmarks/shift_ladder.py; the table and the rule in
# results/reference/shift-ladder/ladder.json), never on the datasets a report judges
SHIFT_THRESHOLD = ShiftThreshold(
    value=0.649, backbone="timm/mobilenetv2_100", image_size=96,
    chosen="chosen on a corruption ladder of dogs-vs-cats images (benchmarks/shift-ladder.yaml; "
           "results/reference/shift-ladder/ladder.json), never on the datasets a report judges: per corruption, the "
           "summary shift at which a frozen extractor's validation accuracy first falls 5 points below the clean "
           "images' (blur 0.342, noise 0.499, contrast 0.799, inversion 2.806; grayscale never falls that far), and "
           "the median of those. It is fragile: 0.499 without inversion, whose ladder does not rise with severity")


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class ReportSettings:
    """The report's size threshold and who chose it: ``flag``, ``grid``, ``grids`` (of combined runs), ``default``."""

    small_per_class: int = SMALL_PER_CLASS
    set_by: str = "default"

    @classmethod
    def resolve(cls, run_dir: Path, small_per_class: int | None = None,
                grid: Mapping[str, Any] | None = None) -> ReportSettings:
        """The flag, else the grid's ``report:`` settings (given, or stored with the run), else the default."""
        if small_per_class is not None:
            return cls(small_per_class, "flag")
        stored = dict(grid) if grid is not None else stored_report_settings(run_dir)
        value = stored.get("small_per_class")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            return cls()
        return cls(value, stored.get("set_by", "grid"))

    @classmethod
    def of_sources(cls, run_dirs: Iterable[str | os.PathLike[str]], small_per_class: int | None = None) -> ReportSettings:
        """For a combined report: the flag, else the threshold every source used; ValueError when they differ."""
        if small_per_class is not None:
            return cls(small_per_class, "flag")
        used = {str(d): cls.resolve(Path(d)) for d in run_dirs}
        values = {s.small_per_class for s in used.values()}
        if len(values) > 1:
            listed = ", ".join(f"{d}: {s.small_per_class} ({s.set_by})" for d, s in used.items())
            raise ValueError(f"the runs were reported with different small_per_class thresholds ({listed}); "
                             "give --small-per-class N for the combined report")
        chosen = next(iter(used.values()), cls())
        return cls(chosen.small_per_class, "grids" if chosen.set_by != "default" else "default")

    def stored(self) -> dict[str, Any]:
        """What ``combined.json`` records under ``report``."""
        return {"small_per_class": self.small_per_class, "set_by": self.set_by}

    def sentence(self) -> str:
        where = {"flag": f"given as `--small-per-class {self.small_per_class}`",
                 "grid": f"set by the grid (`report: {{small_per_class: {self.small_per_class}}}`, stored in env.json)",
                 "grids": f"set by the grids of the combined runs (`report.small_per_class: {self.small_per_class}`)",
                 "default": "the default (`tlbench report --small-per-class N` or the grid's `report:` changes it)"
                 }[self.set_by]
        text = (f"A target set is *small* with at most {self.small_per_class} training images per class, *large* "
                f"above: {where}.")
        if self.set_by in ("grid", "grids"):
            text += (f" \"Large\" is relative to this setting ({self.small_per_class} per class), not to the "
                     f"textbook's default of {SMALL_PER_CLASS}.")
        return text


# ---------------------------------------------------------------- the report


def write_report(run_dir: str | os.PathLike[str], *, small_per_class: int | None = None, grid: Mapping[str, Any] | None = None,
                 similar_domains: Iterable[str] = SIMILAR_DOMAINS, registries: Registries | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``verdicts.json`` and the PNG plots, each whole or not at
    all, and list them in :data:`MANIFEST_FILE`; return the written paths.

    The size threshold is ``small_per_class``, else the ``grid``'s report settings (the runner
    passes its grid's), else the settings stored with the run (env.json, or combined.json).
    ``registries`` (from :func:`tlbench.plugin.registry.collect`) supplies dataset domains and class
    counts that the records do not carry; collected once if not given.
    """
    from tlbench.report.plots import PLOTS, write_plots
    from tlbench.report.render import render_html, render_markdown

    run_dir = Path(run_dir)
    settings = ReportSettings.resolve(run_dir, small_per_class, grid)
    title = f"tlbench report: {stored_grid_name(run_dir) or run_dir.name}"  # the grid's name; a folder's for old runs
    records = latest_per_cell(RunsLog(run_dir).records())
    tuned = picks(records)
    cells = cells_frame(tested_records(records, tuned), run_dir, registries, tuned)
    plots: list[Path] = []
    verdicts: list[Verdict] = []
    if len(cells):
        series = series_stats(cells)
        verdicts = scenario_verdicts(series, settings.small_per_class, frozenset(similar_domains))
        taus = transferability_taus(series)
        plots = write_plots(run_dir, cells, series, verdicts, taus)
        document = report_document(title, cells, series, verdicts, taus, plots, settings, similar_domains,
                                   _tuning_blocks(tuned, records, registries))
    else:
        document = [Heading(title),
                    Paragraph(f"No cells recorded in `{RunsLog(run_dir).path}` yet.")]
    markdown, html, table = run_dir / REPORT_FILE, run_dir / HTML_FILE, run_dir / VERDICTS_FILE
    write_text(markdown, render_markdown(document))
    write_text(html, render_html(document, title=title))
    write_text(table, json.dumps([v.record() for v in verdicts], indent=2, allow_nan=False) + "\n")
    written = [markdown, html, table, *plots]
    for stale in set(PLOTS).intersection(_manifest(run_dir)) - {p.name for p in written}:
        (run_dir / stale).unlink(missing_ok=True)
    write_text(run_dir / MANIFEST_FILE, json.dumps({"written_by": "tlbench report", "files": [p.name for p in written]},
                                                   indent=2) + "\n")
    return written


def _manifest(run_dir: Path) -> list[str]:
    """The files the last report of ``run_dir`` wrote (its manifest): the only ones a new report may delete."""
    path = run_dir / MANIFEST_FILE
    try:
        files = json.loads(read_regular(path, limit=2**16))["files"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s: unreadable (%s); no plot of an earlier report is deleted", path, exc)
        return []
    return [name for name in files if isinstance(name, str)] if isinstance(files, list) else []


# ---------------------------------------------------------------- records -> frames


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
    frame["strategy_label"] = [  # the options that differ, and always which blocks train
        _label(row.strategy, row.strategy_params, _shown_options(
            row.strategy_plugin, row.strategy_params, strategy_keys[(row.dataset, row.backbone, row.strategy)],
            registries)) if row.series_label is None else row.series_label for row in frame.itertuples()]
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
            "shift_cells": [(r.shift, r.backbone_plugin, r.backbone_weights, _number(r.image_size))
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


# ---------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    """One scenario row: the fields of ``verdicts.json`` (:data:`VERDICT_KEYS`), then what the report shows."""

    dataset: str
    train_size: str
    backbone: str
    images_per_class: float | None
    size: str
    domain: str
    domain_label: str
    shift: float | None
    shift_threshold: float | None
    shift_reads: str | None  # similar, different, or why it is not compared (no threshold for this backbone)
    recommended: list[str]
    best: str | None
    alternative: str | None
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str
    method: str
    advice: str = "-"
    domain_source: str = "named nowhere"
    recommended_is_best: bool = False
    best_accuracy: str = "-"
    alternative_accuracy: str = "-"
    converged: bool | None = None  # both picks converged in most of their seeds; None without both picks
    comparison: stats.Comparison | None = field(default=None, repr=False)

    @property
    def shift_disagrees(self) -> bool:
        """The measured shift reads the other side of the threshold than the grid's label."""
        return self.shift_threshold is not None and self.domain != "unknown" and self.shift_reads != self.domain

    def recommended_minus_other(self) -> tuple[float, float, float] | None:
        """The difference with its 95% CI signed for the rule: the recommended side minus the other; None untested."""
        if self.difference is None or self.ci_low is None or self.ci_high is None:
            return None
        if self.recommended_is_best:
            return self.difference, self.ci_low, self.ci_high
        return -self.difference, -self.ci_high, -self.ci_low

    def record(self) -> dict[str, Any]:
        """The row of ``verdicts.json``: exactly :data:`VERDICT_KEYS`, NaN written as null."""
        values = asdict(self)
        return {k: None if isinstance(values[k], float) and math.isnan(values[k]) else values[k] for k in VERDICT_KEYS}


def scenario_verdicts(series: pd.DataFrame, small_per_class: int, similar_domains: frozenset[str],
                      shift_threshold: ShiftThreshold = SHIFT_THRESHOLD) -> list[Verdict]:
    """Per dataset, train size and backbone: the rule's families against the others, paired and
    Holm-adjusted over the rows (:mod:`tlbench.report.stats`)."""
    verdicts = []
    for (dataset, train_size, backbone), group in series.groupby(SCENARIO, sort=False):
        first = group.iloc[0]
        per_class = group.images_per_class.max()
        per_class = float(per_class) if _known(per_class) else None
        size = "unknown" if per_class is None else "small" if per_class <= small_per_class else "large"
        domain = "unknown" if first.domain == "unknown" else "similar" if first.domain in similar_domains else "different"
        shift = _scenario_shift(group, shift_threshold)
        rule = RULES.get((size, domain))
        judged = group[group.family.isin(TRAINED_FAMILIES) & (group.seeds > 0)]
        follows = judged.family.isin(rule.families) if rule else judged.family.isin(())
        recommended_best, other_best = _top(judged[follows]), _top(judged[~follows])
        recommended_is_best = other_best is None or (
            recommended_best is not None and recommended_best.accuracy >= other_best.accuracy)
        best, alternative = (recommended_best, other_best) if recommended_is_best else (other_best, recommended_best)
        comparison, method = _compare(best, alternative, rule, size, domain)
        difference, ci_low, ci_high, p_value = (_number(getattr(comparison, k, None))
                                                for k in ("difference", "ci_low", "ci_high", "p_value"))
        verdicts.append(Verdict(
            dataset, train_size, backbone, per_class, size, domain, first.domain, *shift,
            sorted(rule.families) if rule else [], best.strategy_label if best is not None else None,
            alternative.strategy_label if alternative is not None else None,
            difference, ci_low, ci_high, p_value,
            stats.NOT_COVERED, method, advice=rule.advice if rule else "-", domain_source=first.domain_source,
            recommended_is_best=bool(rule) and recommended_is_best and recommended_best is not None,
            best_accuracy=_accuracy_text(best), alternative_accuracy=_accuracy_text(alternative),
            converged=None if best is None or alternative is None else all(
                2 * side.converged_seeds > side.seeds for side in (best, alternative)),
            comparison=comparison))
    tested = [v.comparison is not None and math.isfinite(v.comparison.ci_low) for v in verdicts]
    # cast: a tested row's p_value is a number (an unknown one, None, reads as NaN in holm's float64 array, as NaN would)
    adjusted = stats.holm(cast("list[float]", [v.p_value if test else math.nan for v, test in zip(verdicts, tested, strict=True)]))
    for verdict, test, p_value in zip(verdicts, tested, adjusted, strict=True):
        if verdict.comparison is not None:
            verdict.verdict = stats.judge(verdict.comparison, verdict.recommended_is_best, p_value if test else None)
            verdict.p_value = p_value if test else None
            verdict.method += f"; p-value Holm-adjusted over {_rows(sum(tested))}" if test else ""
    return verdicts


def _rows(count: int) -> str:
    return "1 compared row" if count == 1 else f"the {count} compared rows"


def _scenario_shift(group: pd.DataFrame, threshold: ShiftThreshold) -> tuple[float | None, float | None, str | None]:
    """The row's measured shift (the mean of its ``shift`` cells' ``metrics.shift``, over seeds), the
    threshold it was compared with and what it reads; only cells of the threshold's backbone and
    image size are compared, else it reads why not. ``(None, None, None)`` without a shift cell."""
    cells = [cell for cells in group.shift_cells for cell in cells]
    if not cells:
        return None, None, None
    comparable = [value for value, *backbone in cells if threshold.misses(*backbone) is None]
    if not comparable:
        return float(np.mean([value for value, *_ in cells])), None, threshold.misses(*cells[0][1:])
    shift = float(np.mean(comparable))
    return shift, threshold.value, threshold.reads(shift)


def by_validation(rows: pd.DataFrame, column: str = "ranking_val") -> pd.DataFrame:
    """``rows`` best first by validation accuracy (a series: its mean best-epoch validation
    accuracy, a tuned one its pick's over the selection seeds; ties in grid order; without one,
    last). How the report ranks anything: never by test accuracy, so that the test images judge
    a choice they did not make."""
    return rows.sort_values(column, ascending=False, kind="stable", na_position="last")


def _top(candidates: pd.DataFrame) -> pd.Series | None:
    """The series ranked first :func:`by_validation`, or None."""
    return by_validation(candidates).iloc[0] if len(candidates) else None


def _compare(best: pd.Series | None, alternative: pd.Series | None, rule: Rule | None, size: str,
             domain: str) -> tuple[stats.Comparison | None, str]:
    """Best minus alternative, paired by seed (and by image, from kept predictions); else why not covered."""
    if rule is None:
        unknown = " and ".join(what for what, value in (("size", size), ("domain", domain)) if value == "unknown")
        return None, f"the {unknown} of the target data is unknown, so the rule names no family"
    if best is None:
        return None, "no trained strategy finished with a test accuracy"
    if alternative is None:
        side = "the other trained families" if best.family in rule.families else (
            f"the recommended families ({', '.join(sorted(rule.families))})")
        return None, f"no strategy of {side} finished with a test accuracy"
    unconverged = [side for side in (best, alternative) if 2 * side.converged_seeds <= side.seeds]
    if unconverged:
        return None, "not converged: " + ", ".join(
            f"{side.strategy_label} in {side.converged_seeds} of its {side.seeds} seeds (best epoch / epochs run: "
            f"{', '.join(str(e) for e in side.best_epochs)})" for side in unconverged) + (
            "; raise `epochs` (a maximum) and set `patience`, so that training runs until it stops improving")
    a, b = best.by_seed, alternative.by_seed
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None, (f"{best.strategy_label} (seeds {sorted(a)}) and {alternative.strategy_label} "
                      f"(seeds {sorted(b)}) share no seed to pair")
    paired = all(a[s][1] is not None and b[s][1] is not None and np.array_equal(a[s][1].labels, b[s][1].labels)
                 for s in seeds)
    if paired:
        comparison = stats.paired_difference({s: a[s][1].correct for s in seeds}, {s: b[s][1].correct for s in seeds})
    else:
        comparison = stats.paired_difference_from_accuracies({s: a[s][0] for s in seeds}, {s: b[s][0] for s in seeds})
    return comparison, comparison.method


def _accuracy_text(row: pd.Series | None) -> str:
    return "-" if row is None else f"{row.strategy_label} {ci_text(row.accuracy, row.ci_low, row.ci_high)} (n={row.seeds})"


def ci_text(mean: float | None, low: float | None, high: float | None, digits: int = 3) -> str:
    """``0.920 [0.870, 0.970]``: a value with its 95% CI; the value alone without one; ``-`` without a value."""
    if not _known(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]" if _known(low) and _known(high) else text


def _known(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float | None:
    return float(value) if _known(value) else None


# ---------------------------------------------------------------- transferability against accuracy


@dataclass(frozen=True)
class Tau:
    """How well one score ranks the backbones of one dataset and train size by measured accuracy."""

    dataset: str
    train_size: str
    score: str
    backbones: int
    tau: float
    weighted_tau: float
    note: str
    points: tuple[tuple[str, float, float], ...]  # (backbone, mean score, best mean accuracy)


def transferability_taus(series: pd.DataFrame, minimum_backbones: int = 3) -> list[Tau]:
    """Kendall's tau and weighted tau between each score (mean over seeds) and each backbone's mean
    test accuracy with its best transfer strategy (chosen :func:`by_validation`), per dataset and
    train size with at least ``minimum_backbones`` backbones that have both; NaN when a score is
    missing for one of them."""
    transfer = series[series.family.isin(TRANSFER_FAMILIES) & (series.seeds > 0)]
    best = {key: by_validation(group).iloc[0].accuracy for key, group in transfer.groupby(SCENARIO, sort=False)}
    measured = series[series.measures].drop_duplicates(SCENARIO).set_index(SCENARIO).score_values
    groups: dict[tuple[str, str], list[tuple[str, dict[str, float], float]]] = defaultdict(list)
    for (dataset, train_size, backbone), values in measured.items():
        if (dataset, train_size, backbone) in best:
            groups[(dataset, train_size)].append((backbone, {s: _mean(values[s]) for s in SCORES},
                                                  float(best[(dataset, train_size, backbone)])))
    taus = []
    for (dataset, train_size), rows in groups.items():
        if len(rows) < minimum_backbones:
            continue
        accuracies = [accuracy for _, _, accuracy in rows]
        for score in SCORES:
            points = tuple((backbone, means[score], accuracy) for backbone, means, accuracy in rows)
            missing = [backbone for backbone, value, _ in points if not _known(value)]
            if missing:
                taus.append(Tau(dataset, train_size, score, len(rows), math.nan, math.nan,
                                f"missing for {', '.join(missing)}", points))
                continue
            from scipy.stats import kendalltau, weightedtau  # here: its import costs a second per report

            values = [value for _, value, _ in points]
            tau, p_value = kendalltau(values, accuracies)
            weighted = weightedtau(values, accuracies).statistic
            taus.append(Tau(dataset, train_size, score, len(rows), float(tau), float(weighted),
                            f"Kendall p = {p_value:.3g}" if _known(p_value) else "a constant ranking", points))
    return taus


# ---------------------------------------------------------------- the document


def rule_notes(settings: ReportSettings, similar_domains: Iterable[str],
               shift_threshold: ShiftThreshold = SHIFT_THRESHOLD) -> list[str]:
    """How the report applies the rule and tests it, with this report's settings (Markdown items)."""
    similar = " or ".join(sorted(similar_domains))
    return [
        f"**size**: the real training images per class (`metrics.dataset_info.train_size_real` divided by the "
        f"number of classes). {settings.sentence()}",
        "**domain**: the dataset option `domain` (`params.dataset.domain`), else a `domain` in "
        f"`metrics.dataset_info`, else the domain the dataset plugin declares; *similar* when it is {similar} "
        "(ImageNet-like photos), *different* otherwise, *unknown* (not covered) when nothing names it.",
        "**measured shift**: from the `shift` cells, `metrics.shift`, mean over the row's seeds: how far the training "
        "images are from ImageNet, by the BatchNorm statistics the pretrained network stores (per channel the "
        "symmetric KL between the images' and the stored Gaussian, averaged over channels, layers, then blocks; 0 = "
        f"like ImageNet to every layer; no label, no ImageNet image). At or below {shift_threshold.value:g} it reads "
        f"*similar*, above it *different*: a threshold for {shift_threshold.backbone} at {shift_threshold.image_size} "
        f"px ({shift_threshold.chosen}). Shift values depend on the network and the image size, so a row of another "
        "backbone, other weights or another image size is not compared (*no threshold for this backbone*, *... image "
        "size*). A row whose label and measurement disagree is flagged (!); the measurement never changes the "
        "scenario.",
        "**families**: each strategy declares one (`metrics.family`): `extractor`; `finetune-part` (some blocks "
        "trained, e.g. `finetune` below full depth or `blocks: first:1`); `finetune-all` (every block trained, e.g. "
        "depth `all`, `lp-ft`); `scratch`, the no-transfer baseline, never recommended; `evidence` (`classifier`, "
        "`transferability`, `shift`) is never judged.",
        "**small + different**: the book trains on features of earlier layers or fine-tunes the upper part; "
        "tlbench's extractor cuts at the end of the backbone, so a partial fine-tune and the extractor both count "
        "as following the rule. **large + different**: the book fine-tunes the whole network; only `finetune-all` "
        "follows the rule.",
        "**the comparison**: the best strategy (highest mean best-epoch validation accuracy over seeds: chosen on "
        "validation, never on the test images) of the families the rule "
        "recommends (✓) against the best of the other trained families, `scratch` included. *difference* = the "
        "better of the two minus the other, over the seeds both ran; *best* is the better one, *alternative* the "
        f"other. With kept predictions: {stats.SEED_UNIT_METHOD}. Without them: {stats.ACCURACIES_METHOD}; "
        "one seed without predictions cannot be tested (*not significant*, no p-value, not counted by Holm).",
        "**means**: test accuracy over seeds with the same seed-unit 95% CI (a t interval over seeds without kept "
        "predictions), clipped to [0, 1].",
        f"**verdict**: *{stats.AGREES}* when the recommended side is best and the Holm-adjusted p-value is at most "
        f"0.05; *{stats.DISAGREES}* when the other side is best and it is at most 0.05; *{stats.NOT_SIGNIFICANT}* "
        f"otherwise; *{stats.NOT_COVERED}* when one side was not run or the size or domain is unknown. "
        f"{stats.HOLM_METHOD[0].upper()}{stats.HOLM_METHOD[1:]}. The verdict is about these measurements only.",
    ]


def report_document(title: str, cells: pd.DataFrame, series: pd.DataFrame, verdicts: list[Verdict], taus: list[Tau],
                    plots: list[Path], settings: ReportSettings, similar_domains: Iterable[str],
                    tuning: list[Block] | None = None) -> list[Block]:
    """The report as blocks that :mod:`tlbench.report.render` writes as Markdown and as HTML: first the
    answer (the four scenarios, the forest plot, how to read them, the verdict table), then the evidence."""
    from tlbench.report.plots import FOREST, PLOTS

    counts = ", ".join(f"{n} {s}" for s, n in cells.status.value_counts(sort=False).items())
    forest = [Image(p, PLOTS[p.name]) for p in plots if p.name == FOREST]
    return [
        Heading(title),
        Paragraph(f"{len(cells)} cells ({counts}) from `runs.jsonl` (the latest line of each cell). "
                  f"{settings.sentence()}"),
        Section("scenarios", "The four scenarios: does the rule hold here?", [*_scenario_blocks(verdicts), *forest,
                                                                              Bullets(HOW_TO_READ)]),
        Section("verdicts", "Verdicts: the four-scenario rule, tested", _verdict_blocks(verdicts)),
        Section("strategies", "Strategies per dataset", _strategy_blocks(series)),
        *([Section("tuning", "Tuning: candidates chosen on validation", tuning)] if tuning else []),
        Section("transferability", "Transferability scores against accuracy", _transferability_blocks(series, taus)),
        Section("plots", "Plots", [Image(p, PLOTS[p.name]) for p in plots if p.name != FOREST]
                or [Paragraph("No plot: nothing finished with a test accuracy.")]),
        Section("notes", "How this report reads the rule", [Bullets(rule_notes(settings, similar_domains))]),
    ]


HOW_TO_READ = (
    "**How to read this.** A row is one dataset, train size and backbone; the rule names the strategy families it "
    "recommends (✓ in the table); its domain is the grid's label, checked against the *measured shift* (flagged (!) "
    "where they disagree).",
    "*effect* = the best recommended strategy minus the best other one, in test accuracy with its 95% CI: right of 0 "
    "(positive) favours the rule (the table's *difference* is the better side minus the other).",
    "*agrees* / *disagrees*: the recommended side is better / worse and the Holm-adjusted p is at most 0.05; "
    "*not significant* otherwise.",
    "*not covered*: a side was not run or did not converge, or the size or domain is unknown.",
    "Each side's strategy is chosen on validation accuracy; the test images only judge it. In full: "
    "[how this report reads the rule](#notes).",
)


def _scenario_blocks(verdicts: list[Verdict]) -> list[Block]:
    """The rule's 2x2 grid (size x domain): per scenario, its advice, the verdicts and the largest effect."""
    def cell(size: str, domain: str) -> str:
        rows = [v for v in verdicts if (v.size, v.domain) == (size, domain)]
        counts = ", ".join(f"{sum(v.verdict == w for v in rows)} {w}" for w in stats.VERDICTS)
        effects = [(v, e) for v in rows for e in [v.recommended_minus_other()] if e is not None]
        lines = [f"rule: {RULES[(size, domain)].advice}", f"{_rows_count(len(rows))}: {counts}" if rows else "no row"]
        if effects:
            v, (difference, low, high) = max(effects, key=lambda item: abs(item[1][0]))
            lines.append(f"largest effect: {difference:+.3f} [{low:+.3f}, {high:+.3f}] "
                         f"({v.dataset}, train_size={v.train_size}, {v.backbone})")
        return "\n".join(lines)

    table: Block = Table(("target data", "similar domain", "different domain"),
                  [(f"{size}", cell(size, "similar"), cell(size, "different")) for size in ("small", "large")],
                  kind="scenarios")
    outside = [v for v in verdicts if (v.size, v.domain) not in RULES]
    return [table] + ([Paragraph(f"{_rows_count(len(outside))} outside the grid (size or domain unknown): not covered.")]
                      if outside else [])


def _rows_count(count: int) -> str:
    return "1 row" if count == 1 else f"{count} rows"


def _tuning_blocks(tuned: list[Pick], records: list[dict[str, Any]], registries: Registries | None = None) -> list[Block]:
    """Per tuned series, its candidates' validation accuracy and the pick; per family, what choosing cost."""
    if not tuned:
        return []
    family = {r["tune"]["series_id"]: strategy_family(r, registries) for r in records if isinstance(r.get("tune"), dict)}
    costs: dict[str, list[float]] = {}
    blocks: list[Block] = []
    for pick in tuned:
        costs.setdefault(family.get(pick.series_id, "?"), []).extend(c.cell_seconds for c in pick.candidates)
        design = (f"chosen on the selection seeds {_seeds(pick.selection_seeds)}, tested on the evaluation seeds "
                  f"{_seeds(pick.evaluation_seeds)}" if pick.separate_seeds else
                  f"chosen and tested on the same seeds {_seeds(pick.selection_seeds)}: the weaker design (a seed's luck "
                  "shows in both; give `tune_seeds:` for fresh evaluation seeds)")
        blocks.append(Paragraph(f"**{pick.series_id}** ({family.get(pick.series_id, '?')}): {len(pick.candidates)} "
                                f"candidates, {design}." + (f" No pick: {pick.reason}." if pick.chosen is None else "")))
        rows = [(("✓ " if c is pick.chosen else "") + ", ".join(f"{k}={v}" for k, v in c.values.items()),
                 _fixed(c.val_accuracy, 4), _fixed(c.val_loss, 4), _seeds(c.seeds), _seeds(c.failed) if c.failed else "-",
                 _fixed(c.cell_seconds, 1)) for c in pick.candidates]
        blocks.append(Table(("candidate", "val accuracy (mean)", "val loss (mean)", "seeds", "failed seeds", "cell-seconds"),
                            rows))
    blocks.append(Paragraph("What choosing cost, per family (an unequal search favours the family searched more):"))
    blocks.append(Table(("family", "candidates", "cell-seconds selecting"),
                        [(f, str(len(s)), _fixed(math.fsum(s), 1)) for f, s in costs.items()]))
    return blocks


def _seeds(seeds: Iterable[int]) -> str:
    return ", ".join(str(s) for s in seeds) or "none yet"


def _verdict_blocks(verdicts: list[Verdict]) -> list[Block]:
    def ticked(text: str, recommended: bool) -> str:
        return f"✓ {text}" if recommended else text

    rows = []
    for v in verdicts:
        alternative_recommended = v.advice != "-" and not v.recommended_is_best and v.alternative is not None
        rows.append((
            v.dataset, v.train_size, v.backbone, v.verdict, v.advice, ci_text(v.difference, v.ci_low, v.ci_high),
            _fixed(v.p_value, 4), ticked(v.best_accuracy, v.recommended_is_best),
            ticked(v.alternative_accuracy, alternative_recommended), _count(v.images_per_class, "-"), v.size,
            f"{v.domain_label}: {v.domain}", _shift_text(v)))
    table = Table(("dataset", "train_size", "backbone", "verdict", "rule recommends", "difference (95% CI)", "p (Holm)",
                   "best: accuracy (95% CI)", "alternative: accuracy (95% CI)", "images/class", "size", "domain",
                   "measured shift"), rows, marks={w: f"verdict-{w.replace(' ', '-')}" for w in stats.VERDICTS},
                  kind="sortable")
    sentences = [f"**{v.verdict}**: {v.dataset}, train_size={v.train_size}, {v.backbone} ({_count(v.images_per_class)} "
                 f"training images per class: {v.size}; domain {v.domain_label} ({v.domain_source}): {v.domain}): "
                 f"{v.method}." for v in verdicts]
    return [table, Bullets(sentences)]


def _shift_text(v: Verdict) -> str:
    if v.shift is None:
        return "-"
    text = f"{v.shift:.3f} ({v.shift_reads})"
    return f"{text} (!) label says {v.domain}" if v.shift_disagrees else text


def _strategy_blocks(series: pd.DataFrame) -> list[Block]:
    blocks: list[Block] = []
    accuracy_series = series[~series.measures]
    several_sizes = accuracy_series.groupby("dataset").train_size.nunique()
    for (dataset, train_size), group in accuracy_series.groupby(["dataset", "train_size"], sort=False):
        size = f", train_size={train_size}" if several_sizes[dataset] > 1 or train_size != "all" else ""
        blocks.append(Heading(f"{dataset}{size} ({_count(group.train_images.max())} training images, "
                              f"{_count(group.test_images.min())} test images)", 3))
        blocks.append(Table(
            ("backbone", "strategy", "family", "test accuracy: mean (95% CI)", "n", "best val accuracy: mean (95% CI)",
             "test loss", "s/epoch", "s/cell", "trainable params", "non-trainable params", "status"),
            [(r.backbone, r.strategy_label, r.family, ci_text(r.accuracy, r.ci_low, r.ci_high), str(r.seeds),
              ci_text(r.val_accuracy, r.val_low, r.val_high), _fixed(r.loss, 4), _fixed(r.epoch_seconds, 2),
              _fixed(r.wall_seconds, 1), r.trainable_params, r.non_trainable_params, r.status)
             for r in group.itertuples()]))
    for dataset in several_sizes[several_sizes > 1].index:
        blocks.append(Heading(f"Accuracy vs train size: {dataset}", 3))
        subset = accuracy_series[(accuracy_series.dataset == dataset) & (accuracy_series.seeds > 0)]
        subset = subset.sort_values("train_images", kind="stable")
        sizes = list(dict.fromkeys(subset.train_size))
        images = subset.groupby("train_size", sort=False).train_images.max()
        rows = []
        for (backbone, label), group in subset.groupby(["backbone", "strategy_label"], sort=False):
            by_size = {r.train_size: ci_text(r.accuracy, r.ci_low, r.ci_high) for r in group.itertuples()}
            rows.append((backbone, label, *(by_size.get(s, "-") for s in sizes)))
        blocks.append(Table(("backbone", "strategy", *(f"train_size={s} ({_count(images[s])} images): 95% CI"
                                                       for s in sizes)), rows))
    return blocks or [Paragraph("No strategy with a test accuracy.")]


def _transferability_blocks(series: pd.DataFrame, taus: list[Tau]) -> list[Block]:
    measured = series[series.measures]
    if not len(measured):
        return [Paragraph("No `transferability` cell in this run: no scores.")]
    rows = [(r.dataset, r.train_size, r.backbone, r.strategy_label,
             *(_fixed(_mean(r.score_values[score]), 4) for score in SCORES), str(len(r.score_values["logme"])))
            for r in measured.itertuples()]
    blocks: list[Block] = [Heading("Scores per backbone", 3),
              Paragraph("Mean over seeds of each `transferability` cell's scores (higher is better; computed on the "
                        "frozen features of the training split and, for LEEP and NCE, the ImageNet head's outputs). "
                        "LEEP is the paper's, fitted and scored on the training images: above its no-information "
                        "value, the more so the fewer the images. *LEEP gain* is fitted on them and scored on the "
                        "validation images, minus the same with the training labels shuffled: about 0 when the "
                        "ImageNet head says nothing about the labels, at any number of images; a gain within a few "
                        "of the shuffles' standard deviation (`leep_shuffled_sd` in the records) does not tell."),
              Table(("dataset", "train_size", "backbone", "strategy", *SCORES.values(), "seeds"), rows)]
    if not taus:
        blocks.append(Paragraph("No rank correlation: it needs, for one dataset and train size, at least 3 backbones "
                                "with both a transferability cell and a trained transfer strategy."))
        return blocks
    blocks.append(Heading("Do the scores rank the backbones as their accuracy does?", 3))
    blocks.append(Paragraph("Does a score rank the backbones as their measured accuracy does? Kendall's tau (and "
                            "the weighted tau, which weighs the top of the ranking most) between each score and each "
                            "backbone's best mean test accuracy over the transfer strategies (extractor and "
                            "fine-tuning; scratch does not use the pretrained features the scores judge). 1 = the same "
                            "order, -1 = reversed; NaN when a backbone lacks the score (LEEP and NCE need an ImageNet "
                            "head)."))
    blocks.append(Table(("dataset", "train_size", "score", "backbones (n)", "Kendall's tau", "weighted tau", "note"),
                        [(t.dataset, t.train_size, SCORES[t.score], str(t.backbones), tau_text(t.tau, 3), tau_text(t.weighted_tau, 3),
                          t.note) for t in taus]))
    return blocks


def tau_text(value: float, digits: int = 2) -> str:
    """A rank correlation, ``NaN`` when it could not be computed."""
    return f"{value:.{digits}f}" if _known(value) else "NaN"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _fixed(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if _known(value) else "-"


def _count(value: float | None, unknown: str = "?") -> str:
    """A count for people: ``10``, never ``10.0``."""
    return f"{value:.0f}" if _known(value) else unknown
