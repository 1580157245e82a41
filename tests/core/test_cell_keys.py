"""A cell's key is what resumes a run: code that adds a setting must not change the keys of the
cells already recorded, or every earlier run directory would be run again from its first cell."""

from __future__ import annotations

import json

from support import REPO
from tlbench.grid.loading import load_grid
from tlbench.plugin.registry import collect


def test_the_committed_quickstart_cells_keep_their_keys():
    recorded = {json.loads(line)["cell_id"]: json.loads(line)["key"]
                for line in (REPO / "results/reference/quickstart/runs.jsonl").read_text().splitlines()}
    cells = load_grid(str(REPO / "benchmarks/quickstart.yaml"), collect()).cells()
    assert {cell.cell_id: cell.key for cell in cells} == recorded


def test_a_search_cell_that_skips_the_test_split_has_a_key_of_its_own():
    grid = {"name": "keys", "datasets": ["digits"], "backbones": ["timm/mobilenetv2_100"], "strategies": ["extractor"],
            "seeds": [0], "train": {"epochs": 1}}
    tested, untested = (load_grid({**grid, "train": {"epochs": 1, "test": test}}, collect()).cells()[0]
                        for test in (True, False))
    assert tested.key == load_grid(grid, collect()).cells()[0].key != untested.key


def test_the_tuned_study_cells_keep_their_keys():
    """Its registered datasets' cells (a folder dataset's key holds its absolute root: another checkout differs)."""
    recorded = {}
    for line in (REPO / "results/reference/scenarios-cpu/runs.jsonl").read_text().splitlines():
        record = json.loads(line)
        recorded[record["cell_id"]] = record["key"]
    cells = [cell for cell in load_grid(str(REPO / "benchmarks/scenarios-cpu.yaml"), collect()).cells()
             if cell.dataset.plugin in ("mnist-5k", "digits") and cell.cell_id in recorded]
    assert len({cell.strategy.plugin for cell in cells}) >= 5  # transferability and every trained family
    assert {cell.cell_id: cell.key for cell in cells} == {cell.cell_id: recorded[cell.cell_id] for cell in cells}
