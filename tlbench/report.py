"""The comparison report of a run directory: tables, plots and the four-scenario verdict.

Everything shown comes from ``DIR/runs.jsonl`` (the latest line of each cell). The verdict
applies the textbook rule (small/large target data x similar/different domain) to each
dataset, train size and backbone of the run, and compares it with the measured best strategy.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .results import RunsLog, latest_per_cell, portable_options
from .types import PluginError

log = logging.getLogger(__name__)
REPORT_FILE = "report.md"
BARS_PLOT, SIZE_PLOT, COST_PLOT = "accuracy_by_strategy.png", "accuracy_vs_train_size.png", "accuracy_vs_cost.png"
SMALL_PER_CLASS = 1000  # at most this many training images per class = a "small" target set (the
# textbook treats both of its projects, 101 and 171 images per class, as small)
SIMILAR_DOMAINS = ("natural-photo",)  # domains counted as similar to ImageNet
SCENARIO = ["dataset", "train_size", "backbone"]
SERIES = SCENARIO + ["strategy_label"]


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

def rule_notes(small_per_class: int, similar_domains: Iterable[str]) -> str:
    """How the report reads the rule, with this report's threshold and similar domains."""
    return f"""\
How the rule is applied:

- **size**: *small* when the real training images per class (`metrics.dataset_info.train_size_real`
  divided by the number of classes, i.e. the rows of the confusion matrix) are at most
  {small_per_class} (`tlbench report --small-per-class N`; default {SMALL_PER_CLASS}), else *large*.
- **domain**: the dataset option `domain` (`params.dataset.domain`), else a `domain` in
  `metrics.dataset_info`, else the domain the installed dataset plugin declares; *similar* when it
  is {" or ".join(sorted(similar_domains))} (ImageNet-like photos), *different* otherwise, *unknown*
  (no verdict) when nothing names it. The pretrained classifier's accuracy, when the run has one,
  is shown as evidence of similarity.
- **families**: each strategy declares one (`metrics.family`): `extractor`; `finetune-part`
  (some blocks trained, e.g. `finetune` below full depth or `blocks: first:1`); `finetune-all`
  (every block trained at the end, e.g. depth `all`, `lp-ft`); `scratch`, the no-transfer
  baseline, never what the rule recommends; `evidence` (`classifier`) is evidence only.
- **small + different**: the book trains on features of earlier layers or fine-tunes the upper
  part; tlbench's extractor cuts at the end of the backbone, so a partial fine-tune and the
  extractor both count as following the rule.
- **large + different**: the book fine-tunes the whole network (training from scratch is the
  alternative it mentions); only `finetune` at depth `all` follows the rule.
- **best**: the highest mean test accuracy over seeds (`classifier` excluded). Two strategies
  *tie* when their means differ by at most the larger of their standard deviations over seeds
  and one test image (1/test_images). *agrees*: the best follows the rule and nothing outside the
  rule ties with it; *disagrees*: the best does not follow the rule and nothing that does ties
  with it; otherwise (one strategy, unknown size or domain, the recommended strategy not run)
  *inconclusive*. The verdict is about these measurements only.
"""


def write_report(run_dir: str | os.PathLike, *, small_per_class: int = SMALL_PER_CLASS,
                 similar_domains: Iterable[str] = SIMILAR_DOMAINS, registries=None) -> list[Path]:
    """Write ``report.md`` and its PNG plots next to the summaries; return the written paths.

    ``registries`` (from :func:`tlbench.registry.collect`) supplies dataset domains that the
    records do not carry; collected when needed if not given.
    """
    run_dir = Path(run_dir)
    cells = cells_frame(latest_per_cell(RunsLog(run_dir).read()), registries)
    written = []
    if len(cells):
        stats = series_stats(cells)
        similar_domains = frozenset(similar_domains)
        verdicts = scenario_verdicts(stats, small_per_class, similar_domains)
        written = [p for p in (plot_accuracy_by_strategy(stats, run_dir / BARS_PLOT),
                               plot_accuracy_vs_train_size(stats, run_dir / SIZE_PLOT),
                               plot_accuracy_vs_cost(stats, run_dir / COST_PLOT)) if p]
        text = report_markdown(run_dir, cells, stats, verdicts, written, small_per_class, similar_domains)
    else:
        text = f"# tlbench report: {run_dir.name}\n\nNo cells recorded in `{RunsLog(run_dir).path}` yet.\n"
    for stale in {BARS_PLOT, SIZE_PLOT, COST_PLOT} - {p.name for p in written}:
        (run_dir / stale).unlink(missing_ok=True)
    report = run_dir / REPORT_FILE
    report.write_text(text)
    return [report, *written]


