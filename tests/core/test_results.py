"""runs.jsonl: readers never change it, the writer repairs it, nothing a record holds is lost."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap

from support import tlbench
from tlbench.results import RunsLog
from tlbench.run.runner import run_grid

GRID = {"name": "records", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
        "seeds": [0, 1]}


def test_report_never_changes_runs_jsonl_even_with_a_torn_last_line(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    run_grid(GRID, out=out, device="cpu")
    runs = out / "runs.jsonl"
    being_written = runs.read_bytes() + b'{"cell_id": "stripes/toy/centroid/extractor/seed=2", "ke'
    runs.write_bytes(being_written)  # what a reader sees while `tlbench run` writes the third record
    result = tlbench("report", str(out))
    assert result.returncode == 0, result.stderr
    assert runs.read_bytes() == being_written
    assert "runs.jsonl:3: skipping an incomplete last line" in result.stderr
    assert (out / "summary.csv").read_text().count("\n") == 1 + 2


def test_a_last_record_without_its_newline_is_kept_not_rerun(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    run_grid(GRID, out=out, device="cpu")
    runs = out / "runs.jsonl"
    complete = runs.read_text()
    runs.write_text(complete.rstrip("\n"))  # killed between the record and its newline
    assert [r["seed"] for r in RunsLog(out).read()] == [0, 1]
    run_grid(GRID, out=out, device="cpu")
    assert runs.read_text() == complete  # the writer added the newline; seed 1 did not run again


def test_json_lines_that_are_not_records_are_skipped_with_their_line_number(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("name: r\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\n")
    out = tmp_path / "out"
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    runs = out / "runs.jsonl"
    hostile = runs.read_text() + '"str"\n[1, 2]\n{"status": "ok"}\n'
    runs.write_text(hostile)
    for command in (["report", str(out)], ["run", "--grid", str(grid), "--out", str(out)]):
        result = tlbench(*command)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        for number, kind in ((2, "str"), (3, "list"), (4, "dict")):
            assert f"runs.jsonl:{number}: skipping a line that is not a tlbench record (a {kind};" in result.stderr
    assert runs.read_text() == hostile  # the finished cell was not run again


def test_a_full_disk_while_appending_keeps_every_earlier_record(toy_plugin, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse to grow the file past a size, as a full disk does:
    the write that crosses it is cut short, the next one fails."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: full
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [extractor]
        seeds: [0]
    """))
    out = tmp_path / "out"
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0
    grid.write_text(grid.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    runs = out / "runs.jsonl"
    before = runs.read_bytes()

    def full_disk_past_the_first_record():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # report the error instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, resource.RLIM_INFINITY))

    result = subprocess.run([sys.executable, "-m", "tlbench.cli", "run", "--grid", str(grid), "--out", str(out)],
                            capture_output=True, text=True, timeout=600, preexec_fn=full_disk_past_the_first_record)
    assert runs.read_bytes() == before  # no partial line
    assert result.returncode == 2
    assert f"cannot write the record of stripes/toy/centroid/extractor/seed=1 to {runs}" in result.stderr
    assert "every earlier record is kept" in result.stderr
    assert tlbench("run", "--grid", str(grid), "--out", str(out)).returncode == 0  # room again: it resumes
    assert [r["seed"] for r in RunsLog(out).read()] == [0, 1]
