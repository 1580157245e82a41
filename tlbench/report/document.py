"""The comparison report of a run directory: verdicts, tables, plots, as ``report.md`` and ``report.html``.

Everything shown comes from ``DIR/runs.jsonl`` (the latest line of each cell) and the test
predictions each trained cell kept: :mod:`tlbench.report.frame` makes the frames,
:mod:`tlbench.report.verdicts` judges the rule, :mod:`tlbench.report.plots` draws and
:mod:`tlbench.report.render` writes; this module composes the document and writes the files.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.files import read_regular, write_text
from tlbench.grid.tuning import Pick
from tlbench.report import stats
from tlbench.report.frame import SCORES, known, mean_of, read_run, series_stats, strategy_family
from tlbench.report.render import Block, Bullets, Heading, Image, Paragraph, Section, Table, render_html, render_markdown
from tlbench.report.verdicts import (
    RULES,
    SHIFT_THRESHOLD,
    ShiftThreshold,
    Tau,
    Verdict,
    ci_text,
    scenario_verdicts,
    tau_text,
    transferability_taus,
)
from tlbench.results import (
    RunsLog,
    stored_grid_name,
    stored_report_settings,
)

if TYPE_CHECKING:
    import pandas as pd

    from tlbench.plugin.registry import Registries

log = logging.getLogger(__name__)
REPORT_FILE, HTML_FILE, VERDICTS_FILE = "report.md", "report.html", "verdicts.json"
MANIFEST_FILE = ".tlbench-report.json"  # the files the last report wrote; a stale plot is deleted only when listed there
SMALL_PER_CLASS = 1000  # at most this many training images per class = a "small" target set (the
# textbook treats both of its projects, 101 and 171 images per class, as small)
SIMILAR_DOMAINS = ("natural-photo",)  # domains counted as similar to ImageNet


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


def write_report(run_dir: str | os.PathLike[str], *, small_per_class: int | None = None, grid: Mapping[str, Any] | None = None,
                 similar_domains: Iterable[str] = SIMILAR_DOMAINS, registries: Registries | None = None) -> list[Path]:
    """Write ``report.md``, ``report.html``, ``verdicts.json`` and the PNG plots, each whole or not at
    all, and list them in :data:`MANIFEST_FILE`; return the written paths.

    The size threshold is ``small_per_class``, else the ``grid``'s report settings (the runner
    passes its grid's), else the settings stored with the run (env.json, or combined.json).
    ``registries`` (from :func:`tlbench.plugin.registry.collect`) supplies dataset domains and class
    counts that the records do not carry; collected once if not given.
    """
    from tlbench.report.plots import PLOTS, write_plots  # matplotlib loads only when a report is written

    run_dir = Path(run_dir)
    settings = ReportSettings.resolve(run_dir, small_per_class, grid)
    title = f"tlbench report: {stored_grid_name(run_dir) or run_dir.name}"  # the grid's name; a folder's for old runs
    run = read_run(run_dir, registries)
    cells = run.cells
    plots: list[Path] = []
    verdicts: list[Verdict] = []
    if len(cells):
        series = series_stats(cells)
        verdicts = scenario_verdicts(series, settings.small_per_class, frozenset(similar_domains))
        taus = transferability_taus(series)
        plots = write_plots(run_dir, cells, series, verdicts, taus)
        document = report_document(title, cells, series, verdicts, taus, plots, settings, similar_domains,
                                   _tuning_blocks(run.tuned, run.records, registries), len(run.records) - len(run.tested))
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
                    tuning: list[Block] | None = None, selection_cells: int = 0) -> list[Block]:
    """The report as blocks that :mod:`tlbench.report.render` writes as Markdown and as HTML: first the
    answer (the four scenarios, the forest plot, how to read them, the verdict table), then the evidence.
    ``selection_cells`` counts the tuning cells that only chose on validation (not in ``cells``)."""
    from tlbench.report.plots import FOREST, PLOTS  # matplotlib loads only when a report is written

    counts = ", ".join(f"{n} {s}" for s, n in cells.status.value_counts(sort=False).items())
    forest = [Image(p, PLOTS[p.name]) for p in plots if p.name == FOREST]
    return [
        Heading(title),
        Paragraph(f"{len(cells)} cells ({counts}) from `runs.jsonl` (the latest line of each cell)"
                  + (f", besides {selection_cells} tuning cells that only chose on validation (see Tuning)"
                     if selection_cells else "") + f". {settings.sentence()}"),
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
             *(_fixed(mean_of(r.score_values[score]), 4) for score in SCORES), str(len(r.score_values["logme"])))
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
                            "backbone's mean test accuracy with its transfer strategy (extractor or fine-tuning; "
                            "scratch does not use the pretrained features the scores judge) chosen on validation "
                            "accuracy, never on test. 1 = the same "
                            "order, -1 = reversed; NaN when a backbone lacks the score (LEEP and NCE need an ImageNet "
                            "head)."))
    blocks.append(Table(("dataset", "train_size", "score", "backbones (n)", "Kendall's tau", "weighted tau", "note"),
                        [(t.dataset, t.train_size, SCORES[t.score], str(t.backbones), tau_text(t.tau, 3), tau_text(t.weighted_tau, 3),
                          t.note) for t in taus]))
    return blocks


def _fixed(value: float | None, digits: int) -> str:
    return f"{value:.{digits}f}" if known(value) else "-"


def _count(value: float | None, unknown: str = "?") -> str:
    """A count for people: ``10``, never ``10.0``."""
    return f"{value:.0f}" if known(value) else unknown


