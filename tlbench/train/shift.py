"""The shift profile: how far a target's images are from ImageNet at each depth of a pretrained
network, read against the statistics its BatchNorm layers keep; no ImageNet image, no label.

An engine hands over, per BatchNorm layer and batch of images, the float64 sums of the layer's
input per channel (:class:`tlbench.plugin.engine.BatchNormSums`, eval mode, nothing changes);
:func:`statistics_rows` adds them up over the batches into one row per channel
(:data:`COLUMNS`), which the feature cache keeps; :func:`shift_profile` turns the rows into
the profile per block and its summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tlbench.plugin.specs import PluginError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from tlbench.plugin.engine import BatchNormSums

COLUMNS = ("layer", "block", "mean", "var", "running_mean", "running_var", "eps")
NO_BATCHNORM = "the backbone has no BatchNorm layer with running statistics: there is nothing to compare the images with"


def symmetric_kl(mean_p: ArrayLike, var_p: ArrayLike, mean_q: ArrayLike, var_q: ArrayLike) -> np.ndarray:
    """KL(p||q) + KL(q||p) of the Gaussians p = N(mean_p, var_p), q = N(mean_q, var_q), elementwise:
    ``((var_p - var_q)^2 + (var_p + var_q)(mean_p - mean_q)^2) / (2 var_p var_q)``."""
    mean_p, var_p, mean_q, var_q = (np.asarray(v, dtype=np.float64) for v in (mean_p, var_p, mean_q, var_q))
    return ((var_p - var_q) ** 2 + (var_p + var_q) * (mean_p - mean_q) ** 2) / (2 * var_p * var_q)


def statistics_rows(batches: Iterable[Sequence[BatchNormSums]]) -> np.ndarray:
    """``(channels of all layers, len(COLUMNS))`` float64 from each batch's ``BatchNormSums``: per
    channel, its layer's index and block, the mean and (population) variance of the layer's input
    over every image and position of all the batches, and the layer's running mean, running
    variance and epsilon. No rows without a BatchNorm layer."""
    totals: list[list[Any]] | None = None
    for sums in batches:
        if totals is None:
            totals = [[s, s.count, np.asarray(s.total, np.float64), np.asarray(s.squares, np.float64)] for s in sums]
            continue
        if len(sums) != len(totals):
            raise PluginError(f"the engine gave {len(sums)} BatchNorm layers for one batch and {len(totals)} for another")
        for total, s in zip(totals, sums, strict=True):
            total[1:] = total[1] + s.count, total[2] + s.total, total[3] + s.squares
    rows = [np.zeros((0, len(COLUMNS)))]
    for layer, (s, count, total, squares) in enumerate(totals or []):
        mean = total / count
        channels = np.ones(len(mean))
        rows.append(np.column_stack([channels * layer, channels * s.block, mean, np.maximum(squares / count - mean ** 2, 0),
                                     np.asarray(s.running_mean, np.float64), np.asarray(s.running_var, np.float64),
                                     channels * s.eps]))
    return np.concatenate(rows)


def shift_profile(statistics: np.ndarray, blocks: int) -> dict[str, Any]:
    """The ``shift_profile``: per block (stem first) the mean over its BatchNorm layers of each
    layer's mean over channels of :func:`symmetric_kl` between the images' N(mean, var + eps) and
    the stored N(running_mean, running_var + eps) (eps: the layer's own, which it adds too), None
    for a block without one; ``shift``: the mean of the profile over the blocks with a value;
    ``shift_reason``: None, or why both are None (no BatchNorm layer)."""
    rows = np.asarray(statistics, dtype=np.float64).reshape(-1, len(COLUMNS))
    if not len(rows):
        return {"shift_profile": None, "shift": None, "shift_reason": NO_BATCHNORM}
    layer, block, mean, var, running_mean, running_var, eps = rows.T
    layer = layer.astype(int)
    distances = symmetric_kl(mean, var + eps, running_mean, running_var + eps)
    per_layer = np.bincount(layer, distances) / np.bincount(layer)
    layer_block = np.zeros(len(per_layer), int)
    layer_block[layer] = block.astype(int)
    profile = [float(per_layer[layer_block == b].mean()) if (layer_block == b).any() else None for b in range(blocks)]
    measured = [value for value in profile if value is not None]
    return {"shift_profile": profile, "shift": float(np.mean(measured)), "shift_reason": None}
