"""Source of a small third-party plugin used by the core tests (installed as a fake distribution).

It registers a numpy dataset and a nearest-centroid "backbone" so runner behaviour (failure
isolation, resume, locking) is tested fast and for real, through entry points.
"""

TOY_PLUGIN = '''
import os
import time
import numpy as np
import tlbench
from tlbench.data import ArraySplit
from tlbench.metrics import classification_metrics
from tlbench.types import BackboneSpec, Block, DatasetSpec, ImageDataset


def load_stripes(size=8, per_class=12, imagenet=False):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, (2 * per_class, size, size, 3)).astype(np.uint8)
    images[per_class:, :, ::2] += 150
    labels = [0] * per_class + [1] * per_class
    split = ArraySplit(images, labels)
    mapping = {"plain": (0,), "striped": (1,)} if imagenet else None  # lets `classifier` cells run
    return ImageDataset("stripes", ("plain", "striped"), {"train": split, "valid": split, "test": split},
                        domain="synthetic", imagenet_classes=mapping)


class Centroid:
    blocks = [Block("pixels", 0), Block("identity", 0)]

    def __init__(self, fail=False, nan=False, sleep=0.0, wait_for="", image_size=None, weights="none"):
        self.fail, self.nan, self.sleep, self.image_size = fail, nan, sleep, image_size or 8
        self.wait_for = wait_for  # a path, {seed} replaced: the cell waits until a test creates it

    def run_cell(self, plan, data, settings, ctx):
        if self.fail:
            raise RuntimeError("toy backbone asked to fail")
        time.sleep(self.sleep)
        while self.wait_for and not os.path.exists(self.wait_for.format(seed=ctx.seed)):
            time.sleep(0.02)
        train, test = data.splits["train"], data.splits["test"]
        x = train.images(self.image_size).reshape(len(train.labels), -1).astype(float)
        centroids = np.stack([x[train.labels == c].mean(0) for c in range(data.num_classes)])
        t = test.images(self.image_size).reshape(len(test.labels), -1).astype(float)
        logits = -((t[:, None, :] - centroids[None]) ** 2).sum(-1) / 1e4
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        loss = float("nan") if self.nan else 0.5
        return {**classification_metrics(probs, test.labels), "epochs": 1, "epoch_seconds": 0.0,
                "history": [{"epoch": 1, "train_loss": loss}], "train_images": len(train.labels),
                "test_images": len(test.labels), "trainable_params": 0, "non_trainable_params": 0,
                "seed_seen": ctx.seed}


@tlbench.hookimpl
def tlbench_cell_finished(cell, result):
    """Log each finished cell, and whether its line was already on disk (TOY_FINISHED_LOG)."""
    import json, os
    from pathlib import Path
    log = os.environ.get("TOY_FINISHED_LOG")
    if log:
        runs = Path(os.environ["TOY_RUN_DIR"]) / "runs.jsonl"
        on_disk = result["key"] in runs.read_text()
        with open(log, "a") as f:
            f.write(json.dumps([cell.cell_id, result["status"], on_disk]) + "\\n")


@tlbench.hookimpl
def tlbench_register_datasets():
    yield DatasetSpec("stripes", load=load_stripes, options={"size": 8, "per_class": 12, "imagenet": False},
                      description="toy stripes", domain="synthetic", num_classes=2)


@tlbench.hookimpl
def tlbench_register_backbones():
    yield BackboneSpec("toy/centroid", framework="numpy", build=Centroid,
                       options={"fail": False, "nan": False, "sleep": 0.0, "wait_for": "",
                                "image_size": None, "weights": "none"},
                       description="nearest class centroid on pixels", block_count=lambda **o: 2)
'''
