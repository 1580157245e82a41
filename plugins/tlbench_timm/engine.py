"""The PyTorch engine: one training protocol for every torch backbone.

The network is split into a frozen prefix (run once and cached where possible), the
trainable blocks and a new head. Frozen BatchNorm layers stay in inference mode.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlbench.cache import ArrayCache
from tlbench.metrics import classification_metrics, group_probabilities
from tlbench.protocol import effective_precision, lr_factor
from tlbench.types import CellContext, ImageDataset, TrainPlan, TrainSettings

EVAL_BATCH = 128


def build_head(kind: str, feature_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """linear: pooled features -> Linear; flatten-linear and book: the flattened feature map."""
    width = int(np.prod(feature_shape))
    if kind in ("linear", "flatten-linear"):
        return nn.Sequential(nn.Flatten(), nn.Linear(width, n_classes))
    if kind == "book":
        return nn.Sequential(nn.Flatten(), nn.Linear(width, 64), nn.ReLU(), nn.BatchNorm1d(64),
                             nn.Dropout(0.5), nn.Linear(64, n_classes))
    raise ValueError(f"unknown head {kind!r}; use linear, flatten-linear or book")


class Network(nn.Module):
    """prefix (the first ``prefix_blocks`` blocks, frozen, cacheable) -> suffix -> head."""

    def __init__(self, model: nn.Module, stages: list[nn.Module] | None, prefix_blocks: int,
                 n_blocks: int, head_kind: str):
        super().__init__()
        self.model = model
        self.stages = stages
        self.prefix_blocks = prefix_blocks
        self.n_blocks = n_blocks
        self.head_kind = head_kind
        self.pooled = head_kind == "linear"
        self.head: nn.Module = nn.Identity()
        self.frozen: list[nn.Module] = []

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: pooled features (linear head) or the feature map."""
        return self._finish(self.model.forward_features(x))

    def _finish(self, maps: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(maps, pre_logits=True) if self.pooled else maps

    def prefix(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The frozen part, from the images (``start`` 0) or from block ``start``'s input."""
        if self.prefix_blocks == 0:
            return x
        if start == 0 and self.prefix_blocks == self.n_blocks:
            return self.features(x)
        for stage in self.stages[start: self.prefix_blocks]:
            x = stage(x)
        return self._finish(x) if self.prefix_blocks == self.n_blocks else x

    def suffix(self, x: torch.Tensor) -> torch.Tensor:
        if self.prefix_blocks == 0:
            x = self.features(x)
        elif self.prefix_blocks < self.n_blocks:
            for stage in self.stages[self.prefix_blocks:]:
                x = stage(x)
            x = self._finish(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))

    def train(self, mode: bool = True) -> "Network":
        super().train(mode)
        for module in self.frozen:  # frozen BatchNorm keeps its statistics
            module.eval()
        return self


def run(backbone, model: nn.Module, source: str, plan: TrainPlan, data: ImageDataset,
        settings: TrainSettings, ctx: CellContext) -> dict[str, Any]:
    """Train and evaluate one cell; return its metrics (see results/README.md)."""
    device = torch.device(ctx.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    names = ("train", "valid", "test")
    images = {n: data.splits[n].images(backbone.image_size, backbone.interpolation) for n in names}
    labels = {n: torch.as_tensor(data.splits[n].labels) for n in names}
    common = {
        "train_images": len(labels["train"]), "valid_images": len(labels["valid"]),
        "test_images": len(labels["test"]), "image_size": backbone.image_size, "weights": source,
        "device": ctx.device, "precision": effective_precision(settings.precision, device.type),
        "blocks": len(backbone.blocks),
    }
    if plan.head is None:
        return {**common, **_classifier(backbone, model, data, images["test"], labels["test"], device)}

    n_blocks = len(backbone.blocks)
    trainable = n_blocks if plan.trainable_blocks is None else min(plan.trainable_blocks, n_blocks)
    frozen_blocks = n_blocks - trainable
    model.reset_classifier(0)
    stages = backbone.stages(model)
    can_cut = frozen_blocks == n_blocks or (stages is not None and len(stages) == n_blocks)
    prefix_blocks = frozen_blocks if can_cut and not settings.augment else 0
    net = Network(model, stages, prefix_blocks, n_blocks, plan.head)
    net.frozen = freeze_leading_blocks(model, backbone.block_params(model), frozen_blocks)
    net.to(device).eval()

    cache_kind = "features" if frozen_blocks == n_blocks else "activations"
    inputs, cache_status = _prefix_inputs(net, backbone, images, data, ctx, device, source)
    if frozen_blocks == 0:
        cache_status = "off"
    elif settings.augment:
        cache_status = "bypassed"
    elif prefix_blocks == 0:
        cache_status = "unsupported"
    with torch.no_grad():  # the head is still Identity: this is the head's input shape
        shape = net.suffix(prepare(net, backbone, inputs["train"][:2], device)).shape[1:]
    torch.manual_seed(ctx.seed)
    net.head = build_head(plan.head, tuple(shape), data.num_classes).to(device)

    trainer = Trainer(net, backbone, plan, settings, ctx, device)
    history, best_epoch = trainer.fit(inputs, labels)
    probs = trainer.probabilities(inputs["test"])
    if ctx.save_dir:
        save_model(net, backbone, data, ctx.save_dir)
    seconds = [h["seconds"] for h in history]
    epoch_seconds = float(np.mean(seconds)) if seconds else None
    return {
        **common,
        **classification_metrics(probs, labels["test"].numpy()),
        **parameter_counts(net),
        "epochs": len(history), "history": history, "best_epoch": best_epoch,
        "epoch_seconds": epoch_seconds,
        "images_per_second": common["train_images"] / epoch_seconds if epoch_seconds else None,
        "peak_memory_mb": peak_memory_mb(device),
        "cache": {cache_kind: cache_status},
        "trainable_blocks": trainable,
    }


def prepare(net: Network, backbone, batch: torch.Tensor, device: torch.device,
            augment: bool = False) -> torch.Tensor:
    """A batch of raw uint8 images (normalised, maybe augmented) or of cached prefix outputs."""
    batch = batch.to(device, non_blocking=True)
    if net.prefix_blocks:
        return batch.float()
    x = backbone.normalize(batch)
    return random_flip_crop(x) if augment else x


def random_flip_crop(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and a random crop from a reflect-padded image (pad = size // 8)."""
    size = x.shape[-1]
    pad = max(1, size // 8)
    flip = torch.rand(len(x), device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2))
    return torch.stack([p[:, i:i + size, j:j + size] for p, (i, j) in zip(padded, offsets.tolist())])


def freeze_leading_blocks(model: nn.Module, block_params: list[list[str]], count: int) -> list[nn.Module]:
    """Freeze the parameters of the first ``count`` blocks; return modules that must stay in eval."""
    frozen_names = {name for names in block_params[:count] for name in names}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen_names)
    return [m for m in model.modules()
            if any(True for _ in m.parameters(recurse=False))
            and not any(p.requires_grad for p in m.parameters(recurse=False))]


def _prefix_inputs(net: Network, backbone, images: dict[str, np.ndarray], data: ImageDataset,
                   ctx: CellContext, device: torch.device, source: str) -> tuple[dict, str]:
    """Per split: raw images, or the frozen prefix's outputs (computed once, cached on disk).

    Cache status: ``hit``; ``extended`` (continued from a shorter cached prefix, e.g. depth 1
    after depth 2); ``miss``; ``off`` (no cache dir).
    """
    if net.prefix_blocks == 0:
        return {n: torch.from_numpy(a) for n, a in images.items()}, "off"
    cache = ArrayCache(ctx.cache_dir) if ctx.cache_dir else None
    outputs, statuses = {}, set()
    for name, array in images.items():
        description = {
            "kind": "torch-prefix", "backbone": backbone.name, "weights": source,
            "image_size": backbone.image_size, "interpolation": backbone.interpolation,
            "mean": backbone.mean, "std": backbone.std, "split": data.splits[name].fingerprint,
            "torch": torch.__version__, "prefix_blocks": net.prefix_blocks,
            "pooled": net.pooled if net.prefix_blocks == net.n_blocks else None,
        }
        if cache is None:
            outputs[name], status = _run_prefix(net, backbone, array, device), "off"
        elif (cached := cache.lookup(description)) is not None:
            outputs[name], status = cached, "hit"
        else:
            start = _shorter_cached_prefix(cache, description, net)
            if start is None:
                outputs[name], status = _run_prefix(net, backbone, array, device), "miss"
            else:
                outputs[name], status = _continue_prefix(net, *start, device), "extended"
            cache.store(description, outputs[name])
        statuses.add(status)
    status = next(s for s in ("off", "miss", "extended", "hit") if s in statuses)
    return {n: torch.from_numpy(a) for n, a in outputs.items()}, status


def _shorter_cached_prefix(cache: ArrayCache, description: dict, net: Network) -> tuple[np.ndarray, int] | None:
    """The longest cached activations of fewer frozen blocks, when the blocks are known stages."""
    if net.stages is None or len(net.stages) != net.n_blocks:
        return None
    for blocks in range(net.prefix_blocks - 1, 0, -1):
        found = cache.lookup({**description, "prefix_blocks": blocks, "pooled": None})
        if found is not None:
            return found, blocks
    return None


def _continue_prefix(net: Network, start: np.ndarray, start_blocks: int, device: torch.device) -> np.ndarray:
    """Run the frozen stages after ``start_blocks`` on cached activations."""
    net.eval()
    return _in_batches(lambda batch: net.prefix(batch, start_blocks), start, device)


def _run_prefix(net: Network, backbone, images: np.ndarray, device: torch.device) -> np.ndarray:
    net.eval()
    return _in_batches(lambda batch: net.prefix(backbone.normalize(batch)), images, device)


def predict_probabilities(model: nn.Module, normalize, images: np.ndarray, device: str | torch.device) -> np.ndarray:
    """Softmax outputs of ``model`` on uint8 NHWC images, in batches."""
    model.eval()
    return _in_batches(lambda batch: torch.softmax(model(normalize(batch)).float(), 1), images, device)


@torch.no_grad()
def _in_batches(function, array: np.ndarray, device: str | torch.device) -> np.ndarray:
    """``function`` over ``array`` in batches of EVAL_BATCH; one contiguous result, cached or not."""
    out = [function(torch.from_numpy(array[i:i + EVAL_BATCH]).to(device)).cpu()
           for i in range(0, len(array), EVAL_BATCH)]
    return np.ascontiguousarray(torch.cat(out).numpy())


def _classifier(backbone, model: nn.Module, data: ImageDataset, images: np.ndarray,
                labels: torch.Tensor, device: torch.device) -> dict[str, Any]:
    """The ImageNet head as it is, scored through the dataset's class mapping."""
    model.to(device)
    imagenet = predict_probabilities(model, backbone.normalize, images, device)
    groups = [tuple(data.imagenet_classes[c]) for c in data.class_names]
    probs = group_probabilities(imagenet, groups)
    frozen = sum(p.numel() for p in model.parameters())
    return {**classification_metrics(probs, labels.numpy()), "trainable_params": 0,
            "non_trainable_params": frozen, "epochs": 0, "history": [], "best_epoch": None,
            "epoch_seconds": None, "images_per_second": None,
            "peak_memory_mb": peak_memory_mb(device), "cache": {}, "trainable_blocks": 0}


class Trainer:
    """The shared protocol: optimizer, schedule, label smoothing, early stopping, best restore."""

    def __init__(self, net: Network, backbone, plan: TrainPlan, settings: TrainSettings,
                 ctx: CellContext, device: torch.device):
        self.net, self.backbone, self.plan, self.settings = net, backbone, plan, settings
        self.ctx, self.device = ctx, device
        self.body = [p for p in net.model.parameters() if p.requires_grad]
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(settings.precision)
        if device.type != "cuda":
            self.autocast_dtype = None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        frozen_ids = {id(m) for m in net.frozen}
        self.state_keys = {n for n, p in net.named_parameters() if p.requires_grad} | {
            f"{mn}.{bn}" if mn else bn for mn, m in net.named_modules() if id(m) not in frozen_ids
            for bn, _ in m.named_buffers(recurse=False)}

    def fit(self, inputs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> tuple[list, int | None]:
        s = self.settings
        generator = torch.Generator().manual_seed(self.ctx.seed)
        phases = [("head", self.plan.warmup_head_epochs), ("all", s.epochs)]
        total = sum(n for _, n in phases)
        history, best, best_state, since_best = [], None, None, 0
        for phase, epochs in phases:
            if not epochs or (s.patience and since_best >= s.patience):
                continue
            optimizer, scheduler = self._optimizer(epochs, head_only=phase == "head" or not self.body)
            body_frozen = self._hold_body(phase == "head")
            for _ in range(epochs):
                seconds, train_loss, train_acc = self._epoch(inputs["train"], labels["train"], optimizer, generator)
                scheduler.step()
                logs = {"epoch": len(history) + 1, "phase": phase, "train_loss": train_loss,
                        "train_accuracy": train_acc, "seconds": seconds, **self._validate(inputs, labels)}
                history.append(logs)
                self.ctx.on_epoch(len(history), total, logs)
                # best by validation accuracy, ties by loss; without a validation split, the latest
                score = (logs["val_accuracy"], -logs["val_loss"]) if len(labels["valid"]) else (len(history), 0)
                if best is None or score > best[0]:
                    best, since_best = (score, len(history)), 0
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items() if k in self.state_keys}
                else:
                    since_best += 1
                if s.patience and since_best >= s.patience:
                    break
            self._release_body(body_frozen)
        if s.restore_best and best_state is not None:
            self.net.load_state_dict(best_state, strict=False)
        return history, (best[1] if best else None)

    def _hold_body(self, hold: bool) -> list[nn.Module]:
        """Head-only warm-up: the body's trainable blocks wait frozen, BatchNorm included."""
        if not hold:
            return []
        for p in self.body:
            p.requires_grad_(False)
        extra = [m for m in self.net.model.modules() if m not in self.net.frozen]
        self.net.frozen = self.net.frozen + extra
        return extra

    def _release_body(self, extra: list[nn.Module]) -> None:
        if extra:
            for p in self.body:
                p.requires_grad_(True)
            self.net.frozen = [m for m in self.net.frozen if m not in extra]

    def _optimizer(self, epochs: int, head_only: bool):
        s = self.settings
        groups = [{"params": list(self.net.head.parameters()), "lr": s.lr}]
        if not head_only:
            groups.append({"params": self.body, "lr": s.lr * self.plan.backbone_lr_mult})
        if s.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, lr=s.lr, weight_decay=s.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, s, epochs))

    def _epoch(self, x_all: torch.Tensor, y_all: torch.Tensor, optimizer, generator) -> tuple[float, float, float]:
        net, s = self.net, self.settings
        net.train()
        order = torch.randperm(len(y_all), generator=generator)
        total_loss, correct = 0.0, 0
        self._sync()
        start = time.perf_counter()
        for i in range(0, len(order), s.batch_size):
            idx = order[i:i + s.batch_size]
            if len(idx) < 2 and any(isinstance(m, nn.BatchNorm1d) for m in net.head.modules()):
                continue  # BatchNorm cannot train on one sample
            x = prepare(net, self.backbone, x_all[idx], self.device, augment=s.augment)
            y = y_all[idx].to(self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = net.suffix(x) if net.prefix_blocks else net(x)
                loss = nn.functional.cross_entropy(logits.float(), y, label_smoothing=s.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            if self.scaler:
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
                self.scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total_loss += float(loss.detach()) * len(idx)
            correct += int((logits.argmax(1) == y).sum())
        self._sync()
        n = max(len(y_all), 1)
        return time.perf_counter() - start, total_loss / n, correct / n

    def _validate(self, inputs, labels) -> dict[str, float]:
        if len(labels["valid"]) == 0:
            return {"val_loss": None, "val_accuracy": None}
        metrics = classification_metrics(self.probabilities(inputs["valid"]), labels["valid"].numpy(), prefix="val")
        return {"val_loss": metrics["val_loss"], "val_accuracy": metrics["val_accuracy"]}

    @torch.no_grad()
    def probabilities(self, x_all: torch.Tensor) -> np.ndarray:
        self.net.eval()
        out = []
        for i in range(0, len(x_all), EVAL_BATCH):
            x = prepare(self.net, self.backbone, x_all[i:i + EVAL_BATCH], self.device)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = self.net.suffix(x) if self.net.prefix_blocks else self.net(x)
            out.append(torch.softmax(logits.float(), 1).cpu())
        return torch.cat(out).numpy()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def parameter_counts(net: nn.Module) -> dict[str, int]:
    """Parameters the optimizer updates vs frozen ones (buffers such as BN statistics excluded)."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    return {"trainable_params": trainable, "non_trainable_params": frozen}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


MODEL_FILE = "model.pt"
META_FILE = "model.json"


def save_model(net: Network, backbone, data: ImageDataset, save_dir: str) -> None:
    """Weights (a plain state dict, loadable with weights_only) and what is needed to rebuild."""
    path = Path(save_dir)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, path / MODEL_FILE)
    meta = {"framework": "torch", "predictor": "tlbench_timm.engine:predict_saved", "backbone": backbone.name,
            "interpolation": backbone.interpolation, "model_name": backbone.model_name,
            "head": net.head_kind, "class_names": list(data.class_names), "image_size": backbone.image_size}
    (path / META_FILE).write_text(json.dumps(meta, indent=2))


def load_saved(cell_dir: str):
    """Rebuild a saved cell model; returns (network, backbone, metadata)."""
    from .backbone import TimmBackbone

    meta = json.loads((Path(cell_dir) / META_FILE).read_text())
    backbone = TimmBackbone(meta["model_name"], weights="none", image_size=meta["image_size"])
    model, _ = backbone.load_model(pretrained=False)
    model.reset_classifier(0)
    net = Network(model, None, 0, len(backbone.blocks), meta["head"])
    with torch.no_grad():
        sample = backbone.normalize(torch.zeros(2, backbone.image_size, backbone.image_size, 3, dtype=torch.uint8))
        shape = net.eval().suffix(sample).shape[1:]
    net.head = build_head(meta["head"], tuple(shape), len(meta["class_names"]))
    state = torch.load(Path(cell_dir) / MODEL_FILE, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval(), backbone, meta


def predict_saved(cell_dir: str, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Target-class probabilities of a saved cell model on uint8 NHWC images."""
    net, backbone, meta = load_saved(cell_dir)
    return predict_probabilities(net, backbone.normalize, images, "cpu"), meta["class_names"]
