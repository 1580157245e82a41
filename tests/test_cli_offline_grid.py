"""Offline, a grid with a tfds dataset that is not prepared is refused in seconds, and its dry
run still lists the cells and names the datasets to prepare."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from support import tlbench

GRID = {"name": "offline", "datasets": ["cifar10", "mnist-5k"], "backbones": [{"name": "keras/MobileNetV2", "weights": "none"}],
        "strategies": ["extractor"]}


def test_offline_a_dry_run_lists_the_cells_and_names_the_datasets_to_prepare(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    env = {**os.environ, "TLBENCH_OFFLINE": "1", "TFDS_DATA_DIR": str(tmp_path / "tfds")}
    dry = tlbench("run", "--grid", str(grid), "--dry-run", env=env)
    assert dry.returncode == 2
    assert dry.stdout.split() == ["cifar10/keras/MobileNetV2/extractor/seed=0", "mnist-5k/keras/MobileNetV2/extractor/seed=0"]
    assert "1 dataset(s) must be prepared before this grid can run:\n  - datasets[0] (cifar10): " in dry.stderr
    assert f"`tfds build cifar10 --data_dir {tmp_path / 'tfds'}`" in dry.stderr
    run = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), env=env)
    assert (run.returncode, run.stdout) == (2, "")
    assert "1 problem(s) in the grid:\n  - datasets[0] (cifar10): " in run.stderr and not (tmp_path / "out").exists()


def test_offline_checking_a_missing_tfds_dataset_imports_neither_tensorflow_nor_torchvision(tmp_path):
    script = ("import sys, tlbench_datasets as d; spec = next(s for s in d.tlbench_register_datasets() if s.name == 'cifar10'); "
              f"problems = spec.check(data_dir={str(tmp_path)!r}); "
              "print(type(problems[0]).__name__, 'tensorflow' in sys.modules, 'torchvision' in sys.modules)")
    checked = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "TLBENCH_OFFLINE": "1"})
    assert checked.stdout.split() == ["Unprepared", "False", "False"], checked.stderr
