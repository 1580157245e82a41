"""The report's plots: matplotlib on the Agg canvas (no pyplot state), Okabe-Ito colours.

Each plot is written only when it has something to show; :data:`PLOTS` names them in the
order the report shows them, with their captions.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from tlbench.files import atomic_write
from tlbench.report import stats
from tlbench.report.frame import SCENARIO, SCORES, TRAINED_FAMILIES, TRANSFER_FAMILIES
from tlbench.report.render import OKABE_ITO
from tlbench.report.verdicts import Tau, Verdict, by_validation, ci_text, tau_text

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis

FOREST = "verdict_forest.png"  # shown with the four scenarios, the others under "Plots"
PLOTS = {
    FOREST: "One line per verdict row: the best recommended strategy minus the best other one, in test accuracy with its "
            "95% CI (right of 0 favours the rule); colour = verdict; a row without a comparison is named, not drawn.",
    "accuracy_by_strategy.png": "Test accuracy by strategy, per dataset, train size and backbone: mean over seeds "
                                "with its 95% CI; colour = family, filled = a family the rule recommends.",
    "accuracy_vs_blocks.png": "Test accuracy against the number of backbone blocks trained (0 = frozen extractor), "
                              "per dataset and train size; dashed: scratch.",
    "accuracy_vs_train_size.png": "Test accuracy against training images per class, one line per strategy (95% CI).",
    "accuracy_vs_cost.png": "Test accuracy against the mean wall time of a cell; the line is the Pareto front "
                            "(nothing both cheaper and more accurate).",
    "transferability_vs_accuracy.png": "Transferability score against each backbone's best mean test accuracy, "
                                       "with Kendall's tau.",
    "shift_profile.png": "The shift profile: how far the training images are from ImageNet at each block (0 = the "
                         "stem), by the BatchNorm statistics the network stores, one line per dataset (and train size), "
                         "mean over seeds; one panel per backbone and image size. The verdict table compares the "
                         "profile's mean (`metrics.shift`) with the threshold.",
    "confusion_matrix.png": "Confusion matrix of the cell best on validation of each dataset: each cell counts the test "
                            "images of its true class (row) predicted as its column; the colour is that count's share of "
                            "the row.",
}
FAMILY_COLOURS = {"extractor": OKABE_ITO[0], "finetune-part": OKABE_ITO[2], "finetune-all": OKABE_ITO[1],
                  "scratch": OKABE_ITO[3], "evidence": OKABE_ITO[4], "unknown": "#999999"}
MARKERS = "osD^v<>pP*X"
LINESTYLES = ("-", "--", ":", "-.")
VERDICT_COLOURS = {stats.AGREES: OKABE_ITO[0], stats.DISAGREES: OKABE_ITO[3], stats.NOT_SIGNIFICANT: "#777777",
                   stats.NOT_COVERED: "#bbbbbb"}


def write_plots(run_dir: Path, cells: pd.DataFrame, series: pd.DataFrame, verdicts: list[Verdict], taus: list[Tau]) -> list[Path]:
    """Every plot with data, written into ``run_dir``, in :data:`PLOTS` order."""
    written = []
    for name, fig in figures(cells, series, verdicts, taus):
        atomic_write(run_dir / name, partial(fig.savefig, format="png", dpi=110, bbox_inches="tight"))
        written.append(run_dir / name)
    return written


def figures(cells: pd.DataFrame, series: pd.DataFrame, verdicts: list[Verdict], taus: list[Tau]) -> Iterator[tuple[str, Figure]]:
    """``(file name, figure)`` of every plot with data, in :data:`PLOTS` order."""
    done = series[(series.seeds > 0) & ~series.measures]
    makers = {FOREST: lambda: verdict_forest(verdicts),
              "accuracy_by_strategy.png": lambda: accuracy_by_strategy(done, verdicts),
              "accuracy_vs_blocks.png": lambda: accuracy_vs_blocks(done),
              "accuracy_vs_train_size.png": lambda: accuracy_vs_train_size(done),
              "accuracy_vs_cost.png": lambda: accuracy_vs_cost(done),
              "transferability_vs_accuracy.png": lambda: transferability_vs_accuracy(taus),
              "shift_profile.png": lambda: shift_profiles(cells),
              "confusion_matrix.png": lambda: confusion_matrices(cells)}
    for name in PLOTS:
        fig = makers[name]()
        if fig is not None:
            yield name, fig


def _figure(width: float, height: float, panels: int = 1, columns: int = 3, **options: Any) -> tuple[Figure, list[Axes]]:
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend state) and ``panels`` axes."""
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, columns, squeeze=False, **options).ravel())
    for extra in axes[panels:]:
        extra.set_visible(False)
    return fig, axes[:panels]


