"""Statistics behind the four-scenario verdict: intervals, paired comparisons, Holm, the verdict.

A cell (one seed of one strategy in one scenario) has a per-image correctness array over the
scenario's test images, the same images in the same order for every cell. Cells with the same
seed share the training subset, so two strategies are compared **paired by seed and by image**.

**The seed is the unit.** A mean over seeds x images varies with the seeds (training runs) and
with the test images (a sample of the target domain, shared by every seed, so more seeds do not
shrink its part). Its standard error is estimated from both::

    SE^2 = s^2(seed means) / seeds + s^2(image means over the seeds) / images

with a Student t of seeds - 1 degrees of freedom (one seed: over the images only, images - 1).
The seed x image interaction counts in both terms, so the interval leans conservative. This
method was chosen by simulation (``tests/core/test_stats.py``: independent seed effects per
side, per-seed SD of the difference 0 to 0.1, 3 to 10 seeds, 50 to 1000 test images): its 95% CI
covers at >= 93% and its false-positive rate at no difference stays <= 6%. A plain paired t over
seeds misses the image term (the test set's luck, shared by every seed) and falls short where
the seeds vary little; the earlier two-level bootstrap under-covered with few seeds.

Conventions:

- **difference**: the best side minus the other side (each side being its best strategy), so a
  significant result has ``ci_low > 0``.
- **CI**: a per-comparison 95% interval, *not* Holm-adjusted: it shows the size of the gap.
- **p-value**: two-sided, from the same t statistic; the report Holm-adjusts the p-values of
  its compared rows (:func:`holm`).
- **verdict** (:func:`judge`): significant when the Holm-adjusted p-value is at most 0.05; the
  one rule, whatever the unadjusted CI shows.
- **accuracy intervals** of one strategy use the same standard error on the correctness
  arrays, clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
SEED_UNIT_METHOD = ("mean over seeds and test images; standard error from the spread of the seed means and of "
                    "the image means, Student t with seeds - 1 dof (one seed: over the test images only, which "
                    "speaks for that training run, not for others)")
ACCURACIES_METHOD = "paired t interval and t-test over seeds (accuracies only: prediction files missing)"
HOLM_METHOD = ("p-values Holm-adjusted within one report; the verdict is significant when the adjusted p-value "
               "is at most 0.05; CIs per comparison (not adjusted) show the size of the gap")
AGREES, DISAGREES, NOT_SIGNIFICANT, NOT_COVERED = "agrees", "disagrees", "not significant", "not covered"
VERDICTS = (AGREES, DISAGREES, NOT_SIGNIFICANT, NOT_COVERED)


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    method: str


@dataclass(frozen=True)
class Comparison:
    """``difference`` = a - b in mean accuracy over the shared seeds, with its CI and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: int
    images: int  # 0 when compared from accuracies only
    method: str


def mean_ci(accuracies: Sequence[float], correct: Sequence[np.ndarray | None] | None = None, *,
            level: float = LEVEL) -> Interval:
    """Mean accuracy over seeds with its CI, within [0, 1].

    With ``correct`` (per-seed correctness arrays over the same test images, in the order of
    ``accuracies``) the seed-unit standard error (seeds and images); without it (or with a seed
    missing its array) a t interval over seeds, and one seed gets a NaN interval.
    """
    values = np.asarray(accuracies, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("mean_ci needs at least one accuracy")
    if correct is not None and len(correct) != len(values):
        raise ValueError(f"{len(values)} accuracies but {len(correct)} correctness arrays")
    present = [c for c in correct if c is not None] if correct is not None else []
    if correct is not None and len(present) == len(correct) and len({len(c) for c in present}) == 1:
        stacked = np.stack([np.asarray(c, dtype=np.float64) for c in present])
        mean, low, high, _ = (float(v) for v in seed_unit_estimates(stacked, level))
        images = len(present[0])
        where = f"{len(values)} seeds and {images} test images" if len(values) > 1 else f"{images} test images (1 seed)"
        return Interval(float(mean), max(0.0, float(low)), min(1.0, float(high)), f"seed-unit t interval over {where}")
    if len(values) >= 2:
        mean, low, high = _t_interval(values, level)
        return Interval(mean, max(0.0, low), min(1.0, high), f"t interval over {len(values)} seeds")
    return Interval(float(values[0]), math.nan, math.nan, "one seed, no predictions")


def paired_difference(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], *,
                      level: float = LEVEL) -> Comparison:
    """Mean accuracy of a minus b over their shared seeds and the test images, seed-unit CI and p.

    ``a`` and ``b`` map seed -> per-image correctness over the scenario's test images; seeds
    present in only one side are ignored.
    """
    seeds = _shared_seeds(a, b)
    for s in seeds:
        if len(a[s]) != len(b[s]):
            raise ValueError(f"seed {s}: a has {len(a[s])} test images, b has {len(b[s])}; "
                             "a paired comparison needs the same test images on both sides")
    lengths = {len(a[s]) for s in seeds}
    if len(lengths) > 1:
        raise ValueError(f"the shared seeds have different numbers of test images ({sorted(lengths)}); "
                         "a paired comparison needs the scenario's test images in every cell")
    differences = np.stack([np.asarray(a[s], dtype=np.float64) - np.asarray(b[s], dtype=np.float64) for s in seeds])
    if differences.shape[1] == 0:
        raise ValueError("no test images to compare")
    mean, low, high, p_value = (float(v) for v in seed_unit_estimates(differences, level))
    images = differences.shape[1]
    where = (f"{len(seeds)} seeds and {images} test images" if len(seeds) > 1
             else f"{images} test images of 1 seed (speaks for this training run only)")
    return Comparison(mean, low, high, p_value, len(seeds), images,
                      f"paired seed-unit t over {where}")


