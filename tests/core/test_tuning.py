"""Tuned series: `tune:` candidates picked on validation accuracy over `tune_seeds`, the pick run on `seeds`."""

from __future__ import annotations

import json
import logging
import re
import textwrap

import pytest

from support import tlbench
from tlbench.grid.loading import GridError, load_grid
from tlbench.grid.tuning import BOTH, EVALUATE, SELECT, picks
from tlbench.plugin.registry import collect
from tlbench.run.runner import run_grid

TOY = {"name": "toy/centroid", "lr_errors": True}  # the first `lr` share of its predictions is wrong
TUNED = {
    "name": "tuned",
    "datasets": ["stripes"],
    "backbones": [TOY],
    "strategies": ["extractor", {"name": "finetune", "depth": [1, 2], "tune": {"lr": [0.5, 0.125, 0.25]}}],
    "seeds": [0, 1],
    "tune_seeds": [100, 101],
    "train": {"epochs": 1},
}


@pytest.fixture
def registries(toy_plugin):
    return collect()


def problems(registries, **changes) -> list[str]:
    with pytest.raises(GridError) as caught:
        load_grid({**TUNED, **changes}, registries)
    return caught.value.problems


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]


def test_tune_keys_and_values_are_checked_like_options(registries):
    found = problems(registries, strategies=[
        {"name": "finetune", "tune": {"lrr": [0.1], "lr": [-1.0], "depth": []}},
        {"name": "extractor", "lr": 0.1, "tune": {"lr": [0.1, 0.1], "head": "linear"}},
        {"name": "scratch", "tune": [0.1]},
        {"name": "finetune", "depth": 2, "tune": {"blocks": ["first:1", "last:1"]}},
    ])
    assert any(p.startswith("strategies[0].tune.lrr: unknown option for strategy 'finetune' (did you mean 'lr'?)")
               for p in found)
    assert "strategies[0].tune.lr: must be >= 0, not -1.0" in found
    assert any(p.startswith("strategies[0].tune.depth: must be a non-empty list") for p in found)
    assert any(p.startswith("strategies[1].tune.lr: `lr` is also set outside `tune`") for p in found)
    assert any(p.startswith("strategies[1].tune.lr: lists a value twice") for p in found)
    assert any(p.startswith("strategies[1].tune.head: must be a non-empty list") for p in found)
    assert any(p.startswith("strategies[2].tune: must be a non-empty mapping") for p in found)
    assert "strategies[3].tune.blocks: `blocks` replaces `depth`: give one of them, not both" in found


def test_tune_seeds_must_be_fresh_and_need_a_tuned_entry(registries):
    assert any(p.startswith("tune_seeds: 1 also in `seeds`") for p in problems(registries, tune_seeds=[1, 7]))
    assert any(p.startswith("tune_seeds: no strategy entry has `tune:`")
               for p in problems(registries, strategies=["extractor"]))
    assert [p for p in problems(registries, tune_seeds=[], seeds=[0]) if p.startswith("tune_seeds")] == [
        f"tune_seeds: must be a non-empty list of integers from 0 to {2**32 - 1}, not []"]


def test_a_tuned_series_may_not_share_its_label_with_another_entry(registries):
    found = problems(registries, strategies=[{"name": "finetune", "tune": {"lr": [0.1, 0.2]}},
                                             {"name": "finetune", "tune": {"weight_decay": [0.0, 0.1]}}])
    assert any(p.startswith("strategies[1]: its series 'finetune' (the label without the tuned keys) is also that "
                            "of strategies[0]") for p in found)


