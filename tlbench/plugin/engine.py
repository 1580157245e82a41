"""The engine interface: the primitives a framework gives the core's cell protocol.

:mod:`tlbench.train.protocol` owns the protocol (phases, schedule, early stopping, best-epoch
restore, history, caching, the metrics record). An engine only knows how to do single steps
in its framework, on one network of one cell. A plugin registers its engine with the
``tlbench_register_engines`` hook; backbones name it by ``BackboneSpec.framework``.

Images cross the boundary as uint8 NHWC numpy arrays; frozen-prefix outputs ("inputs") as
float32 numpy arrays; probabilities as float arrays ``(N, classes)``. The network handle an
engine returns from :meth:`Engine.open` is its own object (the type parameter of
``Engine[Model]``); the core only passes it back.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from tlbench.plugin.specs import BadSetting, PluginError, Trainable, TrainSettings

THREADS_ENV = "TLBENCH_THREADS"
Model = TypeVar("Model")  # an engine's own network object: what its open() returns, given back to every primitive


def intra_op_threads() -> int:
    """The intra-op thread count of every engine: ``$TLBENCH_THREADS`` (1 to 4 x the CPUs, else
    :class:`BadSetting`), else the CPUs this process may run on. Fixed per process, so that runs
    on one machine repeat exactly."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if not text:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus = os.cpu_count() or 1
    value = int(text) if text.isascii() and text.isdigit() and len(text) < 10 else 0
    if not 1 <= value <= 4 * cpus:
        raise BadSetting(f"{THREADS_ENV}={text[:40]!r} is not a thread count from 1 to {4 * cpus} (4 x the {cpus} CPUs); "
                         "set it to a whole number in that range, or unset it to use every CPU")
    return value


@dataclass(frozen=True)
class EpochResult:
    """One pass over the training inputs: mean loss, accuracy and wall seconds."""

    loss: float
    accuracy: float
    seconds: float


def train_batches(order: Any, batch_size: int, min_batch: int, step: Callable[[Any], tuple[float, int]],
                  finish: Callable[[], None] | None = None) -> EpochResult:
    """The batch loop of one training epoch, for every engine: ``order`` (the engine's shuffled
    example indices) in batches of ``batch_size``, a batch smaller than ``min_batch`` skipped;
    ``step(index)`` trains on one batch and returns its mean loss and its correct count. The
    epoch's loss and accuracy are over all examples; its seconds end after ``finish`` (a device
    synchronisation)."""
    total_loss, correct, started = 0.0, 0, time.perf_counter()
    for first in range(0, len(order), batch_size):
        index = order[first:first + batch_size]
        if len(index) < min_batch:
            continue
        loss, right = step(index)
        total_loss += loss * len(index)
        correct += right
    if finish is not None:
        finish()
    examples = max(len(order), 1)
    return EpochResult(total_loss / examples, correct / examples, time.perf_counter() - started)


@dataclass(frozen=True)
class BatchNormSums:
    """One BatchNorm layer's input over a batch of images, per channel: the values summed
    (``total``) and their squares summed (``squares``), float64, over ``count`` values a channel
    (images x positions); beside the layer's stored ``running_mean``, ``running_var`` and ``eps``
    and the index of its ``block``."""

    block: int
    count: int
    total: np.ndarray
    squares: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float


