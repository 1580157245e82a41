"""tensorflow-datasets data: read when prepared, downloaded once when online.

``open_builder`` reads prepared data from disk. Data that is not there is downloaded and
prepared (``prepare=True``) when a short probe reaches the internet; offline it fails within
seconds, with the command that prepares it elsewhere, instead of tfds retrying for minutes.
:class:`TfdsSplit` streams a split, decodes and resizes it in batches and caches the
resulting uint8 images with :class:`tlbench.data.cache.ArrayCache` into a file (a
:class:`tlbench.data.splits.DiskArray`), so a split that does not fit in memory still reaches
engines, a batch at a time.
"""

from __future__ import annotations

import difflib
import io
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np

from tlbench.data.cache import ArrayCache, default_cache_dir
from tlbench.data.downloads import download_blocker
from tlbench.data.splits import DiskArray, resize
from tlbench.plugin.frameworks import prepare_tensorflow_import
from tlbench.plugin.specs import ImageDataset, ImageSplit, PluginError, Unprepared, content_hash, quote

from .splitting import SPLITS

# Index rows: example number in the tfds split, crop box in pixels (-1: whole image), label.
EXAMPLE, LEFT, TOP, RIGHT, BOTTOM, LABEL = range(6)
DECODE_BATCH = 256
INSTALL_HINT = "pip install 'tlbench[tfds]'"
PROBE_URL = "https://storage.googleapis.com/tfds-data/"  # tfds's own data bucket

log = logging.getLogger(__name__)


class NotPrepared(PluginError):
    """The data is not on this machine and cannot be downloaded now."""


def problems_of(action) -> list[str]:
    """A dataset check's problems: ``action()``'s PluginError, :class:`Unprepared` when the data is only missing here."""
    try:
        action()
    except NotPrepared as exc:
        return [Unprepared(exc)]
    except PluginError as exc:
        return [str(exc)]
    return []


def import_tfds(dataset: str):
    """tensorflow-datasets itself, which imports TensorFlow only when a builder reads data."""
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise PluginError(f"{dataset}: needs tensorflow-datasets; {INSTALL_HINT}") from None
    return tfds


def open_builder(dataset: str, tfds_name: str, data_dir: str | None, *, prepare: bool):
    """The tfds builder of ``tfds_name``; with ``prepare``, data not on disk is downloaded.

    Prepared data (the ``dataset_info.json`` that tfds writes last) is only read. Missing data
    is probed for first: offline that is :class:`NotPrepared` saying how to prepare it, and with
    no ``<data_dir>/<name>`` folder it comes before TensorFlow (and torchvision, see
    ``prepare_tensorflow_import``) are imported, so it takes about a second. Online, checking
    (``prepare=False``) accepts it and loading downloads and prepares it once into the data dir.
    """
    tfds = import_tfds(dataset)
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR")  # read now, not at tfds import
    root = Path(data_dir or "~/tensorflow_datasets").expanduser()
    base = tfds_name.split("/")[0].split(":")[0]
    folder_missing = not (root / base).is_dir()
    if folder_missing:  # probed before tfds imports the builder code
        if base not in tfds.list_builders(with_community_datasets=False):
            raise PluginError(_unknown(dataset, tfds, tfds_name, root))
        _check_config(dataset, tfds, tfds_name)
        _require_download(dataset, tfds_name, root, f"no folder {root / base}")
    prepare_tensorflow_import()  # the builder may import TensorFlow from here on
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise PluginError(_unknown(dataset, tfds, tfds_name, root)) from None
    except Exception as exc:  # bad config or version in the name, unreadable metadata
        raise PluginError(
            f"{dataset}: cannot open tfds dataset {tfds_name!r}{_configs(tfds, tfds_name)}: "
            f"{str(exc)[:300]}"
        ) from None
    if builder.is_prepared():
        return builder
    config = builder.builder_config.name if builder.builder_config else None
    name = f"{builder.name}/{config}" if config else builder.name
    instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if not folder_missing:
        _require_download(dataset, name, root, f"{builder.data_path} has no dataset_info.json", instructions)
    if prepare:
        log.warning("%s: downloading and preparing tfds dataset %s into %s (once)", dataset, name, root)
        try:
            builder.download_and_prepare()
        except Exception as exc:  # network, checksum and manual-download errors all end here
            raise PluginError(
                f"{dataset}: downloading and preparing tfds dataset {name} into {root} failed: "
                f"{' '.join(str(exc).split())[:400]}. Prepare it by hand: {_prepare_command(name, root, instructions)}"
            ) from exc
    return builder


