"""A keras.applications backbone as an ordered list of blocks that can be frozen and split.

Blocks end at *boundaries*: layers whose output is the only tensor that the rest of the
graph reads from everything computed so far. Cutting there gives a prefix model and a
suffix model whose composition is the backbone, which is what lets the frozen part run
once and be cached.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tlbench.plugin.specs import Block, PluginError

from ._keras import keras
from .catalog import MODELS, KerasModel
from .weights import WeightsSource


@dataclass(frozen=True)
class Segment:
    """The layers of one block, in graph order; ``layers[-1]`` is its boundary."""

    name: str
    layers: tuple


def boundaries(layers: Sequence) -> list[int]:
    """Indices of the layers after which one tensor (that layer's output) carries everything."""
    last_read: dict[int, int] = {}
    for i, layer in enumerate(layers):
        for tensor in keras.tree.flatten(layer.input):
            last_read[id(tensor)] = i
    live: set[int] = set()
    found = []
    for i, layer in enumerate(layers):
        live -= {t for t in live if last_read[t] <= i}
        outputs = {id(t) for t in keras.tree.flatten(layer.output)}
        live |= {t for t in outputs if last_read.get(t, -1) > i}
        if live == outputs or i == len(layers) - 1:
            found.append(i)
    return found


def segment(model, block_of: Callable[[str], str]) -> list[Segment]:
    """Group ``model``'s layers into blocks: each ends at the last boundary ``block_of`` names."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    ends: dict[str, int] = {}
    for i in boundaries(layers):
        ends[block_of(layers[i].name)] = i
    positions = list(ends.values())
    if positions != sorted(positions) or positions[-1] != len(layers) - 1:
        raise RuntimeError(f"{model.name}: block names are not in graph order: {ends}")
    starts = [0] + [p + 1 for p in positions[:-1]]
    return [Segment(name, tuple(layers[s : e + 1])) for (name, e), s in zip(ends.items(), starts, strict=True)]


def in_batches(fn, arrays: np.ndarray, batch_size: int, prepare=lambda x: x) -> np.ndarray:
    """``fn(prepare(batch))`` over ``arrays`` in batches, concatenated as float32."""
    if len(arrays) == 0:  # TensorFlow's CPU convolutions reject empty batches: shape from a dummy
        return in_batches(fn, np.zeros((1, *arrays.shape[1:]), arrays.dtype), 1, prepare)[:0]
    return np.concatenate(
        [np.asarray(fn(prepare(arrays[i : i + batch_size])), dtype=np.float32)
         for i in range(0, len(arrays), batch_size)]
    )


def variable_size(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


class Network:
    """A backbone without its ImageNet head: the Keras model, its blocks, freezing, splitting.

    Parameters are the variables that train when their layer trains; normalization
    statistics (BatchNorm moving mean/variance, Normalization mean/variance) are not
    parameters. They are told apart once, before anything is frozen.
    """

    def __init__(self, spec: KerasModel, model):
        self.spec = spec
        self.model = model
        self._parameter_ids = {id(v) for v in model.trainable_variables}
        self.segments = segment(model, spec.block_of)

    def parameters(self, layers=None) -> list:
        layers = self.model.layers if layers is None else layers
        return [v for layer in layers for v in layer.weights if id(v) in self._parameter_ids]

    @property
    def blocks(self) -> list[Block]:
        return [Block(s.name, variable_size(self.parameters(s.layers))) for s in self.segments]

    def freeze(self, frozen_blocks: int) -> None:
        """Make the first ``frozen_blocks`` blocks non-trainable (BatchNorm then runs in
        inference mode whatever ``training`` says) and the rest trainable."""
        for i, seg in enumerate(self.segments):
            for layer in seg.layers:
                layer.trainable = i >= frozen_blocks

    def split(self, frozen_blocks: int):
        """(prefix, suffix) models cut after block ``frozen_blocks``; None for an empty side."""
        if frozen_blocks == 0:
            return None, self.model
        if frozen_blocks == len(self.segments):
            return self.model, None
        boundary = self.segments[frozen_blocks - 1].layers[-1].output
        prefix = keras.Model(self.model.input, boundary, name=f"{self.model.name}_frozen")
        suffix = keras.Model(boundary, self.model.output, name=f"{self.model.name}_trainable")
        return prefix, suffix

    def between(self, start_blocks: int, stop_blocks: int):
        """The blocks after the first ``start_blocks`` up to block ``stop_blocks`` as a model."""
        start = self.segments[start_blocks - 1].layers[-1].output
        stop = self.segments[stop_blocks - 1].layers[-1].output
        return keras.Model(start, stop, name=f"{self.model.name}_{start_blocks}_{stop_blocks}")

    def prefix_output_shape(self, frozen_blocks: int) -> tuple:
        """The output shape (no batch axis) of the first ``frozen_blocks`` blocks."""
        return tuple(self.segments[frozen_blocks - 1].layers[-1].output.shape[1:])

    def counts(self, extra_trainable=()) -> tuple[int, int]:
        """(trainable, non-trainable) parameters: what the optimizer updates, what is frozen."""
        trainable = variable_size(self.model.trainable_variables) + variable_size(extra_trainable)
        frozen = variable_size(self.parameters()) - variable_size(self.model.trainable_variables)
        return trainable, frozen


def preprocess(spec: KerasModel, images: np.ndarray) -> np.ndarray:
    """uint8 NHWC -> the model's own ``keras.applications.<module>.preprocess_input`` of float32."""
    function = importlib.import_module(f"keras.applications.{spec.module}").preprocess_input
    return np.asarray(function(images.astype(np.float32)), dtype=np.float32)


def build_application(spec: KerasModel, size: int, include_top: bool, source: WeightsSource):
    """``keras.applications.<Name>`` with the weights ``source`` names, loaded and checked."""
    constructor = getattr(keras.applications, spec.name)
    shape = (size, size, 3)
    if source.kind == "imagenet":
        source.require_imagenet_file(top=include_top)
        try:  # Keras loads its cached file, or downloads it (checking the hash)
            return constructor(weights="imagenet", include_top=include_top, input_shape=shape)
        except Exception as exc:
            raise PluginError(f"keras/{spec.name}: could not get the ImageNet weights: {exc}") from exc
    model = constructor(weights=None, include_top=include_top, input_shape=shape)
    if source.kind == "file":
        load_weights_file(spec, model, source.path, include_top)
    return model


def load_weights_file(spec: KerasModel, model, path, include_top: bool) -> None:
    """Load ``path`` into ``model``. A file of the full model (with the ImageNet head) also
    serves a model without it: it is loaded into the full model and the shared layers copied."""
    try:
        model.load_weights(str(path))
        return
    except Exception as exc:
        if include_top:
            raise _wrong_file(spec, path, exc) from exc
        first_error = exc
    full = getattr(keras.applications, spec.name)(
        weights=None, include_top=True, input_shape=(spec.default_size, spec.default_size, 3)
    )
    try:
        full.load_weights(str(path))
    except Exception as exc:
        raise _wrong_file(spec, path, first_error) from exc
    values = full.get_weights()[: len(model.weights)]
    if [v.shape for v in values] != [tuple(w.shape) for w in model.weights]:
        raise _wrong_file(spec, path, ValueError("weight shapes differ"))
    model.set_weights(values)


def _wrong_file(spec: KerasModel, path, exc: Exception) -> PluginError:
    return PluginError(
        f"keras/{spec.name}: weights file {path} does not fit keras.applications.{spec.name} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); give a .h5 / .weights.h5 "
        f"file saved from that model (with or without its ImageNet head)"
    )


@functools.cache
def structure(name: str) -> tuple[Block, ...]:
    """The blocks of ``keras/<name>``, from a random-init build at the smallest input."""
    spec = MODELS[name]
    source = WeightsSource("none", spec, spec.min_size)
    return tuple(Network(spec, build_application(spec, spec.min_size, False, source)).blocks)
