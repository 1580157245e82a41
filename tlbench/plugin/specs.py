"""Typed specs that plugins register, and the plain objects that flow between them.

Framework-free: nothing here imports torch or tensorflow. Images cross every boundary as
numpy ``uint8`` arrays in NHWC layout with integer labels.
"""

from __future__ import annotations

import hashlib
import json
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args

import numpy as np

RESULT_FORMAT_VERSION = 1


class NotApplicable(Exception):
    """Raised by a strategy when a cell makes no sense (e.g. no ImageNet class mapping)."""


class PluginError(Exception):
    """A plugin or its input is wrong; the message says which and what to do."""


class Unprepared(str):
    """A problem a dataset's ``check`` returns when its data is only missing from this machine (not
    prepared, and cannot be downloaded now): a dry run still lists the grid's cells."""


class UnusableDir(Exception):
    """A directory tlbench must write into (run directory, cache) cannot be used; the message says why."""


# ---------------------------------------------------------------- datasets


class ImageSplit(Protocol):
    """One split of a dataset: integer labels and uint8 NHWC images at a requested size.

    ``labels`` are those of the images ``images`` last returned: a split that drops files it
    cannot decode drops their labels too (the core reads ``labels`` after ``images``)."""

    labels: np.ndarray
    fingerprint: str

    def images(self, size: int, interpolation: str = "bilinear") -> np.ndarray:
        """All images of the split as ``(N, size, size, 3)`` uint8: an array, or an array-like
        with ``len``, ``shape``, ``dtype`` and indexing by slices and index arrays that reads only
        what is indexed (:class:`tlbench.data.splits.DiskArray`). Engines index it one batch at a time."""

    def subset(self, indices: Sequence[int]) -> ImageSplit:
        """The same split restricted to ``indices`` (fingerprint changes accordingly)."""


@dataclass
class ImageDataset:
    """A loaded classification dataset with fixed ``train``/``valid``/``test`` splits."""

    name: str
    class_names: tuple[str, ...]
    splits: Mapping[str, ImageSplit]
    domain: str = "unknown"
    imagenet_classes: Mapping[str, tuple[int, ...]] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # recorded in the result's metrics

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset a plugin provides.

    ``load(**options)`` returns an :class:`ImageDataset`; ``options`` lists every option the
    dataset accepts with its default. ``check(**options)`` (optional) is a cheap validation
    run before any cell starts (e.g. scanning a folder) and returns a list of problems; one
    that only says the data is not on this machine yet is an :class:`Unprepared`.
    """

    name: str
    load: Callable[..., ImageDataset]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    domain: str = "unknown"
    num_classes: int | None = None
    check: Callable[..., list[str]] | None = None


# ---------------------------------------------------------------- backbones


@dataclass(frozen=True)
class Block:
    """One block of a backbone (stem first), with its parameter count."""

    name: str
    params: int


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone a plugin provides.

    ``build(**options)`` returns a model source for the engine registered for ``framework``
    (for ``torch``, e.g. ``tlbench_torch.ModuleBackbone`` or ``TimmBackbone``).
    ``block_count(**options)`` (optional) answers without downloading weights, so a grid can
    reject a block index or depth beyond the backbone before anything runs; ``block_names``
    (optional) does the same for blocks given by name. ``blocks(**options)`` (optional) gives
    the blocks with their parameter counts without building the backbone (``tlbench list
    backbones --blocks``); given alone, the names and the count follow from it.
    """

    name: str
    framework: str  # the engine that trains it: "torch" | "keras" | ...
    build: Callable[..., Backbone]
    options: Mapping[str, Any] = field(
        default_factory=lambda: {"weights": "pretrained", "image_size": None}
    )
    description: str = ""
    block_count: Callable[..., int] | None = None
    block_names: Callable[..., Sequence[str]] | None = None
    blocks: Callable[..., Sequence[Block]] | None = None

    def __post_init__(self) -> None:
        if self.blocks is not None:
            blocks = self.blocks
            if self.block_names is None:
                object.__setattr__(self, "block_names", lambda **options: tuple(b.name for b in blocks(**options)))
            if self.block_count is None:
                object.__setattr__(self, "block_count", lambda **options: len(blocks(**options)))


