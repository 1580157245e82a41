"""Hostile grid and run input (issue 27): unknown keys at every level, absurd sizes, a C locale,
a cache that cannot be written, and the cost that `--dry-run` prints before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from support import limit_file_size, tlbench
from tlbench.data.cache import ArrayCache, Timings
from tlbench.grid.loading import GridError, load_grid
from tlbench.plugin.registry import collect

GRID = {"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}


def write_grid(tmp_path, grid: dict, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(grid))  # JSON is YAML
    return path


@pytest.mark.parametrize("change, field, near", [
    ({"sedes": [0]}, "sedes", "seeds"),
    ({"train": {"epoch": 2}}, "train.epoch", "epochs"),
    ({"report": {"small_per_clas": 5}}, "report.small_per_clas", "small_per_class"),
    ({"datasets": [{"name": "stripes", "per_clas": 4}]}, "datasets[0].per_clas", "per_class"),
    ({"backbones": [{"name": "toy/centroid", "sleeep": 0.0}]}, "backbones[0].sleeep", "sleep"),
    ({"strategies": [{"name": "finetune", "lr_mult": 0.1}]}, "strategies[0].lr_mult", "backbone_lr_mult"),
    ({"strategies": ["extractor", {"name": "finetune", "depth": 1}, {"name": "finetune", "detph": 2}]},
     "strategies[2].detph", "depth"),
])
def test_an_unknown_key_at_any_level_is_refused_naming_the_field_and_the_near_name(toy_plugin, tmp_path, change, field,
                                                                                    near):
    result = tlbench("run", "--grid", str(write_grid(tmp_path, {**GRID, **change})), "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert f"error: {tmp_path / 'grid.yaml'}: 1 problem(s)" in result.stderr
    assert f"  - {field}: unknown " in result.stderr and f"did you mean {near!r}?" in result.stderr


def test_too_many_seeds_are_refused_naming_the_value_limit_not_aliases(toy_plugin, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({**GRID, "seeds": list(range(100_000))}))
    with pytest.raises(GridError) as info:
        load_grid(path, collect())
    [problem] = info.value.problems
    assert problem.startswith("seeds: holds more than 100000 values; a grid file holds at most 100000 values")
    assert "alias" not in problem


@pytest.mark.parametrize("where", ["train", "strategy"])
def test_epochs_past_the_sanity_bound_are_refused_naming_it(toy_plugin, where):
    grid = {**GRID, "train": {"epochs": 1_000_000_000}} if where == "train" else {
        **GRID, "strategies": [{"name": "extractor", "epochs": 10_001}]}
    with pytest.raises(GridError) as info:
        load_grid(grid, collect())
    field = "train.epochs" if where == "train" else "strategies[0].epochs"
    assert info.value.problems[0].startswith(f"{field}: must be from 0 to 10,000 (a sanity bound")
    assert load_grid({**GRID, "train": {"epochs": 10_000}}, collect()).train["epochs"] == 10_000


def test_a_utf8_grid_is_read_under_the_c_locale(toy_plugin, tmp_path, monkeypatch):
    path = tmp_path / "grid.yaml"
    path.write_bytes("name: gruesse\ndescription: Grüße\ndatasets: [stripes]\nbackbones: [toy/centroid]\n"
                     "strategies: [extractor]\n".encode())
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.setenv("PYTHONUTF8", "0")
    monkeypatch.setenv("PYTHONIOENCODING", "")
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["stripes/toy/centroid/extractor/seed=0"]


def test_dry_run_prints_epochs_per_strategy_and_estimates_time_from_earlier_cells_left_to_run(toy_plugin, tmp_path):
    cache = tmp_path / "cache"
    ran = {**GRID, "strategies": ["extractor", {"name": "finetune", "depth": 1}], "train": {"epochs": 2}}
    done = tlbench("run", "--grid", str(write_grid(tmp_path, ran)), "--out", str(tmp_path / "out"),
                   "--cache-dir", str(cache), "--executor", "inline")
    assert done.returncode == 0, done.stderr
    timings = json.loads((cache / "timings.json").read_text())["timings"]
    assert sorted(t["cell"] for t in timings.values()) == ["stripes/toy/centroid/extractor/seed=0",
                                                           "stripes/toy/centroid/finetune/seed=0"]
    more = {**ran, "strategies": [*ran["strategies"], "scratch", "transferability"], "seeds": [0, 1]}
    result = tlbench("run", "--grid", str(write_grid(tmp_path, more, "more.yaml")), "--dry-run",
                     "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 8 and all("/seed=" in line for line in result.stdout.splitlines())
    assert ("epochs per strategy, at most: extractor 4 (2 cells), finetune 4 (2 cells), scratch 4 (2 cells), "
            "transferability 0 (2 cells)") in result.stderr  # an evidence strategy does not train
    assert "for 4 of 8 cells (4 cells have no timing yet), from " + str(cache / "timings.json") in result.stderr
    seconds, timed = Timings(cache).estimate(load_grid(more, collect()).cells())
    expected = sum(2 * (t["other_seconds"] + 2 * t["epoch_seconds"]) for t in timings.values())  # 2 seeds, 2 epochs
    assert timed == 4 and seconds == pytest.approx(expected)
    resumed = tlbench("run", "--grid", str(write_grid(tmp_path, more, "more.yaml")), "--dry-run",
                      "--cache-dir", str(cache), "--out", str(tmp_path / "out"))
    assert f"2 of them already finished in {tmp_path / 'out'} (a run resumes): the cost below is for the other 6" in resumed.stderr
    assert ("epochs per strategy, at most: extractor 2 (1 cells), finetune 2 (1 cells), scratch 4 (2 cells), "
            "transferability 0 (2 cells)") in resumed.stderr  # seed 1 of the two that ran, and all of the new ones
    assert ArrayCache(cache).clear()[1] == []  # the timings file is tlbench's own: cleared, not kept as foreign


@pytest.mark.parametrize("content", [b"{not json", b"[" * 100_000, json.dumps({"timings": {"k": {
    "epoch_seconds": "1", "other_seconds": float("inf")}}}).encode(), b"0" * (2**20 + 1)])
def test_dry_run_ignores_a_malformed_timings_file(toy_plugin, tmp_path, content):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "timings.json").write_bytes(content)
    result = tlbench("run", "--grid", str(write_grid(tmp_path, GRID)), "--dry-run", "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert "no time estimate: no cell has a timing yet" in result.stderr and "Traceback" not in result.stderr


FULL_CACHE = """
import logging, sys
import numpy as np
from tlbench.data.cache import ArrayCache
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
cache = ArrayCache(sys.argv[1])
for i in range(2):
    rows, hit = cache.get_or_compute({"i": i}, lambda: np.full((64, 1024), i, np.float32))
    assert not hit and rows.shape == (64, 1024) and (rows == i).all()
    assert cache.lookup({"i": i}) is None
