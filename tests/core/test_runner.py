"""Runner: failure isolation, resume without loss or duplicates, the lock, summaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support import tlbench
from tlbench.results import load_results
from tlbench.run.execution import linux_without_gpu_device_files
from tlbench.run.runner import RunLocked, run_grid, run_lock

ISOLATION_GRID = {
    "name": "isolation",
    "datasets": ["stripes"],
    "backbones": [
        "toy/centroid",
        {"name": "broken", "plugin": "toy/centroid", "fail": True},
        {"name": "nan", "plugin": "toy/centroid", "nan": True},
        {"name": "slow", "plugin": "toy/centroid", "sleep": 5.0, "timeout": 0.5},
    ],
    "strategies": ["extractor", "classifier"],
}


def read_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_failed_cells_are_isolated_and_recorded(toy_plugin, tmp_path):
    frame = run_grid(ISOLATION_GRID, out=tmp_path / "run", device="cpu")
    status = dict(zip(frame.cell_id, frame.status, strict=True))
    assert status["stripes/toy/centroid/extractor/seed=0"] == "ok"
    assert status["stripes/toy/centroid/classifier/seed=0"] == "not-applicable"
    assert status["stripes/broken/extractor/seed=0"] == "failed"
    errors = dict(zip(frame.cell_id, frame.error, strict=True))
    assert "toy backbone asked to fail" in errors["stripes/broken/extractor/seed=0"]
    assert "training loss became nan" in errors["stripes/nan/extractor/seed=0"]
    assert "timed out after 0.5 s" in errors["stripes/slow/extractor/seed=0"]
    assert "no ImageNet class mapping" in errors["stripes/toy/centroid/classifier/seed=0"]
    ok = frame[frame.status == "ok"].iloc[0]
    assert ok.test_accuracy == 1.0


def test_result_lines_carry_the_documented_keys(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    run_grid({**ISOLATION_GRID, "backbones": ["toy/centroid"], "strategies": ["extractor"]}, out=out, device="cpu")
    (record,) = read_lines(out)
    for key in ("cell_id", "key", "dataset", "backbone", "strategy", "params", "seed", "status", "error",
                "metrics", "versions"):
        assert key in record
    assert record["strategy"] == "extractor" and record["backbone"] == "toy/centroid"
    assert set(record["params"]) == {"dataset", "backbone", "strategy", "train"}
    assert record["params"]["train"]["epochs"] == 5
    for key in ("test_accuracy", "test_loss", "epoch_seconds", "epochs", "train_images", "test_images",
                "trainable_params", "non_trainable_params", "wall_seconds"):
        assert key in record["metrics"]
    assert record["metrics"]["dataset_info"]["train_size_real"] == 24
    env = json.loads((out / "env.json").read_text())
    assert env["device"] == "cpu" and env["versions"]["tlbench"] and "started" in env
    assert env["allocator"].startswith("glibc" if sys.platform.startswith("linux") else "system")
    assert (out / "summary.csv").exists() and "| cell_id" in (out / "summary.md").read_text()


def test_cells_that_train_from_an_earlier_block_run_first_and_later_ones_extend_their_cached_prefix(
        toy_plugin, tmp_path):
    grid = {**ISOLATION_GRID, "backbones": ["toy/centroid"],
            "strategies": ["extractor", {"name": "finetune", "depth": [1, 2]}, "scratch"]}
    run_grid(grid, out=tmp_path / "run", device="cpu", cache_dir=tmp_path / "cache")
    ran = [(r["strategy"], r["params"]["strategy"].get("depth"), r["metrics"]["cache"]) for r in read_lines(tmp_path / "run")]
    assert ran == [("finetune", 2, {"activations": "off"}),  # trains both blocks: nothing frozen to cache
                   ("finetune", 1, {"activations": "miss"}),  # computes the frozen first block and caches it
                   ("extractor", None, {"features": "extended"}),  # continues that cached block, not the pixels
                   ("scratch", None, ran[3][2])]  # no block option: last, in grid order


def test_cli_exit_codes_and_resume(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: resume
        datasets: [stripes]
        backbones: [toy/centroid, {name: broken, plugin: toy/centroid, fail: true}]
        strategies: [extractor]
        seeds: [0, 1]
    """))
    out = tmp_path / "out"
    first = tlbench("run", "--grid", str(grid), "--out", str(out))
    assert first.returncode == 1, first.stderr
    assert len(read_lines(out)) == 4
    second = tlbench("run", "--grid", str(grid), "--out", str(out))
    assert second.returncode == 1
    lines = read_lines(out)
    assert len(lines) == 6  # only the two failed cells ran again
    assert [r["status"] for r in lines[4:]] == ["failed", "failed"]
    only_ok = tlbench("run", "--grid", str(grid), "--out", str(out), "--only", "toy/centroid")
    assert only_ok.returncode == 0 and len(read_lines(out)) == 6
    forced = tlbench("run", "--grid", str(grid), "--out", str(out), "--only", "*seed=0", "--rerun")
    assert forced.returncode == 1 and len(read_lines(out)) == 8
    frame = load_results(out)
    assert len(frame) == 4  # one row per cell, the latest record


