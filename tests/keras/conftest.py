"""Shared fixture for the Keras plugin tests: tiny real images."""

from __future__ import annotations

import pytest

from support import SHARED_DATA
from tlbench.data.splits import FileSplit
from tlbench.plugin.specs import ImageDataset

DATA = SHARED_DATA / "dogs-vs-cats"
CAT_AND_DOG_CLASSES = {"cat": (281, 282, 283, 284, 285), "dog": tuple(range(151, 269))}


def _split(name: str, per_class: int) -> FileSplit:
    paths, labels = [], []
    for label, cls in enumerate(("cat", "dog")):
        files = sorted((DATA / name / cls).iterdir())[:per_class]
        paths += files
        labels += [label] * len(files)
    return FileSplit(paths, labels)


@pytest.fixture(scope="session")
def cats_and_dogs() -> ImageDataset:
    """20 real photos: 6 + 6 train, 2 + 2 valid, 2 + 2 test, with the ImageNet mapping."""
    if not DATA.is_dir():
        pytest.skip(f"real test images not found at {DATA} (../shared/data next to the repository)")
    return ImageDataset(
        "cats-and-dogs-tiny", ("cat", "dog"),
        {"train": _split("train", 6), "valid": _split("valid", 2), "test": _split("test", 2)},
        domain="natural", imagenet_classes=CAT_AND_DOG_CLASSES,
    )