def _require_download(dataset: str, name: str, root: Path, missing: str, instructions: str | None = None) -> None:
    """NotPrepared when the data is missing and cannot be downloaded now."""
    blocker = download_blocker(PROBE_URL)
    if blocker:
        raise NotPrepared(
            f"{dataset}: tfds dataset {name} is not prepared in {root} ({missing}) and cannot be "
            f"downloaded now ({PROBE_URL}: {blocker}). Prepare it on a machine with internet: "
            f"{_prepare_command(name, root, instructions)}, then copy that folder here and point "
            f"the dataset option data_dir (or TFDS_DATA_DIR) at it."
        )


def _prepare_command(name: str, root: Path, instructions: str | None) -> str:
    manual = "`--manual_dir FOLDER` for datasets that need a manual download"
    if instructions:
        manual = f"`--manual_dir FOLDER` holding: {' '.join(instructions.split())[:400]}"
    return f"`tfds build {name} --data_dir {root}` (add {manual})"


def _unknown(dataset: str, tfds, tfds_name: str, root: Path) -> str:
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(tfds_name.split("/")[0], known, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return (f"{dataset}: tfds knows no dataset {tfds_name!r} and none is prepared in {root}"
            f"{hint} (names as in https://www.tensorflow.org/datasets/catalog)")


def _check_config(dataset: str, tfds, tfds_name: str) -> None:
    """A config in ``name/config`` must be one the builder code defines."""
    base, _, rest = tfds_name.partition("/")
    config = rest.split(":")[0].split("/")[0]
    configs = tfds.builder_cls(base.split(":")[0]).builder_configs
    if config and "=" not in config and configs and config not in configs:
        raise PluginError(f"{dataset}: tfds dataset {base} has no config {config!r}"
                          f"{_configs(tfds, tfds_name)}")


def _configs(tfds, tfds_name: str) -> str:
    try:
        configs = list(tfds.builder_cls(tfds_name.split("/")[0].split(":")[0]).builder_configs)
    except Exception:  # no builder code: the name itself is the problem
        return ""
    return f" (its configs: {', '.join(configs)})" if configs else ""


def default_splits(available: Sequence[str]) -> dict[str, str] | None:
    """train/valid/test as tfds split strings, carving what is missing from train."""
    names = set(available)
    valid = next((v for v in ("validation", "valid", "val") if v in names), None)
    if "train" in names:
        if valid and "test" in names:
            return {"train": "train", "valid": valid, "test": "test"}
        held_out = "test" if "test" in names else valid
        if held_out:
            return {"train": "train[:90%]", "valid": "train[90%:]", "test": held_out}
        return {"train": "train[:70%]", "valid": "train[70%:85%]", "test": "train[85%:]"}
    if len(names) == 1:
        (only,) = names
        return {"train": f"{only}[:70%]", "valid": f"{only}[70%:85%]", "test": f"{only}[85%:]"}
    return None


def resolve_splits(
    dataset: str, builder, splits: Any, default: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """The ``splits`` option (or the default for this builder), checked against its splits;
    None while the data is not prepared (its splits are known only then)."""
    if not builder.is_prepared():
        return None
    available = list(builder.info.splits)
    chosen = splits if splits is not None else (default or default_splits(available))
    expected = (f"a mapping {{train: ..., valid: ..., test: ...}} of tfds split strings such as "
                f"'train[:90%]'; this dataset has splits {available}")
    if not isinstance(chosen, Mapping) or set(chosen) != set(SPLITS):
        raise PluginError(f"{dataset}: option splits must be {expected}; got {quote(chosen)}")
    for part, spec in chosen.items():
        if not isinstance(spec, str) or spec.split("[")[0] not in available:
            raise PluginError(f"{dataset}: option splits[{part}] = {quote(spec)} names no split; "
                              f"it must be {expected}")
    return {part: chosen[part] for part in SPLITS}


def class_label(dataset: str, features, path: Sequence[str]):
    """The ClassLabel feature at ``path`` (e.g. ``["objects", "label"]``), or PluginError."""
    feature = features
    for key in path:
        try:
            feature = feature[key]
        except (KeyError, TypeError):
            raise PluginError(f"{dataset}: the tfds dataset has no feature {'/'.join(path)!r}; "
                              f"its features are {list(features.keys())}") from None
    if not hasattr(feature, "names"):
        raise PluginError(f"{dataset}: feature {'/'.join(path)!r} is not a ClassLabel")
    return feature


def image_cache(cache_dir: str | None) -> ArrayCache:
    return ArrayCache(cache_dir or default_cache_dir())


@dataclass(frozen=True)
class TfdsSource:
    """A prepared tfds dataset; ``identity`` (name, version, split sizes) keys its caches."""

    dataset: str
    builder: Any = field(repr=False)
    image_key: str
    identity: Mapping[str, Any]

    @classmethod
    def of(cls, dataset: str, builder, image_key: str) -> TfdsSource:
        sizes = {name: [s.num_examples, s.num_bytes] for name, s in builder.info.splits.items()}
        return cls(dataset, builder, image_key, {"tfds": builder.info.full_name, "splits": sizes})

    def examples(self, split: str, decoders) -> Iterator[dict[str, Any]]:
        """The split's examples in their stored order, as numpy values."""
        tfds = import_tfds(self.dataset)
        dataset = self.builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
        return tfds.as_numpy(dataset)

    def encoded_images(self, split: str) -> Iterator[dict[str, Any]]:
        """Examples with the image left as its encoded bytes (decoded later by Pillow)."""
        tfds = import_tfds(self.dataset)
        return self.examples(split, {self.image_key: tfds.decode.SkipDecoding()})


@dataclass(frozen=True)
class ClassIndex:
    """One row per example, labelled by the ClassLabel feature ``label_key``."""

    label_key: str = "label"

    @property
    def description(self) -> dict[str, Any]:
        return {"kind": "class", "label_key": self.label_key}

    def index(self, source: TfdsSource, split: str) -> np.ndarray:
        tfds = import_tfds(source.dataset)
        examples = source.examples(split, tfds.decode.PartialDecoding({self.label_key: True}))
        labels = np.fromiter((ex[self.label_key] for ex in examples), dtype=np.int64)
        rows = np.full((len(labels), 6), -1, dtype=np.int64)
        rows[:, EXAMPLE] = np.arange(len(labels))
        rows[:, LABEL] = labels
        return rows


@dataclass(eq=False)
class SplitSource:
    """One tfds split string (e.g. ``train[:90%]``) as the ``part`` train/valid/test."""

    source: TfdsSource
    split: str
    indexer: Any  # ClassIndex | crops.CropIndex
    cache: ArrayCache
    part: str
    info: dict[str, Any]  # the dataset's info, updated in place

    @property
    def fingerprint(self) -> str:
        return content_hash(["tfds", self.source.identity, self.split, self.indexer.description])

    @cached_property
    def rows(self) -> np.ndarray:
        description = {"kind": "tfds-index", "split": self.fingerprint}
        rows, _ = self.cache.get_or_compute(
            description, lambda: self.indexer.index(self.source, self.split)
        )
        return np.asarray(rows)  # the index table: a few integers per example


class TfdsSplit:
    """An ImageSplit over a tfds split (or a subset of it), decoded in batches and cached."""

    def __init__(self, split: SplitSource, selection: np.ndarray | None = None):
        self.split = split
        self._selection = selection
        self.fingerprint = (split.fingerprint if selection is None
                            else content_hash([split.fingerprint, selection.tolist()]))
        self._images: dict[tuple[int, str], DiskArray] = {}

    @property
    def rows(self) -> np.ndarray:
        rows = self.split.rows
        return rows if self._selection is None else rows[self._selection]

    @property
    def labels(self) -> np.ndarray:
        return self.rows[:, LABEL]

    def __len__(self) -> int:
        return len(self.rows)

    def images(self, size: int, interpolation: str = "bilinear") -> DiskArray:
        key = (size, interpolation)
        if key not in self._images:
            description = {"kind": "tfds-images", "split": self.fingerprint, "size": size,
                           "interpolation": interpolation}
            array, hit = self.split.cache.get_or_compute(
                description, lambda: decode_rows(self.split, self.rows, size, interpolation)
            )
            self.split.info["image_cache"][self.split.part] = "hit" if hit else "miss"
            self._images[key] = array
        return self._images[key]

    def subset(self, indices: Sequence[int]) -> TfdsSplit:
        idx = np.asarray(indices, dtype=np.int64)
        return TfdsSplit(self.split, idx if self._selection is None else self._selection[idx])


def decode_rows(split: SplitSource, rows: np.ndarray, size: int, interpolation: str) -> DiskArray:
    """Stream the split once; decode, crop and resize the wanted examples in batches, each
    image written to its row of a file."""
    out = DiskArray((size, size, 3), np.uint8, len(rows))
    positions: dict[int, list[int]] = {}
    for position, example in enumerate(rows[:, EXAMPLE].tolist()):
        positions.setdefault(example, []).append(position)
    if not positions:
        return out
    last = max(positions)

    def fill(item: tuple[bytes, list[int]]) -> None:
        from PIL import Image

        data, wanted = item
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            for position in wanted:
                left, top, right, bottom = (int(v) for v in rows[position, LEFT:BOTTOM + 1])
                part = image if left < 0 else image.crop((left, top, right, bottom))
                out[position] = resize(part, size, interpolation)

    batch: list[tuple[bytes, list[int]]] = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for number, example in enumerate(split.source.encoded_images(split.split)):
            if number in positions:
                batch.append((example[split.source.image_key], positions[number]))
            if len(batch) == DECODE_BATCH or (number == last and batch):
                list(pool.map(fill, batch))
                batch = []
            if number >= last:
                return out
    raise PluginError(
        f"{split.source.dataset}: tfds split {split.split!r} ended before example {last}; "
        f"the prepared data changed since it was indexed; delete the cache {split.cache.root}"
    )


def tfds_dataset(
    name: str,
    builder,
    source: TfdsSource,
    splits: Mapping[str, str],
    indexer: Any,
    cache_dir: str | None,
    class_names: Sequence[str],
    domain: str,
    imagenet_classes: Mapping[str, tuple[int, ...]] | None,
) -> ImageDataset:
    """An ImageDataset of lazily decoded, cached TfdsSplits (indexing happens here)."""
    cache = image_cache(cache_dir)
    info: dict[str, Any] = {"source": f"tfds:{builder.info.full_name}",
                            "data_dir": str(builder.data_path), "tfds_splits": dict(splits),
                            "cache_dir": str(cache.root),
                            "image_cache": {}}  # filled in place as splits decode
    parts = {part: TfdsSplit(SplitSource(source, spec, indexer, cache, part, info))
             for part, spec in splits.items()}
    info["split_sizes"] = {part: len(split) for part, split in parts.items()}
    # cast: TfdsSplit.images gives a DiskArray, which engines take wherever an array is annotated (see ImageSplit.images)
    return ImageDataset(name=name, class_names=tuple(class_names), splits=cast("dict[str, ImageSplit]", parts), domain=domain,
                        imagenet_classes=imagenet_classes, info=info)
