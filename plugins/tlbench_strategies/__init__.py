"""Built-in strategies: classifier, extractor, finetune, scratch (framework-free plans)."""

from __future__ import annotations

from typing import Any, Mapping

from tlbench.hookspecs import hookimpl
from tlbench.types import ImageDataset, NotApplicable, StrategySpec, TrainPlan

HEADS = ("linear", "flatten-linear", "book")


def _head(options: Mapping[str, Any]) -> str:
    head = options.get("head", "linear")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    return head


def plan_classifier(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    if not dataset.imagenet_classes:
        raise NotApplicable(
            f"dataset {dataset.name!r} has no ImageNet class mapping "
            "(set the dataset option imagenet_classes to score the pretrained head)"
        )
    return TrainPlan(pretrained=True, trainable_blocks=0, head=None, train=False)


def plan_extractor(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=True, trainable_blocks=0, head=_head(options))


def plan_finetune(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    depth = options.get("depth", "all")
    return TrainPlan(
        pretrained=True,
        trainable_blocks=None if depth == "all" else int(depth),
        head=_head(options),
        backbone_lr_mult=float(options.get("backbone_lr_mult", 0.1)),
        warmup_head_epochs=int(options.get("warmup_head_epochs", 0)),
    )


def plan_scratch(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=False, trainable_blocks=None, head=_head(options))


@hookimpl
def tlbench_register_strategies():
    yield StrategySpec(
        "classifier", plan_classifier,
        description="the pretrained network as it is, scored through the dataset's ImageNet "
        "class mapping; no training",
    )
    yield StrategySpec(
        "extractor", plan_extractor, options={"head": "linear"},
        description="whole backbone frozen, a new head trained on cached features",
    )
    yield StrategySpec(
        "finetune", plan_finetune,
        options={"depth": 1, "head": "linear", "backbone_lr_mult": 0.1, "warmup_head_epochs": 0},
        description="the last `depth` blocks and a new head train ('all' = whole backbone); "
        "backbone lr = lr x backbone_lr_mult",
    )
    yield StrategySpec(
        "scratch", plan_scratch, options={"head": "linear"},
        description="the same network from random weights, everything trained (no transfer)",
    )
