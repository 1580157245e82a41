"""The grid files under benchmarks/ stay valid: the offline ones fully, the scenarios grid up
to its tfds data, which it names with the command that prepares it."""

from __future__ import annotations

import pytest
import yaml

from support import REPO, SHARED_DATA
from tlbench.grid.loading import GridError, load_grid
from tlbench.plugin.registry import collect
from tlbench.report.document import SMALL_PER_CLASS

OFFLINE_GRIDS = ["quickstart.yaml", "textbook.yaml", "datasets.yaml", "sign-language-seeds.yaml",
                 "sign-language-extractor.yaml", "shift-ladder.yaml", "shift-datasets.yaml", "surgical.yaml"]


@pytest.fixture(scope="module")
def registries():
    return collect()


@pytest.mark.parametrize("name", OFFLINE_GRIDS)
def test_offline_grids_are_valid(registries, name):
    if "mnist" not in name and "quickstart" not in name and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not available")
    grid = load_grid(REPO / "benchmarks" / name, registries)
    assert grid.cells()


def test_scenarios_grid_covers_the_four_scenarios_and_names_its_missing_data(registries, monkeypatch):
    path = REPO / "benchmarks" / "scenarios.yaml"
    raw = yaml.safe_load(path.read_text())
    scenarios = set()
    for entry in raw["datasets"]:
        domain = registries.datasets.get(entry["name"]).domain
        for size in entry["train_size"]:
            small = size != "all" and size <= SMALL_PER_CLASS
            scenarios.add(("small" if small else "large", "similar" if domain == "natural-photo" else "different"))
    assert scenarios == {(s, d) for s in ("small", "large") for d in ("similar", "different")}

    monkeypatch.setenv("TLBENCH_OFFLINE", "1")
    monkeypatch.setenv("TFDS_DATA_DIR", "/nonexistent/tfds")
    with pytest.raises(GridError) as info:
        load_grid(path, registries)
    problems = info.value.problems  # everything else (backbones, depths, options) is valid
    assert len(problems) == 2
    assert "`tfds build cifar10 --data_dir /nonexistent/tfds`" in problems[0]
    assert "`tfds build eurosat/rgb --data_dir /nonexistent/tfds`" in problems[1]
