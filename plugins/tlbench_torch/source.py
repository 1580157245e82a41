"""Torch model sources: what a torch backbone plugin hands to the torch engine.

A source (a :class:`TorchBackbone`) knows its blocks and preprocessing and makes fresh
networks (:class:`TorchNetwork`); the engine trains any of them. timm and torchvision
models are sources, and so is any plain ``nn.Module`` cut into blocks (:class:`ModuleBackbone`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tlbench.plugin.specs import Block, PluginError

RANDOM_INIT = "none (random init)"  # the weights label of a seeded random initialisation
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TorchNetwork:
    """A fresh backbone network: its module, blocks, forward pieces and weight origin."""

    module: nn.Module  # owns every parameter (and the ImageNet head, if asked for)
    block_params: list[list[str]]  # parameter names of ``module`` per block, stem first
    features: Callable[[torch.Tensor], torch.Tensor]  # normalised images -> last feature map
    pool: Callable[[torch.Tensor], torch.Tensor]  # feature map -> pooled vector
    stages: list[nn.Module] | None = None  # one module per block composing to ``features``
    classify: Callable[[torch.Tensor], torch.Tensor] | None = None  # feature map -> ImageNet logits
    weights: str = RANDOM_INIT


class TorchBackbone:
    """Base of torch model sources: name, blocks, preprocessing; :meth:`create` makes networks."""

    framework = "torch"

    def __init__(self, name: str, blocks: Sequence[Block], image_size: int, *, mean=IMAGENET_MEAN,
                 std=IMAGENET_STD, interpolation: str = "bilinear", crop_pct: float | None = None):
        self.name = name
        self.blocks = list(blocks)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation
        self.crop_pct = crop_pct  # predict: resize the short side to size / crop_pct, crop the centre

    def create(self, pretrained: bool, classifier: bool = False) -> TorchNetwork:
        """A fresh network: pretrained weights or random init (the engine seeds torch first);
        with ``classifier`` the ImageNet head stays (``classify``), else it is left out."""
        raise NotImplementedError

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC -> normalised float NCHW."""
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def global_average_pool(maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C); already flat features pass through."""
    return maps.mean(dim=(2, 3)) if maps.dim() == 4 else maps.flatten(1)


def parameter_names(blocks: Sequence[nn.Module], prefix: str = "") -> list[list[str]]:
    """Parameter names per block module, as they appear in the enclosing module's state."""
    return [[f"{prefix}{i}.{name}" for name, _ in block.named_parameters()] for i, block in enumerate(blocks)]


class ModuleBackbone(TorchBackbone):
    """Any ``nn.Module`` blocks as a backbone: the blocks compose in order to the feature map.

    ``weights``: ``none`` = random init, ``pretrained`` = the modules' weights as given (a
    network you trained or loaded yourself), or a state-dict file of ``nn.Sequential(*blocks)``.
    Random init (``none``, and every scratch cell) re-initialises each layer that has
    ``reset_parameters``, seeded by the cell. ``classifier`` (optional) maps the pooled
    features to ImageNet logits.
    """

    def __init__(self, name: str, blocks: Sequence[nn.Module] | Mapping[str, nn.Module], image_size: int,
                 weights: str = "none", classifier: nn.Module | None = None, **preprocessing):
        named = dict(blocks) if isinstance(blocks, Mapping) else {f"block{i}": b for i, b in enumerate(blocks)}
        if not named:
            raise PluginError(f"backbone {name!r}: give at least one block")
        self._modules = nn.Sequential(*named.values())
        self._classifier = classifier
        self.weights = weights
        if weights not in ("none", "pretrained"):
            from .weights import read_state_dict

            self._modules.load_state_dict(read_state_dict(Path(weights)))
        counts = [sum(p.numel() for p in block.parameters()) for block in self._modules]
        super().__init__(name, [Block(n, c) for n, c in zip(named, counts, strict=True)], image_size, **preprocessing)

    def create(self, pretrained: bool, classifier: bool = False) -> TorchNetwork:
        stages = copy.deepcopy(self._modules)
        random_init = not pretrained or self.weights == "none"
        if random_init:
            for module in stages.modules():
                reset = getattr(module, "reset_parameters", None)  # a method of the layers that have one
                if reset is not None:
                    reset()
        head = copy.deepcopy(self._classifier) if classifier and self._classifier is not None else None
        module = nn.ModuleDict({"blocks": stages, **({"classifier": head} if head is not None else {})})
        label = (RANDOM_INIT if random_init
                 else "as built" if self.weights == "pretrained" else f"file:{self.weights}")
        return TorchNetwork(module, parameter_names(list(stages), "blocks."), stages, global_average_pool,
                            stages=list(stages), weights=label,
                            classify=(lambda maps: head(global_average_pool(maps))) if head is not None else None)
