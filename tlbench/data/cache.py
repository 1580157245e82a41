"""On-disk cache of computed arrays (features, activations, decoded images).

Entries are keyed by the content hash of what produced them, written atomically
(temporary file, then ``os.replace``) and checked on read: an entry whose checksum does not
match is reported, deleted and recomputed. Entries are ``.npy`` files written and checked
chunk by chunk, and a hit is a :class:`~tlbench.data.splits.DiskArray` over the entry's file: no
entry is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from tlbench.data.splits import DiskArray, row_chunks
from tlbench.files import TEMP_PREFIX, atomic_write, read_regular
from tlbench.plugin.specs import Cell, UnusableDir, content_hash

log = logging.getLogger(__name__)
CACHE_ENV = "TLBENCH_CACHE_DIR"
CHECKSUM_CHUNK_BYTES = 16 * 2**20
_ENTRY_FOLDER = re.compile(r"[0-9a-f]{2}")
_ENTRY_FILE = re.compile(r"([0-9a-f]{64})\.(npy|json)")
_TEMP_FILE = re.compile(re.escape(TEMP_PREFIX) + r"[A-Za-z0-9_]+\.(npy|json|probe)")
_UNWRITABLE: set[str] = set()  # cache folders already warned about in this process
TIMINGS_FILE = "timings.json"
MAX_TIMINGS = 2000  # cells' timings kept (about 200 bytes each)
MAX_TIMINGS_BYTES = 2**20


def default_cache_dir() -> Path:
    """``$TLBENCH_CACHE_DIR``, else ``~/.cache/tlbench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlbench")


class ArrayCache:
    """``get_or_compute(description, compute)`` -> (rows, hit); ``compute`` returns an array or
    a :class:`~tlbench.data.splits.DiskArray`, and a hit is a :class:`~tlbench.data.splits.DiskArray`."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path_for(self, description: dict[str, Any]) -> Path:
        key = content_hash(description)
        return self.root / key[:2] / f"{key}.npy"

    def get_or_compute(self, description: dict[str, Any], compute: Callable[[], Any]) -> tuple[Any, bool]:
        cached = self.lookup(description)
        if cached is not None:
            return cached, True
        rows = compute()
        self.store(description, rows)
        return rows, False

    def lookup(self, description: dict[str, Any]) -> DiskArray | None:
        """The cached rows, or None (also for a corrupt entry, which is removed)."""
        return self._read(self.path_for(description))

    def store(self, description: dict[str, Any], rows: np.ndarray | DiskArray) -> None:
        """Write ``rows`` (an array or a :class:`~tlbench.data.splits.DiskArray`) chunk by chunk. The cache
        is an optimisation: an entry that cannot be written (a full disk, no permission) is left
        out, with one warning per cache folder, and the caller goes on with ``rows``."""
        path = self.path_for(description)
        try:
            self._write(path, rows, description)
        except OSError as exc:
            path.unlink(missing_ok=True)  # no entry without its checksum
            _warn_unwritable(self.root, exc)

    def _read(self, path: Path) -> DiskArray | None:
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            rows = open_npy(path)
            if _checksum(rows) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            return rows
        except Exception as exc:
            log.warning("cache entry %s is corrupt (%s); recomputing", path, exc)
            path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, rows: np.ndarray | DiskArray, description: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _digest(rows)

        def write_npy(f: IO[bytes]) -> None:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(rows.dtype)), "fortran_order": False,
                      "shape": tuple(rows.shape)}
            np.lib.format.write_array_header_1_0(f, header)
            for chunk in _hashed_chunks(rows, digest):
                f.write(chunk.data)

        atomic_write(path, write_npy, sync=False)  # checked on read
        meta = {"sha256": digest.hexdigest(), "shape": list(rows.shape), "dtype": str(rows.dtype),
                "description": description}
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, default=str).encode()), sync=False)

    def check_writable(self) -> None:
        """Raise :class:`UnusableDir` unless entries can be written under ``root``."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=TEMP_PREFIX, suffix=".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise UnusableDir(f"cannot write the feature cache {self.root} ({exc.strerror}); give --cache-dir "
                              f"(or ${CACHE_ENV}) a folder that can be created and written") from None

    def files(self) -> tuple[list[Path], list[Path]]:
        """(files tlbench wrote: entries and its temporary files, every other file) under ``root``."""
        if not self.root.exists():
            return [], []
        if not self.root.is_dir():
            raise UnusableDir(f"the feature cache {self.root} is a file, not a folder; give --cache-dir a folder")
        ours: list[Path] = []
        others: list[Path] = []
        for path in sorted(p for p in self.root.rglob("*") if not p.is_dir()):
            (ours if self._wrote(path) else others).append(path)
        return ours, others

    def _wrote(self, path: Path) -> bool:
        folder, temporary = path.parent, _TEMP_FILE.fullmatch(path.name)
        if folder == self.root:  # check_writable's probe, the timings file and its temporary file
            return path.name == TIMINGS_FILE or (temporary is not None and temporary.group(1) in ("probe", "json"))
        entry = _ENTRY_FILE.fullmatch(path.name)
        return (folder.parent == self.root and _ENTRY_FOLDER.fullmatch(folder.name) is not None
                and ((entry is not None and entry.group(1).startswith(folder.name))
                     or (temporary is not None and temporary.group(1) != "probe")))

    def info(self) -> dict[str, Any]:
        ours, _ = self.files()
        return {"path": str(self.root), "entries": len(_entries(ours)),
                "bytes": sum(f.stat().st_size for f in ours)}

    def clear(self) -> tuple[int, list[Path]]:
        """Remove every entry and temporary file tlbench wrote; return (entries removed, files kept)."""
        ours, others = self.files()
        for path in ours:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in ours} - {self.root}:
            if not any(folder.iterdir()):
                folder.rmdir()
        return len(_entries(ours)), others


