"""Image folders in the Kaggle layouts: ``root/<split>/<class>/*`` or ``root/<class>/*``.

``check`` only lists files. ``load`` also reads every file's header (no pixel decoding), so
empty, corrupt and non-image files are dropped before the splits are made; files whose
header is fine but whose data is broken (truncated) are dropped by
:class:`tlbench.data.splits.FileSplit` when first decoded. Both kinds end up in
``info["skipped_files"]``, which is updated in place when a split decodes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tlbench.data.splits import DiskArray, FileSplit
from tlbench.files import NotRegularFile, open_regular
from tlbench.plugin.specs import ImageDataset, ImageSplit, PluginError

from .imagenet_classes import imagenet_classes_problems, parse_imagenet_classes
from .splitting import DEFAULT_SPLIT, SPLITS, raise_problems, split_problems, stratified_parts

log = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid",
                 "test": "test"}
MAX_LISTED_SKIPS = 20


@dataclass
class FolderScan:
    """What a cheap scan found: the layout, class names and files (not yet opened)."""

    root: Path
    layout: str  # "split-folders" | "class-folders"
    class_names: tuple[str, ...]
    files: dict[str, dict[str, list[Path]]]  # split folder name (or "all") -> class -> files


def check_folder(
    root: Any = None,
    split: Any = DEFAULT_SPLIT,
    split_seed: Any = 0,
    domain: str = "unknown",
    imagenet_classes: Any = None,
) -> list[str]:
    """Problems with the folder tree or the options, each naming the path or option."""
    return _problems(*scan_folder(root), split, split_seed, imagenet_classes)


def _problems(scan: FolderScan | None, problems: list[str], split: Any, split_seed: Any,
              imagenet_classes: Any) -> list[str]:
    problems = problems + split_problems("folder", split, split_seed)
    if scan is not None and len(scan.class_names) > 1:
        problems += [f"folder {scan.root}: {p}"
                     for p in imagenet_classes_problems(imagenet_classes, scan.class_names)]
    return problems


def scan_folder(root: Any) -> tuple[FolderScan | None, list[str]]:
    """List class folders and files under ``root``; returns the scan and its problems."""
    if root is None:
        return None, ["folder: option root is required: a folder holding <class>/ or "
                      "<split>/<class>/ image folders"]
    path = Path(str(root)).expanduser().resolve()
    if not path.exists():
        return None, [f"folder: root {path} does not exist; set the option root to a folder "
                      "of class folders"]
    if not path.is_dir():
        return None, [f"folder: root {path} is not a folder"]
    try:
        subfolders = _subfolders(path)
    except OSError as exc:
        return None, [_cannot_read(path, exc)]
    if any(d.name.lower() in SPLIT_FOLDERS for d in subfolders):
        files, problems = _scan_split_folders(path, subfolders)
        layout = "split-folders"
    else:
        classes, problems = _scan_classes(path)
        files, layout = {"all": classes}, "class-folders"
    class_names = tuple(sorted({c for cls in files.values() for c in cls}, key=_natural_key))
    if len(class_names) == 1:
        problems.append(f"folder: {path} has a single class ({class_names[0]!r}); a "
                        "classifier needs at least two class folders")
    return FolderScan(path, layout, class_names, files), problems


def _scan_split_folders(root: Path, subfolders: list[Path]):
    files: dict[str, dict[str, list[Path]]] = {}
    problems = []
    for folder in subfolders:
        split = SPLIT_FOLDERS.get(folder.name.lower())
        if split is None:
            problems.append(f"folder: {folder} is not a split folder; next to split folders "
                            "only train, valid|val|validation and test are allowed")
        elif split in {SPLIT_FOLDERS[f.lower()] for f in files}:
            problems.append(f"folder: {folder} is a second {split} folder under {root}")
        else:
            files[folder.name], found = _scan_classes(folder)
            problems += found
    train = next((name for name in files if SPLIT_FOLDERS[name.lower()] == "train"), None)
    if train is None:
        problems.append(f"folder: {root} has split folders but no train folder")
        return files, problems
    for name, classes in files.items():
        for cls, paths in classes.items():
            if name != train and paths and not files[train].get(cls):
                problems.append(f"folder: class {cls!r} has images in {root / name / cls} but "
                                f"none in {root / train / cls}; add training images or remove it")
    return files, problems


def _scan_classes(folder: Path) -> tuple[dict[str, list[Path]], list[str]]:
    classes: dict[str, list[Path]] = {}
    problems: list[str] = []
    try:
        class_folders = _subfolders(folder)
    except OSError as exc:
        return classes, [_cannot_read(folder, exc)]
    for class_folder in class_folders:
        try:
            paths = sorted(p for p in class_folder.iterdir() if p.is_file() and not _hidden(p))
            nested = not paths and _subfolders(class_folder)
        except OSError as exc:
            problems.append(_cannot_read(class_folder, exc))
            continue
        if nested:
            problems.append(f"folder: class folder {class_folder} holds folders, not images; is "
                            "root one level too high?")
        elif not paths:
            problems.append(f"folder: class folder {class_folder} is empty; add images or "
                            "remove it")
        classes[class_folder.name] = paths
    if not classes:
        problems.append(f"folder: {folder} has no class folders; expected {folder}/<class>/<image>")
    return classes, problems


def _cannot_read(folder: Path, exc: OSError) -> str:
    return (f"folder: cannot read {folder} ({exc.strerror or exc}); make it readable by this user "
            "or move it out of the dataset folder")


def _subfolders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not _hidden(p))


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "__"))  # .DS_Store, .git, __MACOSX


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


class SkippedFiles:
    """Unreadable files of one dataset; keeps ``info["skipped_files"]`` current."""

    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.entries: dict[str, None] = {}  # "path (reason)", in the order found
        self._publish()

    def add(self, entries: Sequence[str]) -> None:
        new = [e for e in entries if e not in self.entries]
        self.entries.update(dict.fromkeys(new))
        if new:
            self._publish()

    def _publish(self) -> None:
        self.info["skipped_files"] = len(self.entries)
        listed = self.info.setdefault("skipped_paths", [])
        listed[:] = list(self.entries)[:MAX_LISTED_SKIPS]  # in place: shallow copies see it


class FolderSplit(FileSplit):
    """A FileSplit that reports the files it could not decode to its dataset."""

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int] | np.ndarray, skipped: SkippedFiles):
        super().__init__(paths, labels)
        self.skipped_files = skipped

    def images(self, size: int, interpolation: str = "bilinear") -> DiskArray:
        images = super().images(size, interpolation)
        self.skipped_files.add(self.skipped)
        return images

    def subset(self, indices: Sequence[int]) -> FolderSplit:
        idx = [int(i) for i in indices]
        return FolderSplit([self.paths[i] for i in idx], self.labels[idx], self.skipped_files)


def load_folder(
    root: Any = None,
    split: Any = DEFAULT_SPLIT,
    split_seed: int = 0,
    domain: str = "unknown",
    imagenet_classes: Any = None,
) -> ImageDataset:
    """Scan, drop unreadable files (one warning), split, and return lazy FileSplits."""
    scan, problems = scan_folder(root)
    raise_problems(_problems(scan, problems, split, split_seed, imagenet_classes))
    assert scan is not None  # no scan comes with a problem, raised above
    info: dict[str, Any] = {"source": str(scan.root), "layout": scan.layout}
    skipped = SkippedFiles(info)
    readable = _drop_unreadable(scan, skipped)
    label_of = {name: i for i, name in enumerate(scan.class_names)}
    parts: dict[str, tuple[list[Path], list[int]]] = {}
    for folder, classes in readable.items():
        items = [(p, label_of[c]) for c, paths in sorted(classes.items()) for p in paths]
        parts[folder] = ([p for p, _ in items], [label for _, label in items])
    if scan.layout == "class-folders":
        made = _carve(parts.pop("all"), SPLITS, split, split_seed)
        info.update(split=list(split), split_seed=split_seed)
    else:
        made = {SPLIT_FOLDERS[name.lower()]: part for name, part in parts.items()}
        info["split_folders"] = {SPLIT_FOLDERS[name.lower()]: name for name in parts}
        missing = [s for s in SPLITS if s not in made]
        if missing:
            fractions = [split[SPLITS.index(s)] for s in ("train", *missing)]
            made.update(_carve(made["train"], ("train", *missing), fractions, split_seed))
            info.update(split_carved_from_train=missing, split=list(split), split_seed=split_seed)
    _require_training_images(made["train"][1], scan)
    splits = {s: FolderSplit(*made[s], skipped) for s in SPLITS}
    info["split_sizes"] = {s: len(splits[s]) for s in SPLITS}
    return ImageDataset(
        name="folder",
        class_names=scan.class_names,
        # cast: FileSplit.images gives a DiskArray, which engines take wherever an array is annotated (see ImageSplit.images)
        splits=cast("dict[str, ImageSplit]", splits),
        domain=domain,
        imagenet_classes=parse_imagenet_classes(imagenet_classes, scan.class_names),
        info=info,
    )


def _carve(part, names, fractions, seed) -> dict[str, tuple[list[Path], list[int]]]:
    paths, labels = part
    indices = stratified_parts(labels, fractions, seed, names)
    return {name: ([paths[i] for i in idx], [labels[i] for i in idx])
            for name, idx in indices.items()}


def _drop_unreadable(scan: FolderScan, skipped: SkippedFiles) -> dict[str, dict[str, list[Path]]]:
    """Keep files whose header Pillow recognises; report the others in one warning."""
    bad: list[str] = []
    kept = {folder: {cls: [p for p in paths if not _unreadable(p, bad)]
                     for cls, paths in classes.items()}
            for folder, classes in scan.files.items()}
    if bad:
        log.warning("folder %s: skipped %d unreadable file(s): %s", scan.root, len(bad),
                    "; ".join(bad))
        skipped.add(bad)
    return kept


def _unreadable(path: Path, bad: list[str]) -> bool:
    from PIL import Image, UnidentifiedImageError

    reason = None
    if path.stat().st_size == 0:
        reason = "empty file"
    else:
        try:
            with open_regular(path) as f, Image.open(f):
                pass
        except NotRegularFile:
            reason = "not a regular file"
        except UnidentifiedImageError:
            reason = "not an image Pillow can read"
        except Exception as exc:  # Pillow raises many types for broken headers
            reason = type(exc).__name__
    if reason:
        bad.append(f"{path} ({reason})")
    return reason is not None


def _require_training_images(train_labels: list[int], scan: FolderScan) -> None:
    present = set(train_labels)
    empty = [name for i, name in enumerate(scan.class_names) if i not in present]
    if empty:
        raise PluginError(
            f"folder {scan.root}: class(es) {', '.join(map(repr, empty))} have no readable "
            "training image; add images or remove the class folder"
        )
