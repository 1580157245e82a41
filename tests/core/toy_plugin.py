"""Source of a small third-party plugin used by the core tests (installed as a fake distribution).

It registers a numpy dataset, a framework engine in numpy (a nearest-centroid head) and a
backbone for it, so runner behaviour (failure isolation, resume, locking) is tested fast and
for real, through entry points and the core's protocol.
"""

TOY_PLUGIN = '''
import os
import time
import numpy as np
import tlbench
from tlbench.data.splits import ArraySplit
from tlbench.plugin.engine import Engine, EpochResult
from tlbench.plugin.specs import BackboneSpec, Block, DatasetSpec, EngineSpec, ImageDataset


def load_stripes(size=8, per_class=12):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 100, (2 * per_class, size, size, 3)).astype(np.uint8)
    images[per_class:, :, ::2] += 150
    labels = [0] * per_class + [1] * per_class
    split = ArraySplit(images, labels)
    return ImageDataset("stripes", ("plain", "striped"), {"train": split, "valid": split, "test": split},
                        domain="synthetic")


class Centroid:
    """A model source for the toy engine: pixels, then an identity block (no parameters)."""

    name = "toy/centroid"
    blocks = [Block("pixels", 0), Block("identity", 0)]
    interpolation = "bilinear"

    def __init__(self, fail=False, nan=False, sleep=0.0, wait_for="", crash="", image_size=None, weights="none",
                 lr_errors=False):
        self.fail, self.nan, self.sleep, self.image_size = fail, nan, sleep, image_size or 8
        self.crash = crash  # "kill": the cell SIGKILLs its own process; "exit": os._exit(3)
        self.wait_for = wait_for  # a path, {seed} replaced: the cell waits until a test creates it
        # for tuning tests: the first `lr` share (at most all) of the predictions are wrong, and the
        # probabilities are softened by `weight_decay` (a higher loss, the same accuracy)
        self.lr_errors = lr_errors


class CentroidEngine(Engine[dict]):
    """A whole framework engine in numpy: the head is the nearest class centroid. Its model is a
    dict (the backbone, the centroids, the settings it saw)."""

    framework = "numpy"

    def open(self, backbone, *, pretrained, seed, device, precision):
        if backbone.fail:
            raise RuntimeError("toy backbone asked to fail")
        if backbone.crash == "kill":
            os.kill(os.getpid(), 9)
        if backbone.crash == "exit":
            os._exit(3)
        return {"backbone": backbone, "centroids": None, "seed": seed}

    def split(self, model, prefix_blocks, precomputed):
        model["precomputed"] = precomputed
        return True

    def frozen_outputs(self, model, inputs, start_blocks=0):
        return np.asarray(inputs).reshape(len(inputs), -1).astype(np.float32)

    def attach_head(self, model, kind, num_classes, seed):
        model["classes"] = num_classes

    def start_phase(self, model, trainable, settings):
        pass

    def train_epoch(self, model, inputs, labels, *, lr_factor, settings, min_batch):
        backbone = model["backbone"]
        time.sleep(backbone.sleep)
        while backbone.wait_for and not os.path.exists(backbone.wait_for.format(seed=model["seed"])):
            time.sleep(0.02)
        x = np.asarray(inputs).reshape(len(inputs), -1).astype(float)
        model["centroids"] = np.stack([x[labels == c].mean(0) for c in range(model["classes"])])
        model["lr"], model["weight_decay"] = settings.lr, settings.weight_decay
        return EpochResult(float("nan") if model["backbone"].nan else 0.5, 1.0, 0.0)

    def predict(self, model, inputs):
        t = np.asarray(inputs).reshape(len(inputs), -1).astype(float)
        logits = -((t[:, None, :] - model["centroids"][None]) ** 2).sum(-1) / 1e4
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs = probs / probs.sum(1, keepdims=True)
        if model["backbone"].lr_errors:
            wrong = int(round(min(model["lr"], 1.0) * len(probs)))
            probs[:wrong] = probs[:wrong, ::-1]
            probs = (probs + model["weight_decay"]) / (1 + model["weight_decay"] * probs.shape[1])
        return probs

    def snapshot(self, model, blocks):
        return model["centroids"].copy()

    def restore(self, model, state):
        model["centroids"] = state

    def parameter_counts(self, model, blocks):
        return 0, 0

    def save(self, model, folder):
        np.save(f"{folder}/centroids.npy", model["centroids"])

    def load_saved(self, backbone, folder, info):
        model = {"backbone": backbone, "centroids": np.load(f"{folder}/centroids.npy"), "precomputed": False}
        return lambda images: self.predict(model, images)


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
    yield DatasetSpec("stripes", load=load_stripes, options={"size": 8, "per_class": 12},
                      description="toy stripes", domain="synthetic", num_classes=2)


@tlbench.hookimpl
def tlbench_register_engines():
    yield EngineSpec("numpy", load=CentroidEngine, description="toy nearest-centroid engine")


@tlbench.hookimpl
def tlbench_register_backbones():
    yield BackboneSpec("toy/centroid", framework="numpy", build=Centroid,
                       options={"fail": False, "nan": False, "sleep": 0.0, "wait_for": "", "crash": "",
                                "image_size": None, "weights": "none", "lr_errors": False},
                       description="nearest class centroid on pixels", block_count=lambda **o: 2,
                       block_names=lambda **o: ("pixels", "identity"))
    yield BackboneSpec("toy/orphan", framework="cobol", build=Centroid, options={"image_size": None},
                       description="a backbone whose framework has no engine installed")
'''