# ---------------------------------------------------------------- records -> frames


def cells_frame(records: list[dict[str, Any]], registries=None):
    """One row per cell with the identity, scenario and metrics the report uses."""
    import pandas as pd

    # a dataset is its name and options, not where it lies: runs made on other machines compare
    dataset_keys = _varying_keys((r["dataset"], _without(portable_options(r["params"]["dataset"]), "train_size"))
                                 for r in records)
    backbone_keys = _varying_keys((r["backbone"], r["params"]["backbone"]) for r in records)
    rows = []
    for r in records:
        params, metrics = r["params"], r.get("metrics") or {}
        info = metrics.get("dataset_info") or {}
        rows.append({
            "dataset": _label(r["dataset"], params["dataset"], dataset_keys[r["dataset"]]),
            "dataset_name": r["dataset"], "dataset_plugin": (r.get("plugins") or {}).get("dataset", r["dataset"]),
            "train_size": str(params["dataset"].get("train_size", "all")),
            "train_images": info.get("train_size_real", metrics.get("train_images")),
            "classes": len(metrics["confusion_matrix"]) if metrics.get("confusion_matrix") else None,
            "domain_option": params["dataset"].get("domain"), "domain_info": info.get("domain"),
            "backbone": _label(r["backbone"], params["backbone"], backbone_keys[r["backbone"]]),
            "strategy": r["strategy"], "family": strategy_family(r, registries),
            "strategy_params": {**params.get("train", {}), **params["strategy"]},
            "seed": r["seed"], "status": r["status"], "val_accuracy": best_validation_accuracy(metrics),
            **{k: metrics.get(k) for k in ("test_accuracy", "test_loss", "epoch_seconds", "trainable_params",
                                          "non_trainable_params", "test_images")},
        })
    frame = pd.DataFrame(rows)
    if not len(frame):
        return frame
    strategy_keys = _varying_keys(((row.dataset, row.backbone, row.strategy), row.strategy_params)
                                  for row in frame.itertuples())
    frame["strategy_label"] = [  # the options that differ, and always the fine-tune depth
        _label(row.strategy, row.strategy_params, sorted(
            set(strategy_keys[(row.dataset, row.backbone, row.strategy)]) | ({"depth"} & set(row.strategy_params))))
        for row in frame.itertuples()]
    domains = {name: dataset_domain(frame[frame.dataset_name == name], registries)
               for name in frame.dataset_name.unique()}
    frame["domain"] = frame.dataset_name.map(lambda n: domains[n][0])
    frame["domain_source"] = frame.dataset_name.map(lambda n: domains[n][1])
    for column in ("test_accuracy", "val_accuracy", "test_loss", "epoch_seconds", "trainable_params", "non_trainable_params",
                   "test_images", "train_images", "classes"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def best_validation_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """Validation accuracy of the best (restored) epoch; None without training or validation."""
    history, best = metrics.get("history") or [], metrics.get("best_epoch")
    return history[best - 1].get("val_accuracy") if best and len(history) >= best else None


def strategy_family(record: Mapping[str, Any], registries=None) -> str:
    """The cell's family in the four-scenario rule: the one it recorded (``metrics.family``), else
    the one its strategy plugin declares (``finetune`` resolved by the blocks that trained)."""
    metrics = record.get("metrics") or {}
    if metrics.get("family"):
        return metrics["family"]
    plugin = (record.get("plugins") or {}).get("strategy", record["strategy"])
    strategies = _registries(registries).strategies
    family = strategies.get(plugin).family if plugin in strategies else None
    if family in (None, "finetune"):
        blocks, trained = metrics.get("blocks"), metrics.get("trainable_blocks")
        return "finetune-all" if blocks and trained == blocks else "finetune-part" if family else "unknown"
    return family


def _registries(registries):
    if registries is None:
        from .registry import collect

        registries = collect()
    return registries


def dataset_domain(cells, registries=None) -> tuple[str, str]:
    """The domain of one dataset and where it was read: grid option, record, plugin, or unknown."""
    for column, source in (("domain_option", "dataset option"), ("domain_info", "dataset record")):
        known = [d for d in cells[column] if d and d != "unknown"]
        if known:
            return known[0], source
    plugin = cells.dataset_plugin.iloc[0]
    try:
        domain = _registries(registries).datasets.get(plugin).domain
    except PluginError as exc:  # a dataset plugin no longer installed only costs the domain
        log.info("no domain for dataset plugin %r: %s", plugin, exc)
        return "unknown", "-"
    return (domain, f"plugin {plugin}") if domain and domain != "unknown" else ("unknown", "-")


def series_stats(cells):
    """One row per (dataset, train size, backbone, strategy label): seed statistics and costs."""
    import pandas as pd

    rows = []
    for key, group in cells.groupby(SERIES, sort=False):
        ok = group[group.status == "ok"]
        rows.append({
            **dict(zip(SERIES, key)),
            "family": group.family.iloc[0], "domain": group.domain.iloc[0],
            "domain_source": group.domain_source.iloc[0],
            "train_images": group.train_images.max(), "classes": group.classes.max(),
            "test_images": ok.test_images.min(), "seeds": len(ok),
            "accuracy": ok.test_accuracy.mean(), "accuracy_std": ok.test_accuracy.std(),
            "val_accuracy": ok.val_accuracy.mean(), "val_accuracy_std": ok.val_accuracy.std(),
            "loss": ok.test_loss.mean(), "epoch_seconds": ok.epoch_seconds.mean(),
            "trainable_params": _span(ok.trainable_params), "non_trainable_params": _span(ok.non_trainable_params),
            "trainable_count": ok.trainable_params.mean(),
            "status": ", ".join(f"{s} {n}" for s, n in group.status.value_counts(sort=False).items()),
        })
    return pd.DataFrame(rows)


def _varying_keys(items: Iterable[tuple[Any, Mapping[str, Any]]]) -> dict[Any, list[str]]:
    """For each group, the option names whose values differ between its records."""
    seen: dict[Any, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for group, options in items:
        for name, value in options.items():
            seen[group][name].add(json.dumps(value, sort_keys=True, default=str))
    return defaultdict(list, {g: sorted(n for n, values in names.items() if len(values) > 1)
                              for g, names in seen.items()})


def _label(name: str, options: Mapping[str, Any], keys: Iterable[str]) -> str:
    inner = ",".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k in keys for v in [options.get(k)])
    return f"{name}[{inner}]" if inner else name


def _without(options: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != key}


def _span(values) -> str:
    found = sorted({int(v) for v in values.dropna()})
    if not found:
        return "-"
    return f"{found[0]:,}" if len(found) == 1 else f"{found[0]:,}-{found[-1]:,}"


# ---------------------------------------------------------------- the verdict


@dataclass
class Verdict:
    dataset: str
    train_size: str
    backbone: str
    per_class: float | None
    size: str
    domain: str
    similarity: str
    classifier: str
    advice: str
    best: str
    verdict: str
    sentence: str


def scenario_verdicts(stats, small_per_class: int, similar_domains: frozenset[str]) -> list[Verdict]:
    """The rule's advice against the measured best strategy, per dataset, train size and backbone."""
    verdicts = []
    for (dataset, train_size, backbone), group in stats.groupby(SCENARIO, sort=False):
        first = group.iloc[0]
        images, classes = group.train_images.max(), group.classes.max()
        per_class = images / classes if _known(images) and _known(classes) else None
        size = "unknown" if per_class is None else "small" if per_class <= small_per_class else "large"
        similarity = ("unknown" if first.domain == "unknown"
                      else "similar" if first.domain in similar_domains else "different")
        rule = RULES.get((size, similarity))
        classifier = group[(group.family == "evidence") & (group.seeds > 0) & group.accuracy.notna()]
        evidence = (f"{classifier.accuracy.iloc[0]:.4f} (chance {1 / classes:.2f})"
                    if len(classifier) and _known(classes) else "-")
        best, verdict, reason = _judge(group[(group.family != "evidence") & (group.seeds > 0)], rule)
        where = (f"{per_class:.0f} training images per class {'<=' if size == 'small' else '>'} {small_per_class}"
                 if per_class is not None else "number of classes or training images unknown")
        sentence = (f"{dataset} ({where}: {size}; domain {first.domain}: {similarity}) with {backbone}: "
                    f"the rule recommends {rule.advice if rule else 'nothing (size or domain unknown)'}; "
                    f"{reason}")
        verdicts.append(Verdict(dataset, train_size, backbone, per_class, size,
                                f"{first.domain} ({first.domain_source})", similarity, evidence,
                                rule.advice if rule else "-", best, verdict, sentence))
    return verdicts


def _judge(candidates, rule: Rule | None) -> tuple[str, str, str]:
    """(best label with accuracy, verdict, the reason as the end of a sentence)."""
    if not len(candidates):
        return "-", "inconclusive", "no trained strategy finished ok, so nothing can be compared."
    ranked = candidates.sort_values("accuracy", ascending=False, kind="stable")
    top = ranked.iloc[0]
    best = f"{top.strategy_label} {_accuracy(top)}"
    if rule is None:
        return best, "inconclusive", f"the best measured strategy is {best}, but the rule cannot be applied."
    if len(ranked) == 1:
        return best, "inconclusive", f"only {top.strategy_label} was measured, so there is nothing to compare."
    follows = ranked.family.isin(rule.families)
    if not follows.any():
        return best, "inconclusive", (f"no strategy of that kind was run; the best measured is {best}.")
    ties = ranked.iloc[1:][[_tie(top, other) for _, other in ranked.iloc[1:].iterrows()]]
    runner_up = ranked.iloc[1]
    gap = (f"ahead of {runner_up.strategy_label} by {top.accuracy - runner_up.accuracy:.4f} "
           f"(noise margin {_margin(top, runner_up):.4f})")
    if top.family in rule.families:
        rivals = ties[~ties.family.isin(rule.families)]
        if len(rivals):
            return best, "inconclusive", (f"the best measured is {best}, which follows the rule, but "
                                          f"{', '.join(rivals.strategy_label)} (not recommended) is within noise.")
        if len(ties):
            return best, "agrees", (f"the best measured is {best}; every strategy within noise of it "
                                    f"({', '.join(ties.strategy_label)}) also follows the rule: agrees.")
        return best, "agrees", f"the best measured is {best}, {gap}: agrees."
    allies = ties[ties.family.isin(rule.families)]
    if len(allies):
        return best, "inconclusive", (f"the best measured is {best}, which does not follow the rule, but "
                                      f"{', '.join(allies.strategy_label)} (recommended) is within noise.")
    best_follower = ranked[follows].iloc[0]
    return best, "disagrees", (f"the best measured is {best}, ahead of the best recommended strategy "
                               f"{best_follower.strategy_label} {_accuracy(best_follower)} by "
                               f"{top.accuracy - best_follower.accuracy:.4f} "
                               f"(noise margin {_margin(top, best_follower):.4f}): disagrees.")


def _margin(a, b) -> float:
    """The larger of the two seed standard deviations and one test image."""
    spreads = [s for s in (a.accuracy_std, b.accuracy_std) if _known(s)]
    one_image = 1 / min(a.test_images, b.test_images) if _known(min(a.test_images, b.test_images)) else 0.0
    return max([one_image, *spreads])


def _tie(a, b) -> bool:
    return abs(a.accuracy - b.accuracy) <= _margin(a, b) + 1e-12


def _known(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _accuracy(row) -> str:
    text = _mean_std(row.accuracy, row.accuracy_std)
    return f"{text} (n={row.seeds})" if text != "-" else text


def _mean_std(mean, std) -> str:
    if not _known(mean):
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if _known(std) else f"{mean:.4f}"


# ---------------------------------------------------------------- markdown


def report_markdown(run_dir: Path, cells, stats, verdicts: list[Verdict], plots: list[Path],
                    small_per_class: int, similar_domains: Iterable[str]) -> str:
    from tabulate import tabulate

    def table(rows, headers) -> str:
        return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)

    counts = ", ".join(f"{n} {s}" for s, n in cells.status.value_counts(sort=False).items())
    parts = [f"# tlbench report: {run_dir.name}",
             (f"{len(cells)} cells ({counts}) from `runs.jsonl` (the latest line of each cell). "
              "Accuracy is the mean test accuracy ± standard deviation over the seeds that finished ok (n); "
              "best val accuracy is the same over the validation accuracy of each cell's best epoch."),
             "## Strategies per dataset"]
    several_sizes = stats.groupby("dataset").train_size.nunique()
    for (dataset, train_size), group in stats.groupby(["dataset", "train_size"], sort=False):
        size = f", train_size={train_size}" if several_sizes[dataset] > 1 or train_size != "all" else ""
        parts.append(f"### {dataset}{size} ({_count(group.train_images.max())} training images, "
                     f"{_count(group.test_images.min())} test images)")
        parts.append(table(
            [(r.backbone, r.strategy_label, _accuracy(r), _mean_std(r.val_accuracy, r.val_accuracy_std),
              _fixed(r.loss, 4), _fixed(r.epoch_seconds, 2), r.trainable_params, r.non_trainable_params, r.status)
             for r in group.itertuples()],
            ("backbone", "strategy", "test accuracy", "best val accuracy", "test loss", "epoch s", "trainable params",
             "non-trainable params", "status")))
    for dataset in several_sizes[several_sizes > 1].index:
        parts.append(f"## Accuracy vs train size: {dataset}")
        subset = stats[(stats.dataset == dataset) & (stats.seeds > 0)].sort_values("train_images", kind="stable")
        sizes = list(dict.fromkeys(subset.train_size))
        images = subset.groupby("train_size", sort=False).train_images.max()
        rows = []
        for (backbone, label), group in subset.groupby(["backbone", "strategy_label"], sort=False):
            by_size = {r.train_size: _accuracy(r) for r in group.itertuples()}
            rows.append((backbone, label, *(by_size.get(s, "-") for s in sizes)))
        parts.append(table(rows, ("backbone", "strategy",
                                  *(f"train_size={s} ({_count(images[s])} images)" for s in sizes))))
    parts.append("## The four-scenario rule")
    parts.append(table([(v.dataset, v.train_size, v.backbone, _fixed(v.per_class, 1), v.size, v.domain, v.similarity,
                         v.classifier, v.advice, v.best, v.verdict) for v in verdicts],
                       ("dataset", "train_size", "backbone", "images/class", "size", "domain", "similarity",
                        "classifier acc.", "rule recommends", "measured best", "verdict")))
    parts.append("\n".join(f"- **{v.verdict}**: {v.sentence}" for v in verdicts))
    parts.append(rule_notes(small_per_class, similar_domains).rstrip())
    parts.append("## Plots")
    parts.append("\n".join(f"- [{p.name}]({p.name})\n\n  ![{p.stem}]({p.name})" for p in plots))
    return "\n\n".join(parts) + "\n"


def _fixed(value, digits: int) -> str:
    return f"{value:.{digits}f}" if _known(value) else "-"


def _count(value) -> str:
    return f"{value:.0f}" if _known(value) else "?"


# ---------------------------------------------------------------- plots


def _figure(width: float, height: float, columns: int = 1, **options):
    """A matplotlib Figure on the Agg canvas (no pyplot, no global backend state) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, columns, squeeze=False, **options)[0]


def _finished(stats):
    """Series with at least one ok seed, with legend names and group (x axis) names."""
    done = stats[stats.seeds > 0]
    several_backbones = done.backbone.nunique() > 1
    several_sizes = done.groupby("dataset").train_size.transform("nunique") > 1
    return done.assign(
        series=[f"{b}/{s}" if several_backbones else s for b, s in zip(done.backbone, done.strategy_label)],
        group=[f"{d}\ntrain_size={t}" if many else d
               for d, t, many in zip(done.dataset, done.train_size, several_sizes)],
    )


def plot_accuracy_by_strategy(stats, path: Path) -> Path | None:
    """Grouped bars: per dataset (and train size), mean test accuracy per strategy, std error bars."""
    done = _finished(stats)
    if not len(done):
        return None
    groups, series = list(dict.fromkeys(done.group)), list(dict.fromkeys(done.series))
    width = 0.8 / len(series)
    fig, (ax,) = _figure(max(6.0, 1.2 + len(groups) * (0.6 + 0.35 * len(series))), 4.8)
    for i, name in enumerate(series):
        rows = done[done.series == name]
        xs = [groups.index(g) - 0.4 + width * (i + 0.5) for g in rows.group]
        bars = ax.bar(xs, rows.accuracy, width * 0.92, yerr=rows.accuracy_std.fillna(0), capsize=3, label=name)
        ax.bar_label(bars, labels=[f"{a:.3f}" for a in rows.accuracy], label_type="center", rotation=90,
                     fontsize=8, color="white")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test accuracy (mean over seeds, ± std)")
    ax.set_title("Test accuracy by strategy")
    ax.legend(title="strategy", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_accuracy_vs_train_size(stats, path: Path) -> Path | None:
    """Per dataset run at several train sizes: accuracy against real training images."""
    done = _finished(stats)
    datasets = [d for d, n in done.groupby("dataset", sort=False).train_size.nunique().items() if n > 1]
    if not datasets:
        return None
    fig, axes = _figure(5.5 * len(datasets) + 2, 4.5, len(datasets))
    for ax, dataset in zip(axes, datasets):
        subset = done[done.dataset == dataset].sort_values("train_images", kind="stable")
        for name, rows in subset.groupby("series", sort=False):
            ax.errorbar(rows.train_images, rows.accuracy, yerr=rows.accuracy_std.fillna(0), marker="o",
                        capsize=3, label=name)
        if subset.train_images.max() > 10 * subset.train_images.min():
            ax.set_xscale("log")
        ticks = subset.groupby("train_size", sort=False).train_images.max()
        ax.set_xticks(list(ticks), [f"{n:.0f}\n(train_size={s})" for s, n in ticks.items()], minor=False)
        ax.minorticks_off()
        ax.set_title(dataset)
        ax.set_xlabel("training images (real, after train_size)")
        ax.set_ylabel("test accuracy (mean ± std)")
        ax.grid(alpha=0.3)
    axes[-1].legend(title="strategy", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle("Test accuracy vs training set size")
    return _save(fig, path)


def plot_accuracy_vs_cost(stats, path: Path) -> Path | None:
    """Accuracy against seconds per epoch and against trainable parameters, one point per series."""
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    done = _finished(stats)
    if not len(done):
        return None
    series, groups = list(dict.fromkeys(done.series)), list(dict.fromkeys(done.group))
    colors, markers = colormaps["tab10"], "osD^v<>pP*X"
    fig, (time_ax, params_ax) = _figure(12, 4.8, 2, sharey=True)
    for row in done.itertuples():
        style = {"color": colors(series.index(row.series) % 10), "s": 60, "edgecolors": "black",
                 "linewidths": 0.5, "marker": markers[groups.index(row.group) % len(markers)]}
        if _known(row.epoch_seconds):
            time_ax.scatter(row.epoch_seconds, row.accuracy, **style)
        params_ax.scatter(row.trainable_count, row.accuracy, **style)
    time_ax.set_xlabel("seconds per training epoch (mean; no point without training)")
    time_ax.set_ylabel("test accuracy (mean over seeds)")
    params_ax.set_xlabel("trainable parameters (symmetric log scale)")
    params_ax.set_xscale("symlog", linthresh=1, linscale=0.5)
    for ax in (time_ax, params_ax):
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors(i % 10), marker="o", linestyle="", label=s) for i, s in enumerate(series)]
    handles += [Line2D([], [], color="gray", marker=markers[i % len(markers)], linestyle="",
                       label=g.replace("\n", " ")) for i, g in enumerate(groups)]
    params_ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
                     title="colour: strategy; shape: dataset")
    fig.suptitle("Test accuracy vs cost")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
