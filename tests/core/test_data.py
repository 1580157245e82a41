"""Image splits and training subsets (tlbench.data.splits)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from support import PEAK_MIB
from tlbench.data.splits import DiskArray, FileSplit, resize, train_subset

LABELS = np.array([0] * 10 + [1] * 30)


def per_class(chosen: np.ndarray) -> list[int]:
    return np.bincount(LABELS[chosen], minlength=2).tolist()


def test_train_size_takes_a_stratified_subset_drawn_with_the_seed():
    for size, counts in ((3, [3, 3]), (0.5, [5, 15]), (0.01, [1, 1]), (1.0, [10, 30]), ("all", [10, 30])):
        chosen = train_subset(LABELS, size, seed=0)
        assert per_class(chosen) == counts, size
        assert list(chosen) == sorted(set(chosen.tolist()))  # sorted, no index twice
    assert train_subset(LABELS, 0.5, seed=1).tolist() == train_subset(LABELS, 0.5, seed=1).tolist()
    assert train_subset(LABELS, 0.5, seed=1).tolist() != train_subset(LABELS, 0.5, seed=2).tolist()


def test_running_out_of_memory_while_decoding_is_not_an_unreadable_file(tmp_path):
    """A real MemoryError: the address space is capped below what the requested size needs."""
    image = tmp_path / "small.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    script = textwrap.dedent("""
        import resource, sys
        from tlbench.data.splits import FileSplit
        split = FileSplit([sys.argv[1]], [0])
        assert split.images(8).shape == (1, 8, 8, 3)
        resource.setrlimit(resource.RLIMIT_AS, (2**31, resource.RLIM_INFINITY))
        try:
            split.images(30000)  # 2.7 GB
        except MemoryError:
            print("MemoryError; skipped:", split.skipped)
    """)
    result = subprocess.run([sys.executable, "-c", script, str(image)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.stdout.strip() == "MemoryError; skipped: []", result.stderr


def test_a_decoded_file_split_reads_back_exactly_what_an_in_memory_stack_holds(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(70):  # more than one decode chunk
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (9 + i % 5, 11, 3), dtype=np.uint8)).save(paths[-1])
    split = FileSplit(paths, [i % 2 for i in range(70)])
    on_disk = split.images(16)
    in_memory = np.stack([resize(Image.open(p), 16) for p in paths])
    assert isinstance(on_disk, DiskArray) and on_disk.shape == in_memory.shape == (70, 16, 16, 3)
    np.testing.assert_array_equal(np.asarray(on_disk), in_memory)
    for index in (slice(3, 67), slice(None, None, 7), slice(60, 200), [5, 0, 69, 5], np.array([-1, 2]),
                  np.arange(70) % 3 == 0, np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(on_disk[index], in_memory[index])
    np.testing.assert_array_equal(on_disk[-2], in_memory[-2])
    try:
        on_disk[[70]]
    except IndexError:
        pass
    else:
        raise AssertionError("an index past the end must raise IndexError")


def test_decoding_a_file_split_holds_one_chunk_of_pixels_not_the_split(tmp_path):
    """600 images at 256 px are 118 MB of pixels; decoded, the process grows by a few chunks."""
    for i in range(600):
        Image.new("RGB", (16, 16), (i % 256, 10, 10)).save(tmp_path / f"{i:03d}.png")
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        import numpy as np
        from tlbench.data.splits import FileSplit
        split = FileSplit(sorted(Path(sys.argv[1]).glob("*.png")), [0] * 600)
        split.images(8)  # imports and buffers warmed up
        before = PEAK_MIB
        images = split.images(256)
        assert images[599:600].mean() == np.asarray(split.images(8))[599].mean()
        print(PEAK_MIB - before)
    """).replace("PEAK_MIB", PEAK_MIB)  # the child's own peak (support.PEAK_MIB)
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 118 / 2, f"peak RSS grew by {result.stdout.strip()} MiB"
