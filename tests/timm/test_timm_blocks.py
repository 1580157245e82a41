"""blocks.json gives timm models' blocks without torch, as a real build does; a model it lacks
is built on the meta device."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm

from tlbench_timm import blocks
from tlbench_timm.backbone import block_groups

LIST = "from tlbench.cli import main; main(['list', 'backbones', '--blocks', 'timm/mobilenetv2_100']); "
NOT_IN_CATALOGUE = "import tlbench_timm.blocks as b; b.CATALOGUE.models.pop('mobilenetv2_100'); "


def list_blocks(before: str = "") -> subprocess.CompletedProcess:
    script = f"import sys; {before}{LIST}print('torch' in sys.modules)"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def test_the_catalogue_is_for_the_installed_timm():
    assert blocks.CATALOGUE.recorded["version"] == timm.__version__, "regenerate: python -m tlbench_timm.blocks"


@pytest.mark.parametrize("name", ["mobilenetv2_100", "resnet18", "tf_efficientnet_lite0", "vit_tiny_patch16_224"])
def test_catalogued_blocks_match_a_real_build(name):
    real = [(block, params) for block, params, _ in block_groups(timm.create_model(name, pretrained=False))]
    assert [(b.name, b.params) for b in blocks.structure(name)] == real


def test_listing_a_timm_backbones_blocks_imports_no_torch():
    listed = list_blocks()
    assert listed.stdout.split()[-1] == "False", listed.stderr
    assert "blocks.6" in listed.stdout and "8 blocks; finetune depth k trains the last k" in listed.stderr


def test_a_model_missing_from_the_catalogue_is_built_with_the_same_blocks():
    catalogued, built = list_blocks(), list_blocks(NOT_IN_CATALOGUE)
    assert built.stdout.split()[-1] == "True", built.stderr
    assert built.stdout.split()[:-1] == catalogued.stdout.split()[:-1]
