"""A worker's allocator keeps freed memory for reuse instead of faulting in new pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

FAULTS_OF_TEN_BLOCKS = """
import resource, sys
import numpy as np
from tlbench.run.worker import reuse_freed_memory
print(reuse_freed_memory() if sys.argv[1] == "worker" else "default")
np.ones(64 << 20, np.uint8)  # the first block is new memory either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # what a forward pass does per layer: a large output, then freed
    np.ones(64 << 20, np.uint8)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_ten_blocks(allocator: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", FAULTS_OF_TEN_BLOCKS, allocator], capture_output=True, text=True,
                          check=True, timeout=120)
    label, faults = done.stdout.split("\n")[:2]
    return label, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_worker_reuses_freed_blocks_where_the_default_faults_in_new_pages():
    label, reused = faults_of_ten_blocks("worker")
    _, default = faults_of_ten_blocks("default")
    assert label.startswith("glibc: heap only")
    assert default > 100  # glibc maps each 64 MiB block afresh and unmaps it when freed
    assert reused * 10 < default
