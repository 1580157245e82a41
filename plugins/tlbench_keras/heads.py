"""The new classification heads a strategy can ask for, all ending in a softmax."""

from __future__ import annotations

from tlbench.training import HEADS
from tlbench.types import PluginError

from ._keras import keras


def build_head(kind: str, feature_shape: tuple[int, ...], num_classes: int):
    """A Keras model from backbone features (``feature_shape``, no batch axis) to class
    probabilities: ``linear`` = global average pool -> Dense; ``flatten-linear`` =
    Flatten -> Dense; ``book`` = Flatten -> Dense(64, relu) -> BatchNorm -> Dropout(0.5) ->
    Dense (the head of the textbook's VGG16 feature-extractor project)."""
    layers = keras.layers
    inputs = keras.Input(feature_shape, name="features")
    if kind == "linear":
        x = layers.GlobalAveragePooling2D(name="head_pool")(inputs)
    elif kind == "flatten-linear":
        x = layers.Flatten(name="head_flatten")(inputs)
    elif kind == "book":
        x = layers.Flatten(name="head_flatten")(inputs)
        x = layers.Dense(64, activation="relu", name="head_dense")(x)
        x = layers.BatchNormalization(name="head_bn")(x)
        x = layers.Dropout(0.5, name="head_dropout")(x)
    else:
        raise PluginError(f"unknown head {kind!r}: choose one of {', '.join(HEADS)}")
    # float32 output even under a mixed-precision policy
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=f"head_{kind.replace('-', '_')}")
