"""Every trained cell keeps its predicted probabilities beside its record; the transferability
strategy scores frozen training features without reading the test split."""

from __future__ import annotations

import json

import numpy as np

import tlbench
from support import install_fake_distribution

UNTOUCHABLE_TEST = '''
import numpy as np
import tlbench
from tlbench.data.splits import ArraySplit
from tlbench.plugin.specs import DatasetSpec, ImageDataset


class Untouchable(ArraySplit):
    """A test split that fails the cell if anything reads its images."""

    def images(self, size, interpolation="bilinear"):
        raise AssertionError("the test split was read")


def load():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 100, (30, 8, 8, 3)).astype(np.uint8)
    images[15:, :, ::2] += 150
    labels = [0] * 15 + [1] * 15
    return ImageDataset("sealed", ("plain", "striped"),
                        {"train": ArraySplit(images, labels), "valid": ArraySplit(images, labels),
                         "test": Untouchable(images, labels)})


@tlbench.hookimpl
def tlbench_register_datasets():
    yield DatasetSpec("sealed", load=load, num_classes=2)
'''


def records(out) -> dict[str, dict]:
    return {r["strategy"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}


def test_a_trained_cell_keeps_its_validation_and_test_probabilities(toy_plugin, tmp_path):
    out = tmp_path / "run"
    tlbench.run_grid({"name": "kept", "datasets": ["stripes"], "backbones": ["toy/centroid"],
                      "strategies": ["extractor"]}, out=out, device="cpu")
    record = records(out)["extractor"]
    path = out / record["metrics"]["predictions_file"]
    assert record["metrics"]["predictions_file"] == f"predictions/{record['key'][:16]}.npz"
    with np.load(path) as kept:
        assert set(kept.files) == {"test_probabilities", "test_labels", "valid_probabilities", "valid_labels"}
        assert kept["test_probabilities"].dtype == np.float16 and kept["test_probabilities"].shape == (24, 2)
        accuracy = (kept["test_probabilities"].argmax(1) == kept["test_labels"]).mean()
    assert accuracy == record["metrics"]["test_accuracy"]
    assert not list((out / "predictions").glob(".tmp-*"))  # written whole, through a temporary file


def test_transferability_scores_training_features_and_never_reads_the_test_split(toy_plugin, fake_site, tmp_path):
    install_fake_distribution(fake_site, "tlbench-sealed", "sealed", "tlbench_sealed", UNTOUCHABLE_TEST)
    out = tmp_path / "run"
    tlbench.run_grid({"name": "measure", "datasets": ["sealed"], "backbones": ["toy/centroid"],
                      "strategies": ["transferability", "extractor"]}, out=out, device="cpu")
    found = records(out)
    measured = found["transferability"]
    assert measured["status"] == "ok", measured["error"]
    scores = measured["metrics"]["transferability"]
    assert set(scores) == {"logme", "leep", "leep_heldout", "leep_shuffled", "leep_shuffled_sd", "leep_gain", "nce", "hscore"}
    assert all(scores[k] is None for k in set(scores) - {"logme", "hscore"})  # the toy backbone has no ImageNet head
    assert np.isfinite(scores["logme"]) and np.isfinite(scores["hscore"])
    assert measured["metrics"]["test_accuracy"] is None and measured["metrics"]["predictions_file"] is None
    assert measured["metrics"]["family"] == "evidence" and measured["metrics"]["cache"] == {"features": "miss"}
    assert found["extractor"]["status"] == "failed" and "the test split was read" in found["extractor"]["error"]
