"""The Keras engine under the core protocol on tiny real data: every plan, freezing, caching,
seeds, saved models."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

import tlbench_keras
from tlbench.plugin.specs import CellContext, NotApplicable, PluginError, TrainPlan, TrainSettings
from tlbench.testing import engine_for, train_cell
from tlbench.train.protocol import CellMetrics

KEYS = {field.name for field in dataclasses.fields(CellMetrics)}  # the documented record, no more, no less
EXTRACTOR = TrainPlan(trainable_blocks=0, head="book")


def run(backbone, plan, data, seed=0, **settings):
    options = {"epochs": 2, "batch_size": 4, "lr": 1e-3, **settings}
    ctx_fields = {f.name for f in dataclasses.fields(CellContext)}
    ctx = {k: options.pop(k) for k in list(options) if k in ctx_fields}
    return train_cell(backbone, plan, data, TrainSettings(**options), CellContext(seed=seed, device="cpu", **ctx))


def load_saved(folder):
    """The Keras model a cell saved with --save-models."""
    from tlbench_keras._keras import keras  # imported where used: collecting this file stays free of TensorFlow

    return keras.saving.load_model(folder / "model.keras", compile=False)


def predict_saved(backbone, folder, images):
    """The saved cell's probabilities through the engine, as ``tlbench predict --cell`` gets them."""
    info = json.loads((folder / "model.json").read_text())
    return engine_for("keras").load_saved(backbone, str(folder), info)(images)


@pytest.fixture(scope="module")
def vgg16():
    return tlbench_keras.build("VGG16", weights="none", image_size=32)


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """MobileNetV2 at 32 px whose 'pretrained' weights are a known file, and its reference."""
    from tlbench_keras._keras import keras

    path = tmp_path_factory.mktemp("mobilenet") / "mobilenet.weights.h5"
    keras.utils.set_random_seed(7)
    keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3)).save_weights(path)
    backbone = tlbench_keras.build("MobileNetV2", weights=str(path), image_size=32)
    return backbone, backbone.build_network()


def test_extractor_with_the_book_head(vgg16, cats_and_dogs):
    m = run(vgg16, EXTRACTOR, cats_and_dogs)
    assert set(m) == KEYS
    head_params = 512 * 64 + 64 + 2 * 64 + 64 * 2 + 2  # Dense(64), BatchNorm gamma/beta, Dense(2)
    assert (m["trainable_params"], m["non_trainable_params"]) == (head_params, 14_714_688)
    assert m["epochs"] == len(m["history"]) == 2
    assert set(m["history"][0]) == {"epoch", "phase", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                                    "seconds", "validation_seconds"}
    assert (m["blocks"], m["trainable_blocks"]) == (5, 0)
    assert m["epoch_seconds"] == pytest.approx(np.mean([h["seconds"] for h in m["history"]]))
    assert (m["train_images"], m["valid_images"], m["test_images"]) == (12, 4, 4)
    assert np.sum(m["confusion_matrix"]) == 4
    assert m["cache"] == {"features": "off"}
    assert (m["device"], m["precision"], m["image_size"]) == ("cpu", "fp32", 32)
    assert m["weights"] == "none (random init)"
    assert m["images_per_second"] > 0 and m["peak_memory_mb"] > 0