def test_second_run_into_the_same_dir_is_refused(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    out.mkdir()
    with run_lock(out):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"), run_lock(out):
            pass
        grid = tmp_path / "grid.yaml"
        grid.write_text("name: l\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
        result = tlbench("run", "--grid", str(grid), "--out", str(out))
        assert result.returncode == 2 and "is in use by pid" in result.stderr
    with run_lock(out):  # released
        pass


def test_torn_last_line_is_dropped_and_the_cell_rerun(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    grid = {"name": "torn", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
            "seeds": [0, 1]}
    run_grid(grid, out=out, device="cpu")
    text = (out / "runs.jsonl").read_text()
    first, second = text.splitlines()
    (out / "runs.jsonl").write_text(first + "\n" + second[: len(second) // 2])
    run_grid(grid, out=out, device="cpu")
    lines = read_lines(out)
    assert [r["seed"] for r in lines] == [0, 1]


def start_held_run(tmp_path: Path, seeds: int, strategies: str = "extractor") -> tuple[Path, Path, subprocess.Popen]:
    """`tlbench run` in a subprocess whose cells each wait for the file tmp_path/release-<seed>."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        name: held
        datasets: [stripes]
        backbones: [{{name: held, plugin: toy/centroid, wait_for: "{tmp_path}/release-{{seed}}"}}]
        strategies: [{strategies}]
        seeds: {list(range(seeds))}
    """))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)
    return grid, out, process


def _ctrl_c_as_in_a_terminal() -> None:
    """A shell's background job starts with SIGINT ignored; a terminal's ``tlbench run`` does not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def release(tmp_path: Path, seeds) -> None:
    for seed in seeds:
        (tmp_path / f"release-{seed}").touch()


def wait_for_records(out: Path, count: int) -> None:
    runs, deadline = out / "runs.jsonl", time.monotonic() + 120
    while not (runs.exists() and runs.read_text().count("\n") >= count):
        assert time.monotonic() < deadline, f"{count} records were not written within 120 s"
        time.sleep(0.05)


def wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} was not written within 120 s"
        time.sleep(0.01)


def test_kill_9_mid_grid_loses_nothing_and_rerun_completes(toy_plugin, tmp_path):
    release(tmp_path, [0, 1])  # extractor seeds 0 and 1 finish; extractor seed 2 waits
    grid, out, process = start_held_run(tmp_path, seeds=5, strategies="extractor, scratch")
    wait_for_records(out, 2)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    survived = read_lines(out)
    assert [(r["strategy"], r["seed"]) for r in survived] == [("extractor", 0), ("extractor", 1)]
    release(tmp_path, range(5))
    result = tlbench("run", "--grid", str(grid), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = read_lines(out)
    assert lines[:2] == survived
    assert len(lines) == 10 and len({r["key"] for r in lines}) == 10
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    assert len(read_lines(out)) == 10  # a complete grid appends nothing


def test_report_rebuilds_summaries(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    run_grid({"name": "r", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]},
             out=out, device="cpu")
    (out / "summary.csv").unlink()
    result = tlbench("report", str(out))
    assert result.returncode == 0 and (out / "summary.csv").exists()
    assert tlbench("report", str(out / "nothing")).returncode == 2


def test_cell_finished_hook_sees_each_result_after_it_is_on_disk(toy_plugin, tmp_path, monkeypatch):
    log = tmp_path / "finished.log"
    monkeypatch.setenv("TOY_FINISHED_LOG", str(log))
    monkeypatch.setenv("TOY_RUN_DIR", str(tmp_path / "run"))
    run_grid({**ISOLATION_GRID, "backbones": ["toy/centroid", {"name": "broken", "plugin": "toy/centroid", "fail": True}]},
             out=tmp_path / "run", device="cpu")
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == [r["cell_id"] for r in read_lines(tmp_path / "run")]
    assert [c[1] for c in calls] == ["ok", "not-applicable", "failed", "not-applicable"]
    assert all(c[2] for c in calls)


@pytest.mark.parametrize("signum, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_stops_cleanly_and_the_rerun_completes(toy_plugin, tmp_path, signum, exit_code):
    release(tmp_path, [0, 1])
    grid, out, process = start_held_run(tmp_path, seeds=6)
    wait_for_records(out, 2)
    process.send_signal(signum)  # the third cell is waiting
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == exit_code and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert [r["seed"] for r in read_lines(out)] == [0, 1]
    summary = (out / "summary.csv").read_text().splitlines()  # the tables show what finished
    assert len(summary) == 1 + 2 and (out / "report.md").exists()
    release(tmp_path, range(6))
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    assert [r["seed"] for r in read_lines(out)] == list(range(6))


def test_a_second_sigterm_while_the_tables_are_written_does_not_skip_them(toy_plugin, tmp_path):
    release(tmp_path, [0, 1])
    _, out, process = start_held_run(tmp_path, seeds=4)
    wait_for_records(out, 2)
    process.send_signal(signal.SIGTERM)
    wait_for_file(out / "summary.csv")  # written atomically, first of the tables: the report is being written now
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    assert "before stopping (signal again to stop at once)" in stderr  # the second signal came while the tables were written
    assert (out / "summary.csv").read_text().count("\n") == 1 + 2 and (out / "report.md").exists()


def test_an_out_that_cannot_be_a_run_directory_is_refused_with_a_message(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: o\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    for out in (in_the_way, in_the_way / "run"):
        result = tlbench("run", "--grid", str(grid), "--out", str(out))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"error: cannot use {out} as a run directory" in result.stderr and "give --out a folder" in result.stderr
    assert in_the_way.read_text() == "not a folder"


def test_a_finished_run_that_cannot_write_its_tables_says_so(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: t\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
    out = tmp_path / "out"
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    again = tlbench("run", "--grid", str(grid), "--out", str(out))
    assert again.returncode == 0 and "0 cells run" in again.stderr  # nothing to run: exit 0
    records = (out / "runs.jsonl").read_text()
    (out / "summary.csv").unlink()
    (out / "summary.csv").mkdir()  # something in the way of the tables
    result = tlbench("run", "--grid", str(grid), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write the summaries of {out} (Is a directory: {out / 'summary.csv'})" in result.stderr
    assert f"`tlbench report {out}` rebuilds the tables" in result.stderr
    assert (out / "runs.jsonl").read_text() == records


def test_a_cache_dir_that_is_a_file_is_refused_before_any_cell_runs(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: c\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
    cache = tmp_path / "cache"
    cache.write_text("")
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--cache-dir", str(cache))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write the feature cache {cache}" in result.stderr and "give --cache-dir" in result.stderr
    assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_only_matches_an_id_as_printed_and_says_when_nothing_matches(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: only\ndatasets: [stripes]\nbackbones: [toy/centroid]\n"
                    "strategies: [{name: finetune, depth: [1, 2]}]\n")
    printed = tlbench("run", "--grid", str(grid), "--dry-run", "--only", "finetune[depth=2]")
    assert printed.stdout.split() == ["stripes/toy/centroid/finetune[depth=2]/seed=0"], printed.stderr
    wildcards = tlbench("run", "--grid", str(grid), "--dry-run", "--only", "*depth=1?/seed=0")
    assert wildcards.stdout.split() == ["stripes/toy/centroid/finetune[depth=1]/seed=0"], wildcards.stderr
    mixed = tlbench("run", "--grid", str(grid), "--dry-run", "--only", "stripes/*/finetune[depth=2]/*")  # brackets literal
    assert mixed.stdout.split() == ["stripes/toy/centroid/finetune[depth=2]/seed=0"], mixed.stderr
    nothing = tlbench("run", "--grid", str(grid), "--only", "extractor")
    assert nothing.returncode == 2 and "--only 'extractor' matches none of the 2 cells" in nothing.stderr


@pytest.mark.parametrize("crash, cause", [("kill", "killed by SIGKILL (signal 9)"), ("exit", "exited with code 3")])
def test_a_cell_that_kills_its_process_is_failed_and_the_grid_goes_on(toy_plugin, tmp_path, crash, cause):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        name: crashing
        datasets: [stripes]
        backbones: [toy/centroid, {{name: crashing, plugin: toy/centroid, crash: {crash}}}]
        strategies: [extractor]
        seeds: [0, 1]
    """))
    out = tmp_path / "out"
    result = tlbench("run", "--grid", str(grid), "--out", str(out), "--retries", "1")
    assert result.returncode == 1, result.stderr
    status = {r["cell_id"]: (r["status"], r["error"]) for r in read_lines(out)}
    assert status["stripes/toy/centroid/extractor/seed=0"] == ("ok", None)
    assert status["stripes/toy/centroid/extractor/seed=1"] == ("ok", None)
    for seed in (0, 1):
        state, error = status[f"stripes/crashing/extractor/seed={seed}"]
        assert state == "failed" and cause in error and "tried 2 times" in error
    assert "Traceback" not in result.stderr


