"""The engine interface: the primitives a framework gives the core's cell protocol.

:mod:`tlbench.training` owns the protocol (phases, schedule, early stopping, best-epoch
restore, history, caching, the metrics record). An engine only knows how to do single steps
in its framework, on one network of one cell. A plugin registers its engine with the
``tlbench_register_engines`` hook; backbones name it by ``BackboneSpec.framework``.

Images cross the boundary as uint8 NHWC numpy arrays; frozen-prefix outputs ("inputs") as
float32 numpy arrays; probabilities as float arrays ``(N, classes)``. The network handle an
engine returns from :meth:`Engine.open` is its own object; the core only passes it back.
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .types import BadSetting, PluginError, Trainable, TrainSettings

THREADS_ENV = "TLBENCH_THREADS"


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


class Engine(ABC):
    """What a framework must implement to train any of its backbones under the core protocol.

    The core calls, per cell: :meth:`open`, :meth:`can_split` / :meth:`split`, then
    :meth:`frozen_outputs` for the frozen prefix of each split (cached), :meth:`attach_head`,
    and per phase :meth:`start_phase`, per epoch :meth:`train_epoch` and :meth:`predict`,
    around them :meth:`snapshot` / :meth:`restore`, and at the end :meth:`parameter_counts`
    and :meth:`save`. The pretrained classifier path uses :meth:`open_classifier` and
    :meth:`imagenet_probabilities`. Head ``logreg`` replaces the epochs by
    :meth:`head_features` and :meth:`set_linear_head`; strategy ``shift`` uses :meth:`batchnorm_sums`.
    """

    framework: str = ""

    # ------------------------------------------------------------ the process

    def configure(self, threads: int) -> dict[str, Any]:
        """Set the intra-op thread count and deterministic kernels; return what was set."""
        return {}

    def activate(self, device: str, precision: str) -> AbstractContextManager:
        """A context that holds for one cell (device placement, mixed-precision policy)."""
        return contextlib.nullcontext()

    @abstractmethod
    def peak_memory_mb(self, device: str) -> float:
        """Peak process RSS (CPU) or peak device memory (GPU) of the cell, in MiB."""

    # ------------------------------------------------------------ the network

    @abstractmethod
    def open(self, backbone: Any, *, pretrained: bool, seed: int, device: str, precision: str) -> Any:
        """A fresh network of ``backbone`` without its ImageNet head, every block trainable:
        pretrained weights or random init, seeded with ``seed``."""

    @abstractmethod
    def weights_label(self, model: Any) -> str:
        """Where the network's weights came from (``package:...``, ``file:...``, ``none (...)``)."""

    @abstractmethod
    def can_split(self, model: Any, prefix_blocks: int) -> bool:
        """Whether the first ``prefix_blocks`` blocks can run alone (and their outputs be cached)."""

    @abstractmethod
    def split(self, model: Any, prefix_blocks: int, precomputed: bool) -> None:
        """From now on the first ``prefix_blocks`` blocks are the frozen prefix. With
        ``precomputed``, training and prediction inputs are :meth:`frozen_outputs`; otherwise
        they are uint8 images and the prefix runs on every batch. Either way inputs are rows
        that may live in a file (:class:`tlbench.data.DiskArray`): index them by slices or index
        arrays a batch at a time; ``np.asarray`` reads them all."""

    @abstractmethod
    def frozen_outputs(self, model: Any, inputs: np.ndarray, start_blocks: int = 0) -> np.ndarray:
        """The prefix's outputs for uint8 images (``start_blocks`` 0), or, from the cached
        outputs of the first ``start_blocks`` blocks, the rest of the prefix. The core calls it
        on chunks of a split (:data:`tlbench.training.FROZEN_CHUNK` rows) and keeps the
        outputs in a file."""

    @abstractmethod
    def cache_identity(self, model: Any, prefix_blocks: int) -> Mapping[str, Any]:
        """Everything besides the split that determines the outputs of the first
        ``prefix_blocks`` blocks (backbone, weights, preprocessing, framework version, ...)."""

    @abstractmethod
    def attach_head(self, model: Any, kind: str, num_classes: int, seed: int) -> None:
        """A new head of ``kind`` (see :data:`tlbench.training.HEADS`), seeded with ``seed``."""

    def head_features(self, model: Any, outputs: np.ndarray) -> np.ndarray:
        """``(N, D)``: what the ``linear`` head feeds its layer, from the whole backbone's frozen
        outputs (default: the outputs flattened; an engine whose head pools overrides it)."""
        return np.asarray(outputs).reshape(len(outputs), -1)

    def set_linear_head(self, model: Any, weight: np.ndarray, bias: np.ndarray) -> None:
        """Give the attached ``linear`` head's layer ``weight`` ``(classes, D)`` and ``bias``
        ``(classes,)``, for rows of :meth:`head_features` (head ``logreg``: fitted by the core)."""
        raise PluginError(f"the {self.framework or type(self).__name__} engine cannot set a linear head's "
                          "weights, which head 'logreg' needs")

    def batchnorm_sums(self, model: Any, images: np.ndarray) -> list[BatchNormSums]:
        """For uint8 ``images`` through the whole backbone in evaluation mode (nothing changes), per
        BatchNorm layer with running statistics, in network order, the sums of its input; ``[]``
        without such a layer. The core adds them up over a split (strategy ``shift``)."""
        raise PluginError(f"the {self.framework or type(self).__name__} engine cannot read BatchNorm statistics, "
                          "which strategy 'shift' needs")

    # ------------------------------------------------------------ training

    @abstractmethod
    def freeze(self, model: Any, blocks: frozenset[int]) -> None:
        """Only ``blocks`` (and the head) train; the others are frozen, normalisation
        statistics included."""

    @abstractmethod
    def start_phase(self, model: Any, trainable: Trainable, settings: TrainSettings) -> None:
        """:meth:`freeze` to ``trainable.blocks`` and a fresh optimizer (``settings.optimizer``):
        the head at ``settings.lr``, the blocks at ``settings.lr x trainable.backbone_lr_mult``."""

    @abstractmethod
    def train_epoch(self, model: Any, inputs: np.ndarray, labels: np.ndarray, *, lr_factor: float,
                    settings: TrainSettings, min_batch: int) -> EpochResult:
        """One shuffled pass in batches of ``settings.batch_size`` at ``lr_factor`` x the
        phase's learning rates; batches smaller than ``min_batch`` are skipped. Images are
        augmented when ``settings.augment`` and the inputs are images."""

    @abstractmethod
    def predict(self, model: Any, inputs: np.ndarray) -> np.ndarray:
        """Class probabilities in evaluation mode."""

    @abstractmethod
    def snapshot(self, model: Any, blocks: frozenset[int]) -> Any:
        """A copy of what training changes in ``blocks`` and the head (to restore the best epoch)."""

    @abstractmethod
    def restore(self, model: Any, state: Any) -> None:
        """Put back a :meth:`snapshot`."""

    @abstractmethod
    def parameter_counts(self, model: Any) -> tuple[int, int]:
        """(trainable, frozen) parameters now, head included; normalisation statistics excluded."""

    # ------------------------------------------------------------ the ImageNet head

    @abstractmethod
    def open_classifier(self, backbone: Any, device: str) -> Any:
        """The pretrained network with its ImageNet head, ready to predict."""

    @abstractmethod
    def imagenet_probabilities(self, model: Any, images: np.ndarray) -> np.ndarray:
        """``(N, 1000)`` ImageNet probabilities for uint8 images at the classifier's input size."""

    @abstractmethod
    def classifier_image_size(self, backbone: Any) -> int:
        """The input size :meth:`imagenet_probabilities` expects."""

    # ------------------------------------------------------------ saved models

    @abstractmethod
    def save(self, model: Any, folder: str) -> None:
        """Write the trained network (or the classifier) into ``folder``; the core writes
        ``model.json`` beside it."""

    @abstractmethod
    def load_saved(self, backbone: Any, folder: str, info: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
        """A function from uint8 images (at ``info["image_size"]``) to the saved model's
        probabilities (ImageNet for a classifier cell)."""
