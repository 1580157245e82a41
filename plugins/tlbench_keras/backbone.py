"""KerasBackbone: what the runner gets from ``BackboneSpec.build`` for a ``keras/<Name>``.

Its blocks come from ``blocks.json``; TensorFlow loads only when a network is built.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from tlbench.plugin.specs import Block

from .blocks import structure
from .catalog import KerasModel
from .weights import WeightsSource, resolve_weights

if TYPE_CHECKING:
    from .network import Network


class KerasBackbone:
    """A keras.applications model as a Keras model source: blocks, preprocessing, fresh networks."""

    framework = "keras"
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
        from .network import Network, build_application

        source = self.weights if pretrained else resolve_weights(self.spec, "none", self.image_size)
        return Network(self.spec, build_application(self.spec, self.image_size, False, source))

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> the model's own ``preprocess_input`` applied to float32."""
        from .network import preprocess

        return preprocess(self.spec, images)

    # ------------------------------------------------------------ the ImageNet head

    @functools.cached_property
    def imagenet_model(self):
        """The full model with its ImageNet head, at the model's default input size (built once)."""
        from .network import build_application

        return build_application(self.spec, self.spec.default_size, True, self.weights)