def test_the_driver_imports_no_ml_framework(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: driver
        datasets: [{name: digits, train_size: 5}]
        backbones: [{name: timm/resnet10t, weights: none}]
        strategies: [{name: finetune, depth: 1}]
        train: {epochs: 1, image_size: 32}
    """))
    code = ("import sys\nfrom tlbench.cli import main\n"
            f"code = main(['run', '--grid', {str(grid)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
            "loaded = [m for m in ('torch', 'tensorflow', 'keras', 'timm', 'torchvision') if m in sys.modules]\n"
            "print('loaded:', loaded)\nsys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loaded: []" in result.stdout
    assert read_lines(tmp_path / "out")[0]["status"] == "ok"


@pytest.mark.skipif(not linux_without_gpu_device_files(), reason="needs a Linux machine without GPU device files")
def test_device_auto_without_a_gpu_imports_no_torch_for_a_grid_of_other_engines(toy_plugin, tmp_path):
    code = ("import sys\nfrom tlbench.run.runner import run_grid\n"
            "grid = {'name': 'numpy', 'datasets': ['stripes'], 'backbones': ['toy/centroid'], 'strategies': ['extractor']}\n"
            f"frame = run_grid(grid, out={str(tmp_path / 'out')!r}, device='auto', executor='inline')\n"
            "print('torch loaded:', 'torch' in sys.modules, 'device:', frame.iloc[0]['device'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch loaded: False device: cpu" in result.stdout


@pytest.mark.parametrize("train, converged, epochs_run", [
    ({"epochs": 2}, False, 2),  # the best epoch (1) is not 3 epochs before the last
    ({"epochs": 5}, True, 5),  # no epoch after the first improved on it: 4 without improvement
    ({"epochs": 50, "patience": 2}, True, 3),  # early stopping fired
])
def test_a_training_cell_records_whether_it_stopped_improving(toy_plugin, tmp_path, train, converged, epochs_run):
    grid = {"name": "converged", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
            "train": train}
    run_grid(grid, out=tmp_path / "run", device="cpu", executor="inline")
    (record,) = read_lines(tmp_path / "run")
    assert (record["metrics"]["converged"], len(record["metrics"]["history"])) == (converged, epochs_run)
