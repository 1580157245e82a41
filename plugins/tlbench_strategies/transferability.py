"""Transferability scores: how well a pretrained model should transfer, from frozen outputs only.

LogME and H-score read the backbone's features on the target images; LEEP and NCE read the
pretrained (source) head's outputs. Nothing is trained. Higher is better for every score.
LEEP fitted and scored on the same images reads above its no-information value, the more so the
fewer the images; :func:`leep_against_shuffled` scores it on held-out images against shuffled labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_TINY = 1e-12  # floor for squared norms, so that a perfect fit gives a huge, finite precision
SHUFFLES = 10  # label shuffles that LEEP's no-information baseline averages
HELD_OUT = ("leep_heldout", "leep_shuffled", "leep_shuffled_sd", "leep_gain")  # the scores of leep_against_shuffled


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME: the maximised log evidence per sample of a Bayesian linear model, mean over classes.

    You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021 (Algorithm 1). Each class is a 0/1 regression target.
    """
    features = np.asarray(features, dtype=np.float64)
    classes = _class_indices(labels)
    spectrum = _spectrum(features)
    evidences = [_maximised_evidence(spectrum, (classes == c).astype(np.float64))[0]
                 for c in range(classes.max() + 1)]
    return float(np.mean(evidences) / len(features))


