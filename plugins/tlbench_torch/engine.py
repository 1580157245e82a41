"""The PyTorch engine: the primitives of :class:`tlbench.plugin.engine.Engine` for any torch source.

A cell's network is split into a frozen prefix (its outputs computed once by the core's
protocol and cached), the blocks after it and a new head. Frozen BatchNorm layers stay in
inference mode. The epoch loop, early stopping and metrics are the core's.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.files import atomic_write
from tlbench.plugin.engine import BatchNormSums, Engine, EpochResult, train_batches
from tlbench.plugin.specs import PluginError, Trainable, TrainSettings
from tlbench.train.protocol import HEADS, augment

from .source import TorchBackbone, TorchNetwork

EVAL_BATCH = 128  # images per head evaluation (a linear layer's result depends on its batch)
EVAL_IMAGES_PER_THREAD = 4  # CPU batch of the convolutional body, per intra-op thread


def inference_batch(device: torch.device) -> int:
    """Images per forward pass of the body (the network before the head) without gradients.

    On a CPU small batches stay in cache and are faster (measured:
    ``benchmarks/test_benchmark_levers.py -k inference``, figures in benchmarks/README.md). On two
    or more threads the outputs are bit-identical at any batch of 2 or more (tested). On one
    thread oneDNN picks other kernels below 16 images: the last digits differ from batch 128
    (MobileNetV2: at most 5e-6), as they do between any two machines. A GPU wants large
    batches. Heads always see EVAL_BATCH at a time, so their outputs do not change either."""
    return EVAL_BATCH if device.type == "cuda" else EVAL_IMAGES_PER_THREAD * torch.get_num_threads()
MODEL_FILE = "model.pt"
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # timm's BatchNormAct2d among them
BatchNorm = nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm  # a layer of BATCHNORMS


def build_head(kind: str, feature_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """The core's head ``kind`` (:data:`tlbench.train.protocol.HEADS`) in torch; a pooling head's
    pooling is the :class:`Network`'s (``pooled``), so its features arrive pooled."""
    layers: list[nn.Module] = []
    width = int(np.prod(feature_shape))
    for layer in HEADS[kind].layers:
        if layer.kind in ("pool", "flatten"):
            layers.append(nn.Flatten())
        elif layer.kind == "dense":
            layers += [nn.Linear(width, layer.units), *([nn.ReLU()] if layer.activation == "relu" else [])]
            width = layer.units
        elif layer.kind == "batchnorm":
            layers.append(nn.BatchNorm1d(width))
        else:
            layers.append(nn.Dropout(layer.rate))
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


class Network(nn.Module):
    """prefix (the first ``prefix_blocks`` blocks, frozen) -> the other blocks -> head."""

    def __init__(self, source: TorchNetwork):
        super().__init__()
        self.model = source.module
        self.source = source
        self.n_blocks = len(source.block_params)
        self.prefix_blocks = 0
        self.pooled = True
        self.head: nn.Module = nn.Identity()
        self.frozen: list[nn.Module] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: pooled features (linear head) or the feature map."""
        return self._finish(self.source.features(x))

    def _finish(self, maps: torch.Tensor) -> torch.Tensor:
        return self.source.pool(maps) if self.pooled else maps

    def prefix(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The frozen part, from the images (``start`` 0) or from block ``start``'s input."""
        if self.prefix_blocks == 0:
            return x
        if start == 0 and self.prefix_blocks == self.n_blocks:
            return self.features(x)
        stages = self.source.stages
        assert stages is not None  # without stages, a prefix is all blocks or none (split), cached only whole
        for stage in stages[start: self.prefix_blocks]:
            x = stage(x)
        return self._finish(x) if self.prefix_blocks == self.n_blocks else x

    def head_inputs(self, x: torch.Tensor, from_prefix: bool = True) -> torch.Tensor:
        """What the head sees, from the prefix's outputs (or from images: ``from_prefix`` False)."""
        if not from_prefix:
            x = self.prefix(x)
        if self.prefix_blocks == 0:
            x = self.features(x)
        elif self.prefix_blocks < self.n_blocks:
            stages = self.source.stages
            assert stages is not None  # without stages, a prefix is all blocks or none (split)
            for stage in stages[self.prefix_blocks:]:
                x = stage(x)
            x = self._finish(x)
        return x

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_inputs(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_inputs(x, from_prefix=False))

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for module in self.frozen:  # frozen BatchNorm keeps its statistics
            module.eval()
        return self


