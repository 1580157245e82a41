"""LEEP with a real ImageNet head (timm's MobileNetV2, offline weights, 64 px) on real photos of cats
and dogs. With labels drawn independently of the photos, the paper's LEEP, fitted and scored on the
training photos, reads well above its no-information value ln(1/2), while the gain of LEEP on the
validation photos over shuffled training labels reads 0 on average, at 10 and at 101 photos per
class, and the shuffles' spread (``leep_shuffled_sd``) is its spread. Cats against dogs gain
clearly at 101 per class; at 10 per class the gain is positive on average but one draw's noise
is as large. The ``transferability`` strategy records the same, reading the valid split through
the ImageNet head and never the test split."""

from __future__ import annotations

import math

import numpy as np
import pytest

from support import SHARED_DATA
from tlbench.data.splits import ArraySplit, FileSplit
from tlbench.plugin.specs import ImageDataset
from tlbench_strategies.transferability import leep, leep_against_shuffled

DATA = SHARED_DATA / "dogs-vs-cats"
SIZE = 64
DRAWS = 20


class Sealed(ArraySplit):
    """A split that fails the cell if anything reads its images."""

    def images(self, size, interpolation="bilinear"):
        raise AssertionError("a sealed split was read")


@pytest.fixture(scope="module")
def photos() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per split (train: 101 per class, valid: 51 and 52): the photos at SIZE px, their ImageNet
    probabilities and their labels (0 = cat, 1 = dog)."""
    if not DATA.is_dir():
        pytest.skip(f"real test images not found at {DATA}")
    from tlbench.testing import engine_for
    from tlbench_timm import build

    backbone = build("mobilenetv2_100", weights="pretrained", image_size=SIZE)
    engine = engine_for("torch")
    classifier = engine.open_classifier(backbone, "cpu")
    found = {}
    for split in ("train", "valid"):
        files = [sorted((DATA / split / name).iterdir()) for name in ("cat", "dog")]
        labels = np.repeat([0, 1], [len(f) for f in files])
        images = np.asarray(FileSplit(files[0] + files[1], list(labels)).images(SIZE))
        found[split] = images, engine.imagenet_probabilities(classifier, images), labels
    return found


def stratified(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in (0, 1)])


@pytest.mark.parametrize("per_class", [10, 101])
def test_labels_independent_of_the_photos_gain_nothing_though_the_papers_leep_reads_above_chance(photos, per_class):
    _, train, _ = photos["train"]
    _, valid, _ = photos["valid"]
    rng = np.random.default_rng(per_class)
    raw, null = [], []
    for _ in range(DRAWS):
        chosen = rng.choice(len(train), 2 * per_class, replace=False)
        labels, valid_labels = rng.permutation(np.repeat([0, 1], per_class)), rng.integers(0, 2, len(valid))
        raw.append(leep(train[chosen], labels))
        null.append(leep_against_shuffled(train[chosen], labels, (valid, valid_labels)))
    gains, spread = [s["leep_gain"] for s in null], np.mean([s["leep_shuffled_sd"] for s in null])
    print(f"{per_class} per class: LEEP - ln(1/2) = {np.mean(raw) - math.log(1 / 2):.3f}, "
          f"gain {np.mean(gains):+.4f} (sd {np.std(gains):.4f}, shuffles' sd {spread:.4f})")
    assert np.mean(raw) > math.log(1 / 2) + 0.3  # measured +0.63 at 10 per class, +0.39 at 101
    assert abs(np.mean(gains)) < min(0.1, 3 * np.std(gains) / math.sqrt(DRAWS))  # measured +0.07 (SE 0.05), -0.01 (SE 0.02)
    assert np.std(gains) / 1.5 < spread < 1.5 * np.std(gains)


def test_cats_against_dogs_gain_clearly_with_101_photos_each_and_on_average_with_10(photos):
    _, train, labels = photos["train"]
    _, valid, valid_labels = photos["valid"]
    rng = np.random.default_rng(0)
    found = {per_class: [leep_against_shuffled(train[chosen], labels[chosen], (valid, valid_labels))
                         for chosen in (stratified(labels, per_class, rng) for _ in range(10))] for per_class in (10, 101)}
    for per_class, scores in found.items():
        print(f"{per_class} per class: cats against dogs, gain {np.mean([s['leep_gain'] for s in scores]):.3f} "
              f"(min {min(s['leep_gain'] for s in scores):.3f}, shuffles' sd {np.mean([s['leep_shuffled_sd'] for s in scores]):.3f})")
    assert all(s["leep_gain"] > 1.5 * s["leep_shuffled_sd"] for s in found[101])  # measured 0.24, shuffles sd 0.10
    assert np.mean([s["leep_gain"] for s in found[10]]) > 0.1  # measured 0.22, but shuffles sd 0.33: one draw cannot tell


def test_the_strategy_scores_the_valid_split_through_the_imagenet_head_and_never_reads_the_test_split(photos, tmp_path):
    from tlbench.plugin.registry import collect
    from tlbench.plugin.specs import CellContext, TrainSettings
    from tlbench.testing import train_cell
    from tlbench_timm import build

    images, train, labels = photos["train"]
    valid_images, valid, valid_labels = photos["valid"]
    chosen = stratified(labels, 10, np.random.default_rng(0))
    data = ImageDataset("photos", ("cat", "dog"), {
        "train": ArraySplit(images[chosen], list(labels[chosen])), "valid": ArraySplit(valid_images, list(valid_labels)),
        "test": Sealed(images[:2], [0, 1])}, domain="natural-photo")
    spec = collect().strategies.get("transferability")
    backbone = build("mobilenetv2_100", weights="pretrained", image_size=SIZE)
    metrics = train_cell(backbone, spec.plan({}, data), data, TrainSettings(),
                         CellContext(seed=0, device="cpu", cache_dir=str(tmp_path)), strategy=spec)
    scores = metrics["transferability"]
    expected = leep_against_shuffled(train[chosen], labels[chosen], (valid, valid_labels))
    assert {k: scores[k] for k in expected} == pytest.approx(expected, rel=1e-5)
    assert scores["leep"] == pytest.approx(leep(train[chosen], labels[chosen]), rel=1e-5)
    assert metrics["test_accuracy"] is None
