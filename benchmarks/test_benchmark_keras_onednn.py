"""TensorFlow's oneDNN kernels, which tlbench asks for (on), against TensorFlow without them
(off: its own default on CPUs without AVX-512 VNNI), in pytest-benchmark.

TensorFlow enables oneDNN by default only on CPUs with AVX-512 VNNI or newer. On an AVX2 CPU a
convolution's input gradient then runs on slower kernels, which every Keras cell that
fine-tunes pays. Each side is a fresh process running one Keras cell the way a worker does:
``finetune`` at depth 1 of a randomly initialised VGG16 (its last block: three 3x3
convolutions of 512 channels) on 128 MNIST digits at 32 px, 2 epochs, 2 threads. The process
is timed whole; the record's epoch time and test accuracy are in ``extra_info``. The kernels
differ, so the numbers may differ in the last digits; the accuracies are shown, not asserted
equal.

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_keras_onednn.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

CELL = """
import json, sys
import tlbench
grid = {"name": "onednn", "datasets": [{"name": "digits", "train_size": 128}],
        "backbones": [{"name": "keras/VGG16", "weights": "none"}], "strategies": [{"name": "finetune", "depth": 1}],
        "train": {"epochs": 2, "batch_size": 32, "image_size": 32, "augment": False}}
tlbench.run_grid(grid, out=sys.argv[1], device="cpu", cache_dir=sys.argv[2], executor="inline")
metrics = json.loads(open(sys.argv[1] + "/runs.jsonl").read().splitlines()[-1])["metrics"]
from tlbench_keras._keras import onednn_enabled
print(json.dumps({"epoch_seconds": metrics["epoch_seconds"], "test_accuracy": metrics["test_accuracy"],
                  "onednn": onednn_enabled()}))
"""


def cell_in_a_fresh_process(kernels: str, folder, seen: list[dict]) -> None:
    env = {**os.environ, "TLBENCH_THREADS": "2"}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    if kernels == "oneDNN off":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"  # what TensorFlow picks by itself on a CPU without AVX-512 VNNI
    run = folder / f"run{len(seen)}"
    done = subprocess.run([sys.executable, "-c", CELL, str(run), str(folder / f"cache{len(seen)}")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seen.append(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.benchmark(group="a Keras VGG16 finetune cell (depth 1) in a fresh process, 128 digits at 32 px")
@pytest.mark.parametrize("kernels", ["oneDNN on", "oneDNN off"])
def test_keras_onednn_kernels(benchmark, tmp_path, kernels):
    seen: list[dict] = []
    benchmark.pedantic(cell_in_a_fresh_process, args=(kernels, tmp_path, seen), rounds=3, iterations=1)
    assert {s["onednn"] for s in seen} == {kernels == "oneDNN on"}
    benchmark.extra_info.update(epoch_seconds_median=float(np.median([s["epoch_seconds"] for s in seen])),
                                test_accuracy=[s["test_accuracy"] for s in seen])