def _errors(rows: pd.DataFrame) -> np.ndarray:
    """Asymmetric error bars from the CI columns; 0 where a series has no CI."""
    low = (rows.accuracy - rows.ci_low).fillna(0).clip(lower=0)
    high = (rows.ci_high - rows.accuracy).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def _style(ax: Axes, title: str, xlabel: str, ylabel: str = "test accuracy (mean, 95% CI)", width: float | None = None) -> None:
    """Title (wrapped to ``width`` inches, so that neighbours' titles never meet), labels, grid; an accuracy axis
    stays within [0, 1]."""
    if width is not None:
        title = "\n".join(textwrap.fill(line, max(12, int(width * 11))) for line in title.split("\n"))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if "accuracy" in ylabel:
        low, high = ax.get_ylim()
        ax.set_ylim(max(low, 0.0), min(high, 1.0))


def _strategy_styles(done: pd.DataFrame) -> dict[str, tuple[str, str, str]]:
    """Each series (column ``series``) its family's colour, and a marker and line style of its own within the family."""
    styles: dict[str, tuple[str, str, str]]
    taken: dict[str, int]
    styles, taken = {}, {}
    for name, family in dict(zip(done.series, done.family, strict=True)).items():
        i = taken[family] = taken.get(family, -1) + 1
        styles[name] = (FAMILY_COLOURS.get(family, "#999999"), MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
    return styles


def _ticks_at(axis: Axis, values: Iterable[float]) -> None:
    """Major ticks at the values the data hold (not at powers of ten), written as plain numbers."""
    axis.set_major_locator(FixedLocator(sorted(set(values))))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    axis.set_minor_locator(NullLocator())


def verdict_forest(verdicts: list[Verdict]) -> Figure | None:
    """A forest plot of the verdict rows: the recommended side minus the other with its 95% CI, a line at 0;
    none when no row has a comparison."""
    if all(v.recommended_minus_other() is None for v in verdicts):
        return None
    fig, (ax,) = _figure(7.5, 1.2 + 0.38 * len(verdicts))
    for y, verdict in enumerate(verdicts):
        effect, colour = verdict.recommended_minus_other(), VERDICT_COLOURS[verdict.verdict]
        if effect is None:
            ax.text(0, y, "  no comparison", va="center", fontsize=8, color="#555555")
            continue
        difference, low, high = effect
        ax.errorbar([difference], [y], xerr=[[difference - low], [high - difference]], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(verdicts)), [_scenario_title(v.dataset, v.train_size, v.backbone) for v in verdicts],
                  fontsize=8)
    ax.set_ylim(len(verdicts) - 0.5, -0.5)  # the table's order, top down
    ax.margins(x=0.15)
    _style(ax, "", "recommended minus other: test accuracy (95% CI); right of 0 favours the rule", "")
    shown = list(dict.fromkeys(v.verdict for v in verdicts))
    fig.legend(handles=[Line2D([], [], color=VERDICT_COLOURS[w], marker="o", linestyle="", label=w) for w in shown],
               loc="outside upper center", ncol=len(shown), frameon=False)
    return fig


def _scenario_title(dataset: str, train_size: str, backbone: str | None = None) -> str:
    parts = [dataset, f"train_size={train_size}"] + ([backbone] if backbone else [])
    return ", ".join(parts)


def _family_legend(fig: Figure, families: Iterable[str], recommended_shown: bool, extra: list[Line2D] | None = None) -> None:
    handles = [Line2D([], [], color=FAMILY_COLOURS.get(f, "#999999"), marker="o", linestyle="", label=f)
               for f in families]
    if recommended_shown:
        handles.append(Line2D([], [], color="gray", marker="o", markerfacecolor="white", linestyle="",
                              label="hollow: not recommended"))
    handles += extra or []
    fig.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 6), frameon=False)


