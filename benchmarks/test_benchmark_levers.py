"""Four speed levers of the default run, each side by side with its absence (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_levers.py --benchmark-group-by=group

- The CPU inference batch of the convolutional body: the torch engine runs the frozen body in
  batches of EVAL_IMAGES_PER_THREAD images per intra-op thread (8 on 2 threads) instead of
  128 at a time. Both run torchvision's MobileNetV2 at 224 px without gradients over the
  same 128 images and must give the same outputs bit for bit.
- Freed memory reused: a worker's allocator (``tlbench.run.worker.reuse_freed_memory``) against
  glibc's default, which maps each large block afresh. Each side is a fresh process that runs
  MobileNetV2's body as the engine does (its CPU batch, 128 images at 224 px); the process is
  timed whole, and the forward pass alone is in ``extra_info``. Outputs must agree bit for bit.
- Decoding on threads: a split of image files (dogs-vs-cats train, 202 JPEGs, at 224 px) is
  decoded on one thread per core, against one thread. Both must give the same pixels.
- Deterministic kernels without torch's NaN fill: the torch engine's deterministic mode
  (``tlbench_torch.engine._deterministic_kernels``) against the same mode with
  ``torch.utils.deterministic.fill_uninitialized_memory`` left on, which writes NaN into every
  new tensor before its kernel does. Each side trains one epoch of MobileNetV2's last 2 blocks
  (``features[14:]``) and a linear head from the same start on the same 202 activations
  (goal 4's epoch); the trained weights must agree bit for bit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from tlbench.data.splits import FileSplit
from tlbench.plugin.engine import THREADS_ENV, intra_op_threads
from tlbench_torch.engine import EVAL_BATCH, _deterministic_kernels, inference_batch

IMAGES = 128
DOGS_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train"


@pytest.fixture(scope="module")
def body():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().features.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def outputs():
    """Each lever's outputs per variant: the variants must agree bit for bit."""
    return {}


def forward(body, images, batch):
    with torch.no_grad():
        return torch.cat([body(images[i:i + batch]) for i in range(0, len(images), batch)])


@pytest.mark.benchmark(group="mobilenet_v2 body, 128 images at 224 px, CPU")
@pytest.mark.parametrize("batch", ["engine CPU batch", "batch 128"])
def test_inference_batch(benchmark, body, images, outputs, batch):
    size = inference_batch(torch.device("cpu")) if batch == "engine CPU batch" else EVAL_BATCH
    result = benchmark.pedantic(forward, args=(body, images, size), rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=size, images_per_second=IMAGES / benchmark.stats.stats.median)
    outputs.setdefault("inference", []).append(result)
    if len(outputs["inference"]) == 2:
        assert torch.equal(*outputs["inference"])


FORWARD_IN_A_FRESH_PROCESS = """
import json, sys, time
import torch, torchvision
from tlbench.run.worker import reuse_freed_memory
from tlbench_torch.engine import inference_batch
allocator = reuse_freed_memory() if sys.argv[1] == "worker allocator" else "glibc default"
torch.set_num_threads(int(sys.argv[2]))
torch.manual_seed(0)
body = torchvision.models.mobilenet_v2().features.eval()
images = torch.rand(128, 3, 224, 224, generator=torch.Generator().manual_seed(0))
batch = inference_batch(torch.device("cpu"))
with torch.no_grad():
    body(images[:batch])
    start = time.perf_counter()
    out = torch.cat([body(part) for part in images.split(batch)])
    seconds = time.perf_counter() - start
torch.save(out, sys.argv[3])
print(json.dumps({"allocator": allocator, "forward_seconds": seconds}))
"""


def forward_in_a_fresh_process(allocator: str, out: Path, forward_seconds: list[float]) -> None:
    command = [sys.executable, "-c", FORWARD_IN_A_FRESH_PROCESS, allocator, str(intra_op_threads()), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    forward_seconds.append(json.loads(done.stdout)["forward_seconds"])


@pytest.mark.benchmark(group="mobilenet_v2 body in a fresh process, 128 images at 224 px, CPU")
@pytest.mark.parametrize("allocator", ["worker allocator", "glibc default"])
def test_reused_freed_memory(benchmark, tmp_path, outputs, allocator):
    forward_seconds: list[float] = []
    benchmark.pedantic(forward_in_a_fresh_process, args=(allocator, tmp_path / "out.pt", forward_seconds),
                       rounds=3, iterations=1)
    benchmark.extra_info.update(forward_seconds_median=float(np.median(forward_seconds)))
    outputs.setdefault("allocator", []).append(torch.load(tmp_path / "out.pt"))
    if len(outputs["allocator"]) == 2:
        assert torch.equal(*outputs["allocator"])


def decode(paths: list[str]) -> np.ndarray:
    return np.asarray(FileSplit(paths, [0] * len(paths)).images(224))


@pytest.mark.benchmark(group="decode 202 JPEGs at 224 px")
@pytest.mark.parametrize("threads", ["one per core", "one"])
def test_decode_threads(benchmark, monkeypatch, outputs, threads):
    if threads == "one":
        monkeypatch.setenv(THREADS_ENV, "1")
    paths = sorted(str(p) for p in DOGS_TRAIN.rglob("*.jpg"))
    pixels = benchmark.pedantic(decode, args=(paths,), rounds=3, iterations=1)
    benchmark.extra_info.update(threads=intra_op_threads(), images=len(paths))
    outputs.setdefault("decode", []).append(pixels)
    if len(outputs["decode"]) == 2:
        assert np.array_equal(*outputs["decode"])


def fresh_suffix(activations: torch.Tensor, labels: torch.Tensor):
    """MobileNetV2's ``features[14:]``, pooling and a linear head, with Adam, from seed 0."""
    torch.manual_seed(0)
    suffix = nn.Sequential(*torchvision.models.mobilenet_v2().features[14:], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(1280, 2))
    return (suffix, torch.optim.Adam(suffix.parameters(), lr=1e-3), activations, labels), {}


def suffix_epoch(suffix: nn.Module, optimizer, activations: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    suffix.train()
    for batch in torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).split(32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(suffix(activations[batch]), labels[batch]).backward()
        optimizer.step()
    return [p.detach().clone() for p in suffix.parameters()]


@pytest.mark.benchmark(group="an epoch of mobilenet_v2's last 2 blocks on 202 activations, deterministic kernels, CPU")
@pytest.mark.parametrize("fill", ["engine (no NaN fill)", "NaN fill"])
def test_deterministic_without_nan_fill(benchmark, outputs, fill):
    generator = torch.Generator().manual_seed(0)
    activations, labels = torch.randn(202, 96, 14, 14, generator=generator), torch.randint(0, 2, (202,), generator=generator)
    _deterministic_kernels()
    torch.utils.deterministic.fill_uninitialized_memory = fill == "NaN fill"
    try:
        weights = benchmark.pedantic(suffix_epoch, setup=lambda: fresh_suffix(activations, labels), rounds=5,
                                     warmup_rounds=1)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.utils.deterministic.fill_uninitialized_memory = True
    outputs.setdefault("fill", []).append(weights)
    if len(outputs["fill"]) == 2:
        assert all(torch.equal(a, b) for a, b in zip(*outputs["fill"], strict=True))
