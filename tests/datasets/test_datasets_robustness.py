"""Broken files are skipped with one warning and counted; every pixel format becomes RGB."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def tree_with_bad_files(class_tree):
    root = class_tree({"cat": 6, "dog": 6})
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "cat" / "noise.jpg")
    whole = (root / "cat" / "noise.jpg").read_bytes()  # the header is a small part of it
    (root / "cat" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "dog" / "zero.png").write_bytes(b"")
    (root / "dog" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "dog" / "notes.txt").write_text("not an image at all")
    return root


def test_bad_files_skipped_with_one_warning_and_counted(specs, tree_with_bad_files, caplog):
    root = tree_with_bad_files
    assert specs["folder"].check(root=str(root)) == []  # scanning does not open files
    with caplog.at_level(logging.WARNING):
        data = specs["folder"].load(root=str(root), split=[0.5, 0.25, 0.25])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert all(name in warnings[0] for name in ("zero.png", "corrupt.png", "notes.txt"))
    assert data.info["skipped_files"] == 3  # found by the header check at load time
    assert sum(data.info["split_sizes"].values()) == 14  # 13 good + the truncated one

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        decoded = {name: split.images(16) for name, split in data.splits.items()}
    assert data.info["skipped_files"] == 4  # the truncated file, found when decoding
    assert any("truncated.jpg" in p for p in data.info["skipped_paths"])
    assert sum(len(images) for images in decoded.values()) == 13
    assert all(len(s.labels) == len(decoded[n]) for n, s in data.splits.items())
    decode_warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(decode_warnings) == 1 and "truncated.jpg" in decode_warnings[0]


def test_skips_found_in_a_subset_reach_the_dataset_info(specs, tree_with_bad_files):
    data = specs["folder"].load(root=str(tree_with_bad_files), split=[0.5, 0.25, 0.25])
    split = next(s for s in data.splits.values() if any("truncated" in p for p in s.paths))
    truncated = next(i for i, p in enumerate(split.paths) if "truncated" in p)
    subset = split.subset([truncated, (truncated + 1) % len(split)])
    assert len(subset.images(8)) == 1
    assert data.info["skipped_files"] == 4


def _write_mode(path, mode):
    base = Image.new("RGB", (20, 12), (250, 10, 10))
    if mode == "L":
        base.convert("L").save(path)
    elif mode == "P":
        base.convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    elif mode == "RGBA":
        image = base.convert("RGBA")
        image.putalpha(255)
        image.save(path)
    elif mode == "CMYK":
        base.convert("CMYK").save(path, format="JPEG")
    elif mode == "I;16":
        Image.fromarray(np.full((12, 20), 40000, dtype=np.uint16)).save(path)
    with Image.open(path) as check:
        assert check.mode == mode or (mode == "I;16" and check.mode.startswith("I"))


@pytest.mark.parametrize("mode, suffix", [("L", ".png"), ("P", ".gif"), ("RGBA", ".png"),
                                          ("CMYK", ".jpg"), ("I;16", ".png")])
def test_every_pixel_format_becomes_rgb(specs, class_tree, mode, suffix):
    root = class_tree({"a": 2, "b": 2})
    _write_mode(root / "a" / f"odd{suffix}", mode)
    data = specs["folder"].load(root=str(root), split=[0.6, 0.2, 0.2])
    train = data.splits["train"]
    index = next(i for i, p in enumerate(train.paths) if p.endswith(f"odd{suffix}"))
    image = np.asarray(train.subset([index]).images(10))
    assert image.shape == (1, 10, 10, 3) and image.dtype == np.uint8
    red, green, blue = image.reshape(-1, 3).mean(axis=0)
    if mode == "L":
        assert red == green == blue
    elif mode == "I;16":
        assert red == green == blue  # a flat 16-bit image: one gray level
    else:
        assert red > 200 and green < 60 and blue < 60
    assert data.info["skipped_files"] == 0


def test_very_different_sizes_in_one_folder(specs, class_tree, write_image):
    root = class_tree({"a": 2, "b": 2})
    write_image(root / "a" / "wide.png", size=(900, 20))
    write_image(root / "b" / "tall.png", size=(5, 700))
    data = specs["folder"].load(root=str(root), split=[0.6, 0.2, 0.2])
    every = [s.images(12) for s in data.splits.values()]
    assert sum(len(e) for e in every) == 6
    assert all(e.shape[1:] == (12, 12, 3) for e in every)