def paired_difference_from_accuracies(a: Mapping[int, float], b: Mapping[int, float], *,
                                      level: float = LEVEL) -> Comparison:
    """Mean accuracy of a minus b over shared seeds, paired t interval and t-test (no predictions)."""
    seeds = _shared_seeds(a, b)
    differences = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    if len(seeds) == 1:
        return Comparison(float(differences[0]), math.nan, math.nan, 1.0, 1, 0,
                          "one seed, no predictions: not testable")
    mean, low, high = _t_interval(differences, level)
    p_value = float(_p_value(mean, differences.std(ddof=1) / math.sqrt(len(seeds)), len(seeds) - 1))
    return Comparison(mean, low, high, p_value, len(seeds), 0,
                      f"paired t interval over {len(seeds)} seeds (accuracies only, no predictions)")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values, in input order; NaN passes through, uncounted."""
    values = np.asarray(p_values, dtype=np.float64)
    adjusted = values.copy()
    tested = np.flatnonzero(~np.isnan(values))
    order = tested[np.argsort(values[tested], kind="stable")]
    factors = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * values[order]))
    listed: list[float] = adjusted.tolist()
    return listed


def judge(comparison: Comparison | None, recommended_side_is_best: bool, adjusted_p: float | None, *,
          alpha: float = 1 - LEVEL) -> str:
    """The verdict of one scenario: ``agrees``, ``disagrees``, ``not significant`` or ``not covered``.

    ``comparison`` is best side minus other side (None when one side was not run or the scenario
    is unknown: ``not covered``). Significant means ``adjusted_p`` (the Holm-adjusted p-value)
    is at most ``alpha``; None or NaN (not testable) is not significant. *agrees*: the
    recommended side is significantly ahead; *disagrees*: the other side is.
    """
    if comparison is None:
        return NOT_COVERED
    significant = adjusted_p is not None and adjusted_p <= alpha and comparison.difference != 0  # False for NaN
    if not significant:
        return NOT_SIGNIFICANT
    recommended_is_ahead = (comparison.difference > 0) == recommended_side_is_best
    return AGREES if recommended_is_ahead else DISAGREES


def _shared_seeds(a: Mapping[int, object], b: Mapping[int, object]) -> list[int]:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no seed shared by both sides (a has seeds {sorted(a)}, b has {sorted(b)}): "
                         "nothing to pair")
    return seeds


def _t_interval(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """Mean of ``values`` and its Student t interval (n-1 dof)."""
    from scipy import special

    mean = float(values.mean())
    quantile = special.stdtrit(len(values) - 1, (1 + level) / 2)  # t's inverse CDF
    half_width = quantile * values.std(ddof=1) / math.sqrt(len(values))
    return mean, float(mean - half_width), float(mean + half_width)


def seed_unit_estimates(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, ...]:
    """Mean of ``values`` (``[..., seeds, images]``) over its last two axes with the seed-unit
    t interval and two-sided p-value of a zero mean (see the module docstring): arrays
    ``(mean, low, high, p_value)`` over the leading axes."""
    from scipy import special

    seeds, images = values.shape[-2:]
    mean = values.mean(axis=(-2, -1))
    variance = values.mean(axis=-2).var(axis=-1, ddof=1) / images if images > 1 else np.zeros_like(mean)
    if seeds > 1:
        variance = variance + values.mean(axis=-1).var(axis=-1, ddof=1) / seeds
    dof = seeds - 1 if seeds > 1 else max(images - 1, 1)
    standard_error = np.sqrt(variance)
    half_width = special.stdtrit(dof, (1 + level) / 2) * standard_error
    return mean, mean - half_width, mean + half_width, _p_value(mean, standard_error, dof)


def _p_value(mean: float | np.ndarray, standard_error: float | np.ndarray, dof: int) -> np.ndarray:
    """Two-sided p-value of a zero mean from a t statistic (a zero standard error: 1 or 0); elementwise."""
    from scipy import special  # Student's t, as scipy.stats.t computes it, without importing scipy.stats (seconds)

    mean, standard_error = np.asarray(mean, dtype=np.float64), np.asarray(standard_error, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(standard_error > 0, 2 * special.stdtr(dof, -np.abs(mean) / standard_error),
                        np.where(mean == 0, 1.0, 0.0))
