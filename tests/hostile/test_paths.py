"""Issue 27, the write side: tlbench writes only its own files, whole or not at all, never
through a link, and says which file it could not write."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support import limit_file_size, tlbench

ONE_CELL = "name: one\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [{name: finetune, depth: 2}]\n"
TWO_FAMILIES = ("name: two\ndatasets: [{name: grün, plugin: stripes}]\nbackbones: [toy/centroid]\n"
                "strategies: [extractor, {name: finetune, depth: 2}]\nseeds: [0, 1]\n")


def grid(tmp_path: Path, text: str = ONE_CELL) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def finished_run(tmp_path: Path, text: str = TWO_FAMILIES, *options: str) -> Path:
    out = tmp_path / "run"
    result = tlbench("run", "--grid", str(grid(tmp_path, text)), "--out", str(out), *options)
    assert result.returncode == 0, result.stderr
    return out


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def refused(result, *named: str) -> None:
    """Exit 2 with one `error:` line naming each of ``named``, and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    for name in named:
        assert name in line, line


def test_a_folder_of_someone_elses_files_is_refused_as_out(toy_plugin, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    mine = {"report.md": b"# my notes\n", "summary.csv": b"a,b\n1,2\n", "env.json": b'{"conda": "base"}\n',
            "accuracy_vs_cost.png": b"\x89PNG my own plot"}
    for name, data in mine.items():
        (project / name).write_bytes(data)
    run = tlbench("run", "--grid", str(grid(tmp_path)), "--out", str(project))
    refused(run, f"--out {project} holds files that are not a tlbench run", *mine)
    done = finished_run(tmp_path, ONE_CELL)
    combined = tlbench("report", str(done), str(done), "--out", str(project))
    refused(combined, f"--out {project} holds files that are not a tlbench run", *mine)
    assert contents(project) == mine


def test_an_interrupted_run_with_only_its_lock_is_a_run_directory(toy_plugin, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text("pid 4242 on elsewhere")  # killed before env.json was written
    (out / ".tmp-abc.json").write_bytes(b"{")  # a temporary file the kill left
    result = tlbench("run", "--grid", str(grid(tmp_path)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1


def test_a_report_deletes_only_the_stale_plots_its_own_manifest_lists(toy_plugin, tmp_path):
    out = finished_run(tmp_path)
    manifest = json.loads((out / ".tlbench-report.json").read_text())["files"]
    ours = [name for name in manifest if name.endswith(".png")]
    assert "accuracy_by_strategy.png" in ours and all((out / name).is_file() for name in ours)
    user_plot = out / "accuracy_vs_train_size.png"  # a plot name this grid's report never wrote
    user_plot.write_bytes(b"\x89PNG the user's own")
    (out / "runs.jsonl").write_text("")  # no cells any more: every plot the report wrote is stale
    result = tlbench("report", str(out))
    assert result.returncode == 0, result.stderr
    assert not any((out / name).exists() for name in ours)
    assert user_plot.read_bytes() == b"\x89PNG the user's own"
    assert json.loads((out / ".tlbench-report.json").read_text())["files"] == ["report.md", "report.html", "verdicts.json"]


def test_links_in_a_run_directory_are_replaced_never_written_through(toy_plugin, tmp_path):
    """Decided: a link where tlbench writes a whole file (a table, the report, a plot, env.json, a
    saved model's model.json) is replaced by the new file; its target is untouched."""
    out = finished_run(tmp_path, TWO_FAMILIES, "--save-models")
    model_info = sorted(out.glob("models/*/model.json"))[0]
    targets = {}
    for path in (out / "summary.csv", out / "report.md", out / "accuracy_by_strategy.png", out / "env.json", model_info):
        target = tmp_path / f"elsewhere-{len(targets)}"
        target.write_bytes(b"the user's own " + path.name.encode())
        path.unlink()
        path.symlink_to(target)
        targets[path] = target
    result = tlbench("run", "--grid", str(tmp_path / "grid.yaml"), "--out", str(out), "--rerun", "--save-models")
    assert result.returncode == 0, result.stderr
    for path, target in targets.items():
        assert target.read_bytes() == b"the user's own " + path.name.encode()
        assert not path.is_symlink() and path.stat().st_size > 0
    assert (out / "summary.csv").read_text().startswith("cell_id,status")
    assert json.loads(model_info.read_text())["framework"] == "numpy"


@pytest.mark.parametrize("name", ["runs.jsonl", ".lock"])
def test_a_linked_runs_log_or_lock_is_refused(toy_plugin, tmp_path, name):
    out = finished_run(tmp_path, ONE_CELL)
    target = tmp_path / f"elsewhere-{name}"
    data = (out / "runs.jsonl").read_bytes() + b'{"torn'  # a repair would cut this line off
    target.write_bytes(data)
    (out / name).unlink()
    (out / name).symlink_to(target)
    result = tlbench("run", "--grid", str(grid(tmp_path, ONE_CELL)), "--out", str(out), "--rerun")
    refused(result, f"{out / name} is a symbolic link; tlbench never writes through a link")
    assert target.read_bytes() == data


def test_a_full_disk_during_report_keeps_every_previous_file_whole_and_names_the_file(toy_plugin, tmp_path):
    out = finished_run(tmp_path)
    before = contents(out)
    smallest_plot = min(len(data) for name, data in before.items() if name.endswith(".png"))
    result = tlbench("report", str(out), preexec_fn=limit_file_size(smallest_plot // 2))
    refused(result, "File too large", f"{out}/")
    assert contents(out) == before  # nothing at 0 bytes, nothing cut short, no temporary file left


def test_a_run_whose_report_does_not_fit_says_the_records_are_safe_in_one_line(toy_plugin, tmp_path):
    out = tmp_path / "run"
    result = tlbench("run", "--grid", str(grid(tmp_path)), "--out", str(out), preexec_fn=limit_file_size(10_000))
    refused(result, "cannot write the report of", f"{out}/", "File too large", f"the records are safe in {out / 'runs.jsonl'}",
            f"`tlbench report {out}` rebuilds")
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1
    assert tlbench("report", str(out)).returncode == 0 and (out / "report.html").stat().st_size > 10_000


def test_report_writes_utf8_under_the_c_locale(toy_plugin, tmp_path):
    out = finished_run(tmp_path)
    result = tlbench("report", str(out), env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"})
    assert result.returncode == 0, result.stderr
    assert "grün" in (out / "report.md").read_text(encoding="utf-8")
    assert "grün" in (out / "report.html").read_text(encoding="utf-8")


def test_a_library_that_saves_only_to_a_named_path_saves_atomically_and_never_through_a_link(tmp_path):
    from tlbench.files import atomic_save

    target, elsewhere = tmp_path / "model.keras", tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours")
    target.symlink_to(elsewhere)
    names = []

    def save(path):  # as keras' Model.save: a path with the right suffix, written by the library
        names.append(path)
        path.write_bytes(b"saved")

    atomic_save(target, save)
    assert names[0].suffix == ".keras" and names[0].parent == tmp_path and not names[0].exists()
    assert not target.is_symlink() and target.read_bytes() == b"saved" and elsewhere.read_text() == "not yours"

    def crash(path):
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=f"No space left on device: '{target}'"):
        atomic_save(target, crash)
    assert target.read_bytes() == b"saved" and sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.txt", "model.keras"]
