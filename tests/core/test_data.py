"""Image splits and training subsets (tlbench.data)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
from PIL import Image

from tlbench.data import train_subset

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
        from tlbench.data import FileSplit
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
