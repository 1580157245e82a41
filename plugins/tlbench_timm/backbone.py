"""timm models as torch model sources: blocks from ``group_matcher``, weights resolved offline first."""

from __future__ import annotations

from typing import Any

import timm
from timm.models import group_parameters
from torch import nn

from tlbench.plugin.specs import Block, PluginError
from tlbench_torch.source import RANDOM_INIT, TorchBackbone, TorchNetwork

from .weights import load_pretrained_weights, preprocessing_of


class TimmBackbone(TorchBackbone):
    """A timm architecture; weights are loaded per cell, only when the cell asks for them."""

    def __init__(self, model_name: str, weights: str = "pretrained", image_size: int | None = None):
        if model_name not in timm.list_models():
            raise PluginError(f"timm has no model {model_name!r} (timm {timm.__version__})")
        self.model_name = model_name
        self.weights = weights
        model = timm.create_model(model_name, pretrained=False)
        pre = preprocessing_of(model)
        super().__init__(f"timm/{model_name}", [Block(name, params) for name, params, _ in block_groups(model)],
                         int(image_size or pre["image_size"]), mean=pre["mean"], std=pre["std"],
                         interpolation=pre["interpolation"], crop_pct=pre.get("crop_pct", 1.0))

    def create(self, pretrained: bool, classifier: bool = False) -> TorchNetwork:
        # Any: timm types create_model as a plain nn.Module; its models share the methods used here by convention
        model: Any = timm.create_model(self.model_name, pretrained=False)
        source = RANDOM_INIT
        if pretrained and self.weights != "none":
            source = load_pretrained_weights(model, self.model_name, self.weights)
        if not classifier:
            model.reset_classifier(0)
        return TorchNetwork(
            module=model, block_params=[names for _, _, names in block_groups(model)],
            features=model.forward_features, pool=lambda maps: model.forward_head(maps, pre_logits=True),
            stages=sequential_stages(model), classify=model.forward_head if classifier else None, weights=source)


def block_groups(model: Any) -> list[tuple[str, int, list[str]]]:
    """(name, parameter count, parameter names) per coarse group, stem first, head excluded, of a
    timm model (an ``nn.Module`` with timm's ``get_classifier`` and ``group_matcher``)."""
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
    kind, part = type(model).__name__, model.get_submodule
    if kind == "EfficientNet":  # MobileNetV2, EfficientNet(-Lite), MNASNet, ...
        blocks = part("blocks")
        assert isinstance(blocks, nn.Sequential)  # timm's EfficientNet: its blocks in one nn.Sequential
        *middle, last = list(blocks)
        return [nn.Sequential(part("conv_stem"), part("bn1")), *middle,
                nn.Sequential(last, part("conv_head"), part("bn2"))]
    if kind == "ResNet":
        return [nn.Sequential(part("conv1"), part("bn1"), part("act1"), part("maxpool")),
                part("layer1"), part("layer2"), part("layer3"), part("layer4")]
    return None
