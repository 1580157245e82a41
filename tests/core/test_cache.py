"""ArrayCache: entries are checked on read and recomputed when corrupt; clear removes only its own files."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from support import PEAK_MIB, tlbench
from tlbench.data.cache import ArrayCache

ARRAY = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def computed(log: list):
    def compute():
        log.append("computed")
        return ARRAY.copy()
    return compute


def test_an_entry_larger_than_one_checksum_chunk_keeps_its_whole_array_checksum_and_catches_a_late_flip(
        tmp_path, monkeypatch):
    import hashlib
    import json

    import tlbench.data.cache
    monkeypatch.setattr(tlbench.data.cache, "CHECKSUM_CHUNK_BYTES", 40)  # ARRAY's 96 bytes: three chunks
    cache = ArrayCache(tmp_path)
    cache.store({"n": 2}, ARRAY)
    whole = hashlib.sha256(str((ARRAY.shape, str(ARRAY.dtype))).encode())
    whole.update(ARRAY.tobytes())  # what entries written before chunked hashing hold: they stay hits
    assert json.loads(cache.path_for({"n": 2}).with_suffix(".json").read_text())["sha256"] == whole.hexdigest()
    assert np.array_equal(cache.lookup({"n": 2}), ARRAY)
    path = cache.path_for({"n": 2})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # in the last chunk
    path.write_bytes(bytes(data))
    assert cache.lookup({"n": 2}) is None and not path.exists()


def test_an_entry_written_whole_by_numpy_is_read_back_as_rows_from_its_file(tmp_path):
    """Entries of earlier versions (``np.save``, the same checksum) stay hits, read as indexed."""
    import json

    from tlbench.data.cache import _checksum
    from tlbench.data.splits import DiskArray

    cache = ArrayCache(tmp_path)
    path = cache.path_for({"n": 3})
    path.parent.mkdir(parents=True)
    np.save(path, ARRAY)
    path.with_suffix(".json").write_text(json.dumps({"sha256": _checksum(ARRAY), "description": {"n": 3}}))
    rows = cache.lookup({"n": 3})
    assert isinstance(rows, DiskArray) and rows.shape == ARRAY.shape and rows.dtype == ARRAY.dtype
    np.testing.assert_array_equal(rows[1:], ARRAY[1:])
    np.testing.assert_array_equal(rows[np.array([1, 0])], ARRAY[[1, 0]])
    with pytest.raises(TypeError, match="indexed by"):
        rows[..., 0]
    path.write_bytes(path.read_bytes()[:-4])  # torn: shorter than its header says
    assert cache.lookup({"n": 3}) is None and not path.exists()


def test_storing_and_reading_an_entry_holds_a_chunk_not_the_entry(tmp_path):
    """A 128 MiB entry stored from a file of rows, found again and read a batch at a time: the
    process grows by a few checksum chunks (16 MiB), not by the entry."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from tlbench.data.cache import ArrayCache
        from tlbench.data.splits import DiskArray
        rows = DiskArray((1024,), np.float32)
        for value in range(32):
            rows.append(np.full((1024, 1024), value, np.float32))  # 4 MiB at a time
        cache = ArrayCache(sys.argv[1])
        before = PEAK_MIB
        cache.store({"n": 4}, rows)
        found = cache.lookup({"n": 4})
        total = sum(float(found[i:i + 256].sum()) for i in range(0, len(found), 256))
        assert total == sum(range(32)) * 1024 * 1024, total
        print(PEAK_MIB - before)
    """).replace("PEAK_MIB", PEAK_MIB)  # the child's own peak (support.PEAK_MIB)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 128 / 2, f"peak RSS grew by {result.stdout.strip()} MiB"


@pytest.fixture(scope="module")
def module_cache_dir():
    """What a module-scoped fixture (set up before any test's own cache) sees as the cache."""
    return os.environ.get("TLBENCH_CACHE_DIR")


def test_module_scoped_fixtures_cache_in_a_temporary_folder_not_the_home_cache(module_cache_dir,
                                                                                tmp_path_factory):
    assert module_cache_dir is not None
    assert Path(module_cache_dir).is_relative_to(tmp_path_factory.getbasetemp())


def test_a_corrupt_cache_entry_is_removed_and_recomputed(tmp_path, caplog):
    cache, calls = ArrayCache(tmp_path), []
    description = {"what": "features", "n": 1}
    assert cache.get_or_compute(description, computed(calls))[1] is False
    assert cache.get_or_compute(description, computed(calls))[1] is True and calls == ["computed"]
    path = cache.path_for(description)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit of the last value
    for damage in (lambda: path.write_bytes(bytes(data)),  # a changed value: the checksum differs
                   lambda: path.write_bytes(path.read_bytes()[:40]),  # a truncated file
                   lambda: path.with_suffix(".json").write_text("{")):  # unreadable metadata
        damage()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tlbench.data.cache"):
            array, hit = cache.get_or_compute(description, computed(calls))
        assert hit is False and np.array_equal(array, ARRAY)
        assert f"cache entry {path} is corrupt" in caplog.text and "recomputing" in caplog.text
        assert cache.get_or_compute(description, computed(calls))[1] is True  # rewritten whole
    assert len(calls) == 4


def test_cache_clear_removes_only_what_tlbench_wrote(tmp_path):
    cache = ArrayCache(tmp_path / "cache")
    for n in range(3):
        cache.store({"n": n}, ARRAY)
    entry_folder = cache.path_for({"n": 0}).parent
    (entry_folder / ".tmp-k2j3_x9.npy").write_bytes(b"from a killed write")
    (cache.root / "thesis.tex").write_text("\\chapter{Results}")
    (entry_folder / "notes.txt").write_text("mine")
    info = tlbench("cache", "info", "--cache-dir", str(cache.root))
    assert "3 entries" in info.stdout, info.stderr
    result = tlbench("cache", "clear", "--cache-dir", str(cache.root))
    assert result.returncode == 0, result.stderr
    kept = f"{entry_folder.name}/notes.txt, thesis.tex"
    assert result.stdout.strip() == f"removed 3 entries from {cache.root}; kept 2 files tlbench did not write: {kept}"
    assert (cache.root / "thesis.tex").read_text() == "\\chapter{Results}"
    assert (entry_folder / "notes.txt").exists()
    remaining = sorted(p.relative_to(cache.root).as_posix() for p in cache.root.rglob("*"))
    assert remaining == [entry_folder.name, f"{entry_folder.name}/notes.txt", "thesis.tex"]
    assert "0 entries" in tlbench("cache", "info", "--cache-dir", str(cache.root)).stdout
