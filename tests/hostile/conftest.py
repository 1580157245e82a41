"""A saved toy cell to run ``tlbench predict --cell`` against."""

from __future__ import annotations

import pytest

from support import tlbench


@pytest.fixture
def saved_toy_cell(toy_plugin, tmp_path):
    """``RUN_DIR/CELL_ID`` of a toy extractor cell run with ``--save-models``."""
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: saved\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
    run = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "run"), "--save-models")
    assert run.returncode == 0, run.stderr
    return tmp_path / "run" / "stripes/toy/centroid/extractor/seed=0"