@dataclass
class TorchModel:
    """One cell's network and the state the engine keeps for it."""

    backbone: TorchBackbone
    net: Network
    device: torch.device
    seed: int
    autocast: torch.dtype | None = None
    precomputed: bool = False  # inputs are the prefix's outputs, not images
    optimizer: torch.optim.Optimizer | None = None
    base_lrs: list[float] = field(default_factory=list)
    scaler: Any = None
    shuffle: torch.Generator | None = None
    rng: np.random.Generator | None = None

    def logits(self, batch: torch.Tensor, augmented: np.random.Generator | None = None,
               body_batch: int | None = None) -> torch.Tensor:
        """Head outputs for a batch of cached prefix outputs, or of uint8 images (augmented with
        ``augmented``, a random generator), under the cell's mixed precision. With
        ``body_batch``, the network before the head runs on slices of that many (see
        :func:`inference_batch`), the head on the whole batch."""
        if self.precomputed:
            x = batch.to(self.device, non_blocking=True).float()
        else:
            if augmented is not None:
                batch = torch.from_numpy(augment(batch.numpy(), augmented))
            x = self.backbone.normalize(batch.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            body = functools.partial(self.net.head_inputs, from_prefix=self.precomputed)
            return self.net.head(torch.cat([body(part) for part in x.split(body_batch or len(x))]))


class TorchEngine(Engine[TorchModel]):
    framework = "torch"

    def configure(self, threads: int) -> dict[str, Any]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.set_num_threads(threads)
        _deterministic_kernels()
        # ignore: a property of the module's class, which torch swaps at import; mypy sees a plain module
        fill = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
        return {"torch_intra_op_threads": torch.get_num_threads(), "torch_deterministic_algorithms": True,
                "torch_fill_uninitialized_memory": fill}

    @contextlib.contextmanager
    def activate(self, device: str, precision: str):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        yield

    def peak_memory_mb(self, device: str) -> float:
        if device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return super().peak_memory_mb(device)

    # ------------------------------------------------------------ the network

    def open(self, backbone: TorchBackbone, *, pretrained: bool, seed: int, device: str, precision: str) -> TorchModel:
        torch.manual_seed(seed)
        source = backbone.create(pretrained)
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device == "cuda" else None
        net = Network(source).to(torch.device(device)).eval()
        return TorchModel(backbone, net, torch.device(device), seed, autocast=autocast,
                          scaler=torch.amp.GradScaler("cuda") if autocast == torch.float16 else None,
                          shuffle=torch.Generator().manual_seed(seed), rng=np.random.default_rng(seed))

    def weights_label(self, model: TorchModel) -> str:
        return model.net.source.weights

    def split(self, model: TorchModel, prefix_blocks: int, precomputed: bool) -> bool:
        stages = model.net.source.stages
        alone = prefix_blocks in (0, model.net.n_blocks) or (stages is not None and len(stages) == model.net.n_blocks)
        model.net.prefix_blocks = prefix_blocks if alone else 0  # else the whole network runs on every batch
        model.precomputed = precomputed and alone
        return alone

    def frozen_outputs(self, model: TorchModel, inputs: np.ndarray, start_blocks: int = 0) -> np.ndarray:
        net = model.net.eval()
        if start_blocks:
            return _in_batches(lambda batch: net.prefix(batch, start_blocks), inputs, model.device)
        return _in_batches(lambda batch: net.prefix(model.backbone.normalize(batch)), inputs, model.device)

    def prefix_details(self, model: TorchModel, prefix_blocks: int) -> Mapping[str, Any]:
        backbone = model.backbone
        return {"mean": backbone.mean, "std": backbone.std,
                "pooled": model.net.pooled if prefix_blocks == model.net.n_blocks else None}

    def attach_head(self, model: TorchModel, kind: str, num_classes: int, seed: int) -> None:
        net = model.net
        net.pooled = HEADS[kind].pools
        size = model.backbone.image_size
        with torch.no_grad():  # the head is still Identity: this is the head's input shape
            sample = model.backbone.normalize(torch.zeros(2, size, size, 3, dtype=torch.uint8, device=model.device))
            shape = net.eval()(sample).shape[1:]
        torch.manual_seed(seed)
        net.head = build_head(kind, tuple(shape), num_classes).to(model.device)

    @torch.no_grad()
    def set_linear_head(self, model: TorchModel, weight: np.ndarray, bias: np.ndarray) -> None:
        head = model.net.head
        assert isinstance(head, nn.Sequential)  # attach_head's (build_head)
        layer = head[-1]
        assert isinstance(layer, nn.Linear)  # the "linear" head's layer (build_head ends every head with one)
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))

    @torch.no_grad()
    def batchnorm_sums(self, model: TorchModel, images: np.ndarray) -> list[BatchNormSums]:
        net, layers = model.net.eval(), batchnorm_layers(model.net)
        sums: list[list] = [[0, 0.0, 0.0] for _ in layers]

        def collect(index: int):
            def hook(module: nn.Module, args: tuple) -> None:  # the layer's input, channels on axis 1
                x, totals = args[0].double(), sums[index]
                axes = [0, *range(2, x.dim())]
                totals[:] = totals[0] + x.numel() // x.shape[1], totals[1] + x.sum(axes), totals[2] + x.square().sum(axes)
            return hook

        handles = [module.register_forward_pre_hook(collect(i)) for i, (module, _) in enumerate(layers)]
        try:
            step = inference_batch(model.device)
            for first in range(0, len(images), step):
                net.source.features(model.backbone.normalize(torch.from_numpy(images[first:first + step]).to(model.device)))
        finally:
            for handle in handles:
                handle.remove()
        return [BatchNormSums(block, count, total.cpu().numpy(), squares.cpu().numpy(),
                              _statistic(module.running_mean), _statistic(module.running_var), float(module.eps))
                for (module, block), (count, total, squares) in zip(layers, sums, strict=True) if count]  # count 0: never ran

    # ------------------------------------------------------------ training

    def _freeze(self, model: TorchModel, blocks: frozenset[int]) -> None:
        """Only ``blocks`` (and the head) train; the other modules with parameters stay in
        evaluation mode (:meth:`Network.train`)."""
        net = model.net
        trainable = {name for i in blocks for name in net.source.block_params[i]}
        for name, param in net.model.named_parameters():
            param.requires_grad_(name in trainable)
        net.frozen = [m for m in net.model.modules()
                      if any(True for _ in m.parameters(recurse=False))
                      and not any(p.requires_grad for p in m.parameters(recurse=False))]

    def start_phase(self, model: TorchModel, trainable: Trainable, settings: TrainSettings) -> None:
        self._freeze(model, trainable.blocks)
        groups: list[dict[str, Any]] = [{"params": list(model.net.head.parameters()), "lr": settings.lr}]
        body = [p for p in model.net.model.parameters() if p.requires_grad]
        if body:
            groups.append({"params": body, "lr": settings.lr * trainable.backbone_lr_mult})
        if settings.optimizer == "sgd":
            model.optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum,
                                              weight_decay=settings.weight_decay)
        else:
            model.optimizer = torch.optim.Adam(groups, lr=settings.lr, weight_decay=settings.weight_decay)
        model.base_lrs = [group["lr"] for group in groups]

    def train_epoch(self, model: TorchModel, inputs: np.ndarray, labels: np.ndarray, *, lr_factor: float,
                    settings: TrainSettings, min_batch: int) -> EpochResult:
        net, optimizer = model.net, model.optimizer
        assert optimizer is not None  # start_phase made it
        for group, base in zip(optimizer.param_groups, model.base_lrs, strict=True):
            group["lr"] = base * lr_factor
        y_all = torch.as_tensor(labels)
        rng = model.rng if settings.augment and not model.precomputed else None
        net.train()
        order = torch.randperm(len(y_all), generator=model.shuffle)

        def step(idx: torch.Tensor) -> tuple[float, int]:
            y = y_all[idx].to(model.device)
            logits = model.logits(torch.from_numpy(inputs[idx.numpy()]), rng)
            loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=settings.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if model.scaler:
                model.scaler.scale(loss).backward()
                model.scaler.step(optimizer)
                model.scaler.update()
            else:
                loss.backward()
                optimizer.step()
            return float(loss.detach()), int((logits.argmax(1) == y).sum())

        self._sync(model)
        return train_batches(order, settings.batch_size, min_batch, step, finish=lambda: self._sync(model))

    @torch.no_grad()
    def predict(self, model: TorchModel, inputs: np.ndarray) -> np.ndarray:
        model.net.eval()
        out = []
        body_batch = inference_batch(model.device)
        for i in range(0, len(inputs), EVAL_BATCH):
            logits = model.logits(torch.from_numpy(inputs[i:i + EVAL_BATCH]), body_batch=body_batch)
            out.append(torch.softmax(logits.float(), 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    def snapshot(self, model: TorchModel, blocks: frozenset[int]) -> dict[str, torch.Tensor]:
        net = model.net
        names = {f"model.{name}" for i in blocks for name in net.source.block_params[i]}
        owners = {module_name for module_name, module in net.named_modules()
                  if any(f"{module_name}.{p}" in names for p, _ in module.named_parameters(recurse=False))}
        keys = names | {k for k in net.state_dict() if k.startswith("head.") or k.rsplit(".", 1)[0] in owners}
        return {k: v.detach().clone() for k, v in net.state_dict().items() if k in keys}

    def restore(self, model: TorchModel, state: dict[str, torch.Tensor]) -> None:
        model.net.load_state_dict(state, strict=False)

    def parameter_counts(self, model: TorchModel, blocks: frozenset[int]) -> tuple[int, int]:
        self._freeze(model, blocks)
        params = list(model.net.parameters())
        trainable = sum(p.numel() for p in params if p.requires_grad)
        return trainable, sum(p.numel() for p in params) - trainable

    def _sync(self, model: TorchModel) -> None:
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------ the ImageNet head

    def open_classifier(self, backbone: TorchBackbone, device: str) -> TorchModel:
        return self._classifier(backbone, device, pretrained=True)

    def _classifier(self, backbone: TorchBackbone, device: str, pretrained: bool) -> TorchModel:
        source = backbone.create(pretrained=pretrained, classifier=True)
        if source.classify is None:
            raise PluginError(f"{backbone.name} has no ImageNet head")
        net = Network(source).to(torch.device(device)).eval()
        for param in net.parameters():
            param.requires_grad_(False)
        return TorchModel(backbone, net, torch.device(device), seed=0)

    def imagenet_probabilities(self, model: TorchModel, images: np.ndarray) -> np.ndarray:
        source, normalize, body_batch = model.net.source, model.backbone.normalize, inference_batch(model.device)
        classify = source.classify
        assert classify is not None  # _classifier refuses a network without one

        def probabilities(batch: torch.Tensor) -> torch.Tensor:
            features = torch.cat([source.features(normalize(part)) for part in batch.split(body_batch)])
            return torch.softmax(classify(features).float(), 1)

        return _in_batches(probabilities, images, model.device, EVAL_BATCH)

    def classifier_image_size(self, backbone: TorchBackbone) -> int:
        return backbone.image_size

    # ------------------------------------------------------------ saved models

    def save(self, model: TorchModel, folder: str) -> None:
        state = {k: v.cpu() for k, v in model.net.state_dict().items()}
        atomic_write(Path(folder) / MODEL_FILE, lambda f: torch.save(state, f))

    def load_saved(self, backbone: TorchBackbone, folder: str, info: Mapping[str, Any]):
        if info.get("head") is None:
            model = self._classifier(backbone, "cpu", pretrained=False)
        else:
            model = TorchModel(backbone, Network(backbone.create(pretrained=False)), torch.device("cpu"), seed=0)
            self.split(model, 0, precomputed=False)
            self.attach_head(model, info["head"], len(info["class_names"]), seed=0)
        state = torch.load(Path(folder) / MODEL_FILE, map_location="cpu", weights_only=True)
        model.net.load_state_dict(state)
        if info.get("head") is None:
            return lambda images: self.imagenet_probabilities(model, images)
        return lambda images: self.predict(model, images)


def batchnorm_layers(net: Network) -> list[tuple[BatchNorm, int]]:
    """The backbone's BatchNorm layers with running statistics, in module order, each with its
    block: that of the parameter whose module path shares the most leading parts with the
    layer's (its own weight's, or without affine parameters, its neighbours' in its container)."""
    owners = [(name.split(".")[:-1], block) for block, names in enumerate(net.source.block_params) for name in names]

    def shared(path: list[str], parts: list[str]) -> int:
        return next((k for k, (a, b) in enumerate(zip(path, parts, strict=False)) if a != b), min(len(path), len(parts)))

    return [(module, max(owners, key=lambda owner: shared(owner[0], name.split(".")), default=([], 0))[1])
            for name, module in net.model.named_modules() if isinstance(module, BATCHNORMS) and module.running_mean is not None]


def _deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` for eager kernels. The public
    call also imports torch._inductor to set torch.compile's flag, which lengthens every worker's
    start-up; tlbench never compiles, so only the eager switch is set where torch has it.

    Deterministic mode also fills every new tensor with NaN before a kernel writes it, a guard
    against kernels that read memory they never wrote. Without it the quickstart's results and
    a fine-tuning epoch's trained weights are the same bit for bit, and that epoch runs faster on
    CPU (``benchmarks/test_benchmark_levers.py -k nan``, figures in benchmarks/README.md)."""
    if hasattr(torch._C, "_set_deterministic_algorithms"):
        torch._C._set_deterministic_algorithms(True, warn_only=True)
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # ignore: a property of the module's class, which torch swaps at import; mypy sees a plain module
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def _statistic(stored: torch.Tensor | None) -> np.ndarray:
    """A BatchNorm layer's running mean or variance as float64 (batchnorm_layers keeps layers that have them)."""
    assert stored is not None
    return stored.double().cpu().numpy()


@torch.no_grad()
def _in_batches(function, array: np.ndarray, device: torch.device, batch: int | None = None) -> np.ndarray:
    """``function`` over ``array`` in batches (default :func:`inference_batch`); one contiguous
    result, cached or not."""
    batch = batch or inference_batch(device)
    out = [function(torch.from_numpy(array[i:i + batch]).to(device)).cpu() for i in range(0, len(array), batch)]
    return np.ascontiguousarray(torch.cat(out).numpy())
