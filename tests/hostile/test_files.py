"""Files that are not regular files, and tampered files a report or predict reads: a warning
or ``error:`` naming the file, never a hang or a traceback (issue 27)."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from support import tlbench
from tlbench.results import RunsLog
from tlbench.run.runner import run_grid

GRID = {"name": "kept", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"],
        "seeds": [0, 1]}


@pytest.fixture
def run_dir(toy_plugin, tmp_path):
    """A toy run of two seeds whose cells kept their test predictions."""
    run_grid(GRID, out=tmp_path / "run", device="cpu")
    return tmp_path / "run"


def kept_predictions(run_dir) -> list:
    return [run_dir / r["metrics"]["predictions_file"] for r in RunsLog(run_dir).read()]


def report(run_dir):
    """``tlbench report``, which would hang on a FIFO: the timeout fails the test instead."""
    result = tlbench("report", str(run_dir), timeout=120)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result


def test_a_fifo_as_kept_predictions_is_warned_about_not_read(run_dir):
    fifo = kept_predictions(run_dir)[0]
    fifo.unlink()
    os.mkfifo(fifo)
    result = report(run_dir)
    assert f"{fifo}: not usable kept predictions ({fifo} is a FIFO, not a regular file" in result.stderr
    assert "accuracy-only statistics for this cell" in result.stderr


def test_a_fifo_as_env_json_gives_the_default_settings(run_dir):
    env = run_dir / "env.json"
    env.unlink()
    os.mkfifo(env)
    result = report(run_dir)
    assert f"{env}: cannot read its report settings ({env} is a FIFO, not a regular file" in result.stderr
    assert "using the defaults" in result.stderr


def test_a_fifo_as_runs_jsonl_is_an_error_naming_it(toy_plugin, tmp_path):
    os.mkfifo(tmp_path / "runs.jsonl")
    result = tlbench("report", str(tmp_path), timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: {tmp_path / 'runs.jsonl'} is a FIFO, not a regular file" in result.stderr


def test_predict_refuses_a_fifo_image_naming_it(saved_toy_cell, tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    result = tlbench("predict", str(fifo), "--cell", str(saved_toy_cell), timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"error: cannot read image {fifo}: {fifo} is a FIFO, not a regular file" in result.stderr


def test_the_folder_dataset_skips_a_fifo_among_the_images(tmp_path):
    from tlbench_datasets.folder import load_folder

    for label, colour in (("cat", (200, 0, 0)), ("dog", (0, 0, 200))):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("RGB", (16, 16), colour).save(tmp_path / label / f"{i}.png")
    os.mkfifo(tmp_path / "cat" / "fifo.png")
    dataset = load_folder(root=str(tmp_path))
    listed = [p for split in dataset.splits.values() for p in split.paths]
    assert len(listed) == 8 and not any(p.endswith("fifo.png") for p in listed)


def rewrite_npz(path, **arrays) -> None:
    """Replace the kept predictions with ``arrays`` (each an array, or raw .npy bytes)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            if isinstance(value, bytes):
                archive.writestr(f"{name}.npy", value)
            else:
                buffer = io.BytesIO()
                np.save(buffer, value)
                archive.writestr(f"{name}.npy", buffer.getvalue())


def npy_declaring(shape, dtype="<f4", payload=b"\0" * 64) -> bytes:
    """An .npy header declaring ``shape``, followed by far fewer bytes."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + payload


@pytest.mark.parametrize("tampered", [
    {"test_probabilities": np.ones(12, np.float32), "test_labels": np.zeros(12, np.int64)},  # 1-D: AxisError
    {"test_probabilities": np.ones((12, 2), np.float32), "test_labels": np.zeros(7, np.int64)},  # lengths: ValueError
    {"test_probabilities": npy_declaring((10 ** 12, 2)), "test_labels": np.zeros(12, np.int64)},  # 1.82 TiB
    {"test_probabilities": np.ones((12, 2), np.float32), "test_labels": npy_declaring((12,), "|O")},  # objects
], ids=["one-dimensional", "mismatched-lengths", "declares-1e12-values", "object-labels"])
def test_tampered_kept_predictions_are_warned_about_once_and_ignored(run_dir, tampered):
    path = kept_predictions(run_dir)[1]
    rewrite_npz(path, **tampered)
    result = report(run_dir)
    assert result.stderr.count(f"{path}: not usable kept predictions") == 1, result.stderr
    assert "accuracy-only statistics for this cell" in result.stderr


@pytest.mark.parametrize("settings", [{"small_per_class": 5, "set_by": "someone"}, {"small_per_class": 5, "set_by": ["grid"]},
                                      {"small_per_class": "5"}, "five"], ids=["KeyError", "TypeError", "string", "not-an-object"])
def test_tampered_report_settings_are_warned_about_and_the_defaults_used(run_dir, settings):
    env = run_dir / "env.json"
    env.write_text(json.dumps({**json.loads(env.read_text()), "report": settings}))
    result = report(run_dir)
    assert f"{env}: cannot read its report settings" in result.stderr and "using the defaults" in result.stderr
    assert "the default (`tlbench report --small-per-class N`" in (run_dir / "report.md").read_text()


@pytest.mark.parametrize("field, value", [("history", 5), ("history", [5]), ("best_epoch", "1"),
                                          ("confusion_matrix", {"a": 1}), ("predictions_file", 3)])
def test_a_record_with_metrics_of_the_wrong_type_is_skipped_naming_its_line(run_dir, field, value):
    runs = run_dir / "runs.jsonl"
    first, second = runs.read_text().splitlines()
    record = json.loads(second)
    record["metrics"][field] = value
    runs.write_text(f"{first}\n{json.dumps(record)}\n")
    result = report(run_dir)
    assert f"runs.jsonl:2: skipping a line that is not a tlbench record (its metrics.{field} of the wrong type)" \
        in result.stderr
    assert (run_dir / "summary.csv").read_text().count("\n") == 1 + 1