def test_cached_features_give_the_same_predictions(vgg16, cats_and_dogs, tmp_path):
    cache = tmp_path / "cache"
    first = run(vgg16, EXTRACTOR, cats_and_dogs, cache_dir=str(cache), save_dir=str(tmp_path / "miss"))
    second = run(vgg16, EXTRACTOR, cats_and_dogs, cache_dir=str(cache), save_dir=str(tmp_path / "hit"))
    uncached = run(vgg16, EXTRACTOR, cats_and_dogs, save_dir=str(tmp_path / "off"))
    assert [m["cache"] for m in (first, second, uncached)] == [
        {"features": "miss"}, {"features": "hit"}, {"features": "off"}]
    images = cats_and_dogs.splits["test"].images(32)
    predictions = [predict_saved(vgg16, tmp_path / name, images) for name in ("miss", "hit", "off")]
    np.testing.assert_allclose(predictions[1], predictions[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(predictions[2], predictions[0], rtol=1e-5, atol=1e-6)
    assert second["test_loss"] == pytest.approx(first["test_loss"], rel=1e-5)
    # a different cut (finetune) does not reuse the extractor's features
    finetune = run(vgg16, TrainPlan(trainable_blocks=1, head="linear"), cats_and_dogs, cache_dir=str(cache))
    assert finetune["cache"] == {"activations": "miss"}


LAST_TWO = TrainPlan(trainable_blocks=2, head="linear", backbone_lr_mult=0.1)


@pytest.fixture(scope="module")
def untrained_head(mobilenet, cats_and_dogs, tmp_path_factory):
    """The linear head's weights as LAST_TWO starts (seed 0): saved after 0 epochs."""
    folder = tmp_path_factory.mktemp("untrained")
    run(mobilenet[0], LAST_TWO, cats_and_dogs, epochs=0, save_dir=str(folder))
    return load_saved(folder).get_layer("head_linear").get_weights()


@pytest.mark.parametrize("augment", [False, True])
def test_finetune_trains_only_the_last_blocks(mobilenet, untrained_head, cats_and_dogs, tmp_path, augment):
    backbone, reference = mobilenet
    m = run(backbone, LAST_TWO, cats_and_dogs, augment=augment, lr=1e-2, save_dir=str(tmp_path / "trained"))
    assert m["cache"] == {"activations": "bypassed" if augment else "off"}
    blocks = backbone.blocks
    assert m["trainable_params"] == blocks[-1].params + blocks[-2].params + 1280 * 2 + 2
    assert m["non_trainable_params"] == sum(b.params for b in blocks[:-2])
    assert m["weights"] == f"file {backbone.weights.path}"

    trained = load_saved(tmp_path / "trained")
    for i, segment in enumerate(reference.segments):
        same = [np.array_equal(a, b) for layer in segment.layers
                for a, b in zip(layer.get_weights(), trained.get_layer(layer.name).get_weights(), strict=True)]
        if i < len(reference.segments) - 2:
            assert all(same), f"frozen block {segment.name} changed (BatchNorm statistics included)"
        else:
            assert not all(same), f"trainable block {segment.name} did not change"
    assert not np.allclose(untrained_head[0], trained.get_layer("head_linear").get_weights()[0])


def test_warmup_head_epochs_leave_the_backbone_alone(mobilenet, cats_and_dogs, tmp_path):
    backbone, reference = mobilenet
    plan = TrainPlan(trainable_blocks=1, head="linear", warmup_head_epochs=2)
    m = run(backbone, plan, cats_and_dogs, epochs=0, save_dir=str(tmp_path))
    assert [h["phase"] for h in m["history"]] == ["head", "head"]
    trained = load_saved(tmp_path)
    for layer in reference.segments[-1].layers:
        for a, b in zip(layer.get_weights(), trained.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_scratch_trains_everything(vgg16, cats_and_dogs):
    m = run(vgg16, TrainPlan(pretrained=False, trainable_blocks=None, head="flatten-linear"), cats_and_dogs)
    assert (m["trainable_params"], m["non_trainable_params"]) == (14_714_688 + 512 * 2 + 2, 0)
    assert m["cache"] == {"activations": "off"} and m["weights"] == "none (random init: scratch)"
    assert (m["blocks"], m["trainable_blocks"]) == (5, 5)


def test_classifier_groups_imagenet_probabilities(cats_and_dogs, tmp_path):
    backbone = tlbench_keras.build("MobileNetV2", weights="none", image_size=32)
    plan = TrainPlan(head=None, train=False, trainable_blocks=0)
    m = run(backbone, plan, cats_and_dogs, save_dir=str(tmp_path))
    assert set(m) == KEYS
    assert (m["epochs"], m["epoch_seconds"], m["history"], m["trainable_params"]) == (0, None, [], 0)
    assert m["non_trainable_params"] == 3_504_872  # MobileNetV2 with its head, statistics excluded
    assert (m["image_size"], m["train_images"], m["cache"]) == (224, 12, {})
    probs = predict_saved(backbone, tmp_path, cats_and_dogs.splits["test"].images(224))
    assert probs.shape == (4, 1000)  # the ImageNet head; predict --cell groups it into cat and dog
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    unmapped = dataclasses.replace(cats_and_dogs, imagenet_classes=None)
    with pytest.raises(NotApplicable):
        run(backbone, plan, unmapped)


def test_early_stopping_and_restore_best(vgg16, cats_and_dogs):
    frozen_linear = TrainPlan(trainable_blocks=0, head="flatten-linear")
    stopped = run(vgg16, frozen_linear, cats_and_dogs, epochs=6, lr=0.0, patience=1)
    assert (stopped["epochs"], stopped["best_epoch"]) == (2, 1)  # nothing changes: stops at once
    full = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=4, lr=1e-2, seed=5)
    last = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=4, lr=1e-2, seed=5, restore_best=False)
    best = full["best_epoch"]
    assert best < 4 and full["best_epoch"] == last["best_epoch"]
    assert full["test_loss"] != pytest.approx(last["test_loss"], rel=1e-6)
    shorter = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=best, lr=1e-2, seed=5, restore_best=False)
    assert full["test_loss"] == pytest.approx(shorter["test_loss"], rel=1e-6)


