"""Classification metrics from predicted probabilities, shared by every engine."""

from __future__ import annotations

from typing import Any

import numpy as np


def classification_metrics(probs: np.ndarray, labels: np.ndarray, prefix: str = "test") -> dict[str, Any]:
    """Accuracy, mean cross-entropy, balanced accuracy, top-5 (10+ classes), confusion matrix.

    ``probs`` is ``(N, C)``, rows summing to 1; ``labels`` is ``(N,)`` integer classes.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = probs.shape[1]
    predicted = probs.argmax(axis=1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    support = confusion.sum(axis=1)
    recalls = np.diag(confusion)[support > 0] / support[support > 0]
    picked = probs[np.arange(len(labels)), labels]
    metrics: dict[str, Any] = {
        f"{prefix}_accuracy": float((predicted == labels).mean()) if len(labels) else float("nan"),
        f"{prefix}_loss": float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()) if len(labels) else float("nan"),
        f"{prefix}_balanced_accuracy": float(recalls.mean()) if len(recalls) else float("nan"),
    }
    if n_classes >= 10:
        top5 = np.argsort(-probs, axis=1)[:, :5]
        metrics[f"{prefix}_top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
    if prefix == "test":
        metrics["confusion_matrix"] = confusion.tolist()
    return metrics


def group_probabilities(probs: np.ndarray, groups: list[tuple[int, ...]]) -> np.ndarray:
    """Sum ImageNet probabilities into target classes, then renormalise over the targets."""
    grouped = np.stack([probs[:, list(g)].sum(axis=1) for g in groups], axis=1)
    normalised: np.ndarray = grouped / np.clip(grouped.sum(axis=1, keepdims=True), 1e-12, None)
    return normalised


DEFAULT_PATIENCE = 3  # epochs without improvement that count as converged when `patience` is unset


def stopped_improving(epochs_run: int, best_epoch: int | None, patience: int | None) -> bool:
    """Whether training stopped improving: its best epoch is at least ``patience`` epochs (3 when
    unset) before the last one, as when early stopping fires."""
    return isinstance(best_epoch, int) and best_epoch <= epochs_run - (patience or DEFAULT_PATIENCE)
