"""`tlbench recommend FOLDER` on real images and a real pretrained backbone (timm's MobileNetV2 with
torchvision's offline ImageNet weights), small enough for two CPU cores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from support import SHARED_DATA, tlbench
from tlbench import cli
from tlbench.grid.loading import load_grid
from tlbench.plugin.registry import collect
from tlbench.recommend.search import RECOMMENDATION_FILE, STRATEGY_SETS

SIGN = SHARED_DATA / "sign-language-digits"
FAST = ("--backbones", "timm/mobilenetv2_100", "--strategies", "extractor", "finetune", "--seeds", "2",
        "--image-size", "32", "--budget", "5")
KEYS = {"format", "folder", "dataset", "pick", "runner_up", "comparison", "candidates", "scores", "search",
        "budget_seconds", "spent_seconds", "full_grid_seconds_estimate", "full_grid_seconds_at_cap",
        "full_grid_estimate_method", "saved_model", "answer"}


def small_folder(root: Path, classes=("0", "1", "2"), sizes=(8, 3, 3)) -> Path:
    """Split folders of real sign-language digits: ``sizes`` images per class in train, valid, test."""
    for split, count in zip(("train", "valid", "test"), sizes, strict=True):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for image in sorted((SIGN / split / name).iterdir())[:count]:
                shutil.copy(image, root / split / name / image.name)
    return root


def records(run_dir: Path) -> list[dict]:
    path = run_dir / "cells" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def recommended(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    folder = small_folder(root / "digits")
    out, grid = root / "out", root / "final.yaml"
    done = tlbench("recommend", str(folder), *FAST, "--out", str(out), "--write-grid", str(grid), "--save-model",
                   env={**os.environ, "TLBENCH_CACHE_DIR": str(root / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, out, grid, done, json.loads((out / RECOMMENDATION_FILE).read_text())


def test_it_answers_with_the_documented_keys_and_evidence(recommended):
    _, out, _, done, result = recommended
    assert set(result) == KEYS
    assert done.stdout.strip() == result["answer"]
    assert "over 2 seeds" in done.stdout and "Runner-up" in done.stdout and "full grid" in done.stdout
    pick, other = result["pick"], result["runner_up"]
    assert pick["family"] != other["family"]  # the runner-up is the alternative answer
    # the pick is chosen on validation at convergence, never on test
    assert pick["validation_accuracy"]["mean"] >= other["validation_accuracy"]["mean"]
    assert len(result["candidates"]) == len(STRATEGY_SETS["extractor"]) + len(STRATEGY_SETS["finetune"])
    assert {c["dropped_at"] for c in result["candidates"]} & {"rung 0", "rung 1"}  # the pruner dropped some
    assert [s["backbone"] for s in result["scores"] if s["kept"]] == ["timm/mobilenetv2_100"]
    logged = records(out)
    assert result["spent_seconds"] == pytest.approx(sum(r["metrics"]["wall_seconds"] for r in logged))
    assert (out / "report.html").is_file() and (out / "ladder.png").is_file()


def test_its_full_grid_estimate_also_says_the_cost_with_the_unmeasured_epochs_at_the_cap(recommended):
    result = recommended[-1]
    estimate, at_cap = result["full_grid_seconds_estimate"], result["full_grid_seconds_at_cap"]
    # fine-tuning candidates dropped after one epoch: their epochs to convergence were not measured
    assert any(c["family"] != "extractor" and c["epochs"] == 1 for c in result["candidates"])
    assert 0 < estimate < at_cap and "at the cap, 30" in result["full_grid_estimate_method"]
    assert f"about {estimate / 60:.0f} min ({at_cap / 60:.0f} if the candidates stopped early" in result["answer"]


def test_a_budget_the_first_rung_fills_is_refused_before_the_confirmation_with_the_minimum(recommended, tmp_path,
                                                                                          capsys, monkeypatch):
    folder, out, *_ = recommended
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    logged = [r for r in records(out) if not r["params"]["train"]["test"]]  # the scores and the search, as recorded
    first_rung = [r for r in logged if r["strategy"] != "transferability" and r["params"]["train"]["epochs"] == 1]
    for record in first_rung:  # as if on 100x the images: each first-rung cell took 100x longer (scores unchanged)
        for key in ("wall_seconds", "epoch_seconds"):
            record["metrics"][key] = 100 * (record["metrics"].get(key) or 0.0)
    (tmp_path / "out" / "cells").mkdir(parents=True)
    (tmp_path / "out" / "cells" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))
    score = next(r["metrics"]["wall_seconds"] for r in logged if r["strategy"] == "transferability")
    trained = sum(r["strategy"] != "extractor" for r in first_rung)
    before_any_epoch = score * (1 + trained + 2 * 2)  # the floor checked before the search: forward passes only
    after_the_first_rung = score + sum(r["metrics"]["wall_seconds"] for r in first_rung)
    assert before_any_epoch < after_the_first_rung
    budget = (before_any_epoch + after_the_first_rung) / 2 / 60  # passes the first check; the first rung fills it

    assert cli.main(["recommend", str(folder), *FAST[:-2], "--budget", f"{budget:.6f}", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "below what these images need: the scores and the search took" in error
    minimum = int(error.split("give --budget ")[1].split()[0])
    assert minimum * 60 >= after_the_first_rung and "goes on from them" in error
    assert [r["key"] for r in records(tmp_path / "out")] == [r["key"] for r in logged]  # nothing ran, nothing tested


def test_an_answer_past_its_budget_says_by_how_much_and_why(recommended, tmp_path, capsys, monkeypatch):
    folder, out, *_ = recommended
    assert "past the" not in recommended[-1]["answer"]  # within its budget it says nothing of it
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(out / "cells", tmp_path / "out" / "cells")
    logged = records(tmp_path / "out")
    for record in logged:  # as if the finalists had needed 3 more minutes each to stop improving
        if record["params"]["train"]["test"]:
            record["metrics"]["wall_seconds"] += 180
    (tmp_path / "out" / "cells" / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in logged))

    assert cli.main(["recommend", str(folder), *FAST, "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / RECOMMENDATION_FILE).read_text())
    over = (result["spent_seconds"] - 5 * 60) / 60
    assert over > 0 and result["pick"]["cell_ids"] == recommended[-1]["pick"]["cell_ids"]  # nothing ran again
    assert f"of cells, {over:.1f} past the 5-min budget" in capsys.readouterr().out
    assert "past the 5-min budget" in (tmp_path / "out" / "report.html").read_text()


def test_an_epoch_is_costed_with_its_validation(recommended):
    """The plans' seconds per epoch: training and validating (metrics.epoch_seconds is training only; on 10
    images per class validation makes an epoch 2-3x dearer, benchmarks/README.md)."""
    from tlbench.recommend.search import epoch_cost

    trained = [r["metrics"] for r in records(recommended[1]) if r["strategy"] == "finetune"]
    for metrics in trained:
        history = metrics["history"]
        assert all(e["validation_seconds"] > 0 for e in history)
        assert epoch_cost(metrics) == pytest.approx(np.mean([e["seconds"] + e["validation_seconds"] for e in history]))
        assert epoch_cost(metrics) > metrics["epoch_seconds"]
    old = {**trained[0], "history": [{k: v for k, v in e.items() if k != "validation_seconds"} for e in trained[0]["history"]]}
    assert epoch_cost(old) == trained[0]["epoch_seconds"]  # a record from before: its runs decide as they did


def test_only_the_confirmation_reads_the_test_split(recommended):
    _, out, _, _, result = recommended
    confirmed = set(result["pick"]["cell_ids"]) | set(result["runner_up"]["cell_ids"])
    tested = {r["cell_id"] for r in records(out) if r["metrics"].get("test_accuracy") is not None}
    assert tested == confirmed
    assert len(confirmed) == 4  # two finalists x two fresh seeds
    for record in records(out):
        kept = record["metrics"].get("predictions_file")
        if kept and record["cell_id"] not in confirmed:  # a search cell kept its valid predictions only
            with np.load(out / "cells" / kept) as arrays:
                assert set(arrays.files) == {"valid_probabilities", "valid_labels"}
    scores = [r["metrics"]["transferability"] for r in records(out) if r["strategy"] == "transferability"]
    assert scores[0]["logme"] is not None and scores[0]["leep"] is None  # leep: false skips the ImageNet head
    assert all(r["seed"] == 100 for r in records(out) if r["cell_id"] not in confirmed)  # the search's own seed


def test_the_written_grid_reruns_exactly_the_final_comparison(recommended):
    _, out, grid, _, result = recommended
    cells = load_grid(str(grid), collect()).cells()
    by_id = {r["cell_id"]: r["key"] for r in records(out)}
    confirmed = [*result["pick"]["cell_ids"], *result["runner_up"]["cell_ids"]]
    assert sorted(c.key for c in cells) == sorted(by_id[cell_id] for cell_id in confirmed)


def test_the_saved_pick_predicts(recommended):
    folder, _, _, done, result = recommended
    assert f"tlbench predict --cell {result['saved_model']} IMAGE" in done.stderr
    image = next((folder / "test" / "2").iterdir())
    predicted = tlbench("predict", str(image), "--cell", result["saved_model"], "--json")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert {row["label"] for row in json.loads(predicted.stdout)[0]["top"]} == {"0", "1", "2"}


def test_the_same_command_after_it_finished_runs_nothing_and_answers_the_same(recommended):
    folder, out, grid, done, _ = recommended
    finished = len(records(out))
    again = tlbench("recommend", str(folder), *FAST, "--out", str(out), "--write-grid", str(grid), "--save-model",
                    env={**os.environ, "TLBENCH_CACHE_DIR": str(out.parent / "cache")})
    assert again.returncode == 0, again.stderr[-3000:]  # its budget is judged on the cells it used, not on every record
    assert again.stdout == done.stdout and len(records(out)) == finished


def test_on_ray_it_runs_the_same_cells_and_answers_the_same(recommended, tmp_path):
    """--executor ray (a real local Ray instance) against the local executor, with a budget that never binds (the
    search's budget decisions read measured seconds, which a loaded machine changes): the same cells, the same answer."""
    folder = recommended[0]
    roomy = [*FAST[:-1], "60"]
    runs = {executor: tlbench("recommend", str(folder), *roomy, "--out", str(tmp_path / executor), "--executor", executor,
                              env={**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / f"cache-{executor}")})
            for executor in ("local", "ray")}
    for executor, ran in runs.items():
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert json.loads((tmp_path / executor / "cells" / "env.json").read_text())["executor"] == executor

    def outcomes(run_dir: Path) -> dict[str, tuple]:
        return {r["cell_id"]: (r["status"], r["metrics"].get("test_accuracy"),
                               [(e.get("train_loss"), e.get("val_accuracy")) for e in r["metrics"].get("history") or []])
                for r in records(run_dir)}

    assert outcomes(tmp_path / "ray") == outcomes(tmp_path / "local")  # each cell's accuracies, epoch by epoch
    picks = [json.loads((tmp_path / executor / RECOMMENDATION_FILE).read_text())["pick"] for executor in runs]
    assert picks[0] == picks[1]
    assert runs["ray"].stdout.split("Spent")[0] == runs["local"].stdout.split("Spent")[0]  # but for the cell time


