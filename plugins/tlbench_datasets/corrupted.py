"""Image folders seen through one corruption at one of five severities: a ladder of shifts from
the clean images whose order is known (ImageNet-C, Hendrycks & Dietterich, ICLR 2019).

``gaussian_noise``, ``gaussian_blur`` and ``contrast`` take ImageNet-C's parameter tables;
``invert`` and ``grayscale`` blend the image toward its inverted or grayscale version by
severity / 5. A corruption applies to every split, to the images at the size the network sees
(blur's sigma, given for 224-pixel images, scaled to that size), and is deterministic: noise
is drawn from a generator seeded by the clean image's pixels, the same pattern at every
severity. Each split's fingerprint carries the corruption, the severity and its parameter, so
no cache holds the clean images' features for corrupted ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from tlbench.data.splits import DECODE_CHUNK, DiskArray
from tlbench.plugin.specs import ImageDataset, ImageSplit, content_hash, quote

from .folder import check_folder, load_folder
from .splitting import raise_problems

SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224  # the image size ImageNet-C's blur sigmas are given for
BLEND = tuple(s / 5 for s in SEVERITIES)
PARAMETERS = {  # corruption -> its parameter at severities 1..5
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # std of the added noise, pixels in [0, 1]
    "gaussian_blur": (1, 2, 3, 4, 6),  # sigma in pixels of a 224-pixel image
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # factor on each channel's deviation from its mean
    "invert": BLEND,  # weight of the inverted image
    "grayscale": BLEND,  # weight of the grayscale image
}
CORRUPTIONS = tuple(PARAMETERS)
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as Pillow's "L" mode


def corruption_problems(corruption: Any, severity: Any) -> list[str]:
    """Problems with the ``corruption`` and ``severity`` options, each naming its option."""
    problems = []
    if corruption not in PARAMETERS:
        problems.append(f"corrupted-folder: option corruption must be one of {', '.join(CORRUPTIONS)}, "
                        f"not {quote(corruption)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        problems.append(f"corrupted-folder: option severity must be an integer from 1 to 5, not {quote(severity)}")
    return problems


def corrupt(image: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image corrupted at ``severity``, as uint8."""
    level = PARAMETERS[corruption][severity - 1]
    if corruption == "gaussian_blur":
        return _blur(image, level * image.shape[0] / REFERENCE_SIZE)
    x = image.astype(np.float64) / 255
    if corruption == "gaussian_noise":
        x = x + _noise(image) * level
    elif corruption == "contrast":
        means = x.mean(axis=(0, 1), keepdims=True)
        x = (x - means) * level + means
    else:
        target = 1 - x if corruption == "invert" else (x @ LUMA)[..., None]
        x = (1 - level) * x + level * target
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def _noise(image: np.ndarray) -> np.ndarray:
    """Standard normal noise of the image's shape, from a generator seeded by its pixels."""
    seed = int.from_bytes(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(image.shape)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(sigma)), dtype=np.uint8)


class CorruptedSplit:
    """The images of ``inner``, corrupted; its own fingerprint. Labels are the inner split's
    (after a decode: of the files that decoded)."""

    def __init__(self, inner: ImageSplit, corruption: str, severity: int):
        self.inner, self.corruption, self.severity = inner, corruption, severity
        self.fingerprint = content_hash({"split": inner.fingerprint, "corruption": corruption, "severity": severity,
                                         "parameter": PARAMETERS[corruption][severity - 1]})
        self._corrupted: dict[tuple[int, str], DiskArray] = {}

    @property
    def labels(self) -> np.ndarray:
        return self.inner.labels

    def __len__(self) -> int:
        return len(self.inner.labels)

    def images(self, size: int, interpolation: str = "bilinear") -> DiskArray:
        """The inner split's images at ``size``, corrupted a chunk at a time into a file (once per size)."""
        key = (size, interpolation)
        if key not in self._corrupted:
            clean = self.inner.images(size, interpolation)
            corrupted = DiskArray((size, size, 3))
            for first in range(0, len(clean), DECODE_CHUNK):
                corrupted.append(np.stack([corrupt(image, self.corruption, self.severity)
                                           for image in clean[first:first + DECODE_CHUNK]]))
            self._corrupted[key] = corrupted
        return self._corrupted[key]

    def subset(self, indices: Sequence[int]) -> CorruptedSplit:
        return CorruptedSplit(self.inner.subset(indices), self.corruption, self.severity)


def check_corrupted_folder(corruption: Any = None, severity: Any = None, **folder_options: Any) -> list[str]:
    """The corruption's problems and the folder's (:func:`tlbench_datasets.folder.check_folder`)."""
    return corruption_problems(corruption, severity) + check_folder(**folder_options)


def load_corrupted_folder(corruption: Any = None, severity: Any = None, **folder_options: Any) -> ImageDataset:
    """The folder dataset with every split corrupted; ``info`` records the corruption and severity."""
    raise_problems(corruption_problems(corruption, severity))
    data = load_folder(**folder_options)
    data.info.update(corruption=corruption, severity=severity)  # in place: the folder's skipped files update it
    data.name = "corrupted-folder"
    # cast: CorruptedSplit.images gives a DiskArray, which engines take wherever an array is annotated (see ImageSplit.images)
    data.splits = cast("dict[str, ImageSplit]",
                       {name: CorruptedSplit(split, corruption, severity) for name, split in data.splits.items()})
    return data
