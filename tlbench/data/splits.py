"""Image splits held in memory or read from files, decoded to RGB uint8 and resized.

Dataset plugins build :class:`~tlbench.plugin.specs.ImageDataset` objects from these; engines only
ever call ``split.images(size)`` and ``split.labels``. A split of files is decoded in chunks
into a :class:`DiskArray` file, so memory holds one batch of pixels, not the split; so is a
split held in memory that is resized.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from tlbench.files import NotRegularFile, open_regular
from tlbench.plugin.specs import content_hash

if TYPE_CHECKING:
    import PIL.Image
    from numpy.typing import DTypeLike

log = logging.getLogger(__name__)

_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}
RESAMPLE_NAMES = tuple(_RESAMPLE)
DECODE_CHUNK = 64  # images decoded before they go to the file
SCALE_CHUNK_PIXELS = 1 << 20  # 16-bit pixels scaled to 8 bits at a time (8 MB of float64)
PIXEL_FLOOR, BUDGET_SIDES = 25_000_000, 16  # see pixel_budget
REDUCE_FROM, REDUCE_TO = 8, 4  # see bounded_image
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")  # Image.reduce averages pixels, not palette indices


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """Any Pillow image (grayscale, palette, RGBA, CMYK, 16-bit) as 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "PA") or (image.mode == "RGBA"):
        image = image.convert("RGBA")
        background = _white(image.size)
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        low = float(array.min())
        span = max(float(array.max()) - low, 1)
        scaled = np.empty(array.shape, np.uint8)
        step = max(1, SCALE_CHUNK_PIXELS // max(1, array.shape[1]))  # float64 rows a chunk at a time, not the image
        for first in range(0, len(array), step):
            scaled[first:first + step] = (array[first:first + step] - low) / span * 255
        image = _from_array(scaled)
    return image.convert("RGB")


def _white(size: tuple[int, int]) -> PIL.Image.Image:
    from PIL import Image

    return Image.new("RGB", size, (255, 255, 255))


def _from_array(array: np.ndarray) -> PIL.Image.Image:
    from PIL import Image

    return Image.fromarray(array)


def resize(image: PIL.Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """A Pillow image -> ``(size, size, 3)`` uint8, RGB, squashed to the square."""
    rgb = to_rgb(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), resample=_RESAMPLE[interpolation])
    return np.asarray(rgb, dtype=np.uint8)


class ArraySplit:
    """A split whose images are already in memory (NHWC or NHW uint8, any square size)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int] | np.ndarray, fingerprint: str | None = None):
        self._images = np.asarray(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self._images) != len(self.labels):
            raise ValueError(f"{len(self._images)} images but {len(self.labels)} labels")
        self.fingerprint = fingerprint or _array_fingerprint(self._images, self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, size: int, interpolation: str = "bilinear") -> np.ndarray | DiskArray:
        """The images as held, or resized into a :class:`DiskArray` (never a second copy in RAM)."""
        images = self._images
        if images.shape[1:3] == (size, size):
            return np.ascontiguousarray(_three_channels(images), dtype=np.uint8)
        resized = DiskArray((size, size, 3))
        for first in range(0, len(images), DECODE_CHUNK):
            resized.append(np.stack([resize(_from_array(img), size, interpolation)
                                     for img in _three_channels(images[first:first + DECODE_CHUNK])]))
        return resized

    def subset(self, indices: Sequence[int]) -> ArraySplit:
        idx = np.asarray(indices, dtype=np.int64)
        return ArraySplit(
            self._images[idx], self.labels[idx], content_hash([self.fingerprint, idx.tolist()])
        )


def _three_channels(images: np.ndarray) -> np.ndarray:
    return images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=-1)


class FileSplit:
    """A split of image files on disk; decoding happens on first use, per requested size.

    Files Pillow cannot decode (corrupt, truncated, empty, not an image) are dropped with one
    warning listing them, and their labels with them: after ``images(size)``, ``paths`` and
    ``labels`` are those of exactly the images returned (read ``labels`` after ``images``;
    :func:`tlbench.train.protocol.labeled` does). ``skipped`` keeps the dropped paths.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], labels: Sequence[int] | np.ndarray):
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} image files but {len(self.labels)} labels")
        self.skipped: list[str] = []
        self.fingerprint = content_hash([_file_identity(p) for p in self.paths] + self.labels.tolist())
        self._listed = (self.paths, self.labels)
        self._decoded: dict[tuple[int, str], tuple[DiskArray, list[int]]] = {}

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, size: int, interpolation: str = "bilinear") -> DiskArray:
        key = (size, interpolation)
        if key not in self._decoded:
            self._decoded[key] = self._decode(size, interpolation)
        decoded, keep = self._decoded[key]
        listed_paths, listed_labels = self._listed
        self.paths, self.labels = [listed_paths[i] for i in keep], listed_labels[keep]
        return decoded

    def _decode(self, size: int, interpolation: str) -> tuple[DiskArray, list[int]]:
        """The listed files that decode, and their positions in the listing; the files of a
        chunk decode on parallel threads (Pillow releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        from tlbench.plugin.engine import intra_op_threads

        paths = self._listed[0]
        decoded, keep, bad = DiskArray((size, size, 3)), [], []
        with ThreadPoolExecutor(max_workers=intra_op_threads(), thread_name_prefix="tlbench-decode") as pool:
            for first in range(0, len(paths), DECODE_CHUNK):
                chunk = paths[first:first + DECODE_CHUNK]
                images = []
                for i, (path, (image, error)) in enumerate(
                        zip(chunk, pool.map(lambda p: _decode_file(p, size, interpolation), chunk), strict=True), first):
                    if error is None:
                        assert image is not None  # _decode_file gives an image exactly when no error
                        images.append(image)
                        keep.append(i)
                    else:
                        bad.append(f"{path} ({error})")
                if images:
                    decoded.append(np.stack(images))
        if bad:
            log.warning("skipped %d unreadable image file(s): %s", len(bad), "; ".join(bad))
            self.skipped = list(dict.fromkeys(self.skipped + bad))
        return decoded, keep

    def subset(self, indices: Sequence[int]) -> FileSplit:
        """The files at ``indices`` of ``paths`` as they are now (after a decode: of the files kept)."""
        idx = [int(i) for i in indices]
        return FileSplit([self.paths[i] for i in idx], self.labels[idx])


class DiskArray:
    """Rows of one shape and dtype in a file, read back only as indexed: a split's decoded
    images, or a frozen prefix's outputs (its features or activations).

    ``rows[i:j]`` and ``rows[index_array]`` read just those rows (``os.preadv``, no memory map,
    whose touched pages would stay resident), so a batch at a time is in memory. By default
    the file is anonymous in ``$TMPDIR`` (point it at a disk, not a RAM-backed ``/tmp``, for
    large data) and disappears with the object or the process; ``file`` and ``offset`` read
    rows from an open file instead (a cache entry). ``np.asarray`` reads everything.
    """

    def __init__(self, row_shape: Sequence[int], dtype: DTypeLike = np.uint8, rows: int = 0, *, file: IO[bytes] | None = None,
                 offset: int = 0):
        self._file = file if file is not None else tempfile.TemporaryFile(prefix="tlbench-rows-", buffering=0)  # noqa: SIM115 (kept)
        self.dtype = np.dtype(dtype)
        self.shape: tuple[int, ...] = (rows, *(int(n) for n in row_shape))
        self._offset = offset
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if file is None and rows:
            os.ftruncate(self._file.fileno(), rows * self.row_bytes)  # zeros, filled by __setitem__

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def append(self, rows: np.ndarray) -> None:
        """Add ``rows`` (same row shape) at the end."""
        rows = self._checked(rows)
        self._write(rows, len(self))
        self.shape = (len(self) + len(rows), *self.shape[1:])

    def __setitem__(self, index: int, row: np.ndarray) -> None:
        """Write one row in place (safe from several threads at once)."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range for {len(self)} rows")
        self._write(self._checked(np.asarray(row)[None]), index)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            one: np.ndarray = self[np.array([index])][0]  # numpy's stubs: indexing gives Any
            return one
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = np.empty((max(0, stop - start), *self.shape[1:]), self.dtype)
            self._read(out, start)
            return out
        index = np.asarray(index)
        if index.dtype.kind not in "biu":
            raise TypeError(f"rows are indexed by an integer, a slice or an index array, not {index!r}")
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.where(index < 0, index + len(self), index).astype(np.int64)
        if len(index) and not (index.min() >= 0 and index.max() < len(self)):
            raise IndexError(f"index out of range for {len(self)} rows")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for row, i in enumerate(index):
            self._read(out[row: row + 1], int(i))
        return out

    def _checked(self, rows: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {rows.shape[1:]} in a file of {self.shape[1:]}")
        return rows

    def _write(self, rows: np.ndarray, first: int) -> None:
        if not rows.size:
            return
        # ignored: numpy's stubs give ndarray __buffer__ (the Buffer protocol) only for Python >= 3.12
        view, offset = memoryview(rows).cast("B"), self._offset + first * self.row_bytes  # type: ignore[arg-type]
        while view.nbytes:
            written = os.pwrite(self._file.fileno(), view, offset)
            view, offset = view[written:], offset + written

    def _read(self, out: np.ndarray, first: int) -> None:
        if not out.size:
            return
        # ignored: numpy's stubs give ndarray __buffer__ (the Buffer protocol) only for Python >= 3.12
        view, offset = memoryview(out).cast("B"), self._offset + first * self.row_bytes  # type: ignore[arg-type]
        while view.nbytes:
            got = os.preadv(self._file.fileno(), [view], offset)
            if got <= 0:
                raise OSError(f"the file of rows ended {view.nbytes} bytes early")
            view, offset = view[got:], offset + got

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def row_chunks(rows: np.ndarray | DiskArray, chunk_bytes: int) -> Iterator[Any]:  # arrays; Any as hashlib's Buffer needs
    """``rows`` (an array or a :class:`DiskArray`) as contiguous arrays of about ``chunk_bytes``."""
    row_bytes = max(1, int(np.prod(rows.shape[1:], dtype=np.int64)) * np.dtype(rows.dtype).itemsize)
    step = max(1, chunk_bytes // row_bytes)
    for first in range(0, len(rows), step):
        yield np.ascontiguousarray(rows[first:first + step])


class OverPixelBudget(ValueError):
    """An image file with more pixels than :func:`pixel_budget` allows for the size asked for."""


def pixel_budget(size: int) -> int:
    """The most pixels decoded from one image file for images of ``size`` x ``size``: (16 x size)²,
    at least 25 million (a 5000 x 5000 photo at any size), at most Pillow's own limit
    (``Image.MAX_IMAGE_PIXELS``, 89 million). 224 px: 25 million; 512 px: 67 million."""
    from PIL import Image

    return min(int(Image.MAX_IMAGE_PIXELS or PIXEL_FLOOR), max(PIXEL_FLOOR, (BUDGET_SIDES * size) ** 2))


class _PixelsInFlight:
    """The pixels that decoding threads hold at once: an image waits until the others' pixels
    and its own fit in its budget (one alone always proceeds), so two big files never decode together."""

    def __init__(self) -> None:
        self._held, self._free = 0, threading.Condition()

    @contextmanager
    def holding(self, pixels: int, budget: int) -> Iterator[None]:
        with self._free:
            self._free.wait_for(lambda: not self._held or self._held + pixels <= budget)
            self._held += pixels
        try:
            yield
        finally:
            with self._free:
                self._held -= pixels
                self._free.notify_all()


_IN_FLIGHT = _PixelsInFlight()


@contextmanager
def bounded_image(path: str, size: int) -> Iterator[PIL.Image.Image]:
    """The image file at ``path`` loaded to be resized to ``size``, in bounded memory.

    Only a regular file is opened (:func:`tlbench.files.open_regular`). An image at least
    8 x ``size`` on both sides is much larger than the target: a JPEG is decoded reduced
    (``Image.draft``, DCT scaling) and another format box-reduced (``Image.reduce``) to at
    least 4 x ``size``; smaller images decode exactly as they are. One with more pixels than
    :func:`pixel_budget` (after a JPEG's reduction) is :class:`OverPixelBudget` before any
    pixel is decoded, and the images that threads decode at once share that budget."""
    from PIL import Image

    budget = pixel_budget(size)
    with open_regular(path) as f, Image.open(f) as image:
        if min(image.size) >= REDUCE_FROM * size:
            image.draft(None, (REDUCE_TO * size, REDUCE_TO * size))  # JPEG (and MPO) only: others ignore it
        width, height = image.size
        if width * height > budget:
            raise OverPixelBudget(f"{width} x {height} pixels, over the pixel budget of {budget:,} "
                                  f"for {size}-pixel images; shrink it first")
        with _IN_FLIGHT.holding(width * height, budget):
            image.load()
            if min(image.size) >= REDUCE_FROM * size and image.mode in REDUCIBLE_MODES:
                yield image.reduce(min(image.size) // (REDUCE_TO * size))
            else:
                yield image


def _decode_file(path: str, size: int, interpolation: str) -> tuple[np.ndarray | None, str | None]:
    """(the image at ``size``, None), or (None, why) for a file that is not a regular file,
    is over the pixel budget or that Pillow cannot decode. A MemoryError is raised: it is about
    the size asked for, not the file, and fails the cell."""
    try:
        with bounded_image(path, size) as image:
            return resize(image, size, interpolation), None
    except MemoryError:
        raise
    except OverPixelBudget as exc:
        return None, str(exc)
    except NotRegularFile:
        return None, "not a regular file"
    except Exception as exc:  # Pillow raises many types for bad files
        return None, type(exc).__name__


def _file_identity(path: str) -> list[Any]:
    stat = os.stat(path)
    return [path, stat.st_size, int(stat.st_mtime)]


def _array_fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(labels.tobytes())
    return digest.hexdigest()


def stratified_split(
    labels: Sequence[int] | np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Indices for each part, every class divided by ``fractions`` (which sum to 1)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    cumulative = np.cumsum(fractions)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        bounds = np.round(cumulative * len(idx)).astype(int)
        start = 0
        for part, stop in zip(parts, bounds, strict=True):
            part.extend(idx[start:stop].tolist())
            start = stop
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def train_subset(labels: Sequence[int] | np.ndarray, train_size: Any, seed: int) -> np.ndarray:
    """Stratified subset of training indices: ``all``, an int per class, or a fraction."""
    labels = np.asarray(labels)
    if train_size in (None, "all"):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        count = int(train_size) if isinstance(train_size, int) else round(train_size * len(idx))
        chosen.extend(idx[: max(1, count)].tolist())
    return np.sort(np.asarray(chosen, dtype=np.int64))
