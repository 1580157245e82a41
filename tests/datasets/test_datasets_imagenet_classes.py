"""The imagenet_classes option and the built-in class mappings."""

from __future__ import annotations

import pytest

from tlbench.plugin.specs import PluginError
from tlbench_datasets.imagenet_classes import (
    CATS_VS_DOGS,
    CIFAR10,
    IMAGENETTE,
    parse_imagenet_classes,
    parse_index_set,
)


@pytest.mark.parametrize("value, expected", [
    ("281-285", (281, 282, 283, 284, 285)),
    ("1,2,5-7", (1, 2, 5, 6, 7)),
    (" 7 , 3-4 ", (3, 4, 7)),
    ([9, 3, 3], (3, 9)),
    (["1-2", 4], (1, 2, 4)),
    (999, (999,)),
])
def test_index_sets(value, expected):
    assert parse_index_set(value, "x") == expected


@pytest.mark.parametrize("value, message", [
    ("285-281", "runs backwards"),
    ("1000", "outside ImageNet-1k"),
    ("-3", "not an index or a range"),
    ("cat", "not an index or a range"),
    ("1,,2", "not an index or a range"),
    ([], "no ImageNet index"),
    (True, "expected ImageNet indices"),
    (2.5, "expected a range string"),
])
def test_bad_index_sets_say_what_is_wrong(value, message):
    with pytest.raises(PluginError, match=message):
        parse_index_set(value, "imagenet_classes[cat]")


def test_mapping_must_name_known_classes_and_cover_all():
    assert parse_imagenet_classes(None, ["a", "b"]) is None
    parsed = parse_imagenet_classes({"cat": "281-285", "dog": [151, 152]}, ["cat", "dog"])
    assert parsed == {"cat": (281, 282, 283, 284, 285), "dog": (151, 152)}
    with pytest.raises(PluginError, match=r"unknown class name.*'kat'"):
        parse_imagenet_classes({"kat": 1, "dog": 2}, ["cat", "dog"])
    with pytest.raises(PluginError, match="'dog' have no ImageNet indices"):
        parse_imagenet_classes({"cat": 1}, ["cat", "dog"])
    with pytest.raises(PluginError, match="expected a mapping"):
        parse_imagenet_classes(["cat"], ["cat"])


def test_built_in_mappings_are_complete_and_valid():
    cifar = parse_imagenet_classes(CIFAR10, list(CIFAR10))
    assert len(cifar) == 10 and cifar["cat"] == tuple(range(281, 286))
    every = [i for indices in cifar.values() for i in indices]
    assert len(every) == len(set(every))  # no ImageNet class counts for two CIFAR classes
    assert len(parse_imagenet_classes(CATS_VS_DOGS, ["cat", "dog"])["dog"]) == 118
    assert sorted(index for _, index in IMAGENETTE.values())[:2] == [0, 217]
