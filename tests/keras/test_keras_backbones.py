"""Contract tests for every registered keras/* backbone: blocks, freezing by depth, counts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tlbench_keras
from tlbench.plugin.manager import get_plugin_manager
from tlbench.plugin.specs import PluginError


def keras_specs():
    pm = get_plugin_manager(load_entry_points=False)
    pm.register(tlbench_keras, name="keras")
    return {spec.name: spec for specs in pm.hook.tlbench_register_backbones() for spec in specs}


SPECS = keras_specs()


def build_smallest(name: str):
    spec = SPECS[name]
    model = tlbench_keras.MODELS[name.removeprefix("keras/")]
    return spec.build(weights="none", image_size=model.min_size)


def test_registers_the_required_models():
    required = {"VGG16", "VGG19", "ResNet50", "InceptionV3", "MobileNetV2", "EfficientNetB0"}
    assert {f"keras/{n}" for n in required} <= set(SPECS)
    for spec in SPECS.values():
        assert spec.framework == "keras"
        assert spec.options == {"weights": "pretrained", "image_size": None}
        assert spec.description


def test_listing_imports_no_framework():
    code = (
        "import sys, tlbench_keras; specs = list(tlbench_keras.tlbench_register_backbones()); "
        "assert specs; print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_backbone_contract(name):
    backbone = build_smallest(name)
    network = backbone.build_network()
    blocks = backbone.blocks
    n = len(blocks)

    assert n >= 5 and all(b.params > 0 for b in blocks)
    assert len({b.name for b in blocks}) == n
    assert SPECS[name].block_count() == n
    assert [b.name for b in network.blocks] == [b.name for b in blocks]
    total = sum(b.params for b in blocks)
    assert total == sum(int(np.prod(v.shape)) for v in network.model.trainable_variables)

    # freezing by depth: the last k blocks train, counts grow with k, depth n = whole backbone
    trainable_counts = []
    for k in range(n + 1):
        network.freeze(n - k)
        trainable, frozen = network.counts()
        assert trainable + frozen == total
        assert trainable == sum(b.params for b in blocks[n - k:])
        trainable_counts.append(trainable)
    assert trainable_counts[0] == 0 and trainable_counts[-1] == total
    assert trainable_counts == sorted(set(trainable_counts))

    # forward shape, and every block boundary splits the graph exactly
    x = backbone.preprocess(np.random.default_rng(0).integers(0, 256, (2, backbone.image_size,
                                                                        backbone.image_size, 3), np.uint8))
    full = np.asarray(network.model(x, training=False))
    assert full.shape == (2, *network.model.output.shape[1:]) and full.ndim == 4
    for frozen_blocks in range(1, n):
        prefix, suffix = network.split(frozen_blocks)
        composed = np.asarray(suffix(prefix(x, training=False), training=False))
        np.testing.assert_allclose(composed, full, rtol=1e-5, atol=1e-5)


def test_vgg16_counts_are_exactly_keras():
    from tlbench_keras.heads import build_head

    backbone = SPECS["keras/VGG16"].build(weights="none", image_size=224)
    assert [b.name for b in backbone.blocks] == ["block1", "block2", "block3", "block4", "block5"]
    network = backbone.build_network()
    assert network.model.count_params() == 14_714_688
    network.freeze(5)
    features = tuple(network.model.output.shape[1:])
    assert features == (7, 7, 512)
    head = build_head("flatten-linear", features, 2)
    assert network.counts(extra_trainable=head.trainable_variables) == (50_178, 14_714_688)
    book = build_head("book", features, 2)  # the textbook's head: its BatchNorm statistics excluded
    assert network.counts(extra_trainable=book.trainable_variables) == (1_605_954, 14_714_688)


def test_bn_statistics_are_excluded_from_counts():
    backbone = build_smallest("keras/ResNet50")
    network = backbone.build_network()
    stats = sum(int(np.prod(v.shape)) for v in network.model.non_trainable_variables)
    assert stats > 0
    network.freeze(len(backbone.blocks))
    assert network.counts() == (0, network.model.count_params() - stats)


def test_frozen_batchnorm_keeps_its_statistics_in_training_mode():
    network = build_smallest("keras/MobileNetV2").build_network()
    network.freeze(len(network.segments))
    before = [v.numpy().copy() for v in network.model.non_trainable_variables]
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype(np.float32)
    network.model(x, training=True)
    for old, new in zip(before, network.model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    network.freeze(0)  # and a trainable BatchNorm does update them: the check can fail
    network.model(x, training=True)
    assert any(not np.array_equal(o, n.numpy()) for o, n in zip(before, network.model.non_trainable_variables, strict=True))


@pytest.mark.parametrize("name, size", [("keras/VGG16", 31), ("keras/InceptionV3", 74)])
def test_too_small_input_is_rejected(name, size):
    with pytest.raises(PluginError, match=r"too small.*smallest input"):
        SPECS[name].build(weights="none", image_size=size)
