"""The cell protocol, once for every framework: what trains when, and what a cell records.

:func:`run_cell` trains and evaluates one cell with an :class:`~tlbench.plugin.engine.Engine`:

1. the strategy's selection of blocks (``before_training``, default: the plan's last k);
2. the frozen blocks before the first selected one run once per split, cached on disk;
3. a new head, then epochs: head-only warm-up (``plan.warmup_head_epochs``), the strategy's
   ``on_epoch_start``, a fresh optimizer whenever the trainable set changes, the learning-rate
   schedule over all epochs of the cell, early stopping on validation accuracy and the
   best epoch restored; or, for head ``logreg``, no epochs: scikit-learn's logistic regression
   fitted on the cached features and put into the engine's linear head;
4. test predictions and one :class:`CellMetrics` record.

The classifier path (``plan.head is None``) scores the pretrained ImageNet head through
the dataset's class mapping.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np

from tlbench.data.cache import ArrayCache
from tlbench.data.splits import DiskArray
from tlbench.files import atomic_write, write_text
from tlbench.plugin.engine import Engine
from tlbench.plugin.manager import package_version
from tlbench.plugin.specs import (
    Block,
    CellContext,
    ImageDataset,
    ImageSplit,
    NotApplicable,
    PluginError,
    StrategySpec,
    Trainable,
    TrainingView,
    TrainPlan,
    TrainSettings,
    resolved_family,
)
from tlbench.train.metrics import classification_metrics, group_probabilities, stopped_improving
from tlbench.train.shift import statistics_rows

SPLITS = ("train", "valid", "test")
FROZEN_CHUNK = 256  # images per Engine.frozen_outputs call; a multiple of the engines' batches keeps their batching


@dataclass(frozen=True)
class HeadLayer:
    """One layer of a head, before its last layer (a linear layer to the classes, softmax)."""

    kind: Literal["pool", "flatten", "dense", "batchnorm", "dropout"]
    units: int = 0  # dense
    activation: str | None = None  # dense
    rate: float = 0.0  # dropout


@dataclass(frozen=True)
class Head:
    """A new classification head, defined once: every engine builds it from these layers."""

    description: str
    layers: tuple[HeadLayer, ...]

    @property
    def pools(self) -> bool:
        return any(layer.kind == "pool" for layer in self.layers)

    @property
    def batch_statistics(self) -> bool:
        """Whether it has BatchNorm: a batch of one image cannot train it."""
        return any(layer.kind == "batchnorm" for layer in self.layers)


HEADS = {
    "linear": Head("global average pool, then one linear layer", (HeadLayer("pool"),)),
    "flatten-linear": Head("the flattened feature map, then one linear layer", (HeadLayer("flatten"),)),
    "book": Head("flatten, Dense(64, relu), BatchNorm, Dropout(0.5), linear (the textbook's head)",
                 (HeadLayer("flatten"), HeadLayer("dense", units=64, activation="relu"), HeadLayer("batchnorm"),
                  HeadLayer("dropout", rate=0.5))),
}
LOGREG = "logreg"  # a head fitted, not trained: scikit-learn's logistic regression in the engine's linear head
LOGREG_MAX_ITER = 1000  # L-BFGS iterations; a fit that needs them all is recorded as not converged
MODEL_INFO = "model.json"
SAVED_FORMAT = 1

log = logging.getLogger(__name__)


def fits_once(strategy_options: Mapping[str, Any]) -> bool:
    """A strategy entry whose head is fitted to convergence once (``logreg``): no epoch setting applies."""
    return strategy_options.get("head") == LOGREG


@dataclass
class CellMetrics:
    """The ``metrics`` of one result line: exactly the fields documented in results/README.md."""

    test_accuracy: float | None  # None: a cell that measures instead of training (transferability)
    test_loss: float | None
    test_balanced_accuracy: float | None
    test_top5_accuracy: float | None
    confusion_matrix: list[list[int]] | None
    epochs: int
    epoch_seconds: float | None
    images_per_second: float | None
    history: list[dict[str, Any]]
    best_epoch: int | None
    train_images: int
    valid_images: int
    test_images: int
    trainable_params: int
    non_trainable_params: int
    blocks: int
    trainable_blocks: int
    trained_blocks: list[int]
    family: str
    peak_memory_mb: float
    cache: dict[str, str]
    device: str
    precision: str
    image_size: int
    weights: str
    transferability: dict[str, float | None] | None = None
    shift_profile: list[float | None] | None = None
    shift: float | None = None
    shift_reason: str | None = None
    converged: bool | None = None
    solver: dict[str, Any] | None = None
    predictions_file: str | None = None
    dataset_info: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------- framework-free pieces


def lr_factor(epoch: int, settings: TrainSettings, epochs: int) -> float:
    """Multiplier of the base learning rate in 0-based ``epoch`` of ``epochs``.

    Linear warmup over ``warmup_epochs`` ((e + 1) / (warmup + 1)), then the schedule:
    constant; cosine (from 1 towards 0 over the remaining epochs); step (x0.1 every
    max(1, epochs // 3) epochs).
    """
    warmup = settings.warmup_epochs
    if epoch < warmup:
        return (epoch + 1) / (warmup + 1)
    if settings.schedule == "constant":
        return 1.0
    if settings.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
    return 0.1 ** ((epoch - warmup) // max(1, epochs // 3))  # step


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (after reflect-padding by size // 8) and random horizontal flip, per image."""
    n: int
    n, size = images.shape[0], images.shape[1]
    pad = max(1, size // 8)
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    out = np.empty_like(images)
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips, strict=True)):
        crop = padded[i, dy : dy + size, dx : dx + size]
        out[i] = crop[:, ::-1] if flip else crop
    return out


def effective_precision(requested: str, device: str) -> str:
    """What precision a cell really runs in: mixed precision on GPU, fp32 on CPU."""
    if requested == "fp32" or device == "cuda":
        return requested
    return f"fp32 (requested {requested}; CPU fallback)"


def labeled(split: ImageSplit, size: int, interpolation: str, where: str) -> tuple[Any, np.ndarray]:
    """A split's images at ``size`` and the labels of exactly those images: read after the
    decode, which may drop files it cannot read (their labels go with them)."""
    images = split.images(size, interpolation)
    labels = np.asarray(split.labels)
    if len(images) != len(labels):
        raise PluginError(f"{where}: the split gave {len(images)} images but {len(labels)} labels; its "
                          "labels must be those of the images it returns")
    return images, labels


def images_at(images: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    """uint8 images (NHWC, or NHW grayscale) resized to ``size`` x ``size`` RGB when needed."""
    from tlbench.data.splits import ArraySplit

    # cast: a DiskArray when resized, which engines take wherever an array is annotated (see ImageSplit.images)
    return cast(np.ndarray, ArraySplit(images, np.zeros(len(images)), fingerprint="-").images(size, interpolation))


def min_batch(head: str) -> int:
    """The smallest training batch a head can learn from (BatchNorm needs two images)."""
    return 2 if head in HEADS and HEADS[head].batch_statistics else 1


def planned_selection(plan: TrainPlan, blocks: int) -> Trainable:
    """The plan's own selection: its last ``trainable_blocks`` (None = all) blocks."""
    count = blocks if plan.trainable_blocks is None else plan.trainable_blocks
    if not 0 <= count <= blocks:
        raise PluginError(f"the backbone has {blocks} blocks; trainable_blocks={count} is out of range")
    return Trainable(frozenset(range(blocks - count, blocks)), plan.backbone_lr_mult)


def family_of(spec: StrategySpec | None, plan: TrainPlan, trained: frozenset[int], blocks: int) -> str:
    """The strategy's family in the four-scenario rule, ``finetune`` resolved to part or all."""
    family = spec.family if spec is not None and spec.family else (
        "evidence" if plan.head is None else "scratch" if not plan.pretrained
        else "extractor" if not trained else "finetune")
    return resolved_family(family, len(trained), blocks)


# ---------------------------------------------------------------- one cell


def run_cell(engine: Engine[Any], backbone: Any, plan: TrainPlan, data: ImageDataset, settings: TrainSettings,
             ctx: CellContext, strategy: StrategySpec | None = None,
             options: Mapping[str, Any] | None = None) -> CellMetrics:
    """Train (as ``plan`` and ``strategy`` say) and evaluate one cell; return its metrics."""
    precision = effective_precision(settings.precision, ctx.device)
    if ctx.save_dir and not engine.supports("save"):
        raise engine.lacking("save", "--save-model")  # before anything runs
    with engine.activate(ctx.device, precision):
        if plan.head is None:
            return _classifier_cell(engine, backbone, plan, data, settings, ctx)
        cell = _Cell(engine, backbone, plan, data, settings, ctx, strategy, dict(options or {}), precision)
        measures = strategy is not None and (strategy.measure is not None or strategy.measure_shift is not None)
        return cell.measure() if measures else cell.run()


def _classifier_cell(engine: Engine[Any], backbone: Any, plan: TrainPlan, data: ImageDataset,
                     settings: TrainSettings, ctx: CellContext) -> CellMetrics:
    """The pretrained network as it is: ImageNet probabilities summed into the target classes."""
    if not data.imagenet_classes:
        raise NotApplicable(f"dataset {data.name} has no ImageNet class mapping")
    if plan.train:
        raise PluginError(f"{backbone.name}: a plan without a head cannot train")
    groups = [tuple(data.imagenet_classes[c]) for c in data.class_names]
    size = engine.classifier_image_size(backbone)
    images, labels = labeled(data.splits["test"], size, backbone.interpolation, f"dataset {data.name}, split test")
    model = engine.open_classifier(backbone, ctx.device)
    probs = group_probabilities(engine.imagenet_probabilities(model, images), groups)
    write_predictions(ctx, {"test": (probs, labels)})
    if ctx.save_dir:
        save_model(engine, model, ctx, data, size, backbone.interpolation, head=None, imagenet_groups=groups)
    requested = settings.precision
    return CellMetrics(
        **_test_metrics(probs, labels), epochs=0, epoch_seconds=None, images_per_second=None,
        history=[], best_epoch=None, **_split_sizes(data), trainable_params=0,
        non_trainable_params=engine.parameter_counts(model, frozenset())[1], blocks=len(backbone.blocks),
        trainable_blocks=0, trained_blocks=[], family="evidence",
        peak_memory_mb=engine.peak_memory_mb(ctx.device), cache={}, device=ctx.device,
        precision="fp32" if requested == "fp32" else f"fp32 (requested {requested}; classifier: fp32)",
        image_size=size, weights=engine.weights_label(model))


class _Cell:
    """One trained cell: selection, frozen inputs, epochs, evaluation."""

    def __init__(self, engine: Engine[Any], backbone: Any, plan: TrainPlan, data: ImageDataset,
                 settings: TrainSettings, ctx: CellContext, strategy: StrategySpec | None,
                 options: dict[str, Any], precision: str):
        self.engine, self.backbone, self.plan, self.data = engine, backbone, plan, data
        self.settings, self.ctx, self.strategy, self.precision = settings, ctx, strategy, precision
        self.blocks: tuple[Block, ...] = tuple(backbone.blocks)
        self.epochs = plan.warmup_head_epochs + settings.epochs if plan.train and plan.head != LOGREG else 0
        assert plan.head is not None  # run_cell takes a plan without a head to _classifier_cell
        self.head = "linear" if plan.head == LOGREG else plan.head  # the engine's head
        if self.head not in HEADS:
            raise PluginError(f"unknown head {plan.head!r}: one of {', '.join([*HEADS, LOGREG])}")
        self.view = TrainingView(options, plan, settings, self.blocks, self.epochs)
        self.labels: dict[str, np.ndarray] = {}  # per split, of the images decoded (``decode``)

    def run(self) -> CellMetrics:
        engine, ctx = self.engine, self.ctx
        selection = self.selection()
        model = engine.open(self.backbone, pretrained=self.plan.pretrained, seed=ctx.seed, device=ctx.device,
                            precision=self.precision)
        prefix = min(selection.blocks, default=len(self.blocks))
        images = self.decode(SPLITS if self.settings.test else SPLITS[:2], self.backbone.image_size)
        wanted, status = self.prefix_status(prefix)
        precomputed = engine.split(model, prefix, wanted) and wanted
        if wanted and not precomputed:
            status = "unsupported"
        engine.attach_head(model, self.head, self.data.num_classes, ctx.seed)
        inputs, status = (self.cached_inputs(model, prefix, images) if precomputed else (images, status))
        history: list[dict[str, Any]]
        best_epoch: int | None
        solver: dict[str, Any] | None
        converged: bool | None
        if self.plan.head == LOGREG:  # one full-batch fit: its history is that fit, validated
            started = time.perf_counter()
            solver, converged = self.fit_logreg(model, selection, precomputed, inputs)
            history = [{"epoch": 1, "phase": LOGREG, "seconds": time.perf_counter() - started,
                        **self.validation(model, inputs)}]
            best_epoch = 1
        else:
            (history, best_epoch), solver = self.fit(model, selection, inputs), None
            converged = stopped_improving(len(history), best_epoch, self.settings.patience) if self.epochs else None
        probs = engine.predict(model, inputs["test"]) if self.settings.test else None
        if ctx.predictions_path:
            kept = {"valid": (engine.predict(model, inputs["valid"]), self.labels["valid"])}
            write_predictions(ctx, kept if probs is None else {"test": (probs, self.labels["test"]), **kept})
        if ctx.save_dir:
            save_model(engine, model, ctx, self.data, self.backbone.image_size, self.backbone.interpolation,
                       head=self.head, imagenet_groups=None)
        trainable, frozen = engine.parameter_counts(model, selection.blocks)
        seconds = [h["seconds"] for h in history]
        epoch_seconds = float(np.mean(seconds)) if seconds else None
        sizes = _split_sizes(self.data)
        kind = "features" if prefix == len(self.blocks) else "activations"
        return CellMetrics(
            **_test_metrics(probs, self.labels.get("test")), epochs=len(history), epoch_seconds=epoch_seconds,
            images_per_second=sizes["train_images"] / epoch_seconds if epoch_seconds else None,
            history=history, best_epoch=best_epoch, **sizes, trainable_params=trainable,
            non_trainable_params=frozen, blocks=len(self.blocks), trainable_blocks=len(selection.blocks),
            trained_blocks=sorted(selection.blocks),
            family=family_of(self.strategy, self.plan, selection.blocks, len(self.blocks)),
            peak_memory_mb=engine.peak_memory_mb(ctx.device), cache={kind: status}, device=ctx.device,
            precision=self.precision, image_size=self.backbone.image_size, weights=engine.weights_label(model),
            converged=converged, solver=solver)

    def measure(self) -> CellMetrics:
        """No training: the strategy measures the pretrained network on the training split, and
        the test split is never read: with ``measure_shift`` its BatchNorm statistics
        (:meth:`batchnorm_statistics`), else the frozen features (the extractor's, cached alike)
        and, where the backbone has one, its ImageNet head's probabilities on those images and on
        the valid split's (``held_out``, with their labels)."""
        assert self.strategy is not None  # run_cell measures only for a strategy that does
        engine, ctx, blocks = self.engine, self.ctx, len(self.blocks)
        model = engine.open(self.backbone, pretrained=True, seed=ctx.seed, device=ctx.device, precision=self.precision)
        engine.split(model, blocks, precomputed=True)
        engine.attach_head(model, "linear", self.data.num_classes, ctx.seed)
        if self.strategy.measure_shift is not None:
            statistics, status = self.batchnorm_statistics(model)
            return self.measured(model, {"bn-statistics": status}, **self.strategy.measure_shift(statistics, blocks))
        assert self.strategy.measure is not None  # without measure_shift, run_cell measures only with it
        features, status = self.cached_inputs(model, blocks, self.decode(["train"], self.backbone.image_size))
        labels = self.labels["train"]
        try:
            classifier = engine.open_classifier(self.backbone, ctx.device) if self.plan.imagenet_scores else None
        except PluginError:  # no ImageNet head: LEEP and NCE are not defined
            classifier = None
        if classifier is None:
            source = held_out = None
        else:
            images = self.decode(["train", "valid"], engine.classifier_image_size(self.backbone))
            source = engine.imagenet_probabilities(classifier, images["train"])
            held_out = engine.imagenet_probabilities(classifier, images["valid"]), self.labels["valid"]
            if not np.array_equal(labels, self.labels["train"]):
                raise PluginError(f"dataset {self.data.name}: the training images that decode at the classifier's "
                                  "image size differ from those at the backbone's; LEEP and NCE need the same images")
        scores = self.strategy.measure(np.asarray(features["train"]).reshape(len(labels), -1), labels, source, held_out)
        return self.measured(model, {"features": status}, transferability=dict(scores))

    def measured(self, model: Any, cache: dict[str, str], **measures: Any) -> CellMetrics:
        """The record of a cell that measures (no training, no test accuracy)."""
        engine, ctx = self.engine, self.ctx
        _, frozen = engine.parameter_counts(model, frozenset())
        return CellMetrics(
            test_accuracy=None, test_loss=None, test_balanced_accuracy=None, test_top5_accuracy=None,
            confusion_matrix=None, epochs=0, epoch_seconds=None, images_per_second=None, history=[],
            best_epoch=None, **_split_sizes(self.data), trainable_params=0, non_trainable_params=frozen,
            blocks=len(self.blocks), trainable_blocks=0, trained_blocks=[], family="evidence",
            peak_memory_mb=engine.peak_memory_mb(ctx.device), cache=cache, device=ctx.device,
            precision=self.precision, image_size=self.backbone.image_size, weights=engine.weights_label(model),
            **measures)

    def batchnorm_statistics(self, model: Any) -> tuple[np.ndarray, str]:
        """Per channel of each BatchNorm layer, the training images' statistics of its input beside
        the stored ones (:func:`tlbench.train.shift.statistics_rows`), and the cache status: ``hit`` (no
        image is read), else one pass over the images, FROZEN_CHUNK at a time, then ``miss`` (kept
        in the feature cache, keyed like the frozen outputs) or ``off``."""
        split = self.data.splits["train"]
        description = {**self.prefix_identity(model, split.fingerprint, len(self.blocks)), "content": "bn-statistics"}
        cache = ArrayCache(self.ctx.cache_dir) if self.ctx.cache_dir else None
        if cache is not None and (found := cache.lookup(description)) is not None:
            return np.asarray(found), "hit"
        images = self.decode(["train"], self.backbone.image_size)["train"]
        rows = statistics_rows(self.engine.batchnorm_sums(model, images[first:first + FROZEN_CHUNK])
                               for first in range(0, len(images), FROZEN_CHUNK))
        if cache is None:
            return rows, "off"
        cache.store(description, rows)
        return rows, "miss"

    # ------------------------------------------------------------ which blocks train

    def selection(self) -> Trainable:
        """The blocks that train in this cell (at most), from the plan or ``before_training``."""
        chosen = planned_selection(self.plan, len(self.blocks))
        if self.strategy is not None and self.strategy.before_training is not None:
            chosen = self.strategy.before_training(dataclasses.replace(self.view, trainable=chosen))
            self.check(chosen, frozenset(range(len(self.blocks))), "before_training")
        return chosen

    def check(self, chosen: Any, allowed: frozenset[int], hook: str) -> None:
        assert self.strategy is not None  # only a strategy's hooks are checked
        if not isinstance(chosen, Trainable):
            raise PluginError(f"strategy {self.strategy.name!r}: {hook} returned {type(chosen).__name__}, "
                              "not a tlbench.plugin.specs.Trainable")
        if not chosen.blocks <= allowed:
            raise PluginError(f"strategy {self.strategy.name!r}: {hook} chose blocks {sorted(chosen.blocks)}, "
                              f"but only {sorted(allowed)} may train here")

    def epoch_selection(self, epoch: int, selection: Trainable, history: list[dict[str, Any]]) -> Trainable:
        """What trains in ``epoch``: head-only warm-up first, then the strategy's choice."""
        active = selection if epoch >= self.plan.warmup_head_epochs else Trainable(
            frozenset(), selection.backbone_lr_mult, "head")
        if self.strategy is not None and self.strategy.on_epoch_start is not None:
            view = dataclasses.replace(self.view, epoch=epoch, trainable=active, selected=selection,
                                       history=tuple(history))
            changed = self.strategy.on_epoch_start(view)
            if changed is not None:
                self.check(changed, selection.blocks, "on_epoch_start")
                active = changed
        return active

    # ------------------------------------------------------------ inputs

    def decode(self, splits: Iterable[str], size: int) -> dict[str, Any]:
        """Per split, its images at ``size``; their labels go to ``self.labels``."""
        images = {}
        for split in splits:
            images[split], self.labels[split] = labeled(self.data.splits[split], size, self.backbone.interpolation,
                                                        f"dataset {self.data.name}, split {split}")
        return images

    def prefix_status(self, prefix: int) -> tuple[bool, str]:
        """Whether the frozen prefix should run once (cacheable), else why not (the cache status);
        the engine may still answer that its prefix cannot run alone (``unsupported``)."""
        if prefix == 0:
            return False, "off"
        if self.settings.augment and self.plan.head != LOGREG:  # logreg fits once, on the images as they are
            return False, "bypassed"
        return True, "miss"

    def cached_inputs(self, model: Any, prefix: int, images: dict[str, np.ndarray]) -> tuple[dict[str, Any], str]:
        """Per split, the frozen prefix's outputs: ``hit``; ``extended`` (continued from a cached
        shorter prefix); ``miss``; ``off`` (no cache dir)."""
        cache = ArrayCache(self.ctx.cache_dir) if self.ctx.cache_dir else None
        outputs, statuses = {}, set()
        for split in images:
            describe = partial(self.prefix_identity, model, self.data.splits[split].fingerprint)

            if cache is None:
                outputs[split], status = self.frozen_rows(model, images[split]), "off"
            elif (found := cache.lookup(describe(prefix))) is not None:
                outputs[split], status = found, "hit"
            else:
                shorter = next(((found, k) for k in range(prefix - 1, 0, -1)
                                if (found := cache.lookup(describe(k))) is not None), None)
                if shorter is not None:
                    outputs[split], status = self.frozen_rows(model, *shorter), "extended"
                else:
                    outputs[split], status = self.frozen_rows(model, images[split]), "miss"
                cache.store(describe(prefix), outputs[split])
            statuses.add(status)
        return outputs, next(s for s in ("off", "miss", "extended", "hit") if s in statuses)

    def prefix_identity(self, model: Any, split_fingerprint: str, blocks: int) -> dict[str, Any]:
        """The feature cache's key for the first ``blocks`` blocks' outputs on one split: the
        backbone, its weights (and the seed of a random initialisation), its input, the
        framework's version and what the engine adds (:meth:`Engine.prefix_details`)."""
        engine, backbone = self.engine, self.backbone
        weights = engine.weights_label(model)
        return {"framework": engine.framework, "framework_version": package_version(engine.framework),
                "backbone": backbone.name, "weights": f"{weights} seed={self.ctx.seed}" if weights.startswith("none") else weights,
                "image_size": backbone.image_size, "interpolation": backbone.interpolation,
                **engine.prefix_details(model, blocks), "split": split_fingerprint, "prefix_blocks": blocks}

    def frozen_rows(self, model: Any, inputs: np.ndarray | DiskArray, start_blocks: int = 0) -> DiskArray:
        """The frozen prefix's outputs for ``inputs`` (images, or a shorter prefix's outputs from
        ``start_blocks``), computed FROZEN_CHUNK rows at a time into a file: memory holds one
        chunk, whatever the split's size."""
        rows = None
        for first in range(0, max(len(inputs), 1), FROZEN_CHUNK):
            part = self.engine.frozen_outputs(model, inputs[first:first + FROZEN_CHUNK], start_blocks)
            if rows is None:
                rows = DiskArray(part.shape[1:], part.dtype)
            rows.append(part)
        assert rows is not None  # the loop runs at least once
        return rows

    # ------------------------------------------------------------ epochs, or a fitted head

    def fit_logreg(self, model: Any, selection: Trainable, precomputed: bool,
                   inputs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Head ``logreg``: scikit-learn's L2-regularised (multinomial) logistic regression, fitted by
        L-BFGS to convergence as in Kornblith et al.'s linear evaluation (CVPR 2019), on the training
        split's pooled features as they are (not standardised: scikit-learn's default, so the
        engine's linear head predicts with the fitted weights unchanged). Returns the solver's
        record and whether it converged (fewer than LOGREG_MAX_ITER iterations)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        if selection.blocks or not precomputed:
            raise PluginError(f"{self.backbone.name}: head {LOGREG!r} is fitted on the cached features of the whole "
                              "frozen backbone: no block may train (strategy extractor), and the engine must split it")
        train, labels, c = inputs["train"], self.labels["train"], self.plan.logreg_c
        if len(np.unique(labels)) < 2:
            raise PluginError(f"dataset {self.data.name}: head {LOGREG!r} needs training images of two classes or more")
        features = np.concatenate([self.engine.head_features(model, train[first:first + FROZEN_CHUNK])
                                   for first in range(0, len(train), FROZEN_CHUNK)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded and logged below, with the cell's names
            fitted = LogisticRegression(C=c, max_iter=LOGREG_MAX_ITER).fit(features, labels)
        iterations = int(np.max(fitted.n_iter_))
        converged = iterations < LOGREG_MAX_ITER
        if not converged:
            log.warning("%s on %s: head logreg (C=%g) did not converge in %d L-BFGS iterations; its weights are "
                        "those of the last iteration", self.backbone.name, self.data.name, c, LOGREG_MAX_ITER)
        weight = np.zeros((self.data.num_classes, features.shape[1]), np.float32)
        bias = np.full(self.data.num_classes, -np.inf, np.float32)  # a class without training images: never predicted
        coef, intercept = fitted.coef_, fitted.intercept_
        if len(fitted.classes_) == 2:  # scikit-learn's binary model is one logit difference: half of it per class
            coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
        weight[fitted.classes_], bias[fitted.classes_] = coef, intercept
        self.engine.set_linear_head(model, weight, bias)
        return {"name": "lbfgs", "C": c, "iterations": iterations, "max_iter": LOGREG_MAX_ITER}, converged

    def fit(self, model: Any, selection: Trainable, inputs: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], int | None]:
        """Train for the cell's epochs; restore the best one (by validation accuracy, ties by
        loss; without validation images the last epoch counts)."""
        engine, s = self.engine, self.settings
        history: list[dict[str, Any]] = []
        best, best_epoch, best_state, since_best, current = None, None, None, 0, None
        assert self.plan.head is not None  # see __init__
        smallest = min_batch(self.plan.head)
        for epoch in range(self.epochs):
            active = self.epoch_selection(epoch, selection, history)
            if active != current:
                engine.start_phase(model, active, s)
                current = active
            result = engine.train_epoch(model, inputs["train"], self.labels["train"],
                                        lr_factor=lr_factor(epoch, s, self.epochs), settings=s, min_batch=smallest)
            validating = time.perf_counter()
            validated = self.validation(model, inputs)
            logs: dict[str, Any] = {"epoch": epoch + 1, "phase": active.label, "train_loss": result.loss,
                    "train_accuracy": result.accuracy, "seconds": result.seconds,
                    "validation_seconds": time.perf_counter() - validating,  # an epoch costs both
                    "lr": s.lr * lr_factor(epoch, s, self.epochs), **validated}
            history.append(logs)
            self.ctx.on_epoch(len(history), self.epochs, logs)
            if logs["val_accuracy"] is None:
                best_epoch = epoch + 1
                continue
            score = (logs["val_accuracy"], -logs["val_loss"])
            if best is None or score > best:
                best, best_epoch, since_best = score, epoch + 1, 0
                if s.restore_best:
                    best_state = engine.snapshot(model, selection.blocks)
            else:
                since_best += 1
            if s.patience and since_best >= s.patience:
                break
        if best_state is not None:
            engine.restore(model, best_state)
        return history, best_epoch

    def validation(self, model: Any, inputs: dict[str, np.ndarray]) -> dict[str, float | None]:
        labels = self.labels["valid"]
        if len(labels) == 0:
            return {"val_loss": None, "val_accuracy": None}
        m = classification_metrics(self.engine.predict(model, inputs["valid"]), labels, prefix="val")
        return {"val_loss": m["val_loss"], "val_accuracy": m["val_accuracy"]}


def _test_metrics(probs: np.ndarray | None, labels: np.ndarray | None) -> dict[str, Any]:
    """The test metrics; all None when the test split was not read (``TrainSettings.test``)."""
    if probs is None or labels is None:
        return {"test_accuracy": None, "test_loss": None, "test_balanced_accuracy": None,
                "test_top5_accuracy": None, "confusion_matrix": None}
    metrics = classification_metrics(probs, labels)
    return {"test_top5_accuracy": None, **metrics}


def _split_sizes(data: ImageDataset) -> dict[str, Any]:  # ints; Any as they unpack into CellMetrics
    return {f"{s}_images": len(data.splits[s].labels) for s in SPLITS}


# ---------------------------------------------------------------- kept predictions


def write_predictions(ctx: CellContext, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """``ctx.predictions_path`` (when set): per split its probabilities (float16) and labels, in
    one ``.npz`` written whole or not at all, for statistics, error analysis and ensembles."""
    if not ctx.predictions_path:
        return
    arrays: dict[str, Any] = {}  # arrays; Any as they unpack into savez_compressed's **kwds
    for split, (probabilities, labels) in splits.items():
        arrays[f"{split}_probabilities"] = np.asarray(probabilities, dtype=np.float16)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    path = Path(ctx.predictions_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


# ---------------------------------------------------------------- saved models


def save_model(engine: Engine[Any], model: Any, ctx: CellContext, data: ImageDataset, image_size: int,
               interpolation: str, head: str | None, imagenet_groups: list[tuple[int, ...]] | None) -> None:
    """The engine's model file and ``model.json``: what ``tlbench predict --cell`` needs."""
    assert ctx.save_dir is not None  # callers save only with one
    folder = Path(ctx.save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    engine.save(model, str(folder))
    info = {"format": SAVED_FORMAT, "framework": engine.framework, "backbone": ctx.backbone,
            "backbone_options": dict(ctx.backbone_options), "head": head,
            "class_names": list(data.class_names), "image_size": image_size, "interpolation": interpolation,
            "imagenet_groups": [list(g) for g in imagenet_groups] if imagenet_groups else None}
    write_text(folder / MODEL_INFO, json.dumps(info, indent=2, default=str))
