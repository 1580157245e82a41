"""Every hook is documented with a complete example, and exercised by a test (datasette style)."""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from tlbench import hookspecs

HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("tlbench_")]
TESTS = Path(__file__).resolve().parents[1]


def test_the_hooks_are_the_documented_four():
    assert sorted(HOOKS) == ["tlbench_cell_finished", "tlbench_register_backbones",
                             "tlbench_register_datasets", "tlbench_register_strategies"]


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_docstring_with_a_runnable_example(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and "Example" in doc, f"{hook} needs a docstring with an example"
    example = textwrap.dedent(doc.split("::", 1)[1])
    compile(example, f"<{hook} example>", "exec")
    assert f"def {hook}(" in example


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_plugin_under_test(hook):
    sources = [p.read_text() for p in TESTS.rglob("*.py") if p.name != Path(__file__).name]
    assert any(f"def {hook}(" in s for s in sources), f"no test plugin implements {hook}"


def test_the_dataset_example_runs():
    namespace: dict = {}
    doc = inspect.getdoc(hookspecs.tlbench_register_datasets)
    exec(textwrap.dedent(doc.split("::", 1)[1]), namespace)
    (spec,) = list(namespace["tlbench_register_datasets"]())
    data = spec.load()
    assert data.num_classes == 2 and data.splits["train"].images(16).shape == (20, 16, 16, 3)
