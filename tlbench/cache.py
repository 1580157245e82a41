"""On-disk cache of computed arrays (features, activations, decoded images).

Entries are keyed by the content hash of what produced them, written atomically
(temporary file, then ``os.replace``) and checked on read: an entry whose checksum does not
match is reported, deleted and recomputed.
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
    """``get_or_compute(description, compute)`` -> (array, hit)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path_for(self, description: dict[str, Any]) -> Path:
        key = content_hash(description)
        return self.root / key[:2] / f"{key}.npy"

    def get_or_compute(
        self, description: dict[str, Any], compute: Callable[[], np.ndarray]
    ) -> tuple[np.ndarray, bool]:
        cached = self.lookup(description)
        if cached is not None:
            return cached, True
        array = np.ascontiguousarray(compute())
        self.store(description, array)
        return array, False

    def lookup(self, description: dict[str, Any]) -> np.ndarray | None:
        """The cached array, or None (also for a corrupt entry, which is removed)."""
        return self._read(self.path_for(description))

    def store(self, description: dict[str, Any], array: np.ndarray) -> None:
        self._write(self.path_for(description), np.ascontiguousarray(array), description)

    def _read(self, path: Path) -> np.ndarray | None:
        meta_path = path.with_suffix(".json")
        if not path.exists() or not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            array = np.load(path, allow_pickle=False)
            if _checksum(array) != meta["sha256"]:
                raise ValueError("checksum mismatch")
            return array
        except Exception as exc:
            log.warning("cache entry %s is corrupt (%s); recomputing", path, exc)
            path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, array: np.ndarray, description: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"sha256": _checksum(array), "shape": list(array.shape), "dtype": str(array.dtype),
                "description": description}
        atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
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


def _checksum(array: np.ndarray) -> str:
    """SHA-256 of the shape, dtype and bytes, hashed chunk by chunk: no copy of the array."""
    digest = hashlib.sha256(str((array.shape, str(array.dtype))).encode())
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    for start in range(0, len(data), CHECKSUM_CHUNK_BYTES):
        digest.update(data[start:start + CHECKSUM_CHUNK_BYTES])
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
