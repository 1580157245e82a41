"""Head ``logreg`` on the Keras engine: scikit-learn's fit on the pooled feature maps, in the
linear head's Dense layer, kept and saved like any other cell."""

from __future__ import annotations

import json

import numpy as np
from sklearn.linear_model import LogisticRegression

import tlbench_keras
from tlbench.plugin.specs import CellContext, TrainPlan, TrainSettings
from tlbench.testing import engine_for, train_cell

SIZE = 64  # MobileNetV2's last map is 2x2: the linear head averages it


def test_logreg_on_keras_is_scikit_learns_fit_and_its_saved_model_predicts_the_same(cats_and_dogs, tmp_path):
    backbone = tlbench_keras.build("MobileNetV2", weights="none", image_size=SIZE)
    plan = TrainPlan(pretrained=False, trainable_blocks=0, head="logreg", logreg_c=0.5)
    ctx = CellContext(seed=3, device="cpu", save_dir=str(tmp_path / "model"), predictions_path=str(tmp_path / "kept.npz"))
    metrics = train_cell(backbone, plan, cats_and_dogs, TrainSettings(epochs=5), ctx)
    assert (metrics["epochs"], metrics["best_epoch"], metrics["converged"]) == (1, 1, True)
    assert metrics["history"][0]["phase"] == "logreg" and metrics["history"][0]["val_accuracy"] is not None

    engine = engine_for("keras")  # the same features, outside the cell: the whole frozen network, seed 3
    model = engine.open(backbone, pretrained=False, seed=3, device="cpu", precision="fp32")
    engine.split(model, len(backbone.blocks), precomputed=True)
    images = {split: cats_and_dogs.splits[split].images(SIZE, backbone.interpolation) for split in ("train", "test")}
    maps = {split: engine.frozen_outputs(model, images[split]) for split in images}
    assert maps["train"].shape[1:] == (2, 2, 1280)
    direct = LogisticRegression(C=0.5, max_iter=1000).fit(maps["train"].mean(axis=(1, 2)), cats_and_dogs.splits["train"].labels)
    expected = direct.predict_proba(maps["test"].mean(axis=(1, 2)))
    assert metrics["solver"]["iterations"] == direct.n_iter_.max()

    kept = np.load(tmp_path / "kept.npz")
    np.testing.assert_allclose(kept["test_probabilities"], expected, atol=2e-3)
    info = json.loads((tmp_path / "model" / "model.json").read_text())
    saved = engine.load_saved(backbone, str(tmp_path / "model"), info)  # what `tlbench predict --cell` runs
    np.testing.assert_allclose(saved(images["test"]), expected, atol=1e-4)
