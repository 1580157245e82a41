"""Statistics behind the four-scenario verdict: intervals, paired comparisons, Holm, the verdict.

A cell (one seed of one strategy in one scenario) has a per-image correctness array over the
scenario's test images, the same images in the same order for every cell. Cells with the same
seed share the training subset, so two strategies are compared **paired by seed and by image**.

Conventions:

- **difference**: the best side minus the other side (each side being its best strategy), so a
  significant result has ``ci_low > 0``; a CI wholly below 0 means the other side is
  significantly ahead on the shared seeds.
- **CI**: a per-comparison 95% interval, *not* Holm-adjusted.
- **p-values**: two-sided, meant to be Holm-adjusted (:func:`holm`) over the comparisons of
  one report; the report shows both the CI and the adjusted p-value.
- **verdict**: :func:`judge` decides on the CI by default; given the Holm-adjusted p-value it
  decides on that instead (family-wise error controlled over the report). Bootstrap CI and
  p-value almost always agree, but need not at the margin.
- **bootstrap**: two-level: seeds with replacement, then test images with replacement. As every
  seed is scored on the same test images, one image resample is applied to every seed and to
  both sides (the crossed "pigeonhole" bootstrap, Owen 2007): resampling images independently per
  seed would treat the shared images' error as independent and understate it. The seed x image
  interaction is counted at both levels, so the CI leans conservative (about 97% coverage for a
  nominal 95% in the tests' simulation); with few seeds the seed level itself is coarse (3 seeds
  have 10 distinct resamples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
RNG_SEED = 0
MEAN_METHOD = ("mean over seeds with a Student t 95% CI (n-1 dof); with one seed, a percentile "
               "bootstrap over test images")
BOOTSTRAP_METHOD = (f"two-level paired bootstrap (seeds, then test images, one image resample shared "
                    f"by every seed and both sides), {RESAMPLES:,} resamples, fixed seed {RNG_SEED}; "
                    f"percentile 95% CI; two-sided p-value from the shifted bootstrap distribution")
ACCURACIES_METHOD = "paired t interval and t-test over seeds (accuracies only: prediction files missing)"
HOLM_METHOD = ("p-values Holm-adjusted within one report; CIs per comparison (not adjusted); "
               "the verdict uses the CI")
METHOD = f"{BOOTSTRAP_METHOD}; {HOLM_METHOD}"
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
    """``difference`` = a − b in mean accuracy over the shared seeds, with its CI and p-value."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: int
    images: int  # 0 when compared from accuracies only
    method: str