def max_log_evidence(features: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """``(evidence, alpha, beta)`` at LogME's fixed point for one regression target ``y``."""
    spectrum = _spectrum(np.asarray(features, dtype=np.float64))
    return _maximised_evidence(spectrum, np.asarray(y, dtype=np.float64))


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Log evidence of ``y`` under ``w ~ N(0, I/alpha)``, ``y ~ N(Fw, I/beta)``, by dense algebra.

    The reference for :func:`logme` (which uses the SVD instead).
    """
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = features.shape
    precision = alpha * np.eye(d) + beta * features.T @ features
    m = beta * np.linalg.solve(precision, features.T @ y)
    _, log_det = np.linalg.slogdet(precision)
    residual = features @ m - y
    return float(n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                 - beta / 2 * residual @ residual - alpha / 2 * m @ m - log_det / 2)


def leep(source_probabilities: np.ndarray, labels: np.ndarray,
         held_out: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """LEEP: mean log-likelihood of the target labels through the source head's soft labels.

    Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020. ``source_probabilities`` is ``(N, Z)``, rows summing to 1.
    The empirical conditional P(y|z) is fitted on these images and scored on them (the paper's), or
    on ``held_out`` = ``(probabilities, labels)`` of other images, whose classes the fit must hold.
    """
    theta = np.asarray(source_probabilities, dtype=np.float64)
    scored_theta, scored_labels = (theta, labels) if held_out is None else (np.asarray(held_out[0], np.float64), held_out[1])
    classes = _class_indices(np.concatenate([np.ravel(labels), np.ravel(scored_labels)]))
    fitted, scored = classes[:len(theta)], classes[len(theta):]
    if not np.isin(scored, fitted).all():
        raise ValueError("LEEP: a held-out class has no image among the images the conditional is fitted on")
    joint = np.zeros((classes.max() + 1, theta.shape[1]))
    np.add.at(joint, fitted, theta)
    likelihood = (scored_theta * _conditional(joint / len(fitted))[scored]).sum(axis=1)
    return float(np.log(likelihood).mean())


def leep_against_shuffled(source_probabilities: np.ndarray, labels: np.ndarray,
                          held_out: tuple[np.ndarray, np.ndarray], shuffles: int = SHUFFLES,
                          seed: int = 0) -> dict[str, float]:
    """LEEP fitted on the training images and scored on ``held_out`` (``leep_heldout``), against the
    same with the training labels shuffled (``leep_shuffled``: the mean over ``shuffles`` seeded
    permutations, which carry no information; ``leep_shuffled_sd``: their standard deviation, the
    spread ``leep_heldout`` has when the labels carry none); ``leep_gain`` = the difference, about 0
    when the source head says nothing about the labels, at any sample size."""
    rng = np.random.default_rng(seed)
    fitted = leep(source_probabilities, labels, held_out)
    shuffled = [leep(source_probabilities, rng.permutation(np.ravel(labels)), held_out) for _ in range(shuffles)]
    mean = float(np.mean(shuffled))
    return {"leep_heldout": fitted, "leep_shuffled": mean, "leep_shuffled_sd": float(np.std(shuffled, ddof=1)),
            "leep_gain": fitted - mean}


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: minus the conditional entropy H(Y|Z) of target labels given hard source labels.

    Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification Tasks",
    ICCV 2019. ``source_labels`` is the argmax of the source head.
    """
    sources, classes = _class_indices(source_labels), _class_indices(labels)
    joint = np.zeros((classes.max() + 1, sources.max() + 1))
    np.add.at(joint, (classes, sources), 1.0)
    joint /= len(classes)
    seen = joint > 0
    return float((joint[seen] * np.log(_conditional(joint)[seen])).sum())


def hscore(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: ``tr(cov(f)^-1 cov(E[f|y]))``, with a pseudo-inverse.

    Bao, Li, Huang, Zhao, Zhong, Zheng, "An Information-Theoretic Approach to Transferability in
    Task Transfer Learning", ICIP 2019. With no more images than feature dimensions (N <= D)
    the sample covariance is singular and that formula gives exactly C - 1 whatever the
    features; there ``cov(f)`` is the Ledoit-Wolf shrinkage estimate and the between-class
    covariance is scaled by 1 - shrinkage: the regularised H-score of Ibrahim, Ponomareva and
    Mazumder (NeurIPS 2021), as TLlib's ``regularized_h_score``.
    """
    features = np.asarray(features, dtype=np.float64)
    classes = _class_indices(labels)
    class_means = np.zeros((classes.max() + 1, features.shape[1]))
    np.add.at(class_means, classes, features)
    class_means /= np.bincount(classes)[:, None]
    between = _covariance(class_means[classes])
    if len(features) > features.shape[1]:
        return float(np.trace(np.linalg.pinv(_covariance(features)) @ between))
    from sklearn.covariance import ledoit_wolf

    covariance, shrinkage = ledoit_wolf(features)
    return float(np.trace(np.linalg.pinv(covariance) @ ((1 - shrinkage) * between)))


def transferability_scores(features: np.ndarray, labels: np.ndarray, source_probabilities: np.ndarray | None = None,
                           held_out: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """``{"logme", "hscore"}`` from features; ``{"leep", "nce"}`` from the source head (None without);
    :data:`HELD_OUT` from the source head and ``held_out`` = its ``(probabilities, labels)`` on
    other images (None without either)."""
    head = source_probabilities
    return {
        "logme": logme(features, labels),
        "leep": None if head is None else leep(head, labels),
        **(dict.fromkeys(HELD_OUT) if head is None or held_out is None else leep_against_shuffled(head, labels, held_out)),
        "nce": None if head is None else nce(np.asarray(head).argmax(axis=1), labels),
        "hscore": hscore(features, labels),
    }


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(U, squared singular values, D)`` of the features' reduced SVD, zero directions dropped."""
    u, singular, _ = np.linalg.svd(features, full_matrices=False)
    kept = singular > singular.max(initial=0.0) * max(features.shape) * np.finfo(np.float64).eps
    return u[:, kept], singular[kept] ** 2, features.shape[1]


def _maximised_evidence(spectrum: tuple[np.ndarray, np.ndarray, int], y: np.ndarray,
                        tolerance: float = 1e-10, max_iterations: int = 10_000) -> tuple[float, float, float]:
    """MacKay's fixed point for (alpha, beta) in the SVD basis, then the evidence there.

    With ``F = U S V^T`` and ``z = U^T y``, every quantity is a sum over the r non-zero singular
    values; the D - r null directions of F^T F add ``log alpha`` each to ``log|A|``.
    """
    u, s2, d = spectrum
    n = len(y)
    z2 = (u.T @ y) ** 2
    outside = max(y @ y - z2.sum(), 0.0)  # the part of y that no weight can fit

    def fit(alpha: float, beta: float) -> tuple[float, float, float]:
        """Effective number of parameters, |m|^2 and |Fm - y|^2 at (alpha, beta)."""
        shrink = alpha / (alpha + beta * s2)
        return (1 - shrink).sum(), ((1 - shrink) ** 2 * z2 / s2).sum(), (shrink ** 2 * z2).sum() + outside

    alpha, beta = 1.0, 1.0
    for _ in range(max_iterations):
        gamma, weight_norm, residual = fit(alpha, beta)
        new_alpha, new_beta = gamma / max(weight_norm, _TINY), (n - gamma) / max(residual, _TINY)
        converged = abs(new_alpha - alpha) <= tolerance * alpha and abs(new_beta - beta) <= tolerance * beta
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    _, weight_norm, residual = fit(alpha, beta)
    log_det = np.log(alpha + beta * s2).sum() + (d - len(s2)) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * residual - alpha / 2 * weight_norm - log_det / 2)
    return float(evidence), float(alpha), float(beta)


def _class_indices(labels: np.ndarray) -> np.ndarray:
    """Labels as indices 0..C-1 of the classes present."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def _conditional(joint: np.ndarray) -> np.ndarray:
    """P(y|z) from the joint P(y, z) (classes x sources); 0 for sources never seen."""
    marginal = joint.sum(axis=0, keepdims=True)
    conditional: np.ndarray = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # numpy's stubs: Any
    return conditional


def _covariance(values: np.ndarray) -> np.ndarray:
    centred = values - values.mean(axis=0)
    covariance: np.ndarray = centred.T @ centred / len(values)  # numpy's stubs: Any
    return covariance