class Engine(ABC, Generic[Model]):
    """What a framework must implement to train any of its backbones under the core protocol.

    Ten primitives are required. Per cell the core calls :meth:`open`, :meth:`split`, then
    :meth:`frozen_outputs` for the frozen prefix of each split (cached by the core),
    :meth:`attach_head`, and per phase :meth:`start_phase`, per epoch :meth:`train_epoch` and
    :meth:`predict`, around them :meth:`snapshot` / :meth:`restore`, and at the end
    :meth:`parameter_counts`.

    The rest are optional capabilities with defaults; :meth:`supports` says which an engine
    has: the process set-up (:meth:`configure`, :meth:`activate`), readings
    (:meth:`peak_memory_mb`, :meth:`weights_label`, :meth:`prefix_details`), and
    ``imagenet_classifier`` (strategy ``classifier``, LEEP and NCE), ``linear_head`` (head
    ``logreg``), ``batchnorm_sums`` (strategy ``shift``) and ``save`` (``--save-model``,
    ``tlbench predict --cell``).
    """

    framework: str = ""
    CAPABILITIES: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "imagenet_classifier": ("open_classifier", "imagenet_probabilities", "classifier_image_size"),
        "linear_head": ("set_linear_head",),
        "batchnorm_sums": ("batchnorm_sums",),
        "save": ("save", "load_saved"),
    }

    def supports(self, capability: str) -> bool:
        """Whether this engine implements ``capability`` (a key of :data:`CAPABILITIES`)."""
        return all(getattr(type(self), name) is not getattr(Engine, name) for name in self.CAPABILITIES[capability])

    def lacking(self, capability: str, needed_by: str) -> PluginError:
        """The error for a capability this engine lacks."""
        return PluginError(f"the {self.framework or type(self).__name__} engine lacks the capability {capability!r}, "
                           f"which {needed_by} needs")

    # ------------------------------------------------------------ the process (optional)

    def configure(self, threads: int) -> dict[str, Any]:
        """Set the intra-op thread count and deterministic kernels; return what was set."""
        return {}

    def activate(self, device: str, precision: str) -> AbstractContextManager[Any]:
        """A context that holds for one cell (device placement, mixed-precision policy)."""
        return contextlib.nullcontext()

    def peak_memory_mb(self, device: str) -> float:
        """Peak memory of the cell in MiB: by default the process's peak RSS; an engine on a GPU
        reports the device's peak instead."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes

    # ------------------------------------------------------------ the network

    @abstractmethod
    def open(self, backbone: Any, *, pretrained: bool, seed: int, device: str, precision: str) -> Model:
        """A fresh network of ``backbone`` without its ImageNet head, every block trainable:
        pretrained weights or random init, seeded with ``seed``."""

    def weights_label(self, model: Model) -> str:
        """Where the network's weights came from (``package:...``, ``file:...``); a label that
        starts with ``none`` means a seeded random initialisation."""
        return "not reported by the engine"

    @abstractmethod
    def split(self, model: Model, prefix_blocks: int, precomputed: bool) -> bool:
        """From now on the first ``prefix_blocks`` blocks are the frozen prefix; return whether
        they can run alone. With ``precomputed`` (and a prefix that runs alone), training and
        prediction inputs are :meth:`frozen_outputs`; otherwise they are uint8 images and the
        network runs on every batch, the prefix frozen. Either way inputs are rows that may live
        in a file (:class:`tlbench.data.splits.DiskArray`): index them by slices or index arrays a
        batch at a time; ``np.asarray`` reads them all."""

    @abstractmethod
    def frozen_outputs(self, model: Model, inputs: np.ndarray, start_blocks: int = 0) -> np.ndarray:
        """The prefix's outputs for uint8 images (``start_blocks`` 0), or, from the cached
        outputs of the first ``start_blocks`` blocks, the rest of the prefix. The core calls it
        on chunks of a split (:data:`tlbench.train.protocol.FROZEN_CHUNK` rows) and keeps the
        outputs in a file."""

    def prefix_details(self, model: Model, prefix_blocks: int) -> Mapping[str, Any]:
        """What else, besides the backbone's name, weights, image size and interpolation and
        the framework's version (the core's part of the feature cache's key), determines the
        outputs of the first ``prefix_blocks`` blocks: preprocessing, numeric policy, ..."""
        return {}

    @abstractmethod
    def attach_head(self, model: Model, kind: str, num_classes: int, seed: int) -> None:
        """A new head of ``kind`` (see :data:`tlbench.train.protocol.HEADS`), seeded with ``seed``."""

    # ------------------------------------------------------------ training

    @abstractmethod
    def start_phase(self, model: Model, trainable: Trainable, settings: TrainSettings) -> None:
        """Only ``trainable.blocks`` and the head train (the others frozen, normalisation
        statistics included), with a fresh optimizer (``settings.optimizer``): the head at
        ``settings.lr``, the blocks at ``settings.lr x trainable.backbone_lr_mult``."""

    @abstractmethod
    def train_epoch(self, model: Model, inputs: np.ndarray, labels: np.ndarray, *, lr_factor: float,
                    settings: TrainSettings, min_batch: int) -> EpochResult:
        """One shuffled pass in batches of ``settings.batch_size`` at ``lr_factor`` x the
        phase's learning rates; batches smaller than ``min_batch`` are skipped. Images are
        augmented when ``settings.augment`` and the inputs are images."""

    @abstractmethod
    def predict(self, model: Model, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities in evaluation mode."""

    @abstractmethod
    def snapshot(self, model: Model, blocks: frozenset[int]) -> Any:
        """A copy of what training changes in ``blocks`` and the head (to restore the best epoch)."""

    @abstractmethod
    def restore(self, model: Model, state: Any) -> None:
        """Put back a :meth:`snapshot`."""

    @abstractmethod
    def parameter_counts(self, model: Model, blocks: frozenset[int]) -> tuple[int, int]:
        """(trainable, frozen) parameters when ``blocks`` and the head train, head included;
        normalisation statistics excluded. A network from :meth:`open_classifier` has only
        frozen parameters."""

    # ------------------------------------------------------------ capability linear_head

    def head_features(self, model: Model, outputs: np.ndarray) -> np.ndarray:
        """``(N, D)``: what the ``linear`` head feeds its layer, from the whole backbone's frozen
        outputs (default: the outputs flattened; an engine whose head pools overrides it)."""
        return np.asarray(outputs).reshape(len(outputs), -1)

    def set_linear_head(self, model: Model, weight: np.ndarray, bias: np.ndarray) -> None:
        """Give the attached ``linear`` head's layer ``weight`` ``(classes, D)`` and ``bias``
        ``(classes,)``, for rows of :meth:`head_features` (head ``logreg``: fitted by the core)."""
        raise self.lacking("linear_head", "head 'logreg'")

    # ------------------------------------------------------------ capability batchnorm_sums

    def batchnorm_sums(self, model: Model, images: np.ndarray) -> list[BatchNormSums]:
        """For uint8 ``images`` through the whole backbone in evaluation mode (nothing changes), per
        BatchNorm layer with running statistics, in network order, the sums of its input; ``[]``
        without such a layer. The core adds them up over a split (strategy ``shift``)."""
        raise self.lacking("batchnorm_sums", "strategy 'shift'")

    # ------------------------------------------------------------ capability imagenet_classifier

    def open_classifier(self, backbone: Any, device: str) -> Model:
        """The pretrained network with its ImageNet head, ready to predict."""
        raise self.lacking("imagenet_classifier", "strategy 'classifier' (and LEEP, NCE)")

    def imagenet_probabilities(self, model: Model, images: np.ndarray) -> np.ndarray:
        """``(N, 1000)`` ImageNet probabilities for uint8 images at the classifier's input size."""
        raise self.lacking("imagenet_classifier", "strategy 'classifier' (and LEEP, NCE)")

    def classifier_image_size(self, backbone: Any) -> int:
        """The input size :meth:`imagenet_probabilities` expects."""
        raise self.lacking("imagenet_classifier", "strategy 'classifier' (and LEEP, NCE)")

    # ------------------------------------------------------------ capability save

    def save(self, model: Model, folder: str) -> None:
        """Write the trained network (or the classifier) into ``folder``; the core writes
        ``model.json`` beside it."""
        raise self.lacking("save", "--save-model")

    def load_saved(self, backbone: Any, folder: str, info: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        """A function from uint8 images (at ``info["image_size"]``) to the saved model's
        probabilities (ImageNet for a classifier cell)."""
        raise self.lacking("save", "tlbench predict --cell")
