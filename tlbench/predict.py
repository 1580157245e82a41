"""ImageNet predictions of a built backbone for image files (``tlbench predict``).

Framework-free: images are decoded with Pillow, resized the way the backbone's weights
expect, and handed over as uint8 NHWC arrays to ``backbone.imagenet_probabilities``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import to_rgb
from .imagenet import imagenet_class_names
from .types import PluginError

BATCH_SIZE = 32
MAX_RESIZED_SIDE = 16384  # 256 x 16384 RGB is 12 MB; beyond, an image is a sliver, not a photo


def load_for_backbone(
    path: str, size: int, crop_pct: float | None = None, interpolation: str = "bilinear"
) -> np.ndarray:
    """One image file as ``(size, size, 3)`` uint8 RGB, as a backbone's eval transform sees it.

    ``crop_pct`` None squashes the whole image to the square (as dataset splits do); a number
    resizes the shorter side to ``floor(size / crop_pct)`` and center-crops ``size`` (timm's
    and torchvision's eval transform, pixel for pixel).
    """
    from PIL import Image

    try:
        resample = Image.Resampling[interpolation.upper()]
    except KeyError:
        raise PluginError(f"unknown interpolation '{interpolation}' for {path}") from None
    try:
        with Image.open(path) as opened:
            image = to_rgb(opened)
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PluginError(f"cannot read image {path}: {exc}") from exc
    if crop_pct is None:
        return np.asarray(image.resize((size, size), resample=resample), dtype=np.uint8)
    width, height = image.size
    short = max(size, math.floor(size / crop_pct))
    if width <= height:
        new_size = (short, int(short * height / width))
    else:
        new_size = (int(short * width / height), short)
    if max(new_size) > MAX_RESIZED_SIDE:
        raise PluginError(f"image {path} is {width} x {height} pixels: too elongated to resize its shorter "
                          f"side to {short} (the longer would be {max(new_size)} pixels, at most "
                          f"{MAX_RESIZED_SIDE} allowed); crop it closer to a square first")
    image = image.resize(new_size, resample=resample)
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


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
    for path, row in zip(paths, np.asarray(probabilities, dtype=np.float64)):
        best = np.argsort(-row, kind="stable")[:top]
        results.append({"image": str(path), "top": [
            {"label": names[i], "index": int(i), "probability": float(row[i])} for i in best]})
    return results


def predict_with_backbone(paths: Sequence[str], name: str, top: int = 5) -> list[dict[str, Any]]:
    """``tlbench predict --backbone NAME``: the backbone's pretrained ImageNet head."""
    from .registry import collect

    backbone = collect().backbones.get(name).build(weights="pretrained")
    return predict_images(paths, backbone, top=top)


MODEL_INFO = "model.json"


def saved_model_dir(cell: str) -> Path:
    """``RUN_DIR/CELL_ID`` -> the folder where ``--save-models`` kept that cell's model."""
    from .results import RUNS_FILE, RunsLog, latest_per_cell

    path = Path(cell)
    run_dir = next((p for p in [path, *path.parents] if (p / RUNS_FILE).is_file()), None)
    if run_dir is None:
        raise PluginError(f"{cell}: no runs.jsonl in it or above it; give RUN_DIR/CELL_ID of a tlbench run")
    cell_id = path.relative_to(run_dir).as_posix()
    records = [r for r in latest_per_cell(RunsLog(run_dir).read()) if r["cell_id"] == cell_id]
    if not records:
        raise PluginError(f"{run_dir}: no cell {cell_id!r} in {RUNS_FILE} (`tlbench report {run_dir}` lists them)")
    record = records[0]
    folder = run_dir / "models" / record["key"][:16]
    if not (folder / MODEL_INFO).is_file():
        if record["status"] != "ok":
            raise PluginError(f"cell {cell_id} is {record['status']}: it has no trained model to predict with")
        if (record.get("plugins") or {}).get("strategy") == "classifier":
            raise PluginError(f"cell {cell_id} is a `classifier` cell: it trains nothing, so there is no saved "
                              f"model; use `tlbench predict --backbone {record['plugins']['backbone']}`")
        raise PluginError(f"{cell}: no saved model in {folder}; run the grid with --save-models")
    return folder


def predict_cell(paths: Sequence[str], cell: str, top: int = 5) -> list[dict[str, Any]]:
    """``tlbench predict --cell RUN_DIR/CELL_ID``: the target classes of a trained cell model.

    The engine that saved the model names its predictor (``module:function``) in model.json;
    the function takes ``(model_dir, uint8 NHWC images)`` and returns ``(probabilities, class_names)``.
    """
    import importlib
    import json

    folder = saved_model_dir(cell)
    info = json.loads((folder / MODEL_INFO).read_text())
    module, _, function = info["predictor"].partition(":")
    predictor = getattr(importlib.import_module(module), function)
    images = np.stack([load_for_backbone(p, info["image_size"], None, info.get("interpolation", "bilinear"))
                       for p in paths])
    probabilities, class_names = predictor(str(folder), images)
    return ranked(paths, probabilities, class_names, top)
