"""The Keras engine: the primitives of :class:`tlbench.plugin.engine.Engine` on Keras 3 / TensorFlow.

A cell's network is cut at a block boundary into a frozen prefix model (its outputs computed
once by the core's protocol and cached) and a trainable suffix model, followed by a new head.
Non-trainable layers run in inference mode, BatchNorm included. The epoch loop, early
stopping and metrics are the core's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.files import atomic_save
from tlbench.plugin.engine import BatchNormSums, Engine, EpochResult, train_batches
from tlbench.plugin.specs import PluginError, Trainable, TrainSettings
from tlbench.train.protocol import augment, images_at

from ._keras import keras, onednn_enabled, tf
from .backbone import KerasBackbone
from .heads import build_head
from .network import Network, in_batches, variable_size

POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
EVAL_BATCH = 32
MODEL_FILE = "model.keras"


@dataclass
class KerasCell:
    """One cell's network and the state the engine keeps for it."""

    backbone: KerasBackbone
    network: Network | None
    seed: int
    precision: str
    weights: str
    rng: np.random.Generator | None = None
    prefix: Any = None  # the frozen blocks as a model (None: nothing frozen)
    suffix: Any = None  # the other blocks as a model (None: everything frozen)
    prefix_blocks: int = 0
    precomputed: bool = False
    head: Any = None
    classifier: Any = None  # the full model with its ImageNet head (classifier cells)
    phase: dict[str | tuple[str, int], Any] = field(default_factory=dict)  # compiled functions, the phase's optimizers

    @property
    def net(self) -> Network:
        """The network of a cell that trains (:meth:`KerasEngine.open`); a classifier cell has none."""
        assert self.network is not None, "a classifier cell has no network to train"
        return self.network

    def forward(self, x, train_head: bool, train_body: bool):
        if not self.precomputed and self.prefix is not None:
            x = self.prefix(x, training=False)
        if self.suffix is not None:
            x = self.suffix(x, training=train_body)
        return self.head(x, training=train_head)

    def batch(self, inputs: np.ndarray, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Cached prefix outputs as they are, or images (augmented with ``rng``) preprocessed."""
        x = inputs[index]
        if self.precomputed:
            return x
        if rng is not None:
            x = augment(x, rng)
        return self.backbone.preprocess(x)

    def signature(self, feature_shape: tuple, with_labels: bool) -> list:
        """Batch-size-free input specs: each function is traced once, before any timing."""
        x = tf.TensorSpec((None, *feature_shape), tf.float32)
        return [x, tf.TensorSpec((None, self.head.output.shape[-1]), tf.float32)] if with_labels else [x]


class KerasEngine(Engine[KerasCell]):
    framework = "keras"

    def configure(self, threads: int) -> dict[str, Any]:
        tf.config.experimental.enable_op_determinism()
        with contextlib.suppress(RuntimeError):  # TensorFlow already started in this process: its count stands
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        return {"tensorflow_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or threads,
                "tensorflow_op_determinism": True, "tensorflow_onednn": onednn_enabled()}

    @contextlib.contextmanager
    def activate(self, device: str, precision: str):
        if device == "cuda":
            if not tf.config.list_physical_devices("GPU"):
                raise PluginError("device 'cuda' was asked for, but TensorFlow sees no GPU; use --device cpu")
            tf.config.experimental.reset_memory_stats("GPU:0")
        elif device != "cpu":
            raise PluginError(f"unknown device {device!r}: 'cpu' or 'cuda'")
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(POLICIES.get(precision, "float32"))
        try:
            with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
                yield
        finally:
            keras.config.set_dtype_policy(previous)

    def peak_memory_mb(self, device: str) -> float:
        if device == "cuda":
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        return super().peak_memory_mb(device)

    # ------------------------------------------------------------ the network

    def open(self, backbone: KerasBackbone, *, pretrained: bool, seed: int, device: str, precision: str) -> KerasCell:
        keras.utils.set_random_seed(seed)  # python, numpy and backend: init, head, dropout
        network = backbone.build_network(pretrained=pretrained)
        weights = backbone.weights.label(top=False) if pretrained else "none (random init: scratch)"
        return KerasCell(backbone, network, seed, precision, weights, rng=np.random.default_rng(seed))

    def weights_label(self, model: KerasCell) -> str:
        return model.weights

    def split(self, model: KerasCell, prefix_blocks: int, precomputed: bool) -> bool:
        model.prefix, model.suffix = model.net.split(prefix_blocks)
        model.prefix_blocks, model.precomputed = prefix_blocks, precomputed
        model.phase.clear()  # functions compiled for another prefix
        return True  # blocks end at single-tensor boundaries

    def frozen_outputs(self, model: KerasCell, inputs: np.ndarray, start_blocks: int = 0) -> np.ndarray:
        key = ("frozen", start_blocks)  # one compiled function per part, for every split
        if key not in model.phase:
            part = model.net.between(start_blocks, model.prefix_blocks) if start_blocks else model.prefix
            model.phase[key] = tf.function(lambda x: part(x, training=False), reduce_retracing=True, autograph=False)
        prepare = () if start_blocks else (model.backbone.preprocess,)  # cached activations are ready as they are
        return in_batches(model.phase[key], inputs, EVAL_BATCH, *prepare)

    def prefix_details(self, model: KerasCell, prefix_blocks: int) -> Mapping[str, Any]:
        backbone = model.backbone
        return {"weights_identity": backbone.weights.identity, "preprocessing": backbone.spec.preprocessing,
                "cut": model.net.segments[prefix_blocks - 1].name, "dtype_policy": keras.config.dtype_policy().name}

    def attach_head(self, model: KerasCell, kind: str, num_classes: int, seed: int) -> None:
        model.head = build_head(kind, tuple(model.net.model.output.shape[1:]), num_classes)

    def head_features(self, model: KerasCell, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs).mean(axis=(1, 2), dtype=np.float32)  # the linear head's GlobalAveragePooling2D (channels last)

    def set_linear_head(self, model: KerasCell, weight: np.ndarray, bias: np.ndarray) -> None:
        model.head.get_layer("head_out").set_weights([weight.T, bias])

    def batchnorm_sums(self, model: KerasCell, images: np.ndarray) -> list[BatchNormSums]:
        if "batchnorm" not in model.phase:  # one compiled function: every BatchNorm input, reduced per channel
            layers = [(layer, block) for block, segment in enumerate(model.net.segments) for layer in segment.layers
                      if isinstance(layer, keras.layers.BatchNormalization)]
            inputs = keras.Model(model.net.model.input, [layer.input for layer, _ in layers]) if layers else None

            def sums(x):
                found = []
                for (layer, _), value in zip(layers, inputs(x, training=False), strict=True):
                    value = tf.cast(value, tf.float64)
                    axes = [a for a in range(len(value.shape)) if a != layer.axis % len(value.shape)]
                    found.append((tf.size(value, tf.int64) // tf.shape(value, tf.int64)[layer.axis], tf.reduce_sum(value, axes),
                                  tf.reduce_sum(tf.square(value), axes)))
                return found

            model.phase["batchnorm"] = layers, tf.function(sums, reduce_retracing=True, autograph=False)
        layers, function = model.phase["batchnorm"]
        totals: list[list[Any]] = [[0, 0.0, 0.0] for _ in layers]  # count, then per channel: sum, sum of squares
        for first in range(0, len(images) if layers else 0, EVAL_BATCH):
            batch = model.backbone.preprocess(images[first:first + EVAL_BATCH])
            for total, (count, values, squares) in zip(totals, function(batch), strict=True):
                total[:] = total[0] + int(count), total[1] + values.numpy(), total[2] + squares.numpy()
        stored = keras.ops.convert_to_numpy
        return [BatchNormSums(block, count, total, squares, stored(layer.moving_mean).astype(np.float64),
                              stored(layer.moving_variance).astype(np.float64), float(layer.epsilon))
                for (layer, block), (count, total, squares) in zip(layers, totals, strict=True)]

    # ------------------------------------------------------------ training

    def _freeze(self, model: KerasCell, blocks: frozenset[int]) -> None:
        """Only the layers of ``blocks`` train (a frozen BatchNorm runs in inference mode)."""
        for i, segment in enumerate(model.net.segments):
            for layer in segment.layers:
                layer.trainable = i in blocks

    def start_phase(self, model: KerasCell, trainable: Trainable, settings: TrainSettings) -> None:
        self._freeze(model, trainable.blocks)
        train_body = bool(trainable.blocks) and model.suffix is not None
        head_opt = self._optimizer(model, settings, model.head.trainable_variables)
        body_opt = self._optimizer(model, settings, model.suffix.trainable_variables) if train_body else None
        step = self._train_step(model, settings, train_body, head_opt, body_opt)
        step.get_concrete_function()  # trace now, outside the timed passes
        model.phase.update(step=step, head_opt=head_opt, body_opt=body_opt,
                           lrs=(settings.lr, settings.lr * trainable.backbone_lr_mult))

    def _optimizer(self, model: KerasCell, settings: TrainSettings, variables: list):
        """Adam or SGD (momentum), built for ``variables``; loss-scaled under fp16."""
        if settings.optimizer == "sgd":
            opt = keras.optimizers.SGD(learning_rate=settings.lr, momentum=settings.momentum)
        else:
            opt = keras.optimizers.Adam(learning_rate=settings.lr)
        opt = keras.optimizers.LossScaleOptimizer(opt) if model.precision == "fp16" else opt
        opt.build(variables)
        return opt

    def _train_step(self, model: KerasCell, settings: TrainSettings, train_body: bool, head_opt, body_opt):
        """A compiled step updating the head, and the trainable blocks when ``train_body``.

        Weight decay is an L2 term on the loss (as torch's Adam/SGD ``weight_decay``)."""
        head_vars = model.head.trainable_variables
        body_vars = model.suffix.trainable_variables if train_body else []
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=settings.label_smoothing)
        decay, scaled = settings.weight_decay, model.precision == "fp16"
        shape = model.net.prefix_output_shape(model.prefix_blocks) if model.precomputed else \
            (model.backbone.image_size, model.backbone.image_size, 3)

        @tf.function(input_signature=model.signature(shape, with_labels=True), autograph=False)
        def step(x, y):
            with tf.GradientTape() as tape:
                probs = model.forward(x, True, train_body)
                loss = loss_fn(y, probs)
                objective = loss
                if decay:
                    squares = [tf.reduce_sum(tf.square(v)) for v in head_vars + body_vars]
                    objective += 0.5 * decay * tf.add_n(squares)
                if scaled:
                    objective = head_opt.scale_loss(objective)
            grads = tape.gradient(objective, head_vars + body_vars)
            head_opt.apply_gradients(zip(grads[: len(head_vars)], head_vars, strict=True))
            if body_vars:
                ratio = body_opt.dynamic_scale / head_opt.dynamic_scale if scaled else 1.0
                body_opt.apply_gradients(zip([g * ratio for g in grads[len(head_vars):]], body_vars, strict=True))
            return loss, probs

        return step

    def train_epoch(self, model: KerasCell, inputs: np.ndarray, labels: np.ndarray, *, lr_factor: float,
                    settings: TrainSettings, min_batch: int) -> EpochResult:
        phase = model.phase
        head_lr, body_lr = phase["lrs"]
        phase["head_opt"].learning_rate = head_lr * lr_factor
        if phase["body_opt"] is not None:
            phase["body_opt"].learning_rate = body_lr * lr_factor
        rng = model.rng if settings.augment and not model.precomputed else None
        targets = np.eye(model.head.output.shape[-1], dtype=np.float32)[labels]
        assert model.rng is not None  # open seeded it
        order = model.rng.permutation(len(labels))

        def step(index: np.ndarray) -> tuple[float, int]:
            loss, probs = phase["step"](model.batch(inputs, index, rng), targets[index])
            return float(loss), int((np.argmax(probs, axis=1) == labels[index]).sum())  # float() waits for the device

        return train_batches(order, settings.batch_size, min_batch, step)

    def predict(self, model: KerasCell, inputs: np.ndarray) -> np.ndarray:
        if "predict" not in model.phase:
            shape = inputs.shape[1:] if model.precomputed else (model.backbone.image_size,) * 2 + (3,)
            model.phase["predict"] = tf.function(lambda x: model.forward(x, False, False), autograph=False,
                                                 input_signature=model.signature(tuple(shape), with_labels=False))
        index = np.arange(len(inputs))
        return in_batches(model.phase["predict"], index, EVAL_BATCH, lambda batch: model.batch(inputs, batch))

    def snapshot(self, model: KerasCell, blocks: frozenset[int]) -> list[np.ndarray]:
        return [v.numpy() for v in self._restorable(model)]

    def restore(self, model: KerasCell, state: list[np.ndarray]) -> None:
        for variable, value in zip(self._restorable(model), state, strict=True):
            variable.assign(value)

    def _restorable(self, model: KerasCell) -> list:
        return model.head.weights + (model.suffix.weights if model.suffix is not None else [])

    def parameter_counts(self, model: KerasCell, blocks: frozenset[int]) -> tuple[int, int]:
        if model.classifier is not None:
            return 0, variable_size(model.classifier.trainable_variables)
        self._freeze(model, blocks)
        return model.net.counts(extra_trainable=model.head.trainable_variables)

    # ------------------------------------------------------------ the ImageNet head

    def open_classifier(self, backbone: KerasBackbone, device: str) -> KerasCell:
        return KerasCell(backbone, None, 0, "fp32", backbone.weights.label(top=True), classifier=backbone.imagenet_model)

    def imagenet_probabilities(self, model: KerasCell, images: np.ndarray) -> np.ndarray:
        x = images_at(images, model.backbone.spec.default_size, model.backbone.interpolation)
        classifier = model.classifier
        return in_batches(lambda batch: classifier(batch, training=False), x, EVAL_BATCH, model.backbone.preprocess)

    def classifier_image_size(self, backbone: KerasBackbone) -> int:
        return backbone.spec.default_size

    # ------------------------------------------------------------ saved models

    def save(self, model: KerasCell, folder: str) -> None:
        full = model.classifier
        if full is None:
            full = keras.Model(model.net.model.input, model.head(model.net.model.output))
        atomic_save(Path(folder) / MODEL_FILE, full.save)

    def load_saved(self, backbone: KerasBackbone, folder: str, info: Mapping[str, Any]):
        saved = keras.saving.load_model(Path(folder) / MODEL_FILE, compile=False)
        size = info["image_size"]
        return lambda images: in_batches(lambda batch: saved(batch, training=False),
                                         images_at(images, size, info["interpolation"]), EVAL_BATCH,
                                         backbone.preprocess)
