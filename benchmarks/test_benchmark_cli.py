"""How fast the command line answers (issue 31): each command in a fresh process, against
``python -c pass`` in the same session, as a ratio (``extra_info["ratio_to_python_pass"]``).

Run: .venv/bin/python -m pytest benchmarks/test_benchmark_cli.py --benchmark-group-by=group

Offline (``TLBENCH_OFFLINE=1``, an empty ``TFDS_DATA_DIR``), so the tfds grid
``benchmarks/scenarios.yaml`` is refused and its dry run names the datasets to prepare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TLBENCH = [sys.executable, "-m", "tlbench.cli"]
SCENARIOS = str(REPO / "benchmarks" / "scenarios.yaml")
COMMANDS = {  # label: (command, exit code, a text its output holds)
    "python -c pass": ([sys.executable, "-c", "pass"], 0, ""),
    "tlbench --help": ([*TLBENCH, "--help"], 0, "usage: tlbench"),
    "list backbones --blocks keras/MobileNetV2": ([*TLBENCH, "list", "backbones", "--blocks", "keras/MobileNetV2"], 0,
                                                  "9 blocks"),
    "list backbones --blocks timm/mobilenetv2_100": ([*TLBENCH, "list", "backbones", "--blocks", "timm/mobilenetv2_100"],
                                                     0, "8 blocks"),
    "run --grid scenarios.yaml (offline: refused)": ([*TLBENCH, "run", "--grid", SCENARIOS], 2, "tfds build cifar10"),
    "run --grid scenarios.yaml --dry-run (offline)": ([*TLBENCH, "run", "--grid", SCENARIOS, "--dry-run"], 2,
                                                      "2 dataset(s) must be prepared"),
}
medians: dict[str, float] = {}


@pytest.mark.benchmark(group="the command line, each command a fresh process (offline)")
@pytest.mark.parametrize("label", list(COMMANDS))  # python -c pass first: every ratio needs it
def test_command_line_answers(benchmark, tmp_path, label):
    command, code, text = COMMANDS[label]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(TLBENCH_OFFLINE="1", TFDS_DATA_DIR=str(tmp_path / "tfds"), TLBENCH_CACHE_DIR=str(tmp_path / "cache"))

    def answer() -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)

    done = benchmark.pedantic(answer, rounds=3, iterations=1, warmup_rounds=1)
    assert done.returncode == code and text in done.stdout + done.stderr, done.stderr[-2000:]
    assert "cuInit" not in done.stderr and "absl::InitializeLog" not in done.stderr  # TensorFlow kept quiet
    medians[label] = benchmark.stats.stats.median
    benchmark.extra_info.update(ratio_to_python_pass=medians[label] / medians["python -c pass"])