class Backbone(Protocol):
    """What the core reads from a built backbone; its framework's engine does the rest."""

    name: str
    blocks: Sequence[Block]  # stem first
    image_size: int  # the input size of training cells
    interpolation: str  # how images are resized to it


@dataclass(frozen=True)
class EngineSpec:
    """A framework engine a plugin provides: ``load()`` returns a :class:`tlbench.plugin.engine.Engine`.

    Backbones name their engine by ``BackboneSpec.framework``; saved cell models by the
    ``framework`` in their ``model.json``.
    """

    framework: str
    load: Callable[[], Any]
    description: str = ""

    @property
    def name(self) -> str:
        return self.framework


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class TrainPlan:
    """What a strategy asks of the protocol: which weights, which part trains, which head."""

    pretrained: bool = True  # False: random init (scratch)
    trainable_blocks: int | None = 0  # last k blocks train; None = all of them
    head: str | None = "linear"  # None: keep the pretrained ImageNet head (classifier); "logreg": fitted, no block trains
    train: bool = True  # False: evaluate only
    backbone_lr_mult: float = 1.0
    warmup_head_epochs: int = 0  # head-only epochs before the `epochs` of the plan's blocks
    logreg_c: float = 1.0  # head "logreg": scikit-learn's C, the inverse strength of the L2 penalty
    imagenet_scores: bool = True  # a measuring cell: also score the ImageNet head's probabilities (LEEP, NCE)


@dataclass(frozen=True)
class Trainable:
    """Which backbone blocks train (indices, 0 = the stem), at ``lr x backbone_lr_mult``.

    ``phase`` labels the epochs in the history (default ``all``; the head-only warm-up is
    ``head``).
    """

    blocks: frozenset[int] = frozenset()
    backbone_lr_mult: float = 1.0
    phase: str | None = None

    @property
    def label(self) -> str:
        return self.phase or "all"


@dataclass(frozen=True)
class TrainingView:
    """What a strategy callback sees: the cell's options, plan and blocks, and where training is."""

    options: Mapping[str, Any]
    plan: TrainPlan
    settings: TrainSettings
    blocks: tuple[Block, ...]
    epochs: int  # epochs of the whole cell
    epoch: int = 0  # 0-based epoch about to start (0 before training)
    trainable: Trainable = Trainable()  # in force: the plan's (before_training), this epoch's so far
    selected: Trainable = Trainable()  # the cell's selection (what before_training chose)
    history: tuple[Mapping[str, Any], ...] = ()  # the finished epochs


Family = Literal["extractor", "finetune", "finetune-part", "finetune-all", "scratch", "evidence"]
FAMILIES: tuple[str, ...] = get_args(Family)


def resolved_family(family: str, trained_blocks: int | None, blocks: int | None) -> str:
    """A strategy's family in the four-scenario rule, ``finetune`` resolved by the blocks that
    trained: ``finetune-all`` when all did, else ``finetune-part``."""
    if family != "finetune":
        return family
    return "finetune-all" if blocks and trained_blocks == blocks else "finetune-part"


