"""Transferability scores against brute force and hand-computable cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tlbench_strategies.transferability import (
    hscore,
    leep,
    leep_against_shuffled,
    log_evidence,
    logme,
    max_log_evidence,
    nce,
    transferability_scores,
)


def partly_predictable(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features whose first coordinate carries the label, plus noise."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, d))
    labels = np.digitize(features[:, 0] + 0.5 * rng.standard_normal(n), np.linspace(-1, 1, classes - 1))
    return features, labels


def brute_force_max_evidence(features: np.ndarray, y: np.ndarray) -> float:
    """Max of the dense log evidence: a log-spaced (alpha, beta) grid, then Nelder-Mead from its best."""
    from scipy.optimize import minimize

    grid = np.linspace(-10, 10, 41)
    values = np.array([[log_evidence(features, y, math.exp(la), math.exp(lb)) for lb in grid] for la in grid])
    best = np.unravel_index(values.argmax(), values.shape)
    refined = minimize(lambda t: -log_evidence(features, y, math.exp(t[0]), math.exp(t[1])),
                       [grid[best[0]], grid[best[1]]], method="Nelder-Mead",
                       options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 2000})
    return max(values.max(), -refined.fun)


def rank_deficient() -> tuple[np.ndarray, np.ndarray]:
    features, labels = partly_predictable(40, 6, 2, seed=2)
    return np.column_stack([features, features[:, 0] - features[:, 1]]), labels


CASES = {"N > D": partly_predictable(60, 8, 3, seed=0), "N < D": partly_predictable(20, 30, 2, seed=1),
         "rank < D < N": rank_deficient()}


def test_log_evidence_is_the_marginal_likelihood():
    from scipy.stats import multivariate_normal

    features, labels = CASES["N > D"]
    y = (labels == 1).astype(float)
    alpha, beta = 3.0, 0.7
    covariance = features @ features.T / alpha + np.eye(len(y)) / beta  # y ~ N(0, FF^T/alpha + I/beta)
    assert log_evidence(features, y, alpha, beta) == pytest.approx(
        multivariate_normal(np.zeros(len(y)), covariance).logpdf(y), rel=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_logme_is_the_maximised_evidence(case):
    features, labels = CASES[case]
    maxima = []
    for c in np.unique(labels):
        y = (labels == c).astype(float)
        evidence, alpha, beta = max_log_evidence(features, y)
        maximum = brute_force_max_evidence(features, y)
        assert evidence == pytest.approx(maximum, rel=1e-4)
        assert evidence >= maximum - 1e-8
        assert log_evidence(features, y, alpha, beta) == pytest.approx(evidence, rel=1e-10)
        maxima.append(maximum)
    assert logme(features, labels) == pytest.approx(np.mean(maxima) / len(labels), rel=1e-4)


def test_logme_ranks_separating_features_above_noise():
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 30)
    separating = np.eye(3)[labels] * 3 + rng.standard_normal((90, 3)) * 0.3
    separating = np.column_stack([separating, rng.standard_normal((90, 5))])
    noise = rng.standard_normal((90, 8))
    assert logme(separating, labels) > logme(noise, labels)


def test_perfect_source_head_gives_zero_leep_and_nce():
    labels = np.array([0, 0, 1, 1, 2, 2])
    sources = np.array([4, 4, 1, 1, 0, 3])  # each source class names one target class; 2 never seen
    one_hot = np.eye(5)[sources]
    assert leep(one_hot, labels) == pytest.approx(0.0, abs=1e-12)
    assert nce(sources, labels) == pytest.approx(0.0, abs=1e-12)


def test_uniform_source_head_gives_log_one_over_classes():
    labels = np.repeat(np.arange(4), 5)
    assert leep(np.full((20, 7), 1 / 7), labels) == pytest.approx(math.log(1 / 4))


def test_nce_is_minus_the_conditional_entropy():
    # z = 0 holds one image of each class (entropy log 2), z = 1 only class 1: H(Y|Z) = log 2 / 2
    assert nce(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx(-math.log(2) / 2)


def test_nce_is_leep_with_a_one_hot_head():
    rng = np.random.default_rng(4)
    sources, labels = rng.integers(0, 6, 50), rng.integers(0, 3, 50)
    assert nce(sources, labels) == pytest.approx(leep(np.eye(6)[sources], labels))


def test_hscore_on_a_one_dimensional_example():
    # f = 0, 2 | 10, 12: var(f) = 26, class means 1 | 11: var(E[f|y]) = 25
    assert hscore(np.array([[0.0], [2.0], [10.0], [12.0]]), np.array([0, 0, 1, 1])) == pytest.approx(25 / 26)


def test_hscore_ignores_invertible_linear_maps_of_the_features():
    features, labels = CASES["N > D"]
    mixing = np.random.default_rng(5).standard_normal((8, 8))
    assert hscore(features @ mixing, labels) == pytest.approx(hscore(features, labels), rel=1e-6)


def test_hscore_with_fewer_images_than_dimensions_is_shrunk_and_informative():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(8)
    labels = np.repeat([0, 1, 2], 10)  # N = 30 images, D = 64 dimensions
    noise = rng.standard_normal((30, 64))
    informative = noise + 3 * np.eye(64)[labels * 5]  # the class moves the features along one axis each
    for features in (noise, informative):  # the unshrunk formula cannot tell them apart: C - 1 exactly
        centred = features - features.mean(axis=0)
        means = np.stack([features[labels == c].mean(axis=0) for c in range(3)])[labels] - features.mean(axis=0)
        assert np.trace(np.linalg.pinv(centred.T @ centred) @ means.T @ means) == pytest.approx(2.0)
    fitted = LedoitWolf().fit(informative)
    means = np.stack([informative[labels == c].mean(axis=0) for c in range(3)])[labels]
    between = np.cov(means, rowvar=False, bias=True)
    expected = np.trace(np.linalg.pinv(fitted.covariance_) @ ((1 - fitted.shrinkage_) * between))
    assert hscore(informative, labels) == pytest.approx(expected, rel=1e-9)
    assert hscore(informative, labels) > 3 * hscore(noise, labels)
    assert hscore(noise, labels) < 2.0


def test_scores_ignore_how_classes_are_numbered():
    features, labels = CASES["N > D"]
    renamed = np.array([7, 3, 11])[labels]
    head = np.random.default_rng(6).dirichlet(np.ones(5), len(labels))
    assert transferability_scores(features, renamed, head) == transferability_scores(features, labels, head)


def test_transferability_scores_dict():
    features, labels = CASES["N > D"]
    rng = np.random.default_rng(7)
    head, held_out = rng.dirichlet(np.ones(5), len(labels)), (rng.dirichlet(np.ones(5), 30), rng.integers(0, 3, 30))
    scores = transferability_scores(features, labels, head, held_out)
    assert list(scores) == ["logme", "leep", "leep_heldout", "leep_shuffled", "leep_shuffled_sd", "leep_gain", "nce",
                            "hscore"]
    assert all(type(value) is float for value in scores.values())
    assert scores["leep"] == leep(head, labels)
    assert scores["leep_heldout"] == leep(head, labels, held_out)
    assert scores["leep_gain"] == scores["leep_heldout"] - scores["leep_shuffled"]
    assert scores["nce"] == nce(head.argmax(axis=1), labels)
    assert scores == transferability_scores(features, labels, head, held_out)  # the shuffles are seeded
    without_held_out = transferability_scores(features, labels, head)
    assert without_held_out["leep"] == scores["leep"] and without_held_out["leep_gain"] is None
    features_only = transferability_scores(features, labels)
    assert all(features_only[k] is None for k in ("leep", "leep_heldout", "leep_shuffled", "leep_shuffled_sd", "leep_gain",
                                                  "nce"))
    assert features_only["logme"] == scores["logme"] and features_only["hscore"] == scores["hscore"]


def test_held_out_leep_fits_on_one_set_and_scores_another():
    # fitted: source 0 holds two images of class a and none of b, source 1 one of each: P(a|0) = 1, P(a|1) = 1/2
    fit = np.eye(2)[[0, 0, 1, 1]], np.array(["a", "a", "a", "b"])
    held_out = np.array([[0.5, 0.5], [0.0, 1.0]]), np.array(["a", "b"])
    assert leep(*fit, held_out) == pytest.approx((math.log(0.5 + 0.25) + math.log(0.5)) / 2)
    assert leep(*fit) == pytest.approx((2 * math.log(1) + math.log(0.5) * 2) / 4)  # the paper's, on the same images
    with pytest.raises(ValueError, match="held-out class"):
        leep(*fit, (held_out[0], np.array(["a", "c"])))


def source_head(labels: np.ndarray, rng, sources: int = 100) -> np.ndarray:
    """Peaked soft labels, as an ImageNet head gives: each image's argmax is a random source class of
    the half of the sources that its label names (half 0 or 1)."""
    argmax = rng.integers(0, sources // 2, len(labels)) + sources // 2 * np.asarray(labels)
    probabilities = np.exp(rng.standard_normal((len(labels), sources)) + 6 * np.eye(sources)[argmax])
    return probabilities / probabilities.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("per_class", [10, 100])
def test_leep_gain_is_zero_without_information_at_any_size_and_positive_with_it(per_class):
    """Labels drawn independently of the images: the train-fitted LEEP reads well above its
    no-information value ln(1/2), but the gain over shuffled labels is 0 within noise; labels
    that the source head carries: a clear gain. 40 draws of 2 x ``per_class`` training images and
    100 validation images each."""
    rng = np.random.default_rng(per_class)
    raw, null, informative = [], [], []
    for _ in range(40):
        labels, valid_labels = rng.permutation(np.repeat([0, 1], per_class)), rng.integers(0, 2, 100)
        train, valid = source_head(rng.integers(0, 2, len(labels)), rng), source_head(rng.integers(0, 2, 100), rng)
        raw.append(leep(train, labels))
        null.append(leep_against_shuffled(train, labels, (valid, valid_labels)))
        train, valid = source_head(labels, rng), source_head(valid_labels, rng)
        informative.append(leep_against_shuffled(train, labels, (valid, valid_labels))["leep_gain"])
    gains = [scores["leep_gain"] for scores in null]
    print(f"{per_class} per class: LEEP - ln(1/2) = {np.mean(raw) - math.log(1 / 2):.3f}; gain without information "
          f"{np.mean(gains):+.4f} (sd {np.std(gains):.4f}), with {np.mean(informative):.3f}")
    assert np.mean(raw) > math.log(1 / 2) + 0.15  # measured +0.45 at 10 per class, +0.17 at 100
    assert abs(np.mean(gains)) < min(0.02, 3 * np.std(gains) / math.sqrt(len(gains)))  # measured -0.009, -0.004
    spread = np.mean([scores["leep_shuffled_sd"] for scores in null])  # the shuffles' spread is the gain's, without information
    assert np.std(gains) / 1.5 < spread < 1.5 * np.std(gains)
    assert np.mean(informative) > 0.1 and np.mean(np.array(informative) > 0) >= 0.9  # measured 0.14, 0.37