def accuracy_by_strategy(done: pd.DataFrame, verdicts: list[Verdict]) -> Figure | None:
    """Dots with 95% CI whiskers per strategy, one panel per scenario row; the y axis fits the data."""
    if not len(done):
        return None
    rules = {(v.dataset, v.train_size, v.backbone): v for v in verdicts}
    groups = list(done.groupby(SCENARIO, sort=False))
    widest = max(len(g) for _, g in groups)
    width = max(3.6, 1.4 + 0.55 * widest)
    fig, axes = _figure(width, 4.2, len(groups))
    for ax, (key, group) in zip(axes, groups, strict=True):
        verdict = rules.get(key)
        for x, row in enumerate(group.itertuples()):
            colour = FAMILY_COLOURS.get(row.family, "#999999")
            filled = verdict is None or not verdict.recommended or row.family in verdict.recommended
            ax.errorbar([x], [row.accuracy], yerr=_errors(group.iloc[[x]]), fmt="o", color=colour, capsize=4,
                        markersize=8, markerfacecolor=colour if filled else "white")
        labels = list(group.strategy_label)  # upright where short, else vertical: slanted labels cover their neighbours
        ax.set_xticks(range(len(group)), labels, rotation=0 if max(map(len, labels)) <= 8 else 90)
        ax.margins(x=0.15)
        title = _scenario_title(*key) + (f"\n{verdict.size} + {verdict.domain}: {verdict.verdict}" if verdict else "")
        _style(ax, title, "", width=width)
    _family_legend(fig, list(dict.fromkeys(done.family)), any(v.recommended for v in verdicts))
    return fig


def accuracy_vs_blocks(done: pd.DataFrame) -> Figure | None:
    """The depth curve: accuracy against blocks trained, per dataset and train size; a line per backbone
    through its best strategy at each depth, every strategy a labelled point."""
    pretrained = done[done.family.isin(TRANSFER_FAMILIES) & done.trainable_blocks.notna()]
    groups = [(key, g) for key, g in pretrained.groupby(["dataset", "train_size"], sort=False)
              if g.trainable_blocks.nunique() > 1]
    if not groups:
        return None
    fig, axes = _figure(6.0, 4.4, len(groups), columns=2)
    for ax, ((dataset, train_size), group) in zip(axes, groups, strict=True):
        labels = []
        for i, (backbone, rows) in enumerate(group.groupby("backbone", sort=False)):
            colour = OKABE_ITO[i % len(OKABE_ITO)]
            ax.errorbar(rows.trainable_blocks, rows.accuracy, yerr=_errors(rows), fmt=MARKERS[i % len(MARKERS)],
                        capsize=3, color=colour)
            best = by_validation(rows).groupby("trainable_blocks").accuracy.first()  # per depth, the best on validation
            ax.plot(best.index, best.to_numpy(), color=colour, label=backbone)
            labels += [(r.trainable_blocks, r.accuracy, r.strategy_label) for r in rows.itertuples()]
            scratch = done[(done.dataset == dataset) & (done.train_size == train_size) & (done.backbone == backbone)
                           & (done.family == "scratch")]
            for row in scratch.itertuples():
                ax.axhline(row.accuracy, color=colour, linestyle="--", linewidth=1)
                labels.append((rows.trainable_blocks.max(), row.accuracy, row.strategy_label))
        ax.set_xticks(sorted(set(group.trainable_blocks)))
        ax.margins(x=0.3, y=0.15)
        blocks = group.blocks.max()
        _style(ax, _scenario_title(dataset, train_size),
               f"blocks trained (of {blocks:.0f})" if blocks == blocks else "blocks trained")
        _label_points(ax, labels)
        ax.legend(fontsize=8, title="backbone (line: best at\neach depth)", title_fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


def _label_points(ax: Axes, points: list[tuple[float, float, str]], fontsize: float = 7) -> None:
    """Label each point beside it, moved up or down (in steps of a line) so that no two labels overlap."""
    ax.autoscale_view()  # the final limits, so that data map to where they will be drawn
    placed: list[tuple[float, float, float]]
    height, placed = fontsize * 1.5, []
    for x, y, text in sorted(points, key=lambda p: -p[1]):
        px, py = ax.transData.transform((x, y))
        width = 0.62 * fontsize * len(text)
        for shift in (0, -1, 1, -2, 2, -3, 3, -4, 4, -5, 5):
            top = py + shift * height
            if all(abs(top - other_top) >= height or px + width < other_x or other_x + other_width < px
                   for other_x, other_top, other_width in placed):
                break
        placed.append((px, top, width))
        ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(7, top - py), fontsize=fontsize, va="center")


