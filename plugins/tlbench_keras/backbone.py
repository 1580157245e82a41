"""KerasBackbone: what the runner gets from ``BackboneSpec.build`` for a ``keras/<Name>``."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tlbench.types import Block, ImageDataset

from ._keras import keras
from .catalog import KerasModel
from .network import Network, build_application, in_batches, preprocess, structure
from tlbench.protocol import images_at
from .weights import WeightsSource, resolve_weights


class KerasBackbone:
    """A keras.applications model as a tlbench backbone (blocks, preprocessing, run_cell)."""

    interpolation = "bilinear"

    def __init__(self, spec: KerasModel, weights: WeightsSource):
        self.spec = spec
        self.name = f"keras/{spec.name}"
        self.image_size = weights.image_size
        self.weights = weights
        self.blocks: list[Block] = list(structure(spec.name))

    def __repr__(self) -> str:
        return f"KerasBackbone({self.name}, weights={self.weights.kind}, image_size={self.image_size})"

    def build_network(self, pretrained: bool = True) -> Network:
        """A fresh backbone (no ImageNet head) at ``image_size``; random init unless ``pretrained``."""
        source = self.weights if pretrained else resolve_weights(self.spec, "none", self.image_size)
        return Network(self.spec, build_application(self.spec, self.image_size, False, source))

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> the model's own ``preprocess_input`` applied to float32."""
        return preprocess(self.spec, images)

    def run_cell(self, plan, data: ImageDataset, settings, ctx) -> dict[str, Any]:
        from .engine import run_cell

        return run_cell(self, plan, data, settings, ctx)

    # ------------------------------------------------------------ the ImageNet head

    @functools.cached_property
    def imagenet_model(self):
        """The full model with its ImageNet head, at the model's default input size (built once)."""
        return build_application(self.spec, self.spec.default_size, True, self.weights)

    def imagenet_probabilities(self, images: np.ndarray) -> np.ndarray:
        """(N, 1000) ImageNet probabilities; images (uint8 NHWC) are resized to the default
        input size when they differ from it."""
        x = images_at(images, self.spec.default_size, self.interpolation)
        model = self.imagenet_model
        return in_batches(lambda batch: model(batch, training=False), x, 32, self.preprocess)

    def saved_info(self, data: ImageDataset, image_size: int, imagenet_groups) -> dict[str, Any]:
        """What ``predict_saved`` needs besides the model file."""
        return {
            "framework": "keras", "backbone": self.name, "class_names": list(data.class_names),
            "image_size": image_size, "interpolation": self.interpolation,
            "preprocessing": self.spec.preprocessing, "imagenet_groups": imagenet_groups,
            "keras": keras.__version__,
        }
