"""Grid expansion, defaults and every validation error."""

from __future__ import annotations

import textwrap

import pytest

from support import tlbench
from tlbench.grid.loading import GridError, load_grid
from tlbench.plugin.registry import collect
from tlbench.plugin.specs import TrainSettings


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
    from PIL import Image

    monkeypatch.setenv("TLB_DATA", "elsewhere")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sub = tmp_path / "grids"
    roots = [sub / "data" / "x", sub / "elsewhere" / "y", tmp_path / "home" / "z"]
    for root in roots:  # real image folders, so the folder plugin's check passes
        for name in ("cat", "dog"):
            (root / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(root / name / "1.png")
    path = write(sub, """
        name: paths
        datasets: [{name: a, plugin: folder, root: data/x}, {name: b, plugin: folder, root: "${TLB_DATA}/y"},
                   {name: c, plugin: folder, root: ~/z}]
        backbones: [{name: toy/centroid, weights: none}]
        strategies: [extractor]
    """)
    grid = load_grid(path, registries)
    assert [d.options["root"] for d in grid.datasets] == [str(r) for r in roots]
    assert grid.backbones[0].options["weights"] == "none"


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
        "strategies[1].head: must be one of linear, flatten-linear, book, logreg, not 3",
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
        "strategies[0].depth: depth 3 is larger than the 2 blocks; use 0..2 or 'all' (backbone 'toy/centroid')"]


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
    ("name: x\nk: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML: nested too deeply"),
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


def test_values_training_would_reject_are_grid_errors(registries):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"], "seeds": [0, 0],
                   "strategies": [{"name": "finetune", "lr": -0.1, "momentum": 1.5}],
                   "train": {"weight_decay": -1e-4, "image_size": 32.5, "label_smoothing": 1.0,
                             "warmup_epochs": -1, "patience": 0, "timeout": -5, "lr": float("nan")}},
                  registries)
    assert sorted(info.value.problems) == sorted([
        "strategies[0].lr: must be >= 0, not -0.1",
        "strategies[0].momentum: must be in [0, 1), not 1.5",
        "train.weight_decay: must be >= 0, not -0.0001",
        "train.image_size: must be int or null, not float (32.5)",
        "train.label_smoothing: must be in [0, 1), not 1.0",
        "train.warmup_epochs: must be >= 0, not -1",
        "train.patience: must be >= 1, not 0",
        "train.timeout: must be > 0 seconds, not -5",
        "train.lr: must be a finite number, not nan",
        "seeds: 0 appear(s) more than once; each seed runs once, so list each only once",
    ])


def test_epochs_and_batch_size_are_range_checked(registries):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
                   "train": {"epochs": -1, "batch_size": 0}}, registries)
    assert info.value.problems == ["train.epochs: must be from 0 to 10,000 (a sanity bound on one cell's epochs), not -1",
                                   "train.batch_size: must be >= 1, not 0"]


