"""``scripts/compare_reference.py --runs`` compares finished runs and never starts one."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from support import REPO, load_script

REFERENCE = REPO / "results" / "reference" / "quickstart"


@pytest.fixture
def script(monkeypatch):
    module = load_script("scripts/compare_reference.py")

    def no_run(*args, **kwargs):
        raise AssertionError(f"compare_reference started a process: {args}")

    monkeypatch.setattr(subprocess, "run", no_run)
    return module


@pytest.mark.parametrize("given", ["run folder", "its parent"])
def test_runs_takes_the_run_folder_or_its_parent_and_compares_without_running(script, tmp_path, capsys, given):
    shutil.copytree(REFERENCE, tmp_path / "quickstart", ignore=lambda d, names: [n for n in names if n != "runs.jsonl"])
    runs = tmp_path / "quickstart" if given == "run folder" else tmp_path
    assert script.main(["quickstart", "--runs", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "every compared cell has the same test accuracy" in out
    assert out.count("+0.0000") == len((REFERENCE / "runs.jsonl").read_text().splitlines())


def test_a_missing_run_is_an_error_naming_the_command_that_makes_it(script, tmp_path, capsys):
    assert script.main(["quickstart", "textbook", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"no {tmp_path / 'quickstart' / 'runs.jsonl'}" in err
    assert f"tlbench run --grid benchmarks/quickstart.yaml --out {tmp_path / 'quickstart'}" in err
