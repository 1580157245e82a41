"""The framework-free pieces of the cell protocol: learning-rate factors, augmentation, precision labels."""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.plugin.specs import PluginError, TrainSettings
from tlbench.train.protocol import augment, effective_precision, lr_factor


def test_lr_factors():
    factors = [lr_factor(e, TrainSettings(epochs=9, schedule="step"), 9) for e in range(9)]
    assert factors == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    warm_cosine = TrainSettings(epochs=5, schedule="cosine", warmup_epochs=1)
    assert [lr_factor(e, warm_cosine, 5) for e in range(5)] == pytest.approx(
        [0.5, 1.0, 0.5 * (1 + np.cos(np.pi / 4)), 0.5, 0.5 * (1 + np.cos(3 * np.pi / 4))])
    assert lr_factor(3, TrainSettings(), 5) == 1.0


def test_augment_crops_and_flips_reproducibly():
    images = np.arange(2 * 16 * 16 * 3, dtype=np.uint8).reshape(2, 16, 16, 3)
    first = augment(images, np.random.default_rng(0))
    again = augment(images, np.random.default_rng(0))
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    outputs = [augment(images, np.random.default_rng(seed)) for seed in range(8)]
    assert any(not np.array_equal(out, images) for out in outputs)


def test_precision_labels():
    assert effective_precision("fp32", "cpu") == "fp32"
    assert effective_precision("bf16", "cuda") == "bf16"
    assert effective_precision("fp16", "cpu") == "fp32 (requested fp16; CPU fallback)"


@pytest.mark.parametrize("setting", [{"optimizer": "rmsprop"}, {"schedule": "linear"}, {"precision": "fp8"}])
def test_train_settings_refuse_a_choice_no_engine_knows(setting):
    (name, value), = setting.items()
    with pytest.raises(PluginError, match=f"unknown {name} '{value}': one of "):
        TrainSettings(**setting)


def test_an_unknown_head_is_refused_by_name_before_any_engine_builds_it(toy_plugin):
    from tlbench_toy_plugin import Centroid, load_stripes

    from tlbench.plugin.specs import CellContext, TrainPlan
    from tlbench.testing import train_cell

    with pytest.raises(PluginError, match="unknown head 'mlp': one of linear, flatten-linear, book, logreg"):
        train_cell(Centroid(), TrainPlan(head="mlp"), load_stripes(), TrainSettings(epochs=1), CellContext(seed=0, device="cpu"),
                   framework="numpy")