def test_a_bad_tune_exits_2_naming_the_file_and_the_field(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: bad
        datasets: [stripes]
        backbones: [toy/centroid]
        strategies: [{name: finetune, tune: {lrr: [0.1, 0.01]}}]
        seeds: [0]
        tune_seeds: [0]
    """))
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert str(grid) in result.stderr and "Traceback" not in result.stderr
    assert "strategies[0].tune.lrr: unknown option for strategy 'finetune' (did you mean 'lr'?)" in result.stderr
    assert "tune_seeds: 0 also in `seeds`" in result.stderr and "no strategy entry has `tune:`" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_candidates_show_their_values_run_on_tune_seeds_and_untuned_cells_keep_their_ids_and_keys(registries):
    grid = load_grid(TUNED, registries)
    cells = grid.cells()
    tuned = [c for c in cells if c.stage is not None]
    assert len(tuned) == 2 * 3 * 2 and {c.seed for c in tuned} == {100, 101} and {c.stage for c in tuned} == {SELECT}
    assert tuned[0].cell_id == "stripes/toy/centroid/finetune[depth=1,lr=0.5]/seed=100"
    assert tuned[0].tune == {"series": "finetune[depth=1]", "series_id": "stripes/toy/centroid/finetune[depth=1]",
                             "candidate": {"lr": 0.5}, "order": 0, "stage": SELECT}
    assert [c.strategy.order for c in tuned[:6:2]] == [0, 1, 2]
    plain = load_grid({k: v for k, v in TUNED.items() if k != "tune_seeds"} | {"strategies": ["extractor"]}, registries)
    assert [(c.cell_id, c.key, c.tune) for c in plain.cells()] == [(c.cell_id, c.key, None) for c in cells if c.stage is None]


def test_both_stages_run_in_one_run_and_only_the_pick_runs_on_seeds(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid(TUNED, out=out, device="cpu")
    written = records(out)
    assert "tune" not in next(r for r in written if r["strategy"] == "extractor")  # an untuned entry's record is unchanged
    stages = [r["tune"]["stage"] for r in written if "tune" in r]
    assert stages == [SELECT] * 12 + [EVALUATE] * 4  # every selection cell first, then the picks
    evaluated = sorted(r["cell_id"] for r in written if r.get("tune", {}).get("stage") == EVALUATE)
    assert evaluated == [f"stripes/toy/centroid/finetune[depth={d},lr=0.125]/seed={s}" for d in (1, 2) for s in (0, 1)]
    found = picks(written)
    assert [p.series_id for p in found] == [f"stripes/toy/centroid/finetune[depth={d}]" for d in (2, 1)]  # run order
    pick = found[1]
    assert pick.series == "finetune[depth=1]" and pick.separate_seeds
    assert pick.selection_seeds == (100, 101) and pick.evaluation_seeds == (0, 1)
    assert [(c.values, c.val_accuracy, c.order) for c in pick.candidates] == [
        ({"lr": 0.5}, 0.5, 0), ({"lr": 0.125}, 0.875, 1), ({"lr": 0.25}, 0.75, 2)]  # 12, 3 and 6 of 24 wrong
    assert pick.chosen is pick.candidates[1] and pick.reason is None
    assert pick.cell_seconds == sum(r["metrics"]["wall_seconds"] for r in written
                                    if r.get("tune", {}).get("series_id") == pick.series_id and r["seed"] >= 100)
    assert sorted(r["cell_id"] for r in written if pick.evaluates(r)) == evaluated[:2]


def test_a_resumed_run_derives_the_same_picks_and_reruns_no_finished_cell(toy_plugin, tmp_path, caplog):
    out = tmp_path / "run"
    run_grid(TUNED, out=out, device="cpu")
    first = records(out)
    assert run_grid(TUNED, out=out, device="cpu") is not None and records(out) == first  # nothing ran again
    # killed before one selection cell of finetune[depth=1] and every evaluation cell were written
    lost = [r for r in first if r.get("tune", {}).get("stage") == EVALUATE
            or r["cell_id"] == "stripes/toy/centroid/finetune[depth=1,lr=0.5]/seed=101"]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in first if r not in lost))
    with caplog.at_level(logging.INFO, logger="tlbench.run.runner"):
        run_grid(TUNED, out=out, device="cpu")
    grid_cells = len([r for r in first if r.get("tune", {}).get("stage") != EVALUATE])
    # the counts add up: finetune[depth=2] was tuned before, so its 2 evaluation cells run now, depth=1's after
    assert f"{grid_cells} cells in the grid, {grid_cells - 1} already finished, 3 to run (2 of them the evaluation " \
           "cells of picks tuned before)" in caplog.text
    again = records(out)[len(first) - len(lost):]
    assert sorted(r["cell_id"] for r in again) == sorted(r["cell_id"] for r in lost)
    assert [(p.series_id, p.chosen.values, p.evaluation_seeds) for p in picks(records(out))] == [
        (p.series_id, p.chosen.values, p.evaluation_seeds) for p in picks(first)]
    run_grid(TUNED, out=out, device="cpu", rerun=True)  # every cell again: the selection ones, then the picks
    rerun = records(out)[len(first):]
    assert [r["cell_id"] for r in rerun if r.get("tune", {}).get("stage") == EVALUATE] == [
        r["cell_id"] for r in first if r.get("tune", {}).get("stage") == EVALUATE]
    assert len(rerun) == len(first)


def test_ties_go_to_the_lower_validation_loss_then_to_grid_order(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid({**TUNED, "strategies": [
        {"name": "finetune", "tune": {"weight_decay": [0.1, 0.0]}},  # the same accuracy, a higher loss first
        {"name": "momentum", "plugin": "finetune", "tune": {"momentum": [0.9, 0.5]}},  # the same accuracy and loss
    ]}, out=out, device="cpu")
    by_series = {p.series: p for p in picks(records(out))}
    decay = by_series["finetune"]
    assert decay.candidates[0].val_accuracy == decay.candidates[1].val_accuracy == 1.0
    assert decay.candidates[0].val_loss > decay.candidates[1].val_loss
    assert decay.chosen.values == {"weight_decay": 0.0}
    momentum = by_series["momentum"]
    assert momentum.candidates[0].val_loss == momentum.candidates[1].val_loss
    assert momentum.chosen.values == {"momentum": 0.9}


def test_a_candidate_without_validation_on_a_seed_is_not_eligible_and_a_series_without_any_has_no_pick(
        toy_plugin, tmp_path, caplog):
    out = tmp_path / "run"
    grid = {**TUNED, "backbones": [TOY, {"name": "broken", "plugin": "toy/centroid", "fail": True}],
            "strategies": [{"name": "finetune", "tune": {"epochs": [0, 1]}}]}  # 0 epochs: no validation accuracy
    with caplog.at_level(logging.INFO, logger="tlbench.run.runner"):
        run_grid(grid, out=out, device="cpu")
    toy, broken = picks(records(out))
    assert toy.candidates[0].failed == (100, 101) and not toy.candidates[0].eligible
    assert toy.chosen.values == {"epochs": 1} and toy.evaluation_seeds == (0, 1)
    assert broken.chosen is None and broken.evaluation_seeds == ()
    assert "stripes/broken/finetune: no evaluation cells: none of its 2 candidates has an ok cell" in caplog.text
    assert not [r for r in records(out) if r["cell_id"].startswith("stripes/broken") and r["seed"] < 100]


def test_a_failed_selection_seed_makes_a_better_candidate_ineligible():
    def record(lr, seed, accuracy, status="ok"):
        epoch = {"epoch": 1, "val_accuracy": accuracy, "val_loss": 0.1}
        return {"key": f"{lr}-{seed}", "seed": seed, "status": status,
                "metrics": {"history": [epoch], "best_epoch": 1, "wall_seconds": 2.0} if status == "ok" else {"wall_seconds": 1.0},
                "tune": {"series": "s", "series_id": "d/b/s", "candidate": {"lr": lr}, "order": int(lr == 0.1), "stage": SELECT}}

    (pick,) = picks([record(0.01, 100, 0.9), record(0.01, 101, 0.5, "failed"), record(0.1, 100, 0.6),
                     record(0.1, 101, 0.6), record(0.01, 101, 0.9, "failed")])
    assert pick.chosen.values == {"lr": 0.1} and pick.candidates[0].failed == (101,)
    assert pick.cell_seconds == 2.0 + 1.0 + 2.0 + 2.0  # the latest record of each cell counts


def test_without_tune_seeds_the_candidates_run_on_seeds_and_the_pick_is_evaluated_on_them(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid({k: v for k, v in TUNED.items() if k != "tune_seeds"}, out=out, device="cpu")
    written = records(out)
    assert {r["tune"]["stage"] for r in written if "tune" in r} == {BOTH} and len(written) == 2 + 12
    pick = next(p for p in picks(written) if p.series == "finetune[depth=1]")
    assert not pick.separate_seeds and pick.selection_seeds == pick.evaluation_seeds == (0, 1)
    assert sorted(r["cell_id"] for r in written if pick.evaluates(r)) == [
        f"stripes/toy/centroid/finetune[depth=1,lr=0.125]/seed={s}" for s in (0, 1)]


def test_dry_run_lists_the_selection_cells_and_counts_the_evaluation_cells(toy_plugin, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(json.dumps(TUNED))  # JSON is YAML
    result = tlbench("run", "--grid", str(grid), "--dry-run")
    assert result.returncode == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 2 + 12 and "stripes/toy/centroid/finetune[depth=2,lr=0.25]/seed=101" in ids
    assert "then up to 4 evaluation cells (stage 2): the pick of each of the 2 tuned series" in result.stderr


def test_a_failed_selection_cell_is_retried_before_its_series_is_picked(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid(TUNED, out=out, device="cpu")
    first = records(out)
    best = "stripes/toy/centroid/finetune[depth=1,lr=0.125]/seed=101"
    kept = [r if r["cell_id"] != best else {**r, "status": "failed", "error": "killed", "metrics": {"wall_seconds": 1.0}}
            for r in first if not (r.get("tune", {}).get("stage") == EVALUATE and "depth=1" in r["cell_id"])]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    run_grid(TUNED, out=out, device="cpu")
    assert [r["cell_id"] for r in records(out)[len(kept):]] == [
        best, *(f"stripes/toy/centroid/finetune[depth=1,lr=0.125]/seed={s}" for s in (0, 1))]


def test_the_report_tests_only_the_picks_and_shows_every_candidate_beside_what_choosing_cost(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid({**TUNED, "train": {"epochs": 4}}, out=out, device="cpu")  # the best epoch (1) 3 before the last
    text = (out / "report.md").read_text()
    assert "6 cells (6 ok) from `runs.jsonl` (the latest line of each cell), besides 12 tuning cells that only chose" in text
    strategies = text.split("## Strategies per dataset")[1].split("## Tuning")[0]
    assert "finetune[depth=1]" in strategies and "finetune[depth=2]" in strategies
    assert "lr=0.5" not in strategies and "lr=0.125" not in strategies  # candidates are never compared on test
    tuning = re.sub(" +", " ", text.split("## Tuning: candidates chosen on validation")[1].split("\n## ")[0])
    assert ("**stripes/toy/centroid/finetune[depth=1]** (finetune-part): 3 candidates, chosen on the selection seeds "
            "100, 101, tested on the evaluation seeds 0, 1.") in tuning
    assert "| ✓ lr=0.125 | 0.8750 |" in tuning and "| lr=0.5 | 0.5000 |" in tuning
    assert "| finetune-part | 3 |" in tuning and "| finetune-all | 3 |" in tuning  # the candidates, with their cost
    (verdict,) = json.loads((out / "verdicts.json").read_text())
    assert verdict["best"] in ("extractor", "finetune[depth=1]", "finetune[depth=2]")


def test_untuned_evidence_cells_beside_tuned_series_keep_their_series(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid({**TUNED, "strategies": [*TUNED["strategies"], "transferability"]}, out=out, device="cpu")
    text = (out / "report.md").read_text()
    assert "No `transferability` cell" not in text
    scores = text.split("### Scores per backbone")[1].split("\n## ")[0]
    assert re.search(r"\| stripes +\| all +\| toy/centroid +\| transferability +\|", scores)


def test_the_report_names_the_weaker_design_when_the_same_seeds_choose_and_test(toy_plugin, tmp_path):
    out = tmp_path / "run"
    run_grid({key: value for key, value in TUNED.items() if key != "tune_seeds"}, out=out, device="cpu")
    assert "chosen and tested on the same seeds 0, 1: the weaker design" in (out / "report.md").read_text()
