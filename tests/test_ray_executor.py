"""--executor ray on a real local Ray instance (2 CPUs): the local executor's results, seed by
seed; a cell that kills its Ray worker is retried, then failed; a rerun resumes."""

from __future__ import annotations

import json
import textwrap

from support import tlbench

GRID = textwrap.dedent("""
    name: on-ray
    datasets: [stripes]
    backbones: [toy/centroid, {name: crashing, plugin: toy/centroid, crash: kill}]
    strategies: [extractor, {name: finetune, depth: 1}]
    seeds: [0, 1]
    train: {epochs: 2}
""")


def outcomes(out) -> list[tuple]:
    return [(r["cell_id"], r["status"], r["metrics"].get("test_accuracy"), r["metrics"].get("test_loss"))
            for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())]


def test_ray_runs_the_grid_like_the_local_executor_survives_a_killed_worker_and_resumes(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert tlbench("run", "--grid", str(grid), "--out", str(local)).returncode == 1
    first = tlbench("run", "--grid", str(grid), "--out", str(ray), "--executor", "ray", "--retries", "1")
    assert first.returncode == 1, first.stderr[-3000:]
    assert sorted(outcomes(ray)) == sorted(outcomes(local))  # same cells, statuses and accuracies
    failed = {r["cell_id"]: r["error"] for r in map(json.loads, (ray / "runs.jsonl").read_text().splitlines())
              if r["status"] == "failed"}
    assert sorted(failed) == [f"stripes/crashing/{s}/seed={seed}" for s in ("extractor", "finetune") for seed in (0, 1)]
    assert all("the Ray worker running the cell died (tried 2 times)" in error for error in failed.values())
    env = json.loads((ray / "env.json").read_text())
    assert (env["executor"], env["ray_address"]) == ("ray", "local")
    again = tlbench("run", "--grid", str(grid), "--out", str(ray), "--executor", "ray", "--retries", "0")
    assert again.returncode == 1
    lines = outcomes(ray)
    assert len(lines) == 8 + 4 and {line[0] for line in lines[8:]} == set(failed)  # only the failed cells ran again


def test_without_ray_installed_the_message_says_how(toy_plugin, tmp_path, monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "ray.py").write_text("raise ImportError('ray is blocked in this test')\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocked}:{__import__('os').environ['PYTHONPATH']}")
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray")
    assert result.returncode == 2 and "pip install 'tlbench[ray]'" in result.stderr and "Traceback" not in result.stderr
