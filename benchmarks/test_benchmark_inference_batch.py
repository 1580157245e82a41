"""The CPU inference batch of the convolutional body, side by side (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_inference_batch.py --benchmark-group-by=group
The torch engine runs the frozen body in batches of EVAL_IMAGES_PER_THREAD images per
intra-op thread on a CPU (8 on 2 threads) instead of 128 at a time. Both batch sizes run
torchvision's MobileNetV2 at 224 px, without gradients, over the same 128 images; each must
give the same outputs bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from tlbench_torch.engine import EVAL_BATCH, inference_batch

IMAGES = 128


@pytest.fixture(scope="module")
def body():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v2().features.eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(IMAGES, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def outputs():
    """The body's outputs per batch size: they must agree bit for bit."""
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
    outputs[batch] = result
    if len(outputs) == 2:
        assert torch.equal(*outputs.values())
