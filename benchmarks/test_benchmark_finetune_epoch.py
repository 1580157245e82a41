"""Goal 4 in one process: an epoch of finetune at depth 2 against a bare loop over the same
suffix, on the same cached activations (pytest-benchmark).

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_finetune_epoch.py

torchvision/mobilenet_v2 with its offline ImageNet weights, 224 px: its blocks before the last
2 (``features[:14]``) run once, through the engine, over dogs-vs-cats' 202 training images,
into a file of rows as the protocol keeps them. Then one epoch (Adam, batch 32) of each side:

- the torch engine's ``train_epoch`` of that cell: the last 2 blocks at lr x 0.1 and a linear
  head at lr, reading its batches from the file of rows;
- a bare loop: a copy of ``features[14:]``, the pooling and a ``Linear(1280, 2)``, forward and
  backward, nothing else, on the same activations as one tensor.

Both sides train the same parameters (asserted). ``compare.py``'s "fine-tuning epoch" times the
same goal across two whole processes, each with its own activations; this pair shares them.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlbench.data.splits import DiskArray, FileSplit
from tlbench.plugin.engine import intra_op_threads
from tlbench.plugin.specs import Trainable, TrainSettings
from tlbench_torch.engine import TorchEngine
from tlbench_torchvision import build

DOGS_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats" / "train"
SETTINGS = TrainSettings(epochs=1, batch_size=32, lr=1e-3)
PREFIX_BLOCKS, TRAIN_FROM = 6, 14  # mobilenet_v2's 8 blocks: the last 2 are features[14:]


class Sides:
    """The engine's cell and the bare loop, on one set of cached activations."""

    def __init__(self) -> None:
        paths = sorted(DOGS_TRAIN.rglob("*.jpg"))
        classes = sorted({p.parent.name for p in paths})
        self.labels = np.array([classes.index(p.parent.name) for p in paths])
        self.engine = TorchEngine()
        self.engine.configure(intra_op_threads())
        self.model = self.engine.open(build("mobilenet_v2", image_size=224), pretrained=True, seed=0, device="cpu",
                                      precision="fp32")
        self.engine.split(self.model, PREFIX_BLOCKS, precomputed=True)
        self.engine.attach_head(self.model, "linear", len(classes), seed=0)
        images = FileSplit([str(p) for p in paths], self.labels).images(224)
        outputs = self.engine.frozen_outputs(self.model, images)
        self.activations = DiskArray(outputs.shape[1:], outputs.dtype)
        self.activations.append(outputs)
        self.engine.start_phase(self.model, Trainable(frozenset({PREFIX_BLOCKS, PREFIX_BLOCKS + 1}), 0.1), SETTINGS)

        self.suffix = nn.Sequential(*copy.deepcopy(self.model.net.model.features[TRAIN_FROM:]),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, len(classes)))
        self.optimizer = torch.optim.Adam(self.suffix.parameters(), lr=SETTINGS.lr)
        self.x, self.y = torch.from_numpy(np.asarray(self.activations)), torch.from_numpy(self.labels)

    def engine_epoch(self) -> float:
        return self.engine.train_epoch(self.model, self.activations, self.labels, lr_factor=1.0, settings=SETTINGS,
                                       min_batch=2).seconds

    def bare_epoch(self) -> float:
        self.suffix.train()
        start = time.perf_counter()
        for batch in torch.randperm(len(self.y)).split(SETTINGS.batch_size):
            self.optimizer.zero_grad()
            nn.functional.cross_entropy(self.suffix(self.x[batch]), self.y[batch]).backward()
            self.optimizer.step()
        return time.perf_counter() - start


@pytest.fixture(scope="module")
def sides():
    if not DOGS_TRAIN.is_dir():
        pytest.skip("needs ../shared/data/dogs-vs-cats")
    return Sides()


def test_both_sides_train_the_same_parameters(sides):
    bare = sum(p.numel() for p in sides.suffix.parameters())
    assert sides.engine.parameter_counts(sides.model, frozenset({PREFIX_BLOCKS, PREFIX_BLOCKS + 1}))[0] == bare


@pytest.mark.benchmark(group="an epoch of the last 2 blocks and a head on cached activations, 202 images, 224 px")
@pytest.mark.parametrize("side", ["engine train_epoch", "bare suffix loop"])
def test_finetune_epoch(benchmark, sides, side):
    engine = side == "engine train_epoch"
    epoch, optimizer = (sides.engine_epoch, sides.model.optimizer) if engine else (sides.bare_epoch, sides.optimizer)
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1)
    unchanged = [i for i, (b, p) in enumerate(zip(before, trained, strict=True)) if torch.equal(b, p.detach())]
    assert trained and not unchanged, f"{len(unchanged)} of {len(trained)} trained tensors kept their values: a side timed no training"