print("computed")
"""


def test_a_cache_entry_that_cannot_be_written_warns_once_and_the_caller_goes_on(tmp_path):
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "-c", FULL_CACHE, str(cache)], capture_output=True, text=True, timeout=120,
                            preexec_fn=limit_file_size(100_000))
    assert result.returncode == 0 and result.stdout == "computed\n", result.stderr
    warnings = [line for line in result.stderr.splitlines() if "cannot write to the feature cache" in line]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "File too large" in warnings[0]
    assert "give --cache-dir" in warnings[0]
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial entry, no temporary file


def test_a_run_whose_cache_cannot_be_written_computes_every_cell(toy_plugin, tmp_path):
    """The cells' frozen outputs (a temporary file of the features' size) still fit; each cache
    entry, 128 bytes of .npy header larger, does not: as when the cache's disk is full."""
    grid = {**GRID, "backbones": [{"name": "toy/centroid", "image_size": 64}], "strategies": ["extractor", "finetune"]}
    features = 24 * 64 * 64 * 3 * 4
    cache, out = tmp_path / "cache", tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(write_grid(tmp_path, grid)),
                             "--out", str(out), "--cache-dir", str(cache), "--executor", "inline"],
                            capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size(features + 64))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert result.stderr.count("cannot write to the feature cache") == 1 and str(cache) in result.stderr
    assert not list(cache.rglob("*.npy"))
    assert os.path.getsize(out / "runs.jsonl") < features


def test_the_timings_file_keeps_only_the_newest_timings(toy_plugin, tmp_path, monkeypatch):
    monkeypatch.setattr("tlbench.data.cache.MAX_TIMINGS", 2)
    cells = load_grid({**GRID, "strategies": ["extractor", "scratch", "finetune"]}, collect()).cells()
    timings = Timings(tmp_path)
    for cell in cells:
        timings.record(cell, {"status": "ok", "metrics": {"wall_seconds": 3.0, "epoch_seconds": 0.5, "epochs": 4}})
    timings.record(cells[0], {"status": "failed", "metrics": {"wall_seconds": 99.0}})  # a failed cell is no timing
    kept = timings.read()
    assert [t["cell"] for t in kept.values()] == [cells[1].cell_id, cells[2].cell_id]
    assert timings.estimate(cells) == (pytest.approx(2 * (1.0 + 0.5 * 5)), 2)  # 5 epochs each, the default