@dataclass(frozen=True)
class StrategySpec:
    """A strategy a plugin provides: ``plan(options, dataset)`` -> :class:`TrainPlan`.

    ``plan`` may raise :class:`NotApplicable`; the cell is then recorded as not-applicable.
    Optional callbacks carry behaviour that a plan cannot express; the protocol calls them
    at fixed points:

    - ``before_training(view) -> Trainable``: the blocks that train in this cell (at most;
      the frozen blocks before the first of them run once and are cached) and their learning
      rate. Default: the plan's last ``trainable_blocks`` at ``plan.backbone_lr_mult``.
    - ``on_epoch_start(view) -> Trainable | None``: the blocks that train in this epoch, a
      subset of ``before_training``'s; None keeps the current ones.
    - ``measure(features, labels, imagenet_probabilities, held_out) -> {score: value}``: instead
      of training, score the frozen features of the training split (``(N, D)`` float array, with
      the ImageNet head's ``(N, 1000)`` probabilities, and ``held_out``: its probabilities on the
      valid split with their labels; both None without a head); recorded in
      ``metrics.transferability``; the cell has no test accuracy.
    - ``measure_shift(statistics, blocks) -> {"shift_profile", "shift", "shift_reason"}``:
      instead of training, compare the training images' BatchNorm input statistics with those
      the network stores (rows of :data:`tlbench.train.shift.COLUMNS`, from the engine's
      ``batchnorm_sums`` or the cache), for a backbone of ``blocks`` blocks; recorded in the
      metrics of those names; the cell has no test accuracy.

    ``option_kinds`` declares how the grid validates options (:mod:`tlbench.plugin.options`); an
    option with a kind but no default in ``options`` is optional and absent unless written.
    ``family`` places the strategy in the four-scenario rule (one of :data:`FAMILIES`;
    ``finetune`` = *part* or *all* by the blocks that trained). None derives it from what
    the cell did: random init = scratch, no head = evidence, no block trained = extractor,
    else finetune.
    """

    name: str
    plan: Callable[[Mapping[str, Any], ImageDataset], TrainPlan]
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    before_training: Callable[[TrainingView], Trainable] | None = None
    on_epoch_start: Callable[[TrainingView], Trainable | None] | None = None
    option_kinds: Mapping[str, Any] = field(default_factory=dict)
    family: Family | None = None
    measure: Callable[[Any, Any, Any, Any], Mapping[str, float | None]] | None = None
    measure_shift: Callable[[Any, int], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in FAMILIES:
            raise PluginError(f"strategy {self.name!r}: family {self.family!r} is not one of {', '.join(FAMILIES)}")


# ---------------------------------------------------------------- cells and runs


Optimizer = Literal["adam", "sgd"]
Schedule = Literal["constant", "cosine", "step"]
Precision = Literal["fp32", "bf16", "fp16"]
SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": get_args(Optimizer), "schedule": get_args(Schedule), "precision": get_args(Precision)}


@dataclass(frozen=True)
class TrainSettings:
    """Shared training settings (the grid's ``train`` section, resolved per cell); the named
    choices are checked here, once, for every engine."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Optimizer = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = "constant"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    patience: int | None = None  # early stopping on validation accuracy
    restore_best: bool = True
    augment: bool = False
    precision: Precision = "fp32"
    image_size: int | None = None
    timeout: float | None = None  # seconds per cell
    test: bool = True  # False: the test split is never read (a search that chooses on validation alone)

    def __post_init__(self) -> None:
        for name, allowed in SETTING_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise PluginError(f"unknown {name} {getattr(self, name)!r}: one of {', '.join(allowed)}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)


@dataclass(frozen=True)
class Entry:
    """One resolved grid entry: a label, the registered plugin name, and its options."""

    name: str
    plugin: str
    options: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # training settings of this entry
    shown: tuple[str, ...] = ()  # option names in the label: swept by a list, or telling apart entries
    backbones: tuple[str, ...] = ()  # a strategy's `backbones:`: the only backbones it pairs with (all if empty)
    tuned: tuple[str, ...] = ()  # a strategy's keys under `tune:`: this entry is one candidate of its series
    order: int = 0  # the candidate's place among its series' candidates, in grid order

    @property
    def label(self) -> str:
        if not self.shown:
            return self.name
        values = {**self.options, **self.overrides}
        inner = ",".join(f"{k}={_short(values[k])}" for k in self.shown)
        return f"{self.name}[{inner}]"

    @property
    def series_label(self) -> str:
        """The label without the tuned keys: the series this candidate belongs to."""
        return Entry(self.name, self.plugin, self.options, self.overrides,
                     tuple(k for k in self.shown if k not in self.tuned)).label

    @property
    def candidate(self) -> dict[str, Any]:
        """The tuned keys and this candidate's values."""
        values = {**self.options, **self.overrides}
        return {k: values[k] for k in self.tuned}


def _short(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value


@dataclass(frozen=True)
class Cell:
    """One point of the grid: dataset x backbone x strategy x seed, with training settings."""

    dataset: Entry
    backbone: Entry
    strategy: Entry
    settings: TrainSettings
    seed: int
    stage: str | None = None  # a candidate of a tuned series: tlbench.grid.tuning.SELECT, EVALUATE or BOTH

    @property
    def cell_id(self) -> str:
        return "/".join(
            [self.dataset.label, self.backbone.label, self.strategy.label, f"seed={self.seed}"]
        )

    @property
    def series_id(self) -> str:
        """The cell id without the tuned values and the seed: what the candidates of a series share."""
        return "/".join([self.dataset.label, self.backbone.label, self.strategy.series_label])

    @property
    def tune(self) -> dict[str, Any] | None:
        """The record's ``tune`` object (results/README.md); None outside a tuned series."""
        if self.stage is None:
            return None
        return {"series": self.strategy.series_label, "series_id": self.series_id,
                "candidate": self.strategy.candidate, "order": self.strategy.order, "stage": self.stage}

    @property
    def params(self) -> dict[str, Any]:
        """Every option that distinguishes the cell."""
        return {
            "dataset": dict(self.dataset.options),
            "backbone": dict(self.backbone.options),
            "strategy": dict(self.strategy.options),
            "train": {k: getattr(self.settings, k) for k in TrainSettings.field_names()},
        }

    @property
    def key(self) -> str:
        """Content hash of everything that determines the result."""
        payload: dict[str, Any] = {
            "format": RESULT_FORMAT_VERSION,
            "dataset": self.dataset.plugin,
            "backbone": self.backbone.plugin,
            "strategy": self.strategy.plugin,
            "params": self.params,
            "seed": self.seed,
        }
        train = payload["params"]["train"]
        train.pop("timeout")  # how a cell is executed, not what it computes
        if train["test"]:  # a setting added after format 1: at its default it computes what earlier cells did
            del train["test"]
        return content_hash(payload)


QUOTED_CHARS = 80
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = QUOTED_CHARS
_QUOTE.maxlist = _QUOTE.maxdict = _QUOTE.maxtuple = 8
_QUOTE.maxlevel = 3


def quote(value: Any) -> str:
    """``repr`` of a user's value for a message, at most ~80 characters however large the value."""
    return shorten(_QUOTE.repr(value))


def shorten(text: str) -> str:
    """``text`` cut to at most ~80 characters, ending in '...' when cut."""
    return text if len(text) <= QUOTED_CHARS else text[: QUOTED_CHARS - 3] + "..."


def content_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class RunInfo:
    """The run that observers see: its grid, run directory and what the user asked to track."""

    name: str  # the grid's name
    out: str  # the run directory
    executor: str
    track: tuple[str, ...] = ()  # tracker names from --track
    tracking_uri: str | None = None  # --tracking-uri
    observers: dict[str, Any] = field(default_factory=dict)  # each tracker's own state for this run


@dataclass
class CellContext:
    """Per-cell services the runner hands to the protocol."""

    seed: int
    device: str  # "cpu" | "cuda" (resolved, never "auto")
    cache_dir: str | None = None  # None: caching off
    save_dir: str | None = None  # where to keep the trained model, if asked
    backbone: str | None = None  # the registered backbone and its options (for saved models)
    backbone_options: Mapping[str, Any] = field(default_factory=dict)
    predictions_path: str | None = None  # where to keep the cell's predicted probabilities (.npz)
    on_epoch: Callable[[int, int, dict[str, float]], None] = lambda epoch, total, logs: None


class BadSetting(Exception):
    """An environment variable or connection setting tlbench reads is unusable; the message names it and what to do."""
