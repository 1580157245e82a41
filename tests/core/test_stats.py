"""Statistics with known answers: t and bootstrap intervals, paired bootstrap coverage, Holm, verdicts."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from tlbench.stats import Comparison, holm, judge, mean_ci, paired_difference, paired_difference_from_accuracies


def t_quantile_2_dof(p: float) -> float:
    """Student t quantile with 2 degrees of freedom, in closed form."""
    return (2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p)))


def simulate_pair(rng, accuracy_a: float, accuracy_b: float, seeds: int = 3, images: int = 400,
                  seed_sd: float = 0.02, cell_sd: float = 0.01, image_share: float = 0.9):
    """Per-image correctness of two strategies on shared test images; P(correct) is exact.

    Each seed shifts both strategies (shared training subset) and each cell by a little more;
    an image's ease is shared by every cell, so correctness is correlated across seeds and sides.
    """
    from scipy.stats import norm

    ease = rng.standard_normal(images)
    a, b = {}, {}
    for seed in range(seeds):
        shift = rng.normal(0, seed_sd)
        for side, accuracy in ((a, accuracy_a), (b, accuracy_b)):
            cell_accuracy = accuracy + shift + rng.normal(0, cell_sd)
            latent = math.sqrt(image_share) * ease + math.sqrt(1 - image_share) * rng.standard_normal(images)
            side[seed] = latent < norm.ppf(cell_accuracy)
    return a, b


def correctness(accuracy: float, images: int, rng) -> np.ndarray:
    """Exactly round(accuracy * images) correct images, in random order."""
    correct = np.zeros(images, dtype=bool)
    correct[:round(accuracy * images)] = True
    return rng.permutation(correct)


# ---------------------------------------------------------------- mean_ci


def test_t_interval_matches_the_hand_computed_value():
    interval = mean_ci([0.90, 0.92, 0.94])
    half_width = t_quantile_2_dof(0.975) * 0.02 / math.sqrt(3)  # sd 0.02 over 3 seeds
    assert half_width == pytest.approx(0.049682, abs=1e-6)
    assert interval.mean == pytest.approx(0.92)
    assert interval.low == pytest.approx(0.92 - half_width, abs=1e-12)
    assert interval.high == pytest.approx(0.92 + half_width, abs=1e-12)
    assert interval.method == "t interval over 3 seeds"


def test_one_seed_bootstrap_has_the_binomial_width():
    correct = correctness(0.8, 2000, np.random.default_rng(0))
    interval = mean_ci([0.8], [correct])
    expected_width = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 2000)
    assert interval.high - interval.low == pytest.approx(expected_width, rel=0.08)
    assert interval.low < 0.8 < interval.high
    assert (interval.low + interval.high) / 2 == pytest.approx(0.8, abs=0.003)
    assert interval.method == "bootstrap over 2000 test images (1 seed)"


def test_one_seed_without_predictions_has_no_interval():
    interval = mean_ci([0.7])
    assert interval.mean == 0.7 and math.isnan(interval.low) and math.isnan(interval.high)
    assert interval.method == "one seed, no predictions"


def test_mean_ci_rejects_empty_and_mismatched_inputs():
    with pytest.raises(ValueError, match="at least one accuracy"):
        mean_ci([])
    with pytest.raises(ValueError, match="one accuracy but 2 correctness arrays"):
        mean_ci([0.5], [np.ones(4, bool), np.ones(4, bool)])


# ---------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_covers_a_known_difference():
    rng = np.random.default_rng(12345)
    trials, covered = 200, 0
    for trial in range(trials):
        a, b = simulate_pair(rng, 0.85, 0.80)
        comparison = paired_difference(a, b, resamples=2000, seed=trial)
        covered += comparison.ci_low <= 0.05 <= comparison.ci_high
    assert 0.90 <= covered / trials <= 0.99


def test_identical_sides_differ_by_nothing():
    rng = np.random.default_rng(1)
    a = {seed: correctness(0.8, 300, rng) for seed in range(3)}
    comparison = paired_difference(a, dict(a))
    assert (comparison.difference, comparison.ci_low, comparison.ci_high, comparison.p_value) == (0, 0, 0, 1)
    assert judge(comparison, recommended_side_is_best=True) == "not significant"


def test_equal_accuracies_are_not_significant():
    a, b = simulate_pair(np.random.default_rng(2), 0.8, 0.8, images=500)
    comparison = paired_difference(a, b)
    assert comparison.ci_low < 0 < comparison.ci_high
    assert comparison.p_value > 0.05
    assert judge(comparison, recommended_side_is_best=True) == "not significant"
    assert judge(comparison, recommended_side_is_best=False) == "not significant"


def test_a_large_difference_is_significant_in_its_direction():
    a, b = simulate_pair(np.random.default_rng(3), 0.95, 0.60)
    comparison = paired_difference(a, b, resamples=5000)
    exact = np.mean([a[s].mean() - b[s].mean() for s in a])
    assert comparison.difference == pytest.approx(exact)
    assert 0 < comparison.ci_low < exact < comparison.ci_high
    assert comparison.p_value == 1 / 5001  # no resample as far from the estimate as 0 is
    assert (comparison.seeds, comparison.images) == (3, 400)
    assert judge(comparison, recommended_side_is_best=True) == "agrees"
    assert judge(comparison, recommended_side_is_best=False) == "disagrees"
    reversed_ = paired_difference(b, a, resamples=5000)
    assert reversed_.ci_high < 0
    assert judge(reversed_, recommended_side_is_best=True) == "disagrees"


def test_only_shared_seeds_are_paired_and_one_seed_is_enough():
    a, b = simulate_pair(np.random.default_rng(4), 0.9, 0.7, seeds=3)
    del b[0], b[1]
    comparison = paired_difference(a, b)
    assert comparison.seeds == 1
    assert comparison.difference == pytest.approx(a[2].mean() - b[2].mean())
    assert comparison.ci_low < comparison.difference < comparison.ci_high


def test_the_bootstrap_is_deterministic():
    a, b = simulate_pair(np.random.default_rng(5), 0.82, 0.80)
    assert paired_difference(a, b) == paired_difference(a, b)
    assert paired_difference(a, b, seed=1) != paired_difference(a, b)
    correct = correctness(0.6, 100, np.random.default_rng(6))
    assert mean_ci([0.6], [correct]) == mean_ci([0.6], [correct])


def test_unpairable_inputs_raise():
    ones = np.ones(10, dtype=bool)
    with pytest.raises(ValueError, match=r"no seed shared by both sides \(a has seeds \[0\], b has \[1\]\)"):
        paired_difference({0: ones}, {1: ones})
    with pytest.raises(ValueError, match="seed 0: a has 10 test images, b has 9"):
        paired_difference({0: ones}, {0: ones[:9]})
    with pytest.raises(ValueError, match=r"different numbers of test images \(\[9, 10\]\)"):
        paired_difference({0: ones, 1: ones[:9]}, {0: ones, 1: ones[:9]})
    with pytest.raises(ValueError, match="no seed shared"):
        paired_difference_from_accuracies({0: 0.5}, {1: 0.5})


# ---------------------------------------------------------------- accuracies only


def test_paired_t_from_accuracies_matches_the_hand_computed_values():
    comparison = paired_difference_from_accuracies({0: 0.90, 1: 0.92, 2: 0.94, 3: 0.5},
                                                   {0: 0.88, 1: 0.90, 2: 0.90})
    # differences 0.02, 0.02, 0.04: mean 0.02667, standard error 0.02 / 3, t = 4
    standard_error = 0.02 / 3
    assert comparison.difference == pytest.approx(0.08 / 3)
    assert comparison.ci_low == pytest.approx(0.08 / 3 - t_quantile_2_dof(0.975) * standard_error)
    assert comparison.ci_high == pytest.approx(0.08 / 3 + t_quantile_2_dof(0.975) * standard_error)
    assert comparison.p_value == pytest.approx(1 - 4 / math.sqrt(2 + 4 ** 2))  # P(|T_2| > 4)
    assert (comparison.seeds, comparison.images) == (3, 0)


def test_one_seed_of_accuracies_is_not_testable():
    comparison = paired_difference_from_accuracies({0: 0.9}, {0: 0.8})
    assert comparison.difference == pytest.approx(0.1)
    assert math.isnan(comparison.ci_low) and math.isnan(comparison.ci_high) and comparison.p_value == 1
    assert comparison.method == "one seed, no predictions: not testable"
    assert judge(comparison, recommended_side_is_best=True) == "not significant"


def test_constant_accuracy_differences_have_a_zero_width_interval():
    comparison = paired_difference_from_accuracies({0: 0.9, 1: 0.8}, {0: 0.85, 1: 0.75})
    assert comparison.ci_low == pytest.approx(0.05) and comparison.ci_high == pytest.approx(0.05)
    assert comparison.p_value == 0


# ---------------------------------------------------------------- Holm and the verdict


def test_holm_matches_the_textbook_example():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_leaves_nan_out_of_the_count_and_caps_at_one():
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_holm_is_monotone_and_never_below_the_raw_p_value():
    p = np.random.default_rng(7).uniform(0, 0.2, 30)
    adjusted = np.array(holm(p))
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p) and np.all(adjusted <= 1)


def comparison_with(difference: float, ci_low: float, ci_high: float, p_value: float = 0.01) -> Comparison:
    return Comparison(difference, ci_low, ci_high, p_value, seeds=3, images=100, method="made up")


def test_judge_reads_the_interval():
    assert judge(None, recommended_side_is_best=True) == "not covered"
    assert judge(comparison_with(0.05, 0.01, 0.09), True) == "agrees"
    assert judge(comparison_with(0.05, 0.01, 0.09), False) == "disagrees"
    assert judge(comparison_with(0.05, -0.01, 0.09), True) == "not significant"
    assert judge(comparison_with(0.05, math.nan, math.nan), True) == "not significant"


def test_judge_can_decide_on_the_holm_adjusted_p_value_instead():
    significant_interval = comparison_with(0.05, 0.01, 0.09)
    assert judge(significant_interval, True, adjusted_p=0.2) == "not significant"
    assert judge(significant_interval, True, adjusted_p=0.04) == "agrees"
    assert judge(significant_interval, False, adjusted_p=0.04) == "disagrees"
    assert judge(significant_interval, True, adjusted_p=math.nan) == "not significant"


def test_the_t_interval_and_test_leave_scipy_stats_unimported():
    # every report computes them; importing scipy.stats for them cost about 3 s per run
    code = ("import sys\nfrom tlbench import stats\n"
            "stats.mean_ci([0.8, 0.9, 0.85])\nstats.paired_difference_from_accuracies({0: 0.9, 1: 0.8}, {0: 0.7, 1: 0.75})\n"
            "print('scipy.stats' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False"]
