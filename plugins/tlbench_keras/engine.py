"""One cell on Keras: freeze, run the frozen part once (cached), train the rest, evaluate.

The engine contract (shared with the PyTorch engine) is in the project's common brief and
``tlbench.types.Backbone.run_cell``.
"""

from __future__ import annotations

import contextlib
import resource
import time
from typing import Any

import numpy as np

from tlbench.cache import ArrayCache
from tlbench.metrics import classification_metrics, group_probabilities
from tlbench.types import CellContext, ImageDataset, NotApplicable, PluginError, TrainPlan, TrainSettings

from ._keras import keras, tf
from .heads import build_head
from .network import in_batches, variable_size
from tlbench.protocol import augment, effective_precision, lr_factor
from .saved import save_trained

SPLITS = ("train", "valid", "test")
POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def run_cell(backbone, plan: TrainPlan, data: ImageDataset, settings: TrainSettings,
             ctx: CellContext) -> dict[str, Any]:
    """Train and evaluate one cell as ``plan`` says; the metrics the common contract lists."""
    precision = effective_precision(settings.precision, ctx.device)
    keras.utils.set_random_seed(ctx.seed)  # python, numpy and backend: head init, dropout
    with _device(ctx.device):
        if plan.head is None:
            if plan.train:
                raise PluginError(f"{backbone.name}: a plan without a head cannot train")
            return _classify(backbone, data, ctx, precision)
        with _dtype_policy(POLICIES.get(precision, "float32")):
            return _Trainer(backbone, plan, data, settings, ctx, precision).run()


@contextlib.contextmanager
def _device(device: str):
    if device == "cuda":
        if not tf.config.list_physical_devices("GPU"):
            raise PluginError("device 'cuda' was asked for, but TensorFlow sees no GPU; use --device cpu")
        tf.config.experimental.reset_memory_stats("GPU:0")
    elif device != "cpu":
        raise PluginError(f"unknown device {device!r}: 'cpu' or 'cuda'")
    with tf.device("/GPU:0" if device == "cuda" else "/CPU:0"):
        yield


