"""Object crops from tfds detection datasets: every annotated box becomes one image.

A box is kept when both of its sides are at least ``min_size`` pixels; it is widened by
``margin`` (a fraction of its width/height on each side, clipped to the image) and labelled
by its category. Crowd / group-of boxes are left out.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlbench.plugin.specs import ImageDataset, PluginError, quote

from .tfds_source import (
    TfdsSource,
    class_label,
    open_builder,
    problems_of,
    resolve_splits,
    tfds_dataset,
)


@dataclass(frozen=True)
class CropDefinition:
    """A registered crop dataset: its tfds source and the names of its object features."""

    name: str
    tfds_name: str
    num_classes: int
    description: str
    objects_key: str
    crowd_key: str
    default_splits: Mapping[str, str] | None = None
    domain: str = "natural-photo"  # object boxes of photo collections

    @property
    def options(self) -> dict[str, Any]:
        return {"tfds_name": self.tfds_name, "data_dir": None, "cache_dir": None,
                "splits": None, "min_size": 32, "margin": 0.1}


DEFINITIONS = (
    CropDefinition("coco-crops", "coco/2017", 80,
                   "COCO 2017 object boxes cropped, 80 categories (valid/test: halves of "
                   "COCO's validation images, as its test split has no labels)",
                   objects_key="objects", crowd_key="is_crowd",
                   default_splits={"train": "train", "valid": "validation[:50%]",
                                   "test": "validation[50%:]"}),
    CropDefinition("open-images-crops", "open_images_v4/original", 601,
                   "Open Images V4 boxes cropped, 601 categories (class names are MIDs)",
                   objects_key="bobjects", crowd_key="is_group_of"),
)


@dataclass(frozen=True)
class CropIndex:
    """One row per kept box: example number, pixel box (left, top, right, bottom), label."""

    image_key: str
    objects_key: str
    crowd_key: str
    min_size: int
    margin: float

    @property
    def description(self) -> dict[str, Any]:
        return {"kind": "crops", "objects": self.objects_key, "crowd": self.crowd_key,
                "min_size": self.min_size, "margin": self.margin}

    def index(self, source: TfdsSource, split: str) -> np.ndarray:
        from PIL import Image

        rows = []
        for number, example in enumerate(source.encoded_images(split)):
            with Image.open(io.BytesIO(example[self.image_key])) as image:
                width, height = image.size  # header only, no decoding
            objects = example[self.objects_key]
            boxes = zip(objects["bbox"], objects["label"], objects[self.crowd_key], strict=True)
            for box, label, crowd in boxes:
                crop = None if crowd else self.crop_box(box, width, height)
                if crop is not None:
                    rows.append((number, *crop, int(label)))
        return np.asarray(rows, dtype=np.int64).reshape(-1, 6)

    def crop_box(self, box, width: int, height: int) -> tuple[int, int, int, int] | None:
        """tfds box (ymin, xmin, ymax, xmax in 0..1) -> widened pixel box, or None if small."""
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        top, bottom = sorted((ymin * height, ymax * height))
        left, right = sorted((xmin * width, xmax * width))
        box_w, box_h = right - left, bottom - top
        if box_w < self.min_size or box_h < self.min_size:
            return None
        left = max(0, int(np.floor(left - self.margin * box_w)))
        top = max(0, int(np.floor(top - self.margin * box_h)))
        right = min(width, int(np.ceil(right + self.margin * box_w)))
        bottom = min(height, int(np.ceil(bottom + self.margin * box_h)))
        return left, top, right, bottom


def check_crops(definition: CropDefinition, cache_dir: str | None = None, **options) -> list[str]:
    return problems_of(lambda: _open(definition, prepare=False, **options))


def load_crops(definition: CropDefinition, cache_dir: str | None = None, **options) -> ImageDataset:
    """Index the boxes of each split (cached) and return lazily decoded crop splits."""
    builder, source, names, splits, indexer = _open(definition, **options)
    return tfds_dataset(definition.name, builder, source, splits, indexer, cache_dir, names,
                        definition.domain, None)


def _open(definition: CropDefinition, tfds_name: str | None = None, data_dir: str | None = None,
          splits: Any = None, min_size: Any = 32, margin: Any = 0.1, prepare: bool = True):
    """Check the options, open the builder and check its object features (and splits, once prepared)."""
    name = definition.name
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise PluginError(f"{name}: option min_size must be a whole number of pixels >= 1; "
                          f"got {quote(min_size)}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
        raise PluginError(f"{name}: option margin must be a fraction >= 0 of the box size "
                          f"added on each side (e.g. 0.1); got {quote(margin)}")
    tfds_name = tfds_name or definition.tfds_name
    builder = open_builder(name, tfds_name, data_dir, prepare=prepare)
    features = builder.info.features
    label = class_label(name, features, [definition.objects_key, "label"])
    missing = {"bbox", definition.crowd_key} - set(features[definition.objects_key].feature.keys())
    if missing:
        raise PluginError(f"{name}: feature {definition.objects_key!r} of {tfds_name} lacks "
                          f"{sorted(missing)}")
    chosen = resolve_splits(name, builder, splits, definition.default_splits)
    source = TfdsSource.of(name, builder, "image")
    indexer = CropIndex("image", definition.objects_key, definition.crowd_key, min_size,
                        float(margin))
    return builder, source, list(label.names), chosen, indexer
