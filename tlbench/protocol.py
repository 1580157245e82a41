"""Framework-free parts of the training protocol that every engine shares: learning-rate
factors, augmentation, precision labels, resizing."""

from __future__ import annotations

import math

import numpy as np

from tlbench.types import PluginError, TrainSettings


def lr_factor(epoch: int, settings: TrainSettings, epochs: int) -> float:
    """Multiplier of the base learning rate in 0-based ``epoch`` of a phase of ``epochs``.

    Linear warmup over ``warmup_epochs`` ((e + 1) / (warmup + 1)), then the schedule:
    constant; cosine (from 1 towards 0 over the remaining epochs); step (x0.1 every
    max(1, epochs // 3) epochs).
    """
    warmup = settings.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
    if settings.schedule == "step":
        return 0.1 ** ((epoch - warmup) // max(1, epochs // 3))
    raise PluginError(f"unknown lr schedule {settings.schedule!r}: constant, cosine or step")


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (after reflect-padding by size // 8) and random horizontal flip, per image."""
    n, size = images.shape[0], images.shape[1]
    pad = max(1, size // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        crop = padded[i, dy : dy + size, dx : dx + size]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def effective_precision(requested: str, device: str) -> str:
    """What precision a cell really runs in: mixed precision on GPU, fp32 on CPU."""
    if requested not in ("fp32", "bf16", "fp16"):
        raise PluginError(f"unknown precision {requested!r}: fp32, bf16 or fp16")
    if requested == "fp32" or device == "cuda":
        return requested
    return f"fp32 (requested {requested}; CPU fallback)"


def images_at(images: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """uint8 images (NHWC, or NHW grayscale) resized to ``size`` x ``size`` RGB when needed."""
    from tlbench.data import ArraySplit

    return ArraySplit(images, np.zeros(len(images)), fingerprint="-").images(size, interpolation)
