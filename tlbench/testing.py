"""Contract checks that plugin authors call from their own tests.

Each check raises ``AssertionError`` with a message naming the spec and what is wrong::

    from tlbench.testing import check_backbone, check_dataset, tiny_dataset

    def test_my_backbone():
        check_backbone(my_spec, image_size=32)
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import numpy as np

from .data import ArraySplit
from .engine import Engine
from .training import run_cell
from .types import (
    BackboneSpec,
    CellContext,
    DatasetSpec,
    ImageDataset,
    NotApplicable,
    StrategySpec,
    TrainPlan,
    TrainSettings,
)

SPLITS = ("train", "valid", "test")


def tiny_dataset(size: int = 32, per_class: int = 6, seed: int = 0) -> ImageDataset:
    """Two learnable classes (dark vs. bright, with noise) at ``size`` x ``size``."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name in SPLITS:
        dark = rng.integers(0, 90, (per_class, size, size, 3))
        bright = rng.integers(160, 256, (per_class, size, size, 3))
        splits[name] = ArraySplit(np.concatenate([dark, bright]).astype(np.uint8), [0] * per_class + [1] * per_class)
    return ImageDataset("tiny", ("dark", "bright"), splits, domain="synthetic")


def check_dataset(spec: DatasetSpec, size: int = 16, **options: Any) -> ImageDataset:
    """``load`` gives three splits of uint8 NHWC images with in-range labels; subsets work."""
    where = f"dataset {spec.name!r}"
    data = spec.load(**{**spec.options, **options})
    assert isinstance(data, ImageDataset), f"{where}: load() must return an ImageDataset"
    assert set(SPLITS) <= set(data.splits), f"{where}: splits {sorted(data.splits)}, need {SPLITS}"
    assert len(set(data.class_names)) == len(data.class_names) >= 2, f"{where}: need 2+ distinct class names"
    for name in SPLITS:
        split = data.splits[name]
        labels = np.asarray(split.labels)
        assert labels.ndim == 1 and (labels >= 0).all() and (labels < data.num_classes).all(), \
            f"{where}: {name} labels must be integers in 0..{data.num_classes - 1}"
        part = split.subset(list(range(min(4, len(labels)))))
        images = part.images(size)
        assert images.dtype == np.uint8 and images.shape == (len(part.labels), size, size, 3), \
            f"{where}: {name}.images({size}) gave {images.dtype} {images.shape}"
        assert part.fingerprint != split.fingerprint or len(part.labels) == len(labels), \
            f"{where}: a subset must have its own fingerprint"
    assert set(data.splits["train"].labels) == set(range(data.num_classes)), f"{where}: a class is missing from train"
    if data.imagenet_classes:
        assert set(data.imagenet_classes) == set(data.class_names), f"{where}: imagenet_classes must map every class"
    return data


@cache
def engine_for(framework: str) -> Engine:
    """The installed engine of ``framework``, configured as a run would configure it."""
    from .registry import collect

    return collect().engine_for(framework)


def train_cell(backbone: Any, plan: TrainPlan, data: ImageDataset, settings: TrainSettings, ctx: CellContext,
               strategy: StrategySpec | None = None, options: Mapping[str, Any] | None = None,
               framework: str | None = None) -> dict[str, Any]:
    """One cell of ``backbone`` through the core protocol and its framework's engine: the metrics."""
    engine = engine_for(framework or backbone.framework)
    return run_cell(engine, backbone, plan, data, settings, ctx, strategy, options).as_dict()


def check_backbone(spec: BackboneSpec, image_size: int = 32, data: ImageDataset | None = None) -> dict[str, Any]:
    """Built with random weights: blocks, depth-by-depth freezing and the metrics of a cell."""
    where = f"backbone {spec.name!r}"
    backbone = spec.build(**{**spec.options, "weights": "none", "image_size": image_size})
    blocks = list(backbone.blocks)
    assert blocks and all(b.params >= 0 for b in blocks), f"{where}: needs blocks with parameter counts"
    if spec.blocks is not None:
        assert list(spec.blocks(**spec.options)) == blocks, f"{where}: blocks() disagrees with the built backbone"
    if spec.block_count is not None:
        assert spec.block_count(**spec.options) == len(blocks), f"{where}: block_count() disagrees with blocks"
    data = data or tiny_dataset(image_size)
    settings = TrainSettings(epochs=1, batch_size=4)
    ctx = CellContext(seed=0, device="cpu")
    runs = {}
    for depth in (0, 1, None):
        plan = TrainPlan(pretrained=False, trainable_blocks=depth)
        metrics = train_cell(backbone, plan, data, settings, ctx, framework=spec.framework)
        assert 0.0 <= metrics["test_accuracy"] <= 1.0, f"{where}: accuracy {metrics['test_accuracy']}"
        runs[depth] = metrics
    total = sum(b.params for b in blocks)
    frozen_all, last_only, everything = runs[0], runs[1], runs[None]
    assert frozen_all["non_trainable_params"] == total, \
        f"{where}: a frozen backbone must report its {total} block parameters as non-trainable"
    assert last_only["trainable_params"] - frozen_all["trainable_params"] == blocks[-1].params, \
        f"{where}: depth 1 must train exactly the last block"
    assert everything["non_trainable_params"] == 0, f"{where}: depth 'all' must leave nothing frozen"
    return runs[1]


def check_strategy(spec: StrategySpec, data: ImageDataset | None = None) -> TrainPlan | None:
    """``plan`` returns a TrainPlan (or raises NotApplicable) for the default options."""
    data = data or tiny_dataset()
    try:
        plan = spec.plan(dict(spec.options), data)
    except NotApplicable:
        return None
    assert isinstance(plan, TrainPlan), f"strategy {spec.name!r}: plan() must return a TrainPlan"
    return plan
