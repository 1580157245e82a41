"""Trained models kept by ``--save-models``: ``model.keras`` plus ``model.json`` (classes,
input size, preprocessing), and the helpers that predict with them later."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlbench.metrics import group_probabilities
from tlbench.types import PluginError

from ._keras import keras
from .catalog import MODELS
from .network import in_batches, preprocess
from tlbench.protocol import images_at

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"
FORMAT = 1


def save_trained(directory, model, info: dict[str, Any]) -> None:
    """Write ``model`` and its ``info`` into ``directory`` (created if needed)."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    info = {"format": FORMAT, "predictor": f"{__name__}:predict_saved", **info}
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))


@dataclass
class SavedModel:
    """A model saved by a cell, ready to predict its target classes."""

    model: Any
    info: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        return self.info["class_names"]

    def predict(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(N, len(class_names))`` for uint8 images of any size."""
        spec = MODELS[self.info["backbone"].removeprefix("keras/")]
        x = images_at(np.asarray(images, dtype=np.uint8), self.info["image_size"], self.info["interpolation"])
        probs = in_batches(lambda batch: self.model(batch, training=False), x, batch_size,
                           lambda batch: preprocess(spec, batch))
        groups = self.info.get("imagenet_groups")
        return group_probabilities(probs, [tuple(g) for g in groups]) if groups else probs


def load_saved(path) -> SavedModel:
    """Load what a cell saved in the folder ``path``."""
    folder = Path(path)
    model_file, info_file = folder / MODEL_FILE, folder / INFO_FILE
    if not model_file.is_file() or not info_file.is_file():
        raise PluginError(f"{folder} holds no saved Keras cell model ({MODEL_FILE} and {INFO_FILE}); "
                          f"run the grid with --save-models first")
    info = json.loads(info_file.read_text())
    return SavedModel(keras.saving.load_model(model_file, compile=False), info)


def predict_saved(path, images: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(class probabilities, class names) from the model a cell saved in ``path``, for uint8
    NHWC images: the ``predictor`` that ``tlbench predict --cell`` calls."""
    saved = load_saved(path)
    return saved.predict(images), saved.class_names