def test_report_settings_are_checked(registries, tmp_path):
    base = {"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    assert load_grid({**base, "report": {"small_per_class": 50}}, registries).report == {"small_per_class": 50}
    assert load_grid(base, registries).report == {}
    for report, problem in (({"small_per_class": 0}, "report.small_per_class: must be an int >= 1, not 0"),
                            ({"small_per_class": True}, "report.small_per_class: must be an int >= 1, not True"),
                            ({"small_per_class": 2.5}, "report.small_per_class: must be an int >= 1, not 2.5"),
                            ({"small_per_clas": 5}, "report.small_per_clas: unknown report setting (did you mean "
                                                    "'small_per_class'?); allowed: small_per_class"),
                            ([5], "report: must be a mapping of report settings (small_per_class), not list")):
        with pytest.raises(GridError) as info:
            load_grid({**base, "report": report}, registries)
        assert info.value.problems == [problem]
    path = write(tmp_path, """
        name: g
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [extractor]
        report: {small_per_class: -3}
    """)
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 2 and "report.small_per_class: must be an int >= 1, not -3" in result.stderr


def test_image_size_is_bounded_in_train_and_in_entries(registries):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "strategies": ["extractor"], "train": {"image_size": 100000},
                   "datasets": [{"name": "stripes", "image_size": 5000}],
                   "backbones": [{"name": "toy/centroid", "image_size": [64, 100000]}]}, registries)
    assert info.value.problems == [
        "train.image_size: must be from 1 to 4096 pixels, not 100000",
        "datasets[0].image_size: must be from 1 to 4096 pixels, not 5000",
        "backbones[0].image_size: must be from 1 to 4096 pixels, not 100000",
    ]


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "a\\b"])
def test_grid_name_cannot_leave_the_results_folder(registries, name):
    with pytest.raises(GridError) as info:
        load_grid({"name": name, "datasets": ["stripes"], "backbones": ["toy/centroid"],
                   "strategies": ["extractor"]}, registries)
    (problem,) = info.value.problems
    assert problem.startswith(f"name: {name!r} is not a folder name")


BILLION_LAUGHS = """
name: laughs
datasets: [stripes]
backbones: [toy/centroid]
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
strategies: [{name: extractor, head: *i}]
"""


def test_a_billion_laughs_grid_is_refused_before_any_value_is_built(registries, tmp_path, monkeypatch):
    import yaml

    built = []
    construct = yaml.SafeLoader.construct_document
    monkeypatch.setattr(yaml.SafeLoader, "construct_document", lambda self, node: built.append(node) or construct(self, node))
    load_grid(write(tmp_path, "name: g\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n"),
              registries)
    assert len(built) == 1  # the spy sees a document that is built
    with pytest.raises(GridError) as info:
        load_grid(write(tmp_path, BILLION_LAUGHS), registries)
    assert info.value.problems == ["strategies[0].head: holds more than 100000 values once its aliases (*name) are "
                                   "expanded; a grid needs far fewer: write it out, or repeat it fewer times"]
    assert len(built) == 1  # refused on the composed nodes: no value of the 9**9 was built


def test_a_billion_laughs_grid_is_refused_by_the_cli_naming_the_field(toy_plugin, tmp_path):
    path = write(tmp_path, BILLION_LAUGHS)
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "strategies[0].head: holds more than 100000 values once its aliases (*name) are expanded" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr) < 2000


def test_messages_quote_at_most_80_characters_of_a_value(registries):
    with pytest.raises(GridError) as info:
        load_grid({"name": "g", "datasets": ["stripes"], "backbones": ["toy/centroid"],
                   "strategies": [{"name": "extractor", "head": {"k": "x" * 10**5}}],
                   "train": {"optimizer": "x" * 10**5}}, registries)
    for problem in info.value.problems:
        assert len(problem) < 250, problem


def test_a_value_containing_itself_is_refused(registries, tmp_path):
    path = write(tmp_path, "name: g\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: &s [*s]\n")
    with pytest.raises(GridError, match=r"line 4: an alias .* makes this value contain itself"):
        load_grid(path, registries)


