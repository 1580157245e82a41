"""Every hook is documented with a complete example, and called when a grid runs."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from tlbench.plugin import hookspecs

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("tlbench_")]


def test_the_hooks_are_the_documented_six():
    assert sorted(HOOKS) == ["tlbench_cell_finished", "tlbench_register_backbones", "tlbench_register_datasets",
                             "tlbench_register_engines", "tlbench_register_strategies", "tlbench_run_started"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_with_a_runnable_example(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and "Example" in doc, f"{hook} needs a docstring with an example"
    example = textwrap.dedent(doc.split("::", 1)[1])
    compile(example, f"<{hook} example>", "exec")
    assert f"def {hook}(" in example


RECORDER = '''
import json, os
import tlbench
from tlbench.plugin.specs import DatasetSpec, EngineSpec, StrategySpec, TrainPlan


def called(hook):
    with open(os.environ["RECORDED_HOOKS"], "a") as f:
        f.write(json.dumps(hook) + "\\n")


@tlbench.hookimpl
def tlbench_register_datasets():
    called("tlbench_register_datasets")
    from tlbench_toy_plugin import load_stripes
    yield DatasetSpec("recorded/stripes", load=load_stripes, num_classes=2)


@tlbench.hookimpl
def tlbench_register_backbones():
    called("tlbench_register_backbones")
    return []


@tlbench.hookimpl
def tlbench_register_strategies():
    called("tlbench_register_strategies")
    yield StrategySpec("recorded/probe", plan=lambda options, data: TrainPlan())


@tlbench.hookimpl
def tlbench_register_engines():
    called("tlbench_register_engines")
    from tlbench_toy_plugin import CentroidEngine
    yield EngineSpec("recorded-numpy", load=CentroidEngine)


@tlbench.hookimpl
def tlbench_run_started(run):
    called("tlbench_run_started")


@tlbench.hookimpl
def tlbench_cell_finished(cell, result):
    called("tlbench_cell_finished")
'''


def test_every_hook_is_called_when_a_grid_runs(toy_plugin, tmp_path, monkeypatch):
    from support import install_fake_distribution
    from tlbench.run.runner import run_grid

    install_fake_distribution(toy_plugin, "tlbench-recorder", "recorder", "tlbench_recorder", RECORDER)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("RECORDED_HOOKS", str(calls))
    frame = run_grid({"name": "hooks", "datasets": ["recorded/stripes"], "backbones": ["toy/centroid"],
                      "strategies": ["recorded/probe"]}, out=tmp_path / "run", device="cpu")
    assert list(frame.status) == ["ok"]
    called = {json.loads(line) for line in calls.read_text().splitlines()}
    assert called == set(HOOKS)


def test_the_dataset_example_runs():
    namespace: dict = {}
    doc = inspect.getdoc(hookspecs.tlbench_register_datasets)
    exec(textwrap.dedent(doc.split("::", 1)[1]), namespace)
    (spec,) = list(namespace["tlbench_register_datasets"]())
    data = spec.load()
    assert data.num_classes == 2 and data.splits["train"].images(16).shape == (20, 16, 16, 3)