def _series_names(done: pd.DataFrame) -> list[str]:
    several = done.backbone.nunique() > 1
    return [f"{b} / {s}" if several else s for b, s in zip(done.backbone, done.strategy_label, strict=True)]


def accuracy_vs_train_size(done: pd.DataFrame) -> Figure | None:
    """Per dataset run at several train sizes: accuracy against images per class, a line per strategy."""
    datasets = [d for d, n in done.groupby("dataset", sort=False).train_size.nunique().items() if n > 1]
    if not datasets:
        return None
    done = done.assign(series=_series_names(done))
    styles = _strategy_styles(done)  # the same series looks the same in every panel, coloured by its family
    fig, axes = _figure(5.0, 4.0, len(datasets), columns=2)
    for ax, dataset in zip(axes, datasets, strict=True):
        subset = done[done.dataset == dataset].sort_values("images_per_class", kind="stable")
        for name, rows in subset.groupby("series", sort=False):
            colour, marker, linestyle = styles[name]
            ax.errorbar(rows.images_per_class, rows.accuracy, yerr=_errors(rows), marker=marker, linestyle=linestyle,
                        capsize=3, color=colour, label=name)
        if subset.images_per_class.max() > 10 * subset.images_per_class.min():
            ax.set_xscale("log")
        _ticks_at(ax.xaxis, subset.images_per_class.dropna())
        _style(ax, dataset, "training images per class", width=5.0)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles=list(handles.values()), loc="outside right upper", fontsize=8, title="strategy (colour: family)",
               title_fontsize=8)
    return fig


def pareto_front(costs: Sequence[float], accuracies: Sequence[float]) -> list[int]:
    """Indices of the points nothing beats on both cost (lower) and accuracy (higher), cheapest first."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -accuracies[i]))
    front, best = [], -math.inf
    for i in order:
        if accuracies[i] > best:
            front.append(i)
            best = accuracies[i]
    return front


def accuracy_vs_cost(done: pd.DataFrame) -> Figure | None:
    """Accuracy against mean cell wall seconds, one panel per dataset and train size, with the Pareto front."""
    timed = done[done.wall_seconds.notna() & (done.wall_seconds > 0)]
    if not len(timed):
        return None
    timed = timed.assign(series=_series_names(timed))
    groups = list(timed.groupby(["dataset", "train_size"], sort=False))
    fig, axes = _figure(5.5, 4.4, len(groups))
    for ax, ((dataset, train_size), group) in zip(axes, groups, strict=True):
        for row in group.itertuples():
            ax.scatter(row.wall_seconds, row.accuracy, s=50, color=FAMILY_COLOURS.get(row.family, "#999999"),
                       edgecolors="black", linewidths=0.5, zorder=3)
        front = group.iloc[pareto_front(list(group.wall_seconds), list(group.accuracy))]
        ax.plot(front.wall_seconds, front.accuracy, drawstyle="steps-post", color="black", linewidth=1, zorder=2)
        wide = group.wall_seconds.max() > 10 * group.wall_seconds.min()
        if wide:  # a log axis only where the costs span a decade: else it shows one tick or none
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.margins(x=0.3, y=0.15)
        _label_points(ax, [(r.wall_seconds, r.accuracy, r.series) for r in group.itertuples()])
        _style(ax, _scenario_title(dataset, train_size),
               "seconds per cell (mean over seeds" + (", log scale)" if wide else ")"), "test accuracy (mean over seeds)",
               width=5.5)
    _family_legend(fig, list(dict.fromkeys(timed.family)), False,
                   [Line2D([], [], color="black", linewidth=1, label="Pareto front")])
    return fig


def transferability_vs_accuracy(taus: list[Tau]) -> Figure | None:
    """Each score with a finite tau against the backbones' best accuracy, one panel per dataset, train size, score."""
    shown = [t for t in taus if t.score == "logme" or math.isfinite(t.tau)]
    if not shown:
        return None
    fig, axes = _figure(4.8, 4.0, len(shown), columns=4)
    for ax, tau in zip(axes, shown, strict=True):
        for i, (_, score, accuracy) in enumerate(tau.points):
            ax.scatter(score, accuracy, color=OKABE_ITO[i % len(OKABE_ITO)], marker=MARKERS[i % len(MARKERS)], s=50)
        ax.margins(x=0.3, y=0.15)
        _label_points(ax, [(score, accuracy, backbone) for backbone, score, accuracy in tau.points])
        _style(ax, f"{_scenario_title(tau.dataset, tau.train_size)}\nKendall's tau = {tau_text(tau.tau)} "
                   f"(weighted {tau_text(tau.weighted_tau)}, n = {tau.backbones})",
               f"{SCORES[tau.score]} (mean over seeds)", "best test accuracy (mean over seeds)", width=4.8)
    return fig


