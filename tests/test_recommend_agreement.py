"""benchmarks/recommend_agreement.py on one tiny case of real images: recommend and the full grid of the same
restricted candidates (MobileNetV2; the logistic-regression extractor, tuned, and scratch, untuned), then the
comparison read back from their records."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from test_recommend import small_folder

from support import REPO, load_script
from tlbench.grid import tuning
from tlbench.grid.tuning import best_validation
from tlbench.recommend.search import RECOMMENDATION_FILE
from tlbench.results import RunsLog

CASE = "sign-language-digits@10"
FAST = ("--backbones", "timm/mobilenetv2_100", "--strategies", "extractor", "scratch", "--seeds", "2",
        "--image-size", "32", "--budget", "5")


def test_it_compares_recommend_with_the_full_grid(tmp_path):
    out = tmp_path / "out"
    small_folder(out / CASE / "data")  # an existing folder is not exported again
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "recommend_agreement.py"), "--cases", CASE,
                           "--out", str(out), *FAST], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    # the full grid's progress, cell by cell
    assert f"into {out / CASE / 'full'} (executor local)\nINFO tlbench.run: cell 1/" in done.stderr
    rows = {row["case"]: row for row in json.loads((out / "agreement.json").read_text())}
    assert {c for c, row in rows.items() if row["status"] == "not run"} == set(rows) - {CASE}
    row = rows[CASE]
    full = out / CASE / "full"
    records = RunsLog(full).read()
    recommended = json.loads((out / CASE / "recommend" / RECOMMENDATION_FILE).read_text())

    # the full grid covers exactly recommend's candidates: 3 C on the tune seeds, the pick and scratch on seeds 0, 1
    assert {r["seed"] for r in records} == {0, 1, 100, 101}
    assert len({r["key"] for r in records if r["seed"] >= 100}) == 2 * 3 and len(records) == 2 * 3 + 2 * 2
    assert len(row["series"]) == 2 and all(s["seeds"] == [0, 1] for s in row["series"])
    best = row["full_grid_best"]
    assert best["validation_accuracy"] == max(s["validation_accuracy"] for s in row["series"])
    evaluated = [r for r in records if r["seed"] < 100 and r["backbone"] == best["backbone"]
                 and r["strategy"] == best["strategy"]
                 and all(({**r["params"]["strategy"], **r["params"]["train"]})[k] == v for k, v in best["options"].items())]
    assert len(evaluated) == 2
    assert math.isclose(best["validation_accuracy"], sum(best_validation(r["metrics"])[0] for r in evaluated) / 2)
    assert math.isclose(best["test_accuracy"]["mean"], sum(r["metrics"]["test_accuracy"] for r in evaluated) / 2)
    assert best["converged_seeds"] == sum(bool(r["metrics"].get("converged")) for r in evaluated)

    pick, test = row["recommend_pick"], best["test_accuracy"]
    assert pick["test_accuracy"]["mean"] == recommended["pick"]["test_accuracy"]["mean"]
    same = all(pick[k] == best[k] for k in ("backbone", "strategy", "options"))
    assert pick["same_configuration"] is same
    assert row["agrees"] is pick["agrees"] is (same or test["low"] <= pick["test_accuracy"]["mean"] <= test["high"])
    side = row["score_only"]  # the only backbone's logreg pick; no finetune series, so no task-agnostic baseline
    assert side["options"]["head"] == "logreg" and row["task_agnostic"] is None
    assert side["agrees"] is (side["same_configuration"] or test["low"] <= side["test_accuracy"]["mean"] <= test["high"])

    wall = sum(r["metrics"]["wall_seconds"] for r in records)
    assert math.isclose(row["cost_ratio"], recommended["spent_seconds"] / wall)
    table = (out / "agreement.md").read_text()
    assert f"| {CASE} |" in table and "| digits@all | not run |" in table and "at most 0.2" in table
    for judged in (pick, side):  # how far each is behind the best on test, in the row and in the table's summary
        assert math.isclose(judged["behind_best"], test["mean"] - judged["test_accuracy"]["mean"])
    assert (f"recommend {pick['behind_best']:.3f} ({pick['behind_best']:.3f}), score-only {side['behind_best']:.3f} "
            f"({side['behind_best']:.3f}), task-agnostic -." in table)
    assert f"converged) on {best['converged_seeds']} of its 2 evaluation seeds" in table
    assert (out / "agreement.png").stat().st_size > 0

    again = subprocess.run([sys.executable, str(REPO / "benchmarks" / "recommend_agreement.py"), "--out", str(out),
                            "--report-only"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "agreement.json").read_text()) == list(rows.values())


def test_a_case_whose_full_grid_was_killed_is_not_counted_until_the_same_command_finishes_it(tmp_path):
    out = tmp_path / "out"
    small_folder(out / CASE / "data")
    command = [sys.executable, str(REPO / "benchmarks" / "recommend_agreement.py"), "--cases", CASE, "--out", str(out), *FAST]
    env = {**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / "cache")}
    full = RunsLog(out / CASE / "full")
    running = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not (full.path.is_file() and tuning.tested_records(full.read(), [])) and running.poll() is None \
                and time.monotonic() < deadline:  # killed once a record would enter the full grid's statistics
            time.sleep(0.02)
        assert running.poll() is None, "the full grid finished before it could be killed"
    finally:
        os.killpg(running.pid, signal.SIGKILL)
        running.wait()
    killed_at = len(full.read())
    assert killed_at < 2 * 3 + 2 * 2  # the full grid has 10 cells

    report = subprocess.run([*command[:2], "--out", str(out), "--report-only"], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert report.returncode == 0, report.stderr[-3000:]
    row = next(r for r in json.loads((out / "agreement.json").read_text()) if r["case"] == CASE)
    spent = json.loads((out / CASE / "recommend" / RECOMMENDATION_FILE).read_text())["spent_seconds"]
    so_far = math.fsum(r["metrics"]["wall_seconds"] for r in full.read())
    assert row == {"case": CASE, "status": "unfinished", "full_grid_records": killed_at, "recommend_seconds": spent,
                   "full_grid_seconds_so_far": pytest.approx(so_far), "cost_ratio_at_most": pytest.approx(spent / so_far)}
    table = (out / "agreement.md").read_text()
    assert f"| {CASE} | full grid unfinished ({killed_at} records so far" in table
    assert f"| at most {spent / so_far:.3f} (so far) |" in table  # its grid can only cost more
    assert "Agreement in 0 of 0 cases run" in table

    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    row = next(r for r in json.loads((out / "agreement.json").read_text()) if r["case"] == CASE)
    assert row["status"] == "done" and isinstance(row["agrees"], bool)
    assert row["cost_ratio"] <= spent / so_far  # the bound held
    keys = [r["key"] for r in full.read()]
    assert len(keys) == len(set(keys)) == 2 * 3 + 2 * 2  # resumed: no finished cell ran twice


def test_a_case_recommend_refuses_stops_the_benchmark_with_its_message_not_a_traceback(tmp_path):
    out = tmp_path / "out"
    small_folder(out / CASE / "data")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "recommend_agreement.py"), "--cases", CASE,
                           "--out", str(out), *FAST, "--budget", "0.001"], capture_output=True, text=True, timeout=600,
                          cwd=REPO, env={**os.environ, "TLBENCH_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--budget 0.001: below what one epoch" in done.stderr  # recommend's own message, then the benchmark's
    assert f"{CASE}: tlbench recommend exited 2" in done.stderr and not (out / CASE / "full").exists()


agreement = load_script("benchmarks/recommend_agreement.py")


def rows_of(*statuses: tuple[str, bool | None, float | None]) -> list[dict]:
    """A row per case: (status, agrees, its cost ratio: done's own, unfinished's bound so far)."""
    rows = []
    for case, (status, agrees, cost) in zip(agreement.CASES, statuses, strict=True):
        row = {"case": case, "status": status}
        if status == "done":
            row.update(agrees=agrees, cost_ratio=cost)
        elif status == "unfinished":
            row.update(cost_ratio_at_most=cost)
        rows.append(row)
    return rows


@pytest.mark.parametrize(("last", "verdict"), [
    (("unfinished", None, 0.19), "met, whatever mnist-5k@all gives: 7 cases agree, and its cost ratio is at most 0.190"),
    (("unfinished", None, 0.34), "not met (yet)."),  # its grid may still cost enough to bring the ratio under 0.2
    (("done", False, 0.05), "met."),
    (("done", True, 0.25), "not met."),  # a finished case past the cost: no later run lowers it
    (("not run", None, None), "not met (yet)."),
])
def test_the_goal_is_decided_only_when_no_unfinished_case_can_change_it(last, verdict):
    agreeing = [("done", True, 0.1)] * 7
    assert agreement.goal(rows_of(*agreeing[:4], last, *agreeing[4:])).startswith(verdict)


def test_a_goal_the_unfinished_cases_could_still_miss_is_not_met_yet_and_one_they_cannot_reach_is_not_met():
    assert agreement.goal(rows_of(*[("done", True, 0.1)] * 6, ("unfinished", None, 0.1), ("done", False, 0.1))) \
        == "not met (yet)."
    assert agreement.goal(rows_of(*[("done", True, 0.1)] * 5, ("unfinished", None, 0.1), *[("done", False, 0.1)] * 2)) \
        == "not met."