def mean_ci(accuracies: Sequence[float], correct: Sequence[np.ndarray] | None = None, *,
            level: float = LEVEL, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> Interval:
    """Mean accuracy over seeds with its CI: t over seeds, or (one seed) a bootstrap over images.

    ``correct`` (per-seed correctness arrays, in the order of ``accuracies``) is only used with
    one seed; without it that seed gets a NaN interval.
    """
    values = np.asarray(accuracies, dtype=np.float64)
    if len(values) == 0:
        raise ValueError("mean_ci needs at least one accuracy")
    if len(values) >= 2:
        mean, low, high = _t_interval(values, level)
        return Interval(mean, low, high, f"t interval over {len(values)} seeds")
    mean = float(values[0])
    if correct is None:
        return Interval(mean, math.nan, math.nan, "one seed, no predictions")
    if len(correct) != 1:
        raise ValueError(f"one accuracy but {len(correct)} correctness arrays")
    images = np.asarray(correct[0], dtype=np.float64)[None, :]
    low, high = _percentiles(_bootstrap_seed_means(images, resamples, np.random.default_rng(seed)), level)
    return Interval(mean, low, high, f"bootstrap over {images.shape[1]} test images (1 seed)")


def paired_difference(a: Mapping[int, np.ndarray], b: Mapping[int, np.ndarray], *,
                      resamples: int = RESAMPLES, seed: int = RNG_SEED, level: float = LEVEL) -> Comparison:
    """Mean accuracy of a minus b over their shared seeds, two-level paired bootstrap CI and p.

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
    differences = np.stack([np.asarray(a[s], dtype=np.int8) - np.asarray(b[s], dtype=np.int8) for s in seeds])
    if differences.shape[1] == 0:
        raise ValueError("no test images to compare")
    observed = float(differences.mean())
    resampled = _bootstrap_seed_means(differences, resamples, np.random.default_rng(seed))
    low, high = _percentiles(resampled, level)
    extreme = np.count_nonzero(np.abs(resampled - observed) >= abs(observed))
    p_value = float(extreme + 1) / (resamples + 1)
    return Comparison(observed, low, high, p_value, len(seeds), differences.shape[1],
                      f"two-level paired bootstrap over {len(seeds)} seeds and {differences.shape[1]} "
                      f"test images, {resamples:,} resamples")


def paired_difference_from_accuracies(a: Mapping[int, float], b: Mapping[int, float], *,
                                      level: float = LEVEL) -> Comparison:
    """Mean accuracy of a minus b over shared seeds, paired t interval and t-test (no predictions)."""
    from scipy import special  # Student's t, as scipy.stats.t computes it, without scipy.stats' 3 s import

    seeds = _shared_seeds(a, b)
    differences = np.array([a[s] - b[s] for s in seeds], dtype=np.float64)
    if len(seeds) == 1:
        return Comparison(float(differences[0]), math.nan, math.nan, 1.0, 1, 0,
                          "one seed, no predictions: not testable")
    mean, low, high = _t_interval(differences, level)
    standard_error = differences.std(ddof=1) / math.sqrt(len(seeds))
    if standard_error > 0:
        p_value = float(2 * special.stdtr(len(seeds) - 1, -abs(mean) / standard_error))  # t's survival function
    else:
        p_value = 1.0 if mean == 0 else 0.0
    return Comparison(mean, low, high, p_value, len(seeds), 0,
                      f"paired t interval over {len(seeds)} seeds (accuracies only, no predictions)")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni step-down adjusted p-values, in input order; NaN passes through, uncounted."""
    values = np.asarray(p_values, dtype=np.float64)
    adjusted = values.copy()
    tested = np.flatnonzero(~np.isnan(values))
    order = tested[np.argsort(values[tested], kind="stable")]
    factors = len(order) - np.arange(len(order))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(factors * values[order]))
    return adjusted.tolist()


def judge(comparison: Comparison | None, recommended_side_is_best: bool, *,
          adjusted_p: float | None = None, alpha: float = 1 - LEVEL) -> str:
    """The verdict of one scenario: ``agrees``, ``disagrees``, ``not significant`` or ``not covered``.

    ``comparison`` is best side minus other side (None when one side was not run or the scenario
    is unknown: ``not covered``). Significance comes from the CI excluding 0, or, when
    ``adjusted_p`` (Holm-adjusted p-value) is given, from ``adjusted_p <= alpha``. *agrees*: the
    recommended side is significantly ahead; *disagrees*: the other side is.
    """
    if comparison is None:
        return NOT_COVERED
    if adjusted_p is None:
        significant = comparison.ci_low > 0 or comparison.ci_high < 0  # False for a NaN CI
    else:
        significant = adjusted_p <= alpha and comparison.difference != 0
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


def _bootstrap_seed_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of ``values`` (seeds x images): seeds and images resampled with replacement.

    One image resample serves every seed (the images are shared). Images with the same values
    across seeds are pooled, so an image resample is a multinomial draw over the distinct rows.
    """
    n_seeds, n_images = values.shape
    patterns, counts = np.unique(values.T, axis=0, return_counts=True)
    image_counts = rng.multinomial(n_images, counts / n_images, size=resamples)
    seed_means = image_counts @ patterns / n_images  # (resamples, seeds)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)
    return (seed_counts * seed_means).sum(axis=1) / n_seeds


def _percentiles(resampled: np.ndarray, level: float) -> tuple[float, float]:
    low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
