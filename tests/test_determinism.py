"""The same grid twice on one machine: the same accuracy seed by seed, on both engines, first
with a cold feature cache in a worker process, then with it warm in this one."""

from __future__ import annotations

import json

import tlbench

GRID = {
    "name": "twice",
    "datasets": [{"name": "digits", "train_size": 15}],
    "backbones": ["timm/mobilenetv2_100", {"name": "keras/MobileNetV2", "weights": "none"}],
    "strategies": [{"name": "extractor", "head": "book"}, {"name": "finetune", "depth": 1}],  # dropout; a trained block
    "seeds": [0, 1],
    "train": {"epochs": 2, "batch_size": 16, "image_size": 32, "augment": False},
}


def outcome(out) -> dict[str, tuple]:
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return {r["cell_id"]: (r["status"], r["metrics"].get("test_accuracy"), r["metrics"].get("test_loss"),
                           r["metrics"].get("cache")) for r in records}


def test_a_grid_run_twice_gives_the_same_accuracies_seed_by_seed(tmp_path):
    first = outcome_of(tmp_path / "first", cache=tmp_path / "cache", executor="local")  # a worker process, cold cache
    again = outcome_of(tmp_path / "again", cache=tmp_path / "cache")  # this process; the cache is warm now
    assert len(first) == 8 and all(status == "ok" for status, *_ in first.values())
    kernels = json.loads((tmp_path / "first" / "env.json").read_text())["threads"]
    assert kernels["torch_deterministic_algorithms"] and kernels["tensorflow_op_determinism"]
    assert kernels["torch_fill_uninitialized_memory"] is False  # torch's NaN guard is off: the same results, faster
    for cell_id, (_, accuracy, loss, _) in first.items():
        assert again[cell_id][1:3] == (accuracy, loss), cell_id
    assert {c[3]["features"] for c in again.values() if "features" in c[3]} == {"hit"}
    # finetune depth 1 ran first and cached the frozen prefix before the last block: the extractor continues it
    assert {c[3]["features"] for c in first.values() if "features" in c[3]} == {"extended"}


def outcome_of(out, cache, executor: str = "inline") -> dict[str, tuple]:
    tlbench.run_grid(GRID, out=out, device="cpu", cache_dir=cache, executor=executor)
    return outcome(out)
