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
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .types import content_hash

log = logging.getLogger(__name__)
CACHE_ENV = "TLBENCH_CACHE_DIR"


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
        _atomic_write(path, lambda f: np.save(f, array, allow_pickle=False))
        _atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta, default=str).encode()))

    def info(self) -> dict[str, Any]:
        files = list(self.root.rglob("*.npy")) if self.root.exists() else []
        return {"path": str(self.root), "entries": len(files),
                "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        count = self.info()["entries"]
        if self.root.exists():
            shutil.rmtree(self.root)
        return count


def _checksum(array: np.ndarray) -> str:
    digest = hashlib.sha256(str((array.shape, str(array.dtype))).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _atomic_write(path: Path, write: Callable) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
