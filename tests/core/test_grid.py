"""Grid expansion, defaults and every validation error."""

from __future__ import annotations

import textwrap

import pytest

from tlbench.grid import GridError, load_grid
from tlbench.registry import collect
from tlbench.types import TrainSettings

from support import tlbench


@pytest.fixture
def registries(toy_plugin):
    return collect()


def write(tmp_path, text: str, name: str = "grid.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_expansion_is_datasets_x_backbones_x_strategies_x_seeds(registries):
    grid = load_grid({
        "name": "g",
        "datasets": ["stripes", {"name": "small", "plugin": "stripes", "per_class": [4, 6]}],
        "backbones": ["toy/centroid"],
        "strategies": ["extractor", {"name": "finetune", "depth": [1, 2]}, "scratch"],
        "seeds": [0, 1],
    }, registries)
    cells = grid.cells()
    assert len(cells) == 3 * 1 * 4 * 2
    ids = [c.cell_id for c in cells]
    assert len(set(ids)) == len(ids)
    assert "small[per_class=4]/toy/centroid/finetune[depth=2]/seed=1" in ids
    assert len({c.key for c in cells}) == len(cells)
    finetune = [c for c in cells if c.strategy.plugin == "finetune"]
    assert {c.strategy.options["depth"] for c in finetune} == {1, 2}
    assert all(c.strategy.name == "finetune" for c in finetune)


def test_defaults_and_overrides(registries):
    grid = load_grid({
        "name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"],
        "strategies": ["extractor", {"name": "ft", "plugin": "finetune", "lr": 0.01, "epochs": [1, 3]}],
        "train": {"epochs": 2, "batch_size": 8},
    }, registries)
    extractor, ft1, ft3 = grid.cells()
    assert grid.seeds == (0,)
    assert extractor.settings == TrainSettings(epochs=2, batch_size=8)
    assert extractor.strategy.options == {"head": "linear"}
    assert ft1.settings.lr == 0.01 and ft1.settings.epochs == 1 and ft3.settings.epochs == 3
    assert ft1.strategy.options["depth"] == 1  # the registered default
    assert ft1.cell_id == "stripes/toy/centroid/ft[epochs=1]/seed=0"
    assert ft1.params["train"]["batch_size"] == 8


def test_key_ignores_out_dir_and_timeout_but_not_options(registries):
    base = {"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    key = load_grid(base, registries).cells()[0].key
    assert load_grid({**base, "name": "other", "train": {"timeout": 5}}, registries).cells()[0].key == key
    assert load_grid({**base, "seeds": [1]}, registries).cells()[0].key != key
    assert load_grid({**base, "train": {"lr": 0.1}}, registries).cells()[0].key != key


def test_relative_paths_home_and_env_vars_expand(registries, tmp_path, monkeypatch):
    monkeypatch.setenv("TLB_DATA", "elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sub = tmp_path / "grids"
    sub.mkdir()
    path = write(sub, """
        name: paths
        datasets: [{name: a, plugin: folder, root: data/x}, {name: b, plugin: folder, root: "${TLB_DATA}/y"},
                   {name: c, plugin: folder, root: ~/z}]
        backbones: [toy/centroid]
        strategies: [extractor]
    """)
    from tlbench.grid import _Validator  # path handling without the folder check (no folders exist)

    validator = _Validator(str(path), sub, registries)
    assert validator.expand_value("root", "data/x") == str(sub / "data" / "x")
    assert validator.expand_value("root", "${TLB_DATA}/y") == str(sub / "elsewhere" / "y")
    assert validator.expand_value("root", "~/z") == str(tmp_path / "home" / "z")
    assert validator.expand_value("weights", "none") == "none"


def test_every_problem_is_reported_at_once(registries, tmp_path):
    path = write(tmp_path, """
        name: bad
        datsets: [stripes]
        datasets: [stripse, {name: stripes, per_clas: 3}, {name: stripes, label: x}]
        backbones: []
        strategies: [{name: finetune, depth: 9}, {name: extractor, head: 3}, extracter]
        seeds: [0, "one"]
        train: {epochs: "five", optimiser: adam, schedule: linear}
    """)
    with pytest.raises(GridError) as info:
        load_grid(path, registries)
    text = str(info.value)
    assert str(path) in text
    expected = [
        "datsets: unknown key (did you mean 'datasets'?)",
        "datasets[0].name: unknown dataset 'stripse'; did you mean 'stripes'",
        "datasets[1].per_clas: unknown option for dataset 'stripes' (did you mean 'per_class'?)",
        "datasets[2].label: unknown option",
        "datasets[2].name: 'stripes' appears twice",
        "backbones: empty list",
        "strategies[1].head: must be str, not int",
        "strategies[2].name: unknown strategy 'extracter'; did you mean 'extractor'",
        "seeds: must be a non-empty list of integers",
        "train.epochs: must be int, not str",
        "train.optimiser: unknown training setting (did you mean 'optimizer'?)",
        "train.schedule: must be one of constant, cosine, step",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert len(info.value.problems) == len(expected)


def test_depth_larger_than_block_count_is_rejected(registries):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"],
                   "strategies": [{"name": "finetune", "depth": [1, 2, 3]}]}, registries)
    assert info.value.problems == [
        "strategies[0].depth: depth 3 is larger than the 2 blocks of backbone 'toy/centroid'; use 0..2 or 'all'"]


def test_a_dataset_problem_is_reported_once_for_all_its_train_sizes(registries, tmp_path):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "backbones": ["toy/centroid"], "strategies": ["extractor"],
                   "datasets": [{"name": "gone", "plugin": "folder", "root": str(tmp_path / "gone"),
                                 "train_size": [2, 5, "all"]}]}, registries)
    (problem,) = info.value.problems
    assert problem.startswith("datasets[0] (gone):") and str(tmp_path / "gone") in problem


def test_a_list_of_dataset_paths_is_refused(registries, tmp_path):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "backbones": ["toy/centroid"], "strategies": ["extractor"],
                   "datasets": [{"name": "two", "plugin": "folder", "root": [str(tmp_path), str(tmp_path)]}]},
                  registries)
    assert "datasets[0].root: a list of paths would make one dataset of several" in str(info.value)


@pytest.mark.parametrize("content, fragment", [
    (None, "grid file not found"),
    ("name: x\ndatasets: [a\n", "invalid YAML: line 3, column 1"),
    ("- just\n- a list\n", "the grid must be a mapping"),
    ("name: x\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [{name: finetune, depth: 5}]\n",
     "depth 5 is larger than the 2 blocks"),
])
def test_cli_bad_grid_exits_2_without_traceback(toy_plugin, tmp_path, content, fragment):
    path = tmp_path / "grid.yaml"
    if content is not None:
        path.write_text(content)
    result = tlbench("run", "--grid", str(path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_cell_ids(toy_plugin, tmp_path):
    path = write(tmp_path, """
        name: dry
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [extractor, {name: finetune, depth: [1, 2]}]
        seeds: [0, 1]
    """)
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 6 and "stripes/toy/centroid/finetune[depth=2]/seed=1" in ids