def test_yaml_tags_that_build_python_objects_are_refused_and_nothing_runs(toy_plugin, tmp_path):
    witness = tmp_path / "executed"
    path = write(tmp_path, f"""
        name: !!python/object/apply:os.system ["touch {witness}"]
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [extractor]
    """)
    result = tlbench("run", "--grid", str(path), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "invalid YAML: line 2, column 7: could not determine a constructor for the tag" in result.stderr
    assert not witness.exists()


def finetune_grid(*strategies, backbones=("toy/centroid",)) -> dict:
    return {"name": "g", "datasets": ["stripes"], "backbones": list(backbones), "strategies": list(strategies)}


def test_block_selections_are_checked_against_every_backbone(registries):
    with pytest.raises(GridError) as info:
        load_grid(finetune_grid({"name": "finetune", "blocks": [0, 99]}, {"name": "finetune", "blocks": "first:3"},
                                {"name": "finetune", "blocks": ["pixels", "nope"]}, {"name": "gradual", "depth": 5}),
                  registries)
    assert info.value.problems == [
        "strategies[0].blocks: block 99 is out of range: the backbone has 2 blocks, 0..1 (backbone 'toy/centroid')",
        "strategies[1].blocks: 'first:3': K must be in 1..2 (the backbone has 2 blocks) (backbone 'toy/centroid')",
        "strategies[2].blocks: no block named 'nope'; the blocks are pixels, identity (or indices 0..1) "
        "(backbone 'toy/centroid')",
        "strategies[3].depth: depth 5 is larger than the 2 blocks; use 0..2 or 'all' (backbone 'toy/centroid')"]


def test_a_list_of_blocks_is_one_cell_and_a_list_of_lists_sweeps(registries):
    cells = load_grid(finetune_grid({"name": "finetune", "blocks": [0, "identity"]},
                                    {"name": "finetune", "blocks": [[0], [1]]}, {"name": "finetune", "blocks": "first:1"},
                                    {"name": "finetune", "depth": 1}), registries).cells()
    labels = [c.strategy.label for c in cells]
    assert labels == ["finetune[blocks=[0,\"identity\"]]", "finetune[blocks=[0]]", "finetune[blocks=[1]]",
                      "finetune[blocks=first:1]", "finetune[depth=1]"]
    assert [c.strategy.options.get("blocks") for c in cells] == [[0, "identity"], [0], [1], "first:1", None]
    assert len({c.key for c in cells}) == 5  # kept as written: first:1, [0] and depth 1 are separate cells


def test_blocks_and_depth_in_one_entry_are_refused(registries):
    with pytest.raises(GridError) as info:
        load_grid(finetune_grid({"name": "finetune", "depth": 1, "blocks": [0]}), registries)
    assert info.value.problems == ["strategies[0].blocks: `blocks` replaces `depth`: give one of them, not both"]


def test_a_strategy_may_repeat_with_other_options_but_not_exactly(registries):
    cells = load_grid(finetune_grid("finetune", {"name": "finetune", "lr": 0.01, "depth": [1, 2]}), registries).cells()
    assert [c.strategy.label for c in cells] == ["finetune", "finetune[lr=0.01,depth=1]", "finetune[lr=0.01,depth=2]"]
    with pytest.raises(GridError) as info:
        load_grid(finetune_grid({"name": "finetune", "depth": 2}, "extractor", {"name": "finetune", "depth": 2}),
                  registries)
    assert info.value.problems == ["strategies[2]: repeats strategies[0] exactly; remove one, or give it other options"]


def test_a_backbone_whose_framework_has_no_engine_is_refused(registries):
    with pytest.raises(GridError) as info:
        load_grid(finetune_grid("extractor", backbones=("toy/centroid", "toy/orphan")), registries)
    (problem,) = info.value.problems
    assert problem.startswith("backbones[1] (toy/orphan): its framework 'cobol' has no engine installed")


def test_a_strategy_can_run_on_some_backbones_only(registries):
    base = finetune_grid("extractor", {"name": "scratch", "backbones": ["toy/centroid"]},
                         backbones=("toy/centroid", {"name": "other", "plugin": "toy/centroid", "sleep": 0.0}))
    ids = [c.cell_id for c in load_grid(base, registries).cells()]
    assert ids == ["stripes/toy/centroid/extractor/seed=0", "stripes/toy/centroid/scratch/seed=0",
                   "stripes/other/extractor/seed=0"]
    with pytest.raises(GridError) as info:
        load_grid({**base, "strategies": [{"name": "scratch", "backbones": ["toy/centroi"]}]}, registries)
    assert info.value.problems[0].startswith("strategies[0].backbones: 'toy/centroi' is not a backbone of this grid "
                                             "(did you mean 'toy/centroid'?)")
