"""The side-by-side benchmarks run end to end at CI size: every comparison measures both sides
(real tlbench runs and the hand-written loop, on real and generated images). No wall-clock
limit is asserted; benchmarks/README.md holds the full-size figures."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOGS = REPO.parent / "shared" / "data" / "dogs-vs-cats"


@pytest.mark.skipif(not DOGS.is_dir(), reason="needs ../shared/data/dogs-vs-cats")
def test_every_comparison_measures_both_sides_at_ci_size(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare.py"), "--size", "ci", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["name"]: r for r in json.loads((tmp_path / "ci.json").read_text())}
    assert set(results) == {"harness vs hand-written loop", "fine-tuning epoch", "feature cache", "grid sharing",
                            "memory flat in the data", "cell isolation", "cost curve"}
    for name, result in results.items():
        assert math.isfinite(result["ratio"]) and result["ratio"] > 0, name
        assert all(isinstance(goal["met"], bool) for goal in result["goals"]), name
        if name == "cost curve":
            assert [p["train_images"] for p in result["points"]] == [20, 40, 80]
            continue
        a, b = result["a"], result["b"]
        assert a["seconds"] > 0 and b["seconds"] > 0 and a["peak_mib"] > 100 and b["peak_mib"] > 100, name
        assert result["ratio"] == pytest.approx(a[result["metric"]] / b[result["metric"]], rel=0.01)
    harness = results["harness vs hand-written loop"]
    assert 0 <= harness["a"]["test_accuracy"] <= 1 and 0 <= harness["b"]["test_accuracy"] <= 1  # both really trained
    assert len(harness["goals"]) == 2
    suffix = results["fine-tuning epoch"]  # the epoch times of both sides, from their records and JSON line
    assert suffix["metric"] == "epoch_seconds" and suffix["a"]["epoch_seconds"] > 0 and suffix["b"]["epoch_seconds"] > 0
    assert (tmp_path / "cost_curve-ci.png").stat().st_size > 1000
    table = (tmp_path / "ci.md").read_text()
    assert table.count("\n| ") == 9  # the header and one row per goal (the harness has two)