def shift_profiles(cells: pd.DataFrame) -> Figure | None:
    """Per backbone and image size a panel: per dataset (and train size, where it has several) the mean over seeds
    of its ``shift`` cells' profile against the block; a log axis where the values span more than a decade."""
    import pandas as pd

    measured = cells[(cells.status == "ok") & cells.shift_profile.map(lambda p: isinstance(p, list))]
    if not len(measured):
        return None
    sizes = measured.groupby("dataset").train_size.nunique()
    measured = measured.assign(
        line=[d if sizes[d] == 1 else f"{d}, train_size={t}" for d, t in zip(measured.dataset, measured.train_size, strict=True)],
        panel=[b if s != s else f"{b}, {s:.0f} px" for b, s in zip(measured.backbone, measured.image_size, strict=True)])
    datasets, train_sizes = (list(dict.fromkeys(measured[column])) for column in ("dataset", "train_size"))
    styles = {line: (OKABE_ITO[datasets.index(d) % len(OKABE_ITO)], MARKERS[train_sizes.index(t) % len(MARKERS)],
                     LINESTYLES[train_sizes.index(t) % len(LINESTYLES)])  # colour: dataset; marker and line: train size
              for line, d, t in zip(measured.line, measured.dataset, measured.train_size, strict=True)}
    panels = list(measured.groupby("panel", sort=False))
    fig, axes = _figure(5.0, 4.0, len(panels), columns=2)
    for ax, (panel, group) in zip(axes, panels, strict=True):
        values = []
        for line, rows in group.groupby("line", sort=False):
            profile = pd.DataFrame(list(rows.shift_profile), dtype=float).mean()  # per block over seeds; None skipped
            colour, marker, linestyle = styles[line]
            ax.plot(profile.index, profile.to_numpy(), color=colour, marker=marker, linestyle=linestyle, label=line)
            values += list(profile.dropna())
        positive = [v for v in values if v > 0]
        if positive and max(positive) > 10 * min(positive):
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _style(ax, panel, "block (0 = the stem)", "shift (symmetric KL, mean over seeds)", width=5.0)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles=list(handles.values()), loc="outside right upper", fontsize=8, title="dataset", title_fontsize=8)
    return fig


def confusion_matrices(cells: pd.DataFrame) -> Figure | None:
    """Per dataset, the confusion matrix of its cell best on validation: counts written in, coloured by their share
    of the row; the axes name the classes the record carries (``dataset_info.class_names``), else number them."""
    scored = cells[(cells.status == "ok") & cells.test_accuracy.notna() & cells.confusion_matrix.notna()
                   & cells.family.isin((*TRAINED_FAMILIES, "evidence"))]
    if not len(scored):
        return None
    best = [by_validation(group, "val_accuracy").iloc[0] for _, group in scored.groupby("dataset", sort=False)]
    classes = max(len(b.confusion_matrix) for b in best)
    side = max(3.6, 0.45 * classes + 2)
    fig, axes = _figure(side, side, len(best))
    for ax, cell in zip(axes, best, strict=True):
        counts = np.asarray(cell.confusion_matrix, dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="cividis", vmin=0, vmax=1)
        if len(counts) <= 15:
            for (i, j), n in np.ndenumerate(counts):
                ax.text(j, i, f"{n:.0f}", ha="center", va="center", fontsize=8,
                        color="black" if shares[i, j] > 0.6 else "white")
        names = cell.class_names if isinstance(cell.class_names, list) and len(cell.class_names) == len(counts) else None
        ticks = range(len(counts))
        labels = [textwrap.shorten(str(n), 14, placeholder="…") for n in names] if names else [str(t) for t in ticks]
        slanted: dict[str, Any] = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if names else {}
        ax.set_xticks(ticks, labels, **slanted)
        ax.set_yticks(ticks, labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(textwrap.fill(f"{cell.dataset}, train_size={cell.train_size}", int(side * 12)) + "\n" + textwrap.fill(
            f"{cell.backbone} / {cell.strategy_label}, seed {cell.seed}: accuracy "
            f"{ci_text(cell.test_accuracy, None, None)}", int(side * 12)), fontsize=9)
    return fig
