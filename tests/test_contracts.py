"""The built-in plugins pass the contract checks that third-party authors use (tlbench.testing)."""

from __future__ import annotations

import pytest

from support import SHARED_DATA
from tlbench.plugin.registry import collect
from tlbench.testing import check_backbone, check_dataset, check_strategy, tiny_dataset

REGISTRIES = collect()


@pytest.mark.parametrize("name, options", [
    ("mnist-5k", {}),
    ("digits", {}),
    ("folder", {"root": str(SHARED_DATA / "dogs-vs-cats")}),
    ("folder", {"root": str(SHARED_DATA / "sign-language-digits")}),
])
def test_dataset_contract(name, options):
    data = check_dataset(REGISTRIES.datasets.get(name), **options)
    assert data.domain != "" and data.num_classes in (2, 10)


# one model per timm family the engine treats differently (EfficientNet-style and ResNet
# stages are cut for activation caching; MobileNetV3 and ConvNeXt run their frozen part)
@pytest.mark.parametrize("name", ["timm/mobilenetv2_100", "timm/resnet10t", "timm/mobilenetv3_small_050",
                                  "timm/convnext_atto", "timm/tf_efficientnet_lite0"])
def test_timm_backbone_contract(name):
    metrics = check_backbone(REGISTRIES.backbones.get(name), image_size=32)
    assert metrics["weights"] == "none (random init)"


@pytest.mark.parametrize("name", ["classifier", "extractor", "finetune", "scratch"])
def test_strategy_contract(name):
    plan = check_strategy(REGISTRIES.strategies.get(name))
    assert (plan is None) == (name == "classifier")  # tiny_dataset has no ImageNet mapping
    mapped = tiny_dataset()
    mapped.imagenet_classes = {"dark": (0,), "bright": (1,)}
    assert check_strategy(REGISTRIES.strategies.get(name), mapped) is not None
