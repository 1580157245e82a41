"""timm models as tlbench backbones: blocks from ``group_matcher``, weights resolved offline first."""

from __future__ import annotations

from typing import Any

import numpy as np
import timm
import torch
from timm.models import group_parameters
from torch import nn

from tlbench.types import Block, CellContext, ImageDataset, PluginError, TrainPlan, TrainSettings

from . import engine
from .weights import load_pretrained_weights, preprocessing_of


class TimmBackbone:
    """A timm architecture; weights are loaded per cell, only when the plan asks for them."""

    framework = "torch"

    def __init__(self, model_name: str, weights: str = "pretrained", image_size: int | None = None):
        if model_name not in timm.list_models():
            raise PluginError(f"timm has no model {model_name!r} (timm {timm.__version__})")
        self.model_name = model_name
        self.name = f"timm/{model_name}"
        self.weights = weights
        model, _ = self.load_model(pretrained=False)
        pre = preprocessing_of(model)
        self.image_size = int(image_size or pre["image_size"])
        self.mean = tuple(pre["mean"])
        self.std = tuple(pre["std"])
        self.interpolation = pre["interpolation"]
        self.crop_pct = pre.get("crop_pct", 1.0)
        self.blocks = [Block(name, params) for name, params, _ in block_groups(model)]

    def load_model(self, pretrained: bool) -> tuple[nn.Module, str]:
        """A fresh model with its ImageNet head, and where its weights came from."""
        model = timm.create_model(self.model_name, pretrained=False)
        if pretrained and self.weights != "none":
            return model, load_pretrained_weights(model, self.model_name, self.weights)
        return model, "none (random init)"

    def imagenet_probabilities(self, images: np.ndarray, device: str = "cpu") -> np.ndarray:
        model, _ = self.load_model(pretrained=True)
        return engine.predict_probabilities(model.to(device).eval(), self.normalize, images, device)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW."""
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def run_cell(
        self, plan: TrainPlan, data: ImageDataset, settings: TrainSettings, ctx: CellContext
    ) -> dict[str, Any]:
        torch.manual_seed(ctx.seed)
        model, source = self.load_model(plan.pretrained)
        return engine.run(self, model, source, plan, data, settings, ctx)

    def block_params(self, model: nn.Module) -> list[list[str]]:
        """Parameter names of each block, in block order."""
        return [names for _, _, names in block_groups(model)]

    def stages(self, model: nn.Module) -> list[nn.Module] | None:
        """The blocks as modules that compose to ``forward_features``, where known."""
        return sequential_stages(model)


def block_groups(model: nn.Module) -> list[tuple[str, int, list[str]]]:
    """(name, parameter count, parameter names) per coarse group, stem first, head excluded."""
    classifier = {id(p) for p in model.get_classifier().parameters()}
    named = dict(model.named_parameters())
    groups = group_parameters(model, model.group_matcher(coarse=True))
    blocks = []
    for names in groups.values():
        names = [n for n in names if id(named[n]) not in classifier]
        if names:
            blocks.append((_group_name(names), sum(named[n].numel() for n in names), names))
    return blocks


def _group_name(names: list[str]) -> str:
    first = names[0].split(".")
    return ".".join(first[:2]) if first[0] in ("blocks", "stages", "layers") else first[0]


def sequential_stages(model: nn.Module) -> list[nn.Module] | None:
    """Modules, one per block, whose composition equals ``forward_features`` (known families)."""
    kind = type(model).__name__
    if kind == "EfficientNet":  # MobileNetV2, EfficientNet(-Lite), MNASNet, ...
        *middle, last = list(model.blocks)
        return [nn.Sequential(model.conv_stem, model.bn1), *middle,
                nn.Sequential(last, model.conv_head, model.bn2)]
    if kind == "ResNet":
        return [nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool),
                model.layer1, model.layer2, model.layer3, model.layer4]
    return None


def block_count(model_name: str, **options: Any) -> int:
    """Number of blocks, from the architecture alone (no weights)."""
    model = timm.create_model(model_name, pretrained=False)
    return len(block_groups(model))
