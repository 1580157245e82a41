"""benchmarks/recommend_pruners.py: recommend's own search loop replayed on the agreement benchmark's recorded
learning curves (no training), to compare Optuna pruners."""

from __future__ import annotations

import json

import pytest

from support import REPO, load_script
from tlbench.results import RunsLog, latest_per_cell

pruners = load_script("benchmarks/recommend_pruners.py")
AGREEMENT = REPO / "results" / "reference" / "recommend-agreement"


def test_a_truncated_cell_is_its_first_epochs_with_seconds_on_the_line_through_its_two_runs():
    case = AGREEMENT / "mnist-5k@10"
    full = {pruners.key(pruners.configuration(r)): r for r in latest_per_cell(RunsLog(case / "full").read()) if r["seed"] == 100}
    search = pruners.ReplaySearch(case, "successive-halving")
    name, record = next((k, r) for k, r in full.items() if k in search.first_rung  # a backbone the search kept
                        and r["strategy"] == "finetune" and r["metrics"]["converged"] and r["metrics"]["epochs"] > 4)
    stop, one_epoch = record["metrics"]["epochs"], search.first_rung[name]
    early = pruners.truncated(record, one_epoch, 3)["metrics"]
    assert early["history"] == record["metrics"]["history"][:3] and early["epochs"] == 3 and not early["converged"]
    assert early["wall_seconds"] > one_epoch["metrics"]["wall_seconds"]
    # recommend's own 1-epoch search cell of this candidate saw the same first epoch (a CPU run repeats exactly)
    assert one_epoch["metrics"]["history"][0]["val_accuracy"] == record["metrics"]["history"][0]["val_accuracy"]
    assert pruners.truncated(record, one_epoch, 1)["metrics"]["wall_seconds"] == one_epoch["metrics"]["wall_seconds"]
    late = pruners.truncated(record, one_epoch, 30)["metrics"]  # it stopped improving before: the whole cell
    assert late["converged"] and late["epochs"] == stop and late["wall_seconds"] == pytest.approx(record["metrics"]["wall_seconds"])


@pytest.mark.parametrize("case", ["digits@all", "sign-language-digits@all"])
def test_successive_halving_replayed_on_the_curves_decides_as_the_recorded_search_did(case):
    row = pruners.replay(AGREEMENT / case, "successive-halving")
    recorded = json.loads((AGREEMENT / case / "recommend" / "recommendation.json").read_text())
    assert row["same_as_recorded"] == row["candidates"] == len(recorded["candidates"])
    assert row["stopped"] == recorded["search"]["stopped"]


def test_the_table_compares_every_pruner_on_every_finished_case(tmp_path):
    assert pruners.main(["--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "pruners.json").read_text())
    finished = [p.parent.name for p in AGREEMENT.glob("*/full-grid.finished")]
    assert sorted({(r["case"], r["pruner"]) for r in rows}) == sorted((c, p) for c in finished for p in pruners.PRUNERS)
    for row in rows:
        assert 0 <= row["regret"] == pytest.approx(row["best_value"] - row["pick_value"]) and row["rank"] >= 1
    ratios = (tmp_path / "pruners.md").read_text().split("(training only), median per case: ")[1]
    assert all(float(part.split()[-1].rstrip(".")) > 1 for part in ratios.split(", "))  # an epoch also validates
    by = {(r["case"], r["pruner"]): r for r in rows}
    for case in finished:  # no pruning trains every candidate at least as deep as successive halving does
        assert all(a >= b or a == 0 for a, b in zip(by[case, "none"]["trained_per_rung"],
                                                    by[case, "successive-halving"]["trained_per_rung"], strict=True))