def test_a_run_killed_during_the_search_resumes_without_redoing_a_cell(recommended, tmp_path):
    folder, _, _, _, uninterrupted = recommended
    out = tmp_path / "out"
    env = {**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "tlbench.cli", "recommend", str(folder), *FAST, "--out", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while len(records(out)) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # the command and its worker, mid-search
    process.wait()
    before = {r["key"] for r in records(out) if r["status"] == "ok"}
    assert len(before) >= 3 and not (out / RECOMMENDATION_FILE).exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    keys = [r["key"] for r in records(out)]
    assert all(keys.count(key) == 1 for key in before)  # nothing finished was run again
    result = json.loads((out / RECOMMENDATION_FILE).read_text())
    # the same decisions as the uninterrupted run: CPU runs repeat exactly on one machine
    assert result["pick"]["cell_ids"] == uninterrupted["pick"]["cell_ids"]
    assert [c["dropped_at"] for c in result["candidates"]] == [c["dropped_at"] for c in uninterrupted["candidates"]]


@pytest.mark.parametrize(("layout", "arguments", "message"), [
    ({"only": 6}, (), "has a single class ('only')"),
    ({"a": 9, "b": 2}, (), "class 'b' has no"),
    ({"a": 9, "b": 9}, ("--backbones", "timm/no_such_net*"), "--backbones timm/no_such_net*: matches no registered backbone"),
    ({"a": 9, "b": 9}, ("--seeds", "1"), "--seeds 1: the confirmation needs at least 2 seeds"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys, layout, arguments, message):
    for name, count in layout.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for image in sorted((SIGN / "train" / "0").iterdir())[:count]:
            shutil.copy(image, tmp_path / "data" / name / image.name)
    started = time.monotonic()
    assert cli.main(["recommend", str(tmp_path / "data"), "--out", str(tmp_path / "out"), *arguments]) == 2
    assert message in capsys.readouterr().err
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


def test_a_folder_that_cannot_be_read_is_named(tmp_path, capsys, monkeypatch):
    assert cli.main(["recommend", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert f"root {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    folder = small_folder(tmp_path / "data")
    locked, iterdir = folder / "train", Path.iterdir

    def denied(path):  # what `chmod 000 train` does to any user but root
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return iterdir(path)

    monkeypatch.setattr(Path, "iterdir", denied)
    assert cli.main(["recommend", str(folder), "--out", str(tmp_path / "out")]) == 2
    assert f"cannot read {locked}" in capsys.readouterr().err


def test_a_budget_below_one_epoch_is_refused_with_the_minimum(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TLBENCH_CACHE_DIR", str(tmp_path / "cache"))
    folder = small_folder(tmp_path / "data")
    out = tmp_path / "out"
    arguments = ["recommend", str(folder), *FAST[:-2], "--budget", "0.001", "--out", str(out)]
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert "--budget 0.001: below what one epoch of the 9 candidates and of the confirmation costs" in error
    minimum = int(error.split("give --budget ")[1].split()[0])
    assert minimum >= 1 and [r["strategy"] for r in records(out)] == ["transferability"]  # the scores are kept