@contextlib.contextmanager
def _dtype_policy(name: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _classify(backbone, data: ImageDataset, ctx: CellContext, precision: str) -> dict[str, Any]:
    """The pretrained network as it is: ImageNet probabilities summed into the target classes."""
    if not data.imagenet_classes:
        raise NotApplicable(f"dataset {data.name} has no ImageNet class mapping")
    groups = [tuple(data.imagenet_classes[c]) for c in data.class_names]
    test = data.splits["test"]
    size = backbone.spec.default_size
    imagenet_probs = backbone.imagenet_probabilities(test.images(size, backbone.interpolation))
    probs = group_probabilities(imagenet_probs, groups)
    if ctx.save_dir:
        save_trained(ctx.save_dir, backbone.imagenet_model, backbone.saved_info(data, size, groups))
    return {
        **classification_metrics(probs, test.labels),
        "blocks": len(backbone.blocks), "trainable_blocks": 0,
        "epochs": 0, "epoch_seconds": None, "history": [], "best_epoch": None,
        "train_images": len(data.splits["train"].labels), "valid_images": len(data.splits["valid"].labels),
        "test_images": len(test.labels),
        "trainable_params": 0,
        "non_trainable_params": variable_size(backbone.imagenet_model.trainable_variables),
        "images_per_second": None, "peak_memory_mb": _peak_memory_mb(ctx.device), "cache": {},
        "device": ctx.device,
        "precision": "fp32" if precision == "fp32" else f"fp32 (requested {precision}; classifier: fp32)",
        "image_size": size, "weights": backbone.weights.label(top=True),
    }


class _Trainer:
    """Builds the trainable network for one plan and runs the epochs."""

    def __init__(self, backbone, plan, data, settings, ctx, precision):
        self.backbone, self.plan, self.data, self.settings, self.ctx = backbone, plan, data, settings, ctx
        self.precision = precision
        self.network = backbone.build_network(pretrained=plan.pretrained)
        n = len(self.network.segments)
        trainable = n if plan.trainable_blocks is None else plan.trainable_blocks
        if not 0 <= trainable <= n:
            raise PluginError(f"{backbone.name} has {n} blocks; trainable_blocks={trainable} is out of range")
        self.frozen = n - trainable
        self.network.freeze(self.frozen)
        self.prefix, self.suffix = self.network.split(self.frozen)
        self.online = settings.augment or self.prefix is None  # the frozen part runs per batch
        self.head = build_head(plan.head, tuple(self.network.model.output.shape[1:]), data.num_classes)
        self.images = {s: data.splits[s].images(backbone.image_size, backbone.interpolation) for s in SPLITS}
        self.labels = {s: np.asarray(data.splits[s].labels) for s in SPLITS}
        self.inputs, self.cache = self._inputs()

    # ------------------------------------------------------------ inputs and caching

    def _inputs(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """Per split, what the trainable network reads: images, or the frozen part's output."""
        kind = "features" if self.suffix is None else "activations"
        if self.prefix is None:
            return self.images, {kind: "off"}  # nothing frozen, nothing to cache
        if self.online:
            return self.images, {kind: "bypassed"}
        frozen = tf.function(lambda x: self.prefix(x, training=False), reduce_retracing=True,
                             autograph=False)
        compute = {s: (lambda s=s: in_batches(frozen, self.images[s], self.settings.batch_size,
                                               self.backbone.preprocess)) for s in SPLITS}
        if not self.ctx.cache_dir:
            return {s: compute[s]() for s in SPLITS}, {kind: "off"}
        cache, inputs, hits = ArrayCache(self.ctx.cache_dir), {}, []
        for s in SPLITS:
            inputs[s], hit = cache.get_or_compute(self._cache_description(kind, s), compute[s])
            hits.append(hit)
        return inputs, {kind: "hit" if all(hits) else "miss"}

    def _cache_description(self, kind: str, split: str) -> dict[str, Any]:
        weights = self.backbone.weights.identity
        return {
            "kind": f"keras-{kind}", "split": self.data.splits[split].fingerprint,
            "backbone": self.backbone.name,
            "weights": weights if weights != "none" else f"none:seed={self.ctx.seed}",
            "image_size": self.backbone.image_size, "interpolation": self.backbone.interpolation,
            "preprocessing": self.backbone.spec.preprocessing,
            "cut": self.network.segments[self.frozen - 1].name,
            "dtype_policy": keras.config.dtype_policy().name,
            "keras": keras.__version__,
        }

    def _batch(self, split: str, index: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        x = self.inputs[split][index]
        if not self.online:
            return x
        if rng is not None and self.settings.augment:
            x = augment(x, rng)
        return self.backbone.preprocess(x)

    # ------------------------------------------------------------ the network

    def _forward(self, x, train_head: bool, train_body: bool):
        if self.online and self.prefix is not None:
            x = self.prefix(x, training=False)
        if self.suffix is not None:
            x = self.suffix(x, training=train_body)
        return self.head(x, training=train_head)

    def _optimizer(self, lr: float, variables: list):
        """Adam or SGD (momentum), built for ``variables``; loss-scaled under fp16."""
        s = self.settings
        if s.optimizer == "adam":
            opt = keras.optimizers.Adam(learning_rate=lr)
        elif s.optimizer == "sgd":
            opt = keras.optimizers.SGD(learning_rate=lr, momentum=s.momentum)
        else:
            raise PluginError(f"unknown optimizer {s.optimizer!r}: adam or sgd")
        opt = keras.optimizers.LossScaleOptimizer(opt) if self.precision == "fp16" else opt
        opt.build(variables)
        return opt

    def _train_step(self, train_body: bool, head_opt, body_opt):
        """A compiled step updating the head, and the trainable blocks when ``train_body``.

        Weight decay is an L2 term on the loss (as torch's Adam/SGD ``weight_decay``)."""
        head_vars = self.head.trainable_variables
        body_vars = self.suffix.trainable_variables if train_body else []
        loss_fn = keras.losses.CategoricalCrossentropy(label_smoothing=self.settings.label_smoothing)
        decay = self.settings.weight_decay
        scaled = self.precision == "fp16"

        @tf.function(input_signature=self._signature(with_labels=True), autograph=False)
        def step(x, y):
            with tf.GradientTape() as tape:
                probs = self._forward(x, True, train_body)
                loss = loss_fn(y, probs)
                objective = loss
                if decay:
                    squares = [tf.reduce_sum(tf.square(v)) for v in head_vars + body_vars]
                    objective += 0.5 * decay * tf.add_n(squares)
                if scaled:
                    objective = head_opt.scale_loss(objective)
            grads = tape.gradient(objective, head_vars + body_vars)
            head_opt.apply_gradients(zip(grads[: len(head_vars)], head_vars))
            if body_vars:
                ratio = body_opt.dynamic_scale / head_opt.dynamic_scale if scaled else 1.0
                body_opt.apply_gradients(zip([g * ratio for g in grads[len(head_vars):]], body_vars))
            return loss, probs

        return step

    def _signature(self, with_labels: bool) -> list:
        """Batch-size-free input specs: each function is traced once, before any timing."""
        x = tf.TensorSpec((None, *self.inputs["train"].shape[1:]), tf.float32)
        return [x, tf.TensorSpec((None, self.data.num_classes), tf.float32)] if with_labels else [x]

    def _predict(self, split: str) -> np.ndarray:
        index = np.arange(len(self.labels[split]))
        return in_batches(self._predict_fn, index, self.settings.batch_size,
                          lambda batch: self._batch(split, batch))

    # ------------------------------------------------------------ the epochs

    def run(self) -> dict[str, Any]:
        """Head-only warm-up epochs (``plan.warmup_head_epochs``), then ``settings.epochs``
        epochs of head and trainable blocks; each phase has fresh optimizers and its own lr
        schedule. Early stopping watches (val accuracy, -val loss) across both phases."""
        s, plan = self.settings, self.plan
        self._predict_fn = tf.function(lambda x: self._forward(x, False, False),
                                       input_signature=self._signature(with_labels=False), autograph=False)
        restorable = self.head.weights + (self.suffix.weights if self.suffix is not None else [])
        phases = [("head", plan.warmup_head_epochs), ("all", s.epochs)] if plan.train else []
        total = sum(epochs for _, epochs in phases)
        rng = np.random.default_rng(self.ctx.seed)
        history, best, best_epoch, best_values, since_best = [], None, None, None, 0
        for phase, epochs in phases:
            if not epochs or (s.patience and since_best >= s.patience):
                continue
            train_body = phase == "all" and self.suffix is not None
            head_opt = self._optimizer(s.lr, self.head.trainable_variables)
            body_opt = None
            if train_body:
                body_opt = self._optimizer(s.lr * plan.backbone_lr_mult, self.suffix.trainable_variables)
            step = self._train_step(train_body, head_opt, body_opt)
            step.get_concrete_function()  # trace now, outside the timed passes
            for epoch in range(epochs):
                factor = lr_factor(epoch, s, epochs)
                head_opt.learning_rate = s.lr * factor
                if body_opt is not None:
                    body_opt.learning_rate = s.lr * plan.backbone_lr_mult * factor
                logs = {"phase": phase, **self._train_pass(step, rng), **self._validation_logs()}
                history.append({"epoch": len(history) + 1, **logs})
                self.ctx.on_epoch(len(history), total, logs)
                if logs["val_accuracy"] is None:  # no validation images: the last epoch counts
                    best_epoch = len(history)
                    continue
                score = (logs["val_accuracy"], -logs["val_loss"])
                if best is None or score > best:
                    best, best_epoch, since_best = score, len(history), 0
                    if s.restore_best:
                        best_values = [v.numpy() for v in restorable]
                else:
                    since_best += 1
                if s.patience and since_best >= s.patience:
                    break
        if best_values is not None:
            for variable, value in zip(restorable, best_values):
                variable.assign(value)
        return self._metrics(history, best_epoch)

    def _train_pass(self, step, rng: np.random.Generator) -> dict[str, float]:
        """One shuffled pass over the training set; its loss, accuracy and wall seconds.
        A last batch of one image is skipped when the head has BatchNorm (as in the torch engine)."""
        labels = self.labels["train"]
        targets = np.eye(self.data.num_classes, dtype=np.float32)[labels]
        order = rng.permutation(len(labels))
        loss_sum, correct, started = 0.0, 0, time.perf_counter()
        for i in range(0, len(labels), self.settings.batch_size):
            index = order[i : i + self.settings.batch_size]
            if len(index) < 2 and self.plan.head == "book":
                continue
            loss, probs = step(self._batch("train", index, rng), targets[index])
            loss_sum += float(loss) * len(index)  # float() waits for the device
            correct += int((np.argmax(probs, axis=1) == labels[index]).sum())
        seconds = time.perf_counter() - started
        n = max(len(labels), 1)
        return {"train_loss": loss_sum / n, "train_accuracy": correct / n, "seconds": seconds}

    def _validation_logs(self) -> dict[str, float | None]:
        labels = self.labels["valid"]
        if len(labels) == 0:
            return {"val_loss": None, "val_accuracy": None}
        m = classification_metrics(self._predict("valid"), labels, prefix="val")
        return {"val_loss": m["val_loss"], "val_accuracy": m["val_accuracy"]}

    def _metrics(self, history: list, best_epoch: int | None) -> dict[str, Any]:
        test_probs = self._predict("test")
        trainable, frozen = self.network.counts(extra_trainable=self.head.trainable_variables)
        epoch_seconds = float(np.mean([h["seconds"] for h in history])) if history else None
        n_train = len(self.labels["train"])
        if self.ctx.save_dir:
            full = keras.Model(self.network.model.input, self.head(self.network.model.output))
            save_trained(self.ctx.save_dir, full,
                         self.backbone.saved_info(self.data, self.backbone.image_size, None))
        return {
            **classification_metrics(test_probs, self.labels["test"]),
            "blocks": len(self.network.segments),
            "trainable_blocks": len(self.network.segments) - self.frozen,
            "epochs": len(history), "epoch_seconds": epoch_seconds, "history": history,
            "best_epoch": best_epoch, "train_images": n_train,
            "valid_images": len(self.labels["valid"]), "test_images": len(self.labels["test"]),
            "trainable_params": trainable, "non_trainable_params": frozen,
            "images_per_second": n_train / epoch_seconds if epoch_seconds else None,
            "peak_memory_mb": _peak_memory_mb(self.ctx.device), "cache": self.cache,
            "device": self.ctx.device, "precision": self.precision,
            "image_size": self.backbone.image_size,
            "weights": (self.backbone.weights.label(top=False) if self.plan.pretrained
                        else "none (random init: scratch)"),
        }
