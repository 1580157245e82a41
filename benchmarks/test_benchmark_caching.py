"""What the feature and activation caches save, side by side (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_caching.py --benchmark-group-by=param:case
Each pair trains the same cell (mnist-5k, 500 training images, 64 px, 3 epochs, MobileNetV2
with its offline ImageNet weights) with and without running the frozen part only once, and
checks that both give the same accuracy and that the cached variant really used its cache.
"""

from __future__ import annotations

import dataclasses

import pytest

from tlbench.plugin.registry import collect
from tlbench.plugin.specs import CellContext, TrainPlan, TrainSettings
from tlbench.testing import train_cell
from tlbench_timm.backbone import TimmBackbone

SETTINGS = TrainSettings(epochs=3, batch_size=64, image_size=64)


class UncutBackbone(TimmBackbone):
    """The same model, as if its architecture had no known block split: frozen blocks run every epoch."""

    def create(self, pretrained, classifier=False):
        return dataclasses.replace(super().create(pretrained, classifier), stages=None)


@pytest.fixture(scope="module")
def data():
    from tlbench.data.splits import train_subset

    full = collect().datasets.get("mnist-5k").load()
    train = full.splits["train"]
    full.splits = {**full.splits, "train": train.subset(train_subset(train.labels, 50, 0))}
    return full


@pytest.fixture(scope="module")
def accuracies():
    """test accuracy per (case, variant): the variants of a case must agree."""
    return {}


@pytest.mark.parametrize("case", ["finetune depth 2"])
@pytest.mark.parametrize("variant", ["prefix cached", "prefix every epoch"])
def test_finetune_prefix_cache(benchmark, data, case, variant, accuracies):
    kind = TimmBackbone if variant == "prefix cached" else UncutBackbone
    backbone = kind("mobilenetv2_100", image_size=64)
    ctx = CellContext(seed=0, device="cpu", cache_dir=None)
    metrics = benchmark.pedantic(train_cell, args=(backbone, TrainPlan(trainable_blocks=2), data, SETTINGS, ctx),
                                 rounds=2, iterations=1)
    benchmark.extra_info.update(cache=metrics["cache"], epoch_seconds=metrics["epoch_seconds"],
                                test_accuracy=metrics["test_accuracy"])
    assert metrics["cache"] == {"activations": "off" if variant == "prefix cached" else "unsupported"}
    accuracies.setdefault(case, set()).add(round(metrics["test_accuracy"], 6))
    assert len(accuracies[case]) == 1, accuracies[case]


@pytest.mark.parametrize("case", ["extractor"])
@pytest.mark.parametrize("variant", ["features from disk cache", "features computed"])
def test_extractor_feature_cache(benchmark, data, case, variant, tmp_path, accuracies):
    backbone = TimmBackbone("mobilenetv2_100", image_size=64)
    plan = TrainPlan(trainable_blocks=0)
    cache_dir = str(tmp_path / "cache") if variant == "features from disk cache" else None
    if cache_dir:
        train_cell(backbone, plan, data, SETTINGS, CellContext(seed=0, device="cpu", cache_dir=cache_dir))  # warm
    ctx = CellContext(seed=0, device="cpu", cache_dir=cache_dir)
    metrics = benchmark.pedantic(train_cell, args=(backbone, plan, data, SETTINGS, ctx), rounds=2, iterations=1)
    benchmark.extra_info.update(cache=metrics["cache"], test_accuracy=metrics["test_accuracy"])
    assert metrics["cache"] == {"features": "hit" if cache_dir else "off"}
    accuracies.setdefault(case, set()).add(metrics["test_accuracy"])
    assert len(accuracies[case]) == 1, accuracies[case]
