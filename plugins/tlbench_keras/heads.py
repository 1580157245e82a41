"""The new classification heads a strategy can ask for, all ending in a softmax."""

from __future__ import annotations

from tlbench.train.protocol import HEADS

from ._keras import keras


def build_head(kind: str, feature_shape: tuple[int, ...], num_classes: int):
    """A Keras model from backbone features (``feature_shape``, no batch axis) to class
    probabilities: the core's head ``kind`` (:data:`tlbench.train.protocol.HEADS`), its layers named
    ``head_pool``, ``head_flatten``, ``head_dense``, ``head_bn``, ``head_dropout`` and ``head_out``."""
    layers = keras.layers
    inputs = keras.Input(feature_shape, name="features")
    x = inputs
    for layer in HEADS[kind].layers:
        if layer.kind == "pool":
            x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        elif layer.kind == "flatten":
            x = layers.Flatten(name="head_flatten")(x)
        elif layer.kind == "dense":
            x = layers.Dense(layer.units, activation=layer.activation, name="head_dense")(x)
        elif layer.kind == "batchnorm":
            x = layers.BatchNormalization(name="head_bn")(x)
        else:
            x = layers.Dropout(layer.rate, name="head_dropout")(x)
    # float32 output even under a mixed-precision policy
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="head_out")(x)
    return keras.Model(inputs, outputs, name=f"head_{kind.replace('-', '_')}")
