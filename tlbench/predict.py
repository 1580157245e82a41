"""ImageNet predictions of a built backbone for image files (``tlbench predict``).

Framework-free: images are decoded with Pillow, resized the way the backbone's weights
expect, and handed over as uint8 NHWC arrays to ``backbone.imagenet_probabilities``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlbench.data.imagenet import imagenet_class_names
from tlbench.data.splits import RESAMPLE_NAMES, bounded_image, to_rgb
from tlbench.files import open_regular
from tlbench.grid.loading import MAX_IMAGE_SIZE
from tlbench.plugin.specs import PluginError
from tlbench.train.protocol import MODEL_INFO

if TYPE_CHECKING:
    from tlbench.plugin.engine import Engine

BATCH_SIZE = 32
MAX_RESIZED_SIDE = 16384  # 256 x 16384 RGB is 12 MB; beyond, an image is a sliver, not a photo


def load_for_backbone(
    path: str, size: int, crop_pct: float | None = None, interpolation: str = "bilinear"
) -> np.ndarray:
    """One image file as ``(size, size, 3)`` uint8 RGB, as a backbone's eval transform sees it,
    decoded within :func:`tlbench.data.splits.bounded_image`'s pixel budget.

    ``crop_pct`` None squashes the whole image to the square (as dataset splits do); a number
    resizes the shorter side to ``floor(size / crop_pct)`` and center-crops ``size`` (timm's
    and torchvision's eval transform, pixel for pixel).
    """
    from PIL import Image

    try:
        resample = Image.Resampling[interpolation.upper()]
    except KeyError:
        raise PluginError(f"unknown interpolation '{interpolation}' for {path}") from None
    with _reading(path), bounded_image(path, size) as opened:
        image = to_rgb(opened)
    if crop_pct is None:
        return np.asarray(image.resize((size, size), resample=resample), dtype=np.uint8)
    width, height = image.size
    short = max(size, math.floor(size / crop_pct))
    new_size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
    if max(new_size) > MAX_RESIZED_SIDE:
        raise PluginError(f"image {path} is {width} x {height} pixels: too elongated to resize its shorter "
                          f"side to {short} (the longer would be {max(new_size)} pixels, at most "
                          f"{MAX_RESIZED_SIDE} allowed); crop it closer to a square first")
    image = image.resize(new_size, resample=resample)
    left = round((new_size[0] - size) / 2.0)
    top = round((new_size[1] - size) / 2.0)
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


@contextmanager
def _reading(path: str) -> Iterator[None]:
    """Pillow's errors while reading ``path`` as a PluginError that names the file."""
    from PIL import Image

    try:
        yield
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PluginError(f"cannot read image {path}: {exc}") from exc


def check_images(paths: Sequence[str]) -> None:
    """Each path is a regular file Pillow recognises as an image (its header only): checked
    before any framework loads a model, so a wrong path fails at once."""
    from PIL import Image

    for path in paths:
        with _reading(str(path)), open_regular(path) as f, Image.open(f):
            pass


def predict_images(paths: Sequence[str], backbone: Any, top: int = 5) -> list[dict[str, Any]]:
    """The ``top`` ImageNet classes of each image, most probable first.

    ``backbone`` offers ``image_size`` and ``imagenet_probabilities(uint8 NHWC) -> (N, 1000)``,
    and optionally ``crop_pct`` and ``interpolation`` (see :func:`load_for_backbone`).
    Each result: ``{"image": PATH, "top": [{"label", "index", "probability"}, ...]}``.
    """
    if top < 1:
        raise PluginError(f"top must be at least 1, got {top}")
    names = imagenet_class_names()
    crop_pct = getattr(backbone, "crop_pct", None)
    interpolation = getattr(backbone, "interpolation", "bilinear")
    results = []
    for start in range(0, len(paths), BATCH_SIZE):
        batch = [str(p) for p in paths[start : start + BATCH_SIZE]]
        images = np.stack(
            [load_for_backbone(p, backbone.image_size, crop_pct, interpolation) for p in batch]
        )
        probabilities = backbone.imagenet_probabilities(images)
        results += ranked(batch, probabilities, names, top)
    return results


def ranked(paths: Sequence[str], probabilities: np.ndarray, names: Sequence[str], top: int) -> list[dict[str, Any]]:
    """``{"image", "top": [{"label", "index", "probability"}, ...]}`` per image, best first."""
    results = []
    for path, row in zip(paths, np.asarray(probabilities, dtype=np.float64), strict=True):
        best = np.argsort(-row, kind="stable")[:top]
        results.append({"image": str(path), "top": [
            {"label": names[i], "index": int(i), "probability": float(row[i])} for i in best]})
    return results


class ImageNetClassifier:
    """A backbone's pretrained ImageNet head through its engine, as :func:`predict_images` reads it."""

    def __init__(self, engine: Engine[Any], backbone: Any) -> None:
        self.engine, self.model = engine, engine.open_classifier(backbone, "cpu")
        self.image_size = engine.classifier_image_size(backbone)
        self.crop_pct = getattr(backbone, "crop_pct", None)
        self.interpolation = backbone.interpolation

    def imagenet_probabilities(self, images: np.ndarray) -> np.ndarray:
        return self.engine.imagenet_probabilities(self.model, images)


def predict_with_backbone(paths: Sequence[str], name: str, top: int = 5) -> list[dict[str, Any]]:
    """``tlbench predict --backbone NAME``: the backbone's pretrained ImageNet head."""
    from tlbench.plugin.registry import collect

    check_images(paths)
    registries = collect()
    spec = registries.backbones.get(name)
    classifier = ImageNetClassifier(registries.engine_for(spec.framework), spec.build(weights="pretrained"))
    return predict_images(paths, classifier, top=top)


def saved_model_dir(cell: str) -> Path:
    """``RUN_DIR/CELL_ID`` -> the folder where ``--save-models`` kept that cell's model."""
    from tlbench.results import RUNS_FILE, RunsLog, latest_per_cell

    path = Path(cell)
    run_dir = next((p for p in [path, *path.parents] if (p / RUNS_FILE).is_file()), None)
    if run_dir is None:
        raise PluginError(f"{cell}: no runs.jsonl in it or above it; give RUN_DIR/CELL_ID of a tlbench run")
    cell_id = path.relative_to(run_dir).as_posix()
    records = [r for r in latest_per_cell(RunsLog(run_dir).read()) if r["cell_id"] == cell_id]
    if not records:
        raise PluginError(f"{run_dir}: no cell {cell_id!r} in {RUNS_FILE} (`tlbench report {run_dir}` lists them)")
    record = records[0]
    folder: Path = run_dir / "models" / record["key"][:16]
    if not (folder / MODEL_INFO).is_file():
        if record["status"] != "ok":
            raise PluginError(f"cell {cell_id} is {record['status']}: it has no trained model to predict with")
        raise PluginError(f"{cell}: no saved model in {folder}; run the grid with --save-models")
    return folder


SAVED_INFO_FIELDS = {"framework": str, "backbone": str, "backbone_options": dict, "class_names": list,
                     "image_size": int, "interpolation": str}


def read_saved_info(folder: Path) -> dict[str, Any]:
    """``model.json`` of a saved cell, checked: nothing in it is imported or executed."""
    path = folder / MODEL_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PluginError(f"{path} is not readable JSON ({exc}); save the cell again with --save-models") from None
    wrong = [name for name, kind in SAVED_INFO_FIELDS.items()
             if not isinstance(info, dict) or not isinstance(info.get(name), kind) or isinstance(info.get(name), bool)]
    if not wrong and not (1 <= info["image_size"] <= MAX_IMAGE_SIZE and info["interpolation"] in RESAMPLE_NAMES
                          and all(isinstance(c, str) for c in info["class_names"])):
        wrong = ["image_size, interpolation or class_names"]
    if wrong:
        raise PluginError(f"{path}: field(s) {', '.join(wrong)} missing or invalid; this is not a model.json "
                          "that tlbench wrote (save the cell again with --save-models)")
    checked: dict[str, Any] = info
    return checked


def predict_cell(paths: Sequence[str], cell: str, top: int = 5) -> list[dict[str, Any]]:
    """``tlbench predict --cell RUN_DIR/CELL_ID``: the target classes of a trained cell model.

    ``model.json`` names the framework; its registered engine loads the model file, rebuilt
    on the registered backbone. Nothing named in the file is imported.
    """
    from tlbench.plugin.registry import collect
    from tlbench.train.metrics import group_probabilities

    folder = saved_model_dir(cell)
    info = read_saved_info(folder)
    check_images(paths)
    registries = collect()
    engine = registries.engine_for(info["framework"])
    backbone = registries.backbones.get(info["backbone"]).build(**{**info["backbone_options"], "weights": "none"})
    predictor = engine.load_saved(backbone, str(folder), info)
    images = np.stack([load_for_backbone(p, info["image_size"], None, info["interpolation"]) for p in paths])
    probabilities = predictor(images)
    if info.get("imagenet_groups"):
        probabilities = group_probabilities(probabilities, [tuple(g) for g in info["imagenet_groups"]])
    return ranked(paths, probabilities, info["class_names"], top)