def test_without_validation_images_the_last_epoch_counts(vgg16, cats_and_dogs):
    no_valid = dataclasses.replace(
        cats_and_dogs, splits={**cats_and_dogs.splits, "valid": cats_and_dogs.splits["valid"].subset([])})
    m = run(vgg16, EXTRACTOR, no_valid, epochs=2, patience=1)
    assert (m["epochs"], m["best_epoch"], m["valid_images"]) == (2, 2, 0)
    assert m["history"][-1]["val_accuracy"] is None


def test_training_options_and_cpu_precision_fallback(vgg16, cats_and_dogs):
    plan = TrainPlan(trainable_blocks=1, head="flatten-linear", backbone_lr_mult=0.1, warmup_head_epochs=1)
    m = run(vgg16, plan, cats_and_dogs, optimizer="sgd", momentum=0.9, weight_decay=1e-4, schedule="cosine",
            warmup_epochs=1, label_smoothing=0.1, augment=True, precision="bf16", epochs=2)
    assert m["precision"] == "fp32 (requested bf16; CPU fallback)"
    assert [h["phase"] for h in m["history"]] == ["head", "all", "all"]
    assert m["cache"] == {"activations": "bypassed"}
    assert all(np.isfinite(h["train_loss"]) for h in m["history"])


def test_depth_beyond_the_blocks_is_refused(vgg16, cats_and_dogs):
    with pytest.raises(PluginError, match=r"has 5 blocks; trainable_blocks=6"):
        run(vgg16, TrainPlan(trainable_blocks=6, head="linear"), cats_and_dogs)


def test_the_schedule_scales_the_learning_rate_the_engine_uses(vgg16, cats_and_dogs):
    warm = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=2, lr=1e-2, warmup_epochs=1)
    half = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=1, lr=5e-3)
    full = run(vgg16, EXTRACTOR, cats_and_dogs, epochs=1, lr=1e-2)
    assert [h["lr"] for h in warm["history"]] == pytest.approx([5e-3, 1e-2])
    # epoch 1 of the warm-up run trained at lr 1e-2 x 0.5: exactly the run at 5e-3
    assert warm["history"][0]["val_loss"] == pytest.approx(half["history"][0]["val_loss"], rel=1e-6)
    assert warm["history"][0]["val_loss"] != pytest.approx(full["history"][0]["val_loss"], rel=1e-6)


def test_tensorflow_runs_its_onednn_kernels_and_says_so():
    # TensorFlow enables oneDNN by default only on AVX-512 VNNI CPUs: on this project's AVX2 machines
    # the Keras plugin's import asks for it, and the environment record says what TensorFlow did
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "1":
        pytest.skip("the user set TF_ENABLE_ONEDNN_OPTS: their choice stands")
    assert engine_for("keras").configure(threads=1)["tensorflow_onednn"] is True
