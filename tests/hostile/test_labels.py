"""Labels follow their images: a file dropped when it fails to decode drops its label too."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlbench.data.splits import FileSplit
from tlbench.run.runner import run_grid

CLASSES = {"a-dark": 20, "b-mid": 120, "c-bright": 230}  # class -> grey level: nearest centroid tells them apart
PER_CLASS = 6


def jpeg(level: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), level, np.uint8)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG whose header is fine (the folder scan keeps it) but whose data stops early."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, "JPEG")
    data = buffer.getvalue()[:-2000]
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 64)  # the header reads
        with pytest.raises(OSError, match="truncated"):
            image.load()
    return data


def image_tree(root: Path) -> Path:
    """root/<split>/<class>/*.jpg, with a truncated JPEG first in the first class of every split:
    every later image moves up one row if its label does not go with it."""
    for split in ("train", "valid", "test"):
        for name, level in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            if name == "a-dark":
                (folder / "000-truncated.jpg").write_bytes(truncated_jpeg())
            for i in range(PER_CLASS):
                (folder / f"{i + 1:03d}.jpg").write_bytes(jpeg(level))
    return root


def test_a_truncated_jpeg_first_in_a_class_drops_its_label_in_every_split(toy_plugin, tmp_path):
    root = image_tree(tmp_path / "images")
    grid = {"name": "labels", "datasets": [{"name": "folder", "root": str(root)}],
            "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    frame = run_grid(grid, out=tmp_path / "run", executor="inline", device="cpu")
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "ok", record["error"]
    metrics = record["metrics"]
    kept = len(CLASSES) * PER_CLASS
    assert (metrics["train_images"], metrics["valid_images"], metrics["test_images"]) == (kept, kept, kept)
    assert metrics["test_accuracy"] == 1.0 and frame.test_accuracy.iloc[0] == 1.0
    assert metrics["dataset_info"]["skipped_files"] == 3
    predictions = np.load(tmp_path / "run" / metrics["predictions_file"])
    assert predictions["test_labels"].tolist() == [c for c in range(len(CLASSES)) for _ in range(PER_CLASS)]


def test_a_split_keeps_the_labels_of_each_size_it_decoded(tmp_path):
    root = image_tree(tmp_path / "images")
    files = sorted((root / "test").glob("*/*.jpg"))
    labels = [sorted(CLASSES).index(f.parent.name) for f in files]
    small = tmp_path / "small.png"  # decodes at any size; a file too small to matter
    Image.fromarray(np.full((4, 4, 3), 230, np.uint8)).save(small)
    split = FileSplit([*files, small], [*labels, 2])
    images = split.images(8)
    assert len(images) == len(split.labels) == len(split.paths) == len(files)
    assert split.labels.tolist() == [*labels[1:], 2]
    levels = np.asarray(images)[:, 0, 0, 0].astype(int)
    nearest_class = np.abs(levels[:, None] - np.array(list(CLASSES.values()))[None]).argmin(axis=1)
    assert nearest_class.tolist() == split.labels.tolist()  # each label is its own image's
    part = split.subset([0, len(split.labels) - 1])
    assert part.labels.tolist() == [0, 2] and part.paths == [str(files[1]), str(small)]
