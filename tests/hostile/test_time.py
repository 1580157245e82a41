"""Settings that could hang or crash a run (issue 27) end within seconds, exit 2 and name themselves.

A Ray address or MLflow store that does not answer, a pathological --only pattern and a bad
$TLBENCH_THREADS. Every subprocess has a timeout, so a hang fails the test instead of the suite.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap

import pytest

from support import REPO, tlbench
from tlbench.run.runner import select_cells, wildcard_match

GRID = "name: hostile\ndatasets: [stripes]\nbackbones: [toy/centroid]\nstrategies: [extractor]\ntrain: {epochs: 1}\n"


@pytest.fixture
def grid(toy_plugin, tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refused(result, *needles: str) -> None:
    """Exit 2 with one `error:` line holding every needle, and no traceback."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and all(needle in errors[0] for needle in needles), result.stderr[-3000:]


# ------------------------------------------------------------------------- Ray

def test_a_ray_address_where_nothing_listens_is_refused_at_once(grid, tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray",
                     "--ray-address", address, timeout=60)
    refused(result, f"--ray-address '{address}': nothing answers at {address}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("address", ["not an address", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:6379"])
def test_a_malformed_ray_address_says_what_is_accepted(grid, tmp_path, address):
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray",
                     "--ray-address", address, timeout=60)
    refused(result, f"--ray-address '{address}' is not a Ray address: give HOST:PORT", "ray://HOST:PORT", "auto")


def test_ray_address_from_the_environment_is_checked_and_named(grid, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{closed_port()}")
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray", timeout=60)
    refused(result, "RAY_ADDRESS 'ray://127.0.0.1:", "nothing answers")


def test_a_ray_client_address_that_accepts_but_never_speaks_fails_within_a_minute(grid, tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"ray://127.0.0.1:{silent.getsockname()[1]}"
        result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--executor", "ray",
                         "--ray-address", address, timeout=60)
    refused(result, f"--ray-address '{address}': cannot connect to a Ray cluster there")


# ----------------------------------------------------------------------- MLflow

def track(grid, tmp_path, uri: str):
    return tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), "--track", "mlflow",
                   "--tracking-uri", uri, timeout=60)


def test_an_unknown_tracking_scheme_is_refused_before_any_cell(grid, tmp_path):
    result = track(grid, tmp_path, "bogus://x/y")
    refused(result, "--tracking-uri 'bogus://x/y': MLflow cannot use this store", "unsupported URI")
    assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_a_sqlite_store_that_cannot_be_written_is_refused_within_seconds(grid, tmp_path):
    (tmp_path / "a-file").write_text("in the way")
    (tmp_path / "a-folder").mkdir()
    for path in (tmp_path / "a-file" / "mlflow.db", tmp_path / "a-folder"):  # MLflow alone: 100 s of retries, then a traceback
        result = track(grid, tmp_path, f"sqlite:///{path}")
        refused(result, f"--tracking-uri 'sqlite:///{path}': cannot write the SQLite file {path}")
        assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_a_file_store_that_cannot_be_written_is_refused(grid, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    (tmp_path / "a-file").write_text("in the way")
    uri = (tmp_path / "a-file" / "mlruns").as_uri()
    refused(track(grid, tmp_path, uri), f"--tracking-uri '{uri}': MLflow cannot use this store")


def test_an_http_store_that_does_not_answer_is_refused_within_seconds(grid, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"  # MLflow alone: seven retries over 250 s, then a traceback
    refused(track(grid, tmp_path, uri), f"--tracking-uri '{uri}': no server answers within 5 s (Connection refused)")
    assert not (tmp_path / "out" / "runs.jsonl").exists()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        refused(track(grid, tmp_path, uri), f"--tracking-uri '{uri}': no server answers within 5 s (timed out)")


# ------------------------------------------------------------------------ --only

class Named:
    def __init__(self, cell_id: str) -> None:
        self.cell_id = cell_id


def test_only_with_thirty_stars_against_long_ids_ends_promptly():
    code = textwrap.dedent("""
        from tlbench.run.runner import select_cells

        class Named:
            def __init__(self, cell_id):
                self.cell_id = cell_id

        cells = [Named("x" * 400 + str(i)) for i in range(10)]
        print(len(select_cells(cells, "*x" * 30 + "!")), len(select_cells(cells, "*x" * 30 + "*7")))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]


def as_regex(pattern: str) -> str:
    """A backtracking matcher (``re``): the oracle for ordinary patterns."""
    return re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")


IDS = ["stripes/toy/centroid/extractor/seed=0", "stripes/toy/centroid/finetune[depth=2]/seed=1",
       "cifar10[train_size=10]/timm/resnet18/finetune[depth=12]/seed=0", "a?b*c/x/y/z/seed=3", ""]
PATTERNS = ["*", "", "?", "*seed=0", "stripes/*/finetune[depth=2]/*", "*depth=1?/seed=0", "*[train_size=10]*seed=0",
            "a?b*c/*", "a\\b*", "*/*/*/*/seed=?", "**seed=1", "stripes*", "*toy*centroid*", "s?ripes/*", "*z/seed=3*"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_wildcards_match_exactly_what_the_regex_matched(pattern):
    assert [wildcard_match(pattern, i) for i in IDS] == [bool(re.fullmatch(as_regex(pattern), i)) for i in IDS]


def test_only_prefers_a_substring_match_to_wildcards():
    cells = [Named(i) for i in IDS]
    assert [c.cell_id for c in select_cells(cells, "finetune[depth=2]")] == [IDS[1]]  # brackets literal
    assert [c.cell_id for c in select_cells(cells, "a?b*c")] == [IDS[3]]  # `?` and `*` as written in the id
    assert [c.cell_id for c in select_cells(cells, "*seed=0")] == [IDS[0], IDS[2]]


# ------------------------------------------------------------- $TLBENCH_THREADS

@pytest.mark.parametrize("value", ["abc", "0", "-1", "100000", "2.5", "9" * 5000])
def test_a_bad_thread_count_stops_run_and_predict_before_anything(grid, tmp_path, monkeypatch, value):
    most = 4 * os.cpu_count()
    monkeypatch.setenv("TLBENCH_THREADS", value)
    needles = (f"TLBENCH_THREADS={value[:40]!r} is not a thread count from 1 to {most}",)
    refused(tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"), timeout=60), *needles)
    assert not (tmp_path / "out").exists()
    image = tmp_path / "image.png"
    image.write_bytes(b"not read")
    refused(tlbench("predict", str(image), "--backbone", "toy/centroid", timeout=60), *needles)


def test_the_largest_thread_count_is_accepted(grid, monkeypatch):
    monkeypatch.setenv("TLBENCH_THREADS", str(4 * os.cpu_count()))
    result = tlbench("run", "--grid", str(grid), "--dry-run", timeout=60)
    assert result.returncode == 0, result.stderr