def _warn_unwritable(root: Path, exc: OSError) -> None:
    """Warn, once per cache folder in this process, that the cache goes unwritten."""
    if str(root) not in _UNWRITABLE:
        _UNWRITABLE.add(str(root))
        log.warning("cannot write to the feature cache %s (%s); going on without caching there, which is slower: "
                    "free space there or give --cache-dir (or $%s) another folder", root, exc.strerror or exc, CACHE_ENV)


class Timings:
    """Measured time of finished cells, kept in the cache folder's ``timings.json`` (at most
    MAX_TIMINGS, the oldest dropped) to estimate a grid's time before it runs. A cell's timing
    is found by what sets its cost: dataset, backbone and strategy with their options, and the
    image size; the seed and the other training settings do not count (the epochs multiply)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.path = Path(root) / TIMINGS_FILE

    @staticmethod
    def key(cell: Cell) -> str:
        return content_hash({part: [entry.plugin, dict(entry.options)] for part, entry in
                             (("dataset", cell.dataset), ("backbone", cell.backbone), ("strategy", cell.strategy))}
                            | {"image_size": cell.settings.image_size})

    def read(self) -> dict[str, dict[str, float]]:
        """The well-formed timings; a missing, unreadable or malformed file counts as none."""
        try:
            data = json.loads(read_regular(self.path, MAX_TIMINGS_BYTES).decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        timings = data.get("timings") if isinstance(data, dict) else None
        return {key: value for key, value in timings.items() if _timing(value)} if isinstance(timings, dict) else {}

    def record(self, cell: Cell, record: Mapping[str, Any]) -> None:
        """Keep the timing of a finished ``ok`` cell; a file that cannot be written is warned about once."""
        metrics = record.get("metrics") or {}
        if record.get("status") != "ok" or not isinstance(metrics.get("wall_seconds"), (int, float)):
            return
        per_epoch = metrics.get("epoch_seconds") or 0.0
        timing = {"cell": cell.cell_id, "epoch_seconds": per_epoch,
                  "other_seconds": max(0.0, metrics["wall_seconds"] - per_epoch * (metrics.get("epochs") or 0))}
        timings, key = self.read(), self.key(cell)
        timings.pop(key, None)  # re-inserted last: the newest is kept longest
        timings[key] = timing
        text = json.dumps({"timings": dict(list(timings.items())[-MAX_TIMINGS:])}, indent=0)
        try:
            atomic_write(self.path, lambda f: f.write(text.encode()), sync=False)
        except OSError as exc:
            _warn_unwritable(self.path.parent, exc)

    def estimate(self, cells: Sequence[Cell]) -> tuple[float, int]:
        """(seconds, cells timed): the estimated time of the ``cells`` that have a timing."""
        timings = self.read()
        known = [(timings[self.key(c)], c.settings.epochs) for c in cells if self.key(c) in timings]
        return sum(t["other_seconds"] + t["epoch_seconds"] * epochs for t, epochs in known), len(known)


def _timing(value: Any) -> bool:
    """Whether a value read from ``timings.json`` is a timing: finite seconds >= 0."""
    return isinstance(value, dict) and all(
        isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool) and 0 <= value[k] < math.inf
        for k in ("epoch_seconds", "other_seconds"))


def _entries(files: list[Path]) -> set[str]:
    """Entry keys among the cache's own files (an entry is a ``.npy`` with its ``.json``)."""
    return {p.stem for p in files if _ENTRY_FILE.fullmatch(p.name)}


def open_npy(path: Path) -> DiskArray:
    """The rows of a ``.npy`` file, read as indexed (no pickled objects, C order only)."""
    file = open(path, "rb", buffering=0)  # noqa: SIM115 (the DiskArray returned owns it)
    try:
        version = np.lib.format.read_magic(file)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(file)
        if fortran_order or dtype.hasobject or not shape:
            raise ValueError("not a C-ordered array of rows")
        rows = DiskArray(shape[1:], dtype, shape[0], file=file, offset=file.tell())
        if os.fstat(file.fileno()).st_size != file.tell() + len(rows) * rows.row_bytes:
            raise ValueError("the file's size does not match its header")
        return rows
    except BaseException:
        file.close()
        raise


def _digest(rows: np.ndarray | DiskArray) -> hashlib._Hash:
    """SHA-256 started with the shape and dtype; the bytes follow chunk by chunk."""
    return hashlib.sha256(str((tuple(rows.shape), str(rows.dtype))).encode())


def _hashed_chunks(rows: np.ndarray | DiskArray, digest: hashlib._Hash) -> Iterator[np.ndarray]:
    """``rows`` chunk by chunk, each one added to ``digest`` before it is yielded."""
    for chunk in row_chunks(rows, CHECKSUM_CHUNK_BYTES):
        digest.update(chunk.reshape(-1).view(np.uint8))
        yield chunk


def _checksum(rows: np.ndarray | DiskArray) -> str:
    """SHA-256 of the shape, dtype and bytes of an array or :class:`~tlbench.data.splits.DiskArray`,
    read and hashed chunk by chunk."""
    digest = _digest(rows)
    for _ in _hashed_chunks(rows, digest):
        pass
    return digest.hexdigest()


