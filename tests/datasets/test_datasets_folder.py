"""Image folders: both Kaggle layouts on the real shared data and on tmp trees, check()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlbench.plugin.specs import PluginError


def test_split_layout_on_sign_language_digits(specs, shared_data):
    root = shared_data / "sign-language-digits"
    assert specs["folder"].check(root=str(root)) == []
    data = specs["folder"].load(root=str(root), domain="hand-gesture")
    assert data.name == "folder" and data.domain == "hand-gesture"
    assert data.class_names == tuple(str(d) for d in range(10))
    assert data.info["split_sizes"] == {"train": 1712, "valid": 300, "test": 50}
    assert data.info["layout"] == "split-folders" and data.info["skipped_files"] == 0
    assert data.imagenet_classes is None


def test_decodes_the_huge_photos_among_small_ones(specs, shared_data):
    data = specs["folder"].load(root=str(shared_data / "sign-language-digits"))
    train = data.splits["train"]
    sizes = [Image.open(p).size for p in train.paths]
    big = [i for i, size in enumerate(sizes) if size == (3024, 3024)]
    assert len(big) == 3
    few = train.subset([*big, 0, 1])
    images = few.images(32)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    assert few.labels.tolist() == [train.labels[i] for i in [*big, 0, 1]]
    assert few.fingerprint != train.fingerprint


def test_dogs_vs_cats_with_imagenet_classes(specs, shared_data):
    options = {"root": str(shared_data / "dogs-vs-cats"), "domain": "natural-photo",
               "imagenet_classes": {"cat": "281-285", "dog": "151-268"}}
    assert specs["folder"].check(**options) == []
    data = specs["folder"].load(**options)
    assert data.class_names == ("cat", "dog")
    assert data.info["split_sizes"] == {"train": 202, "valid": 103, "test": 451}
    assert data.imagenet_classes["cat"] == (281, 282, 283, 284, 285)
    assert len(data.imagenet_classes["dog"]) == 118
    assert data.splits["test"].subset([0, 450]).images(24).shape == (2, 24, 24, 3)


def test_class_layout_gets_a_recorded_stratified_split(specs, class_tree):
    root = class_tree({"cat": 20, "dog": 20, "fox": 10})
    data = specs["folder"].load(root=str(root))
    assert data.info["layout"] == "class-folders"
    assert data.info["split"] == [0.7, 0.15, 0.15] and data.info["split_seed"] == 0
    assert data.info["split_sizes"] == {"train": 35, "valid": 7, "test": 8}
    assert np.bincount(data.splits["train"].labels).tolist() == [14, 14, 7]
    every = [p for s in data.splits.values() for p in s.paths]
    assert len(every) == len(set(every)) == 50
    reseeded = specs["folder"].load(root=str(root), split_seed=3, split=[0.6, 0.2, 0.2])
    assert reseeded.info["split_sizes"] == {"train": 30, "valid": 10, "test": 10}
    assert set(reseeded.splits["test"].paths) != set(data.splits["test"].paths)


def test_split_names_and_missing_valid_carved_from_train(specs, tmp_path, write_image):
    for i in range(10):
        for cls in ("a", "b"):
            write_image(tmp_path / "Train" / cls / f"{i}.jpg", fmt="JPEG")
    for cls in ("a", "b"):
        write_image(tmp_path / "TEST" / cls / "x.bmp")
    data = specs["folder"].load(root=str(tmp_path))
    assert data.info["split_carved_from_train"] == ["valid"]
    assert data.info["split_sizes"] == {"train": 16, "valid": 4, "test": 2}  # 0.7 : 0.15


def test_class_names_sort_naturally_and_hidden_files_are_ignored(specs, class_tree):
    root = class_tree({"10": 2, "2": 2, "1": 2})
    (root / "2" / ".DS_Store").write_bytes(b"\0junk")
    (root / ".cache").mkdir()
    data = specs["folder"].load(root=str(root), split=[0.5, 0.25, 0.25])
    assert data.class_names == ("1", "2", "10")
    assert data.info["skipped_files"] == 0


# ------------------------------------------------------------------ check() problems


def _problem(specs, **options) -> str:
    problems = specs["folder"].check(**options)
    assert len(problems) >= 1
    with pytest.raises(PluginError) as raised:
        specs["folder"].load(**options)
    assert problems[0] in str(raised.value)
    return "\n".join(problems)


def test_missing_root(specs, tmp_path):
    missing = tmp_path / "nowhere"
    assert str(missing) in _problem(specs, root=str(missing))
    assert "option root is required" in _problem(specs)


def test_empty_class_folder(specs, class_tree):
    root = class_tree({"cat": 3, "dog": 3})
    (root / "bird").mkdir()
    assert f"{root / 'bird'} is empty" in _problem(specs, root=str(root))


def test_single_class(specs, class_tree):
    root = class_tree({"cat": 4})
    assert "single class ('cat')" in _problem(specs, root=str(root))


def test_root_one_level_too_high(specs, class_tree):
    class_tree({"cat": 2, "dog": 2}, root="outer/inner")
    outer = class_tree({}, root="outer")
    assert "one level too high" in _problem(specs, root=str(outer))


def test_class_missing_from_train(specs, tmp_path, write_image):
    for split in ("train", "val", "test"):
        for cls in ("cat", "dog"):
            write_image(tmp_path / split / cls / "1.png")
    write_image(tmp_path / "val" / "bird" / "1.png")
    message = _problem(specs, root=str(tmp_path))
    assert f"{tmp_path / 'val' / 'bird'}" in message and f"{tmp_path / 'train' / 'bird'}" in message


def test_unexpected_folder_next_to_splits(specs, tmp_path, write_image):
    for split in ("train", "test", "extra"):
        for cls in ("cat", "dog"):
            write_image(tmp_path / split / cls / "1.png")
    assert f"{tmp_path / 'extra'} is not a split folder" in _problem(specs, root=str(tmp_path))


def test_bad_imagenet_classes_are_problems(specs, class_tree):
    root = class_tree({"cat": 3, "dog": 3})
    message = _problem(specs, root=str(root), imagenet_classes={"cat": "281-285", "dgo": "151"})
    assert "unknown class name(s) 'dgo'" in message and str(root) in message
    message = _problem(specs, root=str(root), imagenet_classes={"cat": "285-281", "dog": 151})
    assert "runs backwards" in message


def test_check_does_not_open_files(specs, class_tree):
    root = class_tree({"cat": 2, "dog": 2})
    (root / "cat" / "broken.jpg").write_bytes(b"not an image")
    assert specs["folder"].check(root=str(root)) == []


def test_a_folder_that_cannot_be_read_is_named(specs, class_tree, monkeypatch):
    root = class_tree({"cat": 2, "dog": 2})
    locked = root / "dog"
    iterdir = Path.iterdir

    def denied_for_locked(path):  # what `chmod 000 dog` does to any user but root
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return iterdir(path)

    monkeypatch.setattr(Path, "iterdir", denied_for_locked)
    problems = specs["folder"].check(root=str(root))
    assert f"folder: cannot read {locked} (Permission denied); make it readable by this user" in problems[0]
    with pytest.raises(PluginError, match=f"cannot read {locked}"):
        specs["folder"].load(root=str(root))
