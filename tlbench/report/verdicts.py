"""The four-scenario verdicts and the transferability rank correlations, from the series frame.

Per dataset, train size and backbone (a *scenario row*) the textbook's rule (small/large target
data x similar/different domain) names the strategy families to use; the best of them, chosen on
validation, is compared with the best of the other trained families, paired by seed and test
image (:mod:`tlbench.report.stats`), Holm-adjusted over the rows, and the row gets a verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tlbench.report import stats
from tlbench.report.frame import SCENARIO, SCORES, TRAINED_FAMILIES, TRANSFER_FAMILIES, known, mean_of, number

if TYPE_CHECKING:
    import pandas as pd


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
        per_class = float(per_class) if known(per_class) else None
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
        difference, ci_low, ci_high, p_value = (number(getattr(comparison, k, None))
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
    if not known(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    return f"{text} [{low:.{digits}f}, {high:.{digits}f}]" if known(low) and known(high) else text


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
            groups[(dataset, train_size)].append((backbone, {s: mean_of(values[s]) for s in SCORES},
                                                  float(best[(dataset, train_size, backbone)])))
    taus = []
    for (dataset, train_size), rows in groups.items():
        if len(rows) < minimum_backbones:
            continue
        accuracies = [accuracy for _, _, accuracy in rows]
        for score in SCORES:
            points = tuple((backbone, means[score], accuracy) for backbone, means, accuracy in rows)
            missing = [backbone for backbone, value, _ in points if not known(value)]
            if missing:
                taus.append(Tau(dataset, train_size, score, len(rows), math.nan, math.nan,
                                f"missing for {', '.join(missing)}", points))
                continue
            from scipy.stats import kendalltau, weightedtau  # here: its import costs a second per report

            values = [value for _, value, _ in points]
            tau, p_value = kendalltau(values, accuracies)
            weighted = weightedtau(values, accuracies).statistic
            taus.append(Tau(dataset, train_size, score, len(rows), float(tau), float(weighted),
                            f"Kendall p = {p_value:.3g}" if known(p_value) else "a constant ranking", points))
    return taus


def tau_text(value: float, digits: int = 2) -> str:
    """A rank correlation, ``NaN`` when it could not be computed."""
    return f"{value:.{digits}f}" if known(value) else "NaN"


