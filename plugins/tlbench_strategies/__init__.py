"""Built-in strategies: classifier, extractor, finetune (any blocks), lp-ft, gradual, scratch, and
the measurements transferability and shift.

Each is a plan plus, where it needs one, a callback at a fixed point of the core's protocol
(``before_training``: which blocks train; ``on_epoch_start``: which of them train now).
They are framework-free: every engine runs them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tlbench.plugin.hookspecs import hookimpl
from tlbench.plugin.options import BlockCount, BlockSelection, Choice, Flag, Number
from tlbench.plugin.specs import ImageDataset, NotApplicable, StrategySpec, Trainable, TrainingView, TrainPlan
from tlbench.train.protocol import HEADS, LOGREG
from tlbench.train.shift import shift_profile
from tlbench_strategies.transferability import transferability_scores

HEAD = Choice(tuple(HEADS))
EXTRACTOR_HEAD = Choice((*HEADS, LOGREG))  # logreg: fitted once on the cached features, so only the extractor has it
LOGREG_C = Number(minimum=0, above=True, only_with=("head", LOGREG))
LR_MULT = Number(minimum=0)


def _depth(options: Mapping[str, Any]) -> int | None:
    depth = options.get("depth", "all")
    return None if depth == "all" else int(depth)


def plan_classifier(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    if not dataset.imagenet_classes:
        raise NotApplicable(
            f"dataset {dataset.name!r} has no ImageNet class mapping "
            "(set the dataset option imagenet_classes to score the pretrained head)"
        )
    return TrainPlan(pretrained=True, trainable_blocks=0, head=None, train=False)


def plan_extractor(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=True, trainable_blocks=0, head=options.get("head", "linear"),
                     logreg_c=float(options.get("C", 1.0)))


def plan_finetune(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(
        pretrained=True,
        trainable_blocks=_depth(options),
        head=options.get("head", "linear"),
        backbone_lr_mult=float(options.get("backbone_lr_mult", 0.1)),
        warmup_head_epochs=int(options.get("warmup_head_epochs", 0)),
    )


def chosen_blocks(view: TrainingView) -> Trainable:
    """``blocks:`` when given (any selection), else the plan's last ``depth`` blocks."""
    if view.options.get("blocks") is None:
        return view.trainable
    names = [block.name for block in view.blocks]
    return Trainable(frozenset(BlockSelection().resolve(view.options["blocks"], names)), view.plan.backbone_lr_mult)


def probe_epochs(view: TrainingView) -> int:
    """lp-ft's linear-probe epochs: the option, else half of the epochs (at least 1)."""
    return view.options.get("probe_epochs") or max(1, view.epochs // 2)


def linear_probe_first(view: TrainingView) -> Trainable | None:
    """lp-ft: the head alone for the probe epochs, then every selected block."""
    if view.epoch < probe_epochs(view):
        return Trainable(frozenset(), view.selected.backbone_lr_mult, "probe")
    return None


def unfreeze_from_the_top(view: TrainingView) -> Trainable:
    """gradual: the head first, then one more selected block (from the top) every ``every`` epochs."""
    order = sorted(view.selected.blocks)
    joined = min(len(order), view.epoch // int(view.options.get("every", 1)))
    return Trainable(frozenset(order[len(order) - joined:]), view.selected.backbone_lr_mult,
                     f"top-{joined}" if joined else "head")


def plan_transferability(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=True, trainable_blocks=0, head="linear", train=False,
                     imagenet_scores=bool(options.get("leep", True)))


def plan_scratch(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=False, trainable_blocks=None, head=options.get("head", "linear"))


def plan_whole(options: Mapping[str, Any], dataset: ImageDataset) -> TrainPlan:
    return TrainPlan(pretrained=True, trainable_blocks=_depth(options), head=options.get("head", "linear"),
                     backbone_lr_mult=float(options.get("backbone_lr_mult", 0.1)))


@hookimpl
def tlbench_register_strategies():
    yield StrategySpec(
        "classifier", plan_classifier, family="evidence",
        description="the pretrained network as it is, scored through the dataset's ImageNet "
        "class mapping; no training",
    )
    yield StrategySpec(
        "extractor", plan_extractor, options={"head": "linear"}, option_kinds={"head": EXTRACTOR_HEAD, "C": LOGREG_C},
        family="extractor", description="whole backbone frozen, a new head trained on cached features (head "
        "logreg: L2 logistic regression fitted by L-BFGS to convergence, inverse strength `C`, default 1)",
    )
    yield StrategySpec(
        "finetune", plan_finetune,
        options={"depth": 1, "head": "linear", "backbone_lr_mult": 0.1, "warmup_head_epochs": 0},
        option_kinds={"depth": BlockCount(), "blocks": BlockSelection(replaces="depth"), "head": HEAD, "backbone_lr_mult": LR_MULT,
                      "warmup_head_epochs": Number(minimum=0, integer=True)},
        before_training=chosen_blocks, family="finetune",
        description="the last `depth` blocks ('all' = whole backbone), or any `blocks` (indices, names, "
        "'first:K', 'last:K'), and a new head train; backbone lr = lr x backbone_lr_mult",
    )
    yield StrategySpec(
        "lp-ft", plan_whole, options={"depth": "all", "head": "linear", "backbone_lr_mult": 0.1},
        option_kinds={"probe_epochs": Number(minimum=1, integer=True), "depth": BlockCount(), "head": HEAD,
                      "backbone_lr_mult": LR_MULT},
        on_epoch_start=linear_probe_first, family="finetune",
        description="linear probe, then fine-tuning (Kumar et al. 2022): the head alone for `probe_epochs` "
        "(default half the epochs, at least 1), then the head and the last `depth` blocks",
    )
    yield StrategySpec(
        "gradual", plan_whole, options={"every": 1, "depth": "all", "head": "linear", "backbone_lr_mult": 0.1},
        option_kinds={"every": Number(minimum=1, integer=True), "depth": BlockCount(), "head": HEAD,
                      "backbone_lr_mult": LR_MULT},
        on_epoch_start=unfreeze_from_the_top, family="finetune",
        description="gradual unfreezing from the top (ULMFiT): the head first, then one more block every "
        "`every` epochs until the last `depth` blocks train",
    )
    yield StrategySpec(
        "transferability", plan_transferability, option_kinds={"leep": Flag()}, family="evidence",
        measure=transferability_scores,
        description="no training: LogME, LEEP, NCE and H-score of the frozen features of the training "
        "split (the extractor's, cached alike), and LEEP fitted on it, scored on the valid split against "
        "shuffled labels (leep_gain: 0 = no information); `leep: false` skips the ImageNet head's pass (LEEP "
        "and NCE: a second forward pass at the classifier's image size); no test accuracy, the test split is never read",
    )
    yield StrategySpec(
        "shift", plan_transferability, family="evidence", measure_shift=shift_profile,
        description="no training: how far the training images are from ImageNet at each block, by the BatchNorm "
        "statistics the pretrained network stores (symmetric KL per channel); no labels, no test accuracy, "
        "the valid and test splits are never read",
    )
    yield StrategySpec(
        "scratch", plan_scratch, options={"head": "linear"}, option_kinds={"head": HEAD}, family="scratch",
        description="the same network from random weights, everything trained (no transfer)",
    )
