"""blocks.json gives the Keras applications' blocks without TensorFlow, as a real build does;
a model it lacks is built, without TensorFlow's start-up noise."""

from __future__ import annotations

import os
import subprocess
import sys

from tlbench_keras import blocks

LIST = "from tlbench.cli import main; main([*sys.argv[1:], 'list', 'backbones', '--blocks', 'keras/MobileNetV2']); "
NOT_IN_CATALOGUE = "import tlbench_keras.blocks as b; b.CATALOGUE.models.pop('MobileNetV2'); "


def list_blocks(before: str = "", *options: str) -> subprocess.CompletedProcess:
    script = f"import sys; {before}{LIST}print('tensorflow' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    return subprocess.run([sys.executable, "-c", script, *options], capture_output=True, text=True, timeout=300, env=env)


def test_the_catalogue_is_for_the_installed_keras_and_matches_a_real_build():
    from tlbench_keras.network import structure as built

    assert blocks.CATALOGUE.recorded["version"] == blocks.CATALOGUE.installed_version(), "regenerate: python -m tlbench_keras.blocks"
    assert blocks.structure("MobileNetV2") == built("MobileNetV2")


def test_listing_a_keras_backbones_blocks_imports_no_tensorflow():
    listed = list_blocks()
    assert listed.stdout.split()[-1] == "False"
    assert "block_16" in listed.stdout and listed.stderr == "9 blocks; finetune depth k trains the last k\n"


def test_a_model_missing_from_the_catalogue_is_built_quietly_unless_verbose():
    listed = list_blocks(NOT_IN_CATALOGUE)
    assert listed.stdout.split()[-1] == "True"
    assert "block_16" in listed.stdout and listed.stderr == "9 blocks; finetune depth k trains the last k\n"
    assert "absl::InitializeLog" in list_blocks(NOT_IN_CATALOGUE, "-v").stderr  # TensorFlow's own start-up lines
