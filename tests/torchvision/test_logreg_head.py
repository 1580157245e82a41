"""Head ``logreg``: scikit-learn's logistic regression fitted on the cached ImageNet features of a
real MobileNetV2, put into the torch engine's linear head; saved and kept like any other cell."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import tlbench
from tlbench.data.splits import train_subset
from tlbench.grid.tuning import best_validation
from tlbench.plugin.registry import collect
from tlbench.plugin.specs import CellContext, TrainPlan, TrainSettings
from tlbench.testing import engine_for, tiny_dataset, train_cell
from tlbench.train import protocol as training

SIZE = 32  # the 8x8 digits resized
C = 0.1
PER_CLASS = 10  # training images per class
SPLIT = [0.8, 0.05, 0.15]  # 90 validation images (the cell predicts them), 269 test images
GRID = {"name": "logreg", "datasets": [{"name": "digits", "split": SPLIT, "train_size": PER_CLASS}],
        "backbones": [{"name": "torchvision/mobilenet_v2", "weights": "pretrained", "image_size": SIZE}],
        "strategies": [{"name": "extractor", "head": "logreg", "C": C}]}


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("logreg")
    tlbench.run_grid(GRID, out=out, device="cpu", executor="inline", save_models=True)
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record
    registries = collect()
    data = registries.datasets.get("digits").load(split=SPLIT)
    train = data.splits["train"]
    data.splits["train"] = train.subset(train_subset(train.labels, PER_CLASS, seed=0))  # the cell's draw
    backbone = registries.backbones.get("torchvision/mobilenet_v2").build(weights="pretrained", image_size=SIZE)
    return out, record, data, backbone


def test_logreg_is_scikit_learns_fit_on_the_same_features(logreg_run):
    out, record, data, backbone = logreg_run
    engine = engine_for("torch")
    model = engine.open(backbone, pretrained=True, seed=0, device="cpu", precision="fp32")
    engine.split(model, len(backbone.blocks), precomputed=True)
    engine.attach_head(model, "linear", data.num_classes, seed=0)
    features = {split: engine.frozen_outputs(model, data.splits[split].images(SIZE, backbone.interpolation))
                for split in ("train", "valid", "test")}
    direct = LogisticRegression(C=C, max_iter=1000).fit(features["train"], data.splits["train"].labels)
    expected = direct.score(features["test"], data.splits["test"].labels)
    metrics = record["metrics"]
    assert abs(metrics["test_accuracy"] - expected) <= 0.005, (metrics["test_accuracy"], expected)
    assert metrics["test_accuracy"] > 0.5  # real ImageNet features of 10 digits per class: far above chance
    kept = np.load(out / metrics["predictions_file"])  # the same weights, up to float32 and float16
    np.testing.assert_allclose(kept["test_probabilities"], direct.predict_proba(features["test"]), atol=2e-3)
    (fit,) = metrics["history"]  # no SGD epoch: the one fit, validated, is what tuning picks on
    assert (metrics["epochs"], metrics["best_epoch"], fit["phase"], fit["epoch"]) == (1, 1, "logreg", 1)
    assert fit["val_accuracy"] == pytest.approx(direct.score(features["valid"], data.splits["valid"].labels), abs=0.01)
    assert best_validation(metrics) == (fit["val_accuracy"], fit["val_loss"])
    assert metrics["converged"] is True and metrics["solver"] == {
        "name": "lbfgs", "C": C, "iterations": int(direct.n_iter_.max()), "max_iter": 1000}
    assert metrics["trained_blocks"] == [] and metrics["family"] == "extractor"
    assert metrics["trainable_params"] == (1280 + 1) * data.num_classes  # the linear head the fit went into


def test_a_saved_logreg_cell_predicts_its_kept_test_predictions(logreg_run):
    out, record, data, backbone = logreg_run
    kept = np.load(out / record["metrics"]["predictions_file"])
    folder = out / "models" / record["key"][:16]
    info = json.loads((folder / "model.json").read_text())
    assert info["head"] == "linear"
    predicted = engine_for("torch").load_saved(backbone, str(folder), info)(
        data.splits["test"].images(SIZE, backbone.interpolation))  # what `tlbench predict --cell` runs
    np.testing.assert_array_equal(kept["test_labels"], data.splits["test"].labels)
    np.testing.assert_allclose(predicted, kept["test_probabilities"], atol=1e-3)
    assert (predicted.argmax(1) == kept["test_probabilities"].argmax(1)).all()


@pytest.fixture(scope="module")
def pretrained32():
    return collect().backbones.get("torchvision/mobilenet_v2").build(weights="pretrained", image_size=32)


def test_a_fit_that_runs_out_of_iterations_is_recorded_and_logged(pretrained32, monkeypatch, caplog):
    monkeypatch.setattr(training, "LOGREG_MAX_ITER", 2)
    backbone, plan = pretrained32, TrainPlan(trainable_blocks=0, head="logreg", logreg_c=1e6)
    metrics = train_cell(backbone, plan, tiny_dataset(32), TrainSettings(), CellContext(seed=0, device="cpu"))
    assert metrics["converged"] is False and metrics["solver"]["iterations"] == 2
    assert "head logreg (C=1e+06) did not converge in 2 L-BFGS iterations" in caplog.text


def test_a_class_without_training_images_is_never_predicted(pretrained32, tmp_path):
    data = dataclasses.replace(tiny_dataset(32), class_names=("dark", "bright", "grey"))  # no grey image anywhere
    ctx = CellContext(seed=0, device="cpu", predictions_path=str(tmp_path / "kept.npz"))
    metrics = train_cell(pretrained32, TrainPlan(trainable_blocks=0, head="logreg"), data, TrainSettings(), ctx)
    kept = np.load(tmp_path / "kept.npz")["test_probabilities"]
    assert kept.shape == (12, 3) and (kept[:, 2] == 0).all() and metrics["converged"]
