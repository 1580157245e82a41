"""The extractor's ``head: logreg`` and ``C`` options as the grid checks them, and an engine
without a settable linear head."""

from __future__ import annotations

import textwrap

import pytest

from support import tlbench
from tlbench.grid.loading import GridError, load_grid
from tlbench.plugin.registry import collect
from tlbench.plugin.specs import CellContext, PluginError, TrainPlan, TrainSettings
from tlbench.testing import train_cell


def test_c_is_a_positive_number_for_head_logreg_only(toy_plugin, tmp_path):
    registries = collect()
    path = tmp_path / "grid.yaml"
    path.write_text(textwrap.dedent("""
        name: logreg
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [{name: extractor, head: logreg, C: [0.1, 10]}, {name: extractor, head: logreg},
                     {name: extractor, C: 0.1}, {name: extractor, head: [logreg, book], C: 2},
                     {name: extractor, head: logreg, C: 0}, {name: finetune, head: logreg}]
    """))
    with pytest.raises(GridError) as info:
        load_grid(path, registries)
    assert info.value.problems == [
        "strategies[2].C: `C` applies only with `head: logreg`, not with head 'linear'",
        "strategies[3].C: `C` applies only with `head: logreg`, not with head ['logreg', 'book']",
        "strategies[4].C: must be a number > 0, not 0",
        "strategies[5].head: must be one of linear, flatten-linear, book, not 'logreg'",
    ]
    path.write_text(path.read_text().split("{name: extractor, C")[0].rstrip(", \n") + "]\n")
    cells = load_grid(path, registries).cells()
    plans = [registries.strategies.get("extractor").plan(cell.strategy.options, None) for cell in cells]
    assert [(plan.head, plan.logreg_c) for plan in plans] == [("logreg", 0.1), ("logreg", 10.0), ("logreg", 1.0)]


def test_an_engine_that_cannot_set_a_linear_head_refuses_logreg_by_name(toy_plugin):
    from tlbench_toy_plugin import Centroid, load_stripes

    with pytest.raises(PluginError, match="the numpy engine lacks the capability 'linear_head', which head 'logreg' needs"):
        train_cell(Centroid(), TrainPlan(trainable_blocks=0, head="logreg"), load_stripes(), TrainSettings(),
                   CellContext(seed=0, device="cpu"), framework="numpy")


def test_dry_run_counts_no_epochs_for_a_head_fitted_once(toy_plugin, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: fitted\ndatasets: [stripes]\nbackbones: [toy/centroid]\nseeds: [0, 1]\ntrain: {epochs: 5}\n"
                    "strategies: [extractor, {name: extractor, head: logreg, tune: {C: [0.1, 10]}}]\n")
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "epochs per strategy, at most: extractor 10 (2 cells), extractor[head=logreg,C=0.1] 0 (2 cells), " \
           "extractor[head=logreg,C=10] 0 (2 cells)" in result.stderr
