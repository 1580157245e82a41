"""On-disk cache of computed arrays (features, activations, decoded images).

Entries are keyed by the content hash of what produced them, written atomically
(temporary file, then ``os.replace``) and checked on read: an entry whose checksum does not
match is reported, deleted and recomputed. Entries are ``.npy`` files written and checked
chunk by chunk, and a hit is a :class:`~tlbench.data.DiskArray` over the entry's file: no
entry is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data import DiskArray, row_chunks
from .types import UnusableDir, content_hash

log = logging.getLogger(__name__)
CACHE_ENV = "TLBENCH_CACHE_DIR"
TEMP_PREFIX = ".tmp-"
CHECKSUM_CHUNK_BYTES = 16 * 2**20
_ENTRY_FOLDER = re.compile(r"[0-9a-f]{2}")
_ENTRY_FILE = re.compile(r"([0-9a-f]{64})\.(npy|json)")
_TEMP_FILE = re.compile(re.escape(TEMP_PREFIX) + r"[A-Za-z0-9_]+\.(npy|json|probe)")


def default_cache_dir() -> Path:
    """``$TLBENCH_CACHE_DIR``, else ``~/.cache/tlbench``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlbench")


class ArrayCache:
    """``get_or_compute(description, compute)`` -> (rows, hit); ``compute`` returns an array or
    a :class:`~tlbench.data.DiskArray`, and a hit is a :class:`~tlbench.data.DiskArray`."""

    def __init__(self, root: str | os.PathLike):
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

    def store(self, description: dict[str, Any], rows) -> None:
        """Write ``rows`` (an array or a :class:`~tlbench.data.DiskArray`) chunk by chunk."""
        self._write(self.path_for(description), rows, description)

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

    def _write(self, path: Path, rows, description: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = _digest(rows)

        def write_npy(f) -> None:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(rows.dtype)), "fortran_order": False,
                      "shape": tuple(rows.shape)}
            np.lib.format.write_array_header_1_0(f, header)
            for chunk in _hashed_chunks(rows, digest):
                f.write(chunk.data)

        atomic_write(path, write_npy)
        meta = {"sha256": digest.hexdigest(), "shape": list(rows.shape), "dtype": str(rows.dtype),
                "description": description}
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, default=str).encode()))

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
        ours, others = [], []
        for path in sorted(p for p in self.root.rglob("*") if not p.is_dir()):
            (ours if self._wrote(path) else others).append(path)
        return ours, others

    def _wrote(self, path: Path) -> bool:
        folder, temporary = path.parent, _TEMP_FILE.fullmatch(path.name)
        if folder == self.root:  # only check_writable's probe
            return temporary is not None and temporary.group(1) == "probe"
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


def _entries(files: list[Path]) -> set[str]:
    """Entry keys among the cache's own files (an entry is a ``.npy`` with its ``.json``)."""
    return {p.stem for p in files if _ENTRY_FILE.fullmatch(p.name)}


def open_npy(path: Path) -> DiskArray:
    """The rows of a ``.npy`` file, read as indexed (no pickled objects, C order only)."""
    file = open(path, "rb", buffering=0)
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


def _digest(rows) -> "hashlib._Hash":
    """SHA-256 started with the shape and dtype; the bytes follow chunk by chunk."""
    return hashlib.sha256(str((tuple(rows.shape), str(rows.dtype))).encode())


def _hashed_chunks(rows, digest):
    """``rows`` chunk by chunk, each one added to ``digest`` before it is yielded."""
    for chunk in row_chunks(rows, CHECKSUM_CHUNK_BYTES):
        digest.update(chunk.reshape(-1).view(np.uint8))
        yield chunk


def _checksum(rows) -> str:
    """SHA-256 of the shape, dtype and bytes of an array or :class:`~tlbench.data.DiskArray`,
    read and hashed chunk by chunk."""
    digest = _digest(rows)
    for _ in _hashed_chunks(rows, digest):
        pass
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` through a temporary file beside it and ``os.replace``: whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX, suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
