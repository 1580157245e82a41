"""Which Optuna pruner should `tlbench recommend` search with? (issue 32: "choose by measurement")

Replays recommend's own search loop (tlbench.recommend.search.Search.search: the rungs, the budget, the
pruner's decisions) on the learning curves the agreement benchmark's full grids recorded, with each pruner in
turn, without training anything. The search's cells are rung cells on seed 100 with a constant learning rate,
so a rung of E epochs is the first E epochs of the full grid's 30-epoch cell of the same candidate on its first
tune seed (100) (scratch, not tuned there, has no seed-100 cell: its seed-0 cell stands in); the seconds are
that cell's measured seconds per epoch and other seconds. Per finished case and pruner:

- search seconds: the replayed search's cell-seconds (scores excluded);
- pick: the search's best candidate (recommend's first finalist); regret: the best candidate's value minus the
  pick's, where a candidate's value is its best validation accuracy at convergence averaged over the full grid's
  tune seeds 100 and 101 (scratch: its evaluation seeds); rank: the pick's place by that value (1 = the best);
- fidelity (successive halving only): the candidates whose replayed rung and drop equal recommend's recorded run.

Also per case: what one epoch really costs against metrics.epoch_seconds (training only), the median over the
trained seed-100 cells of 5 epochs or more of the slope of wall seconds against epochs (from recommend's 1-epoch
cell of the candidate to the full grid's).

Run:  python benchmarks/recommend_pruners.py [--agreement results/reference/recommend-agreement]
                                            [--out results/reference/recommend-pruners]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from recommend_agreement import CASES, FULL_GRID_FINISHED, REPO, TUNE_SEEDS, configuration

import tlbench.recommend.search as rec
from tlbench.grid.tuning import best_validation
from tlbench.results import RunsLog, latest_per_cell

RECOMMENDS = "successive-halving"  # recommend's own pruner, Search.pruner()
ALTERNATIVES: Mapping[str, Callable[[], optuna.pruners.BasePruner]] = {
    "hyperband": lambda: optuna.pruners.HyperbandPruner(
        min_resource=rec.FIRST_RUNG, max_resource=rec.MAX_EPOCHS, reduction_factor=rec.REDUCTION),
    "none": optuna.pruners.NopPruner,
}
PRUNERS = (RECOMMENDS, *ALTERNATIVES)


def key(config: Mapping[str, Any]) -> str:
    """A candidate's identity: backbone, strategy and options (of a record's configuration, a candidate's or its row)."""
    return json.dumps({k: config[k] for k in ("backbone", "strategy", "options")}, sort_keys=True, default=str)


def truncated(record: Mapping[str, Any], one_epoch: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """``record``'s cell as if it had been run for ``epochs`` (early stopping included): its first epochs, its
    seconds on the line through its own (``record``) and the search's 1-epoch cell's (``one_epoch``) wall seconds."""
    metrics = record["metrics"]
    if rec.fits_once(record["params"]["strategy"]):  # the logistic regression: fitted once, whatever the epochs
        return {"status": "ok", "metrics": dict(metrics)}
    history = metrics["history"][:epochs]
    accuracies = [entry["val_accuracy"] for entry in history]
    stopped = metrics["epochs"] if metrics.get("converged") else None
    first = one_epoch["metrics"]["wall_seconds"]
    per_epoch = (metrics["wall_seconds"] - first) / (metrics["epochs"] - 1) if metrics["epochs"] > 1 else first
    return {"status": "ok", "metrics": {
        "history": history, "epochs": len(history), "best_epoch": accuracies.index(max(accuracies)) + 1,
        "converged": stopped is not None and stopped <= epochs, "epoch_seconds": metrics["epoch_seconds"],
        "wall_seconds": max(first, first + per_epoch * (len(history) - 1))}}


class ReplaySearch(rec.Search):
    """recommend's search loop over one case's recorded curves: run_cells reads them instead of training."""

    def __init__(self, case_dir: Path, pruner: str) -> None:  # not Search's: no folder to check, no cells to run
        self.result = json.loads((case_dir / "recommend" / rec.RECOMMENDATION_FILE).read_text())
        self.strategy_sets = list(rec.STRATEGY_SETS)  # the agreement cases ran the default strategies
        self.budget, self.seeds, self.rungs = self.result["budget_seconds"], tuple(self.result["pick"]["seeds"]), rec.rung_epochs()
        self.pruner_name, self.stages_run = pruner, 0
        searched = latest_per_cell(RunsLog(case_dir / "recommend" / "cells").read())
        self.scores_seconds = math.fsum(r["metrics"]["wall_seconds"] for r in searched if r["strategy"] == "transferability")
        self.used = self.scores_seconds
        first_rung = [r for r in searched if r["strategy"] != "transferability" and r["params"]["train"]["epochs"] == rec.FIRST_RUNG
                      and not r["params"]["train"]["test"]]
        self.run_order = {key(configuration(r)): i for i, r in enumerate(first_rung)}  # the order recommend ran them
        self.first_rung = {key(configuration(r)): r for r in first_rung}
        full = [r for r in latest_per_cell(RunsLog(case_dir / "full").read()) if r.get("status") == "ok"]
        self.curves: dict[str, Mapping[str, Any]] = {}
        values: dict[str, list[float]] = {}
        for record in sorted(full, key=lambda r: r["seed"] != rec.SEARCH_SEED):  # seed 100 first, then seed 0 stands in
            found = key(configuration(record))
            tuned = record["seed"] in TUNE_SEEDS
            if record["seed"] in (rec.SEARCH_SEED, 0):
                self.curves.setdefault(found, record)
            if tuned or not any(r["seed"] in TUNE_SEEDS and key(configuration(r)) == found for r in full):
                values.setdefault(found, []).append(best_validation(record["metrics"])[0])  # type: ignore[index]
        self.values = {k: statistics.fmean(v) for k, v in values.items()}

    def pruner(self) -> Any:
        return super().pruner() if self.pruner_name == RECOMMENDS else ALTERNATIVES[self.pruner_name]()

    def run_cells(self, stage: rec.Stage, chosen: Sequence[rec.Candidate],
                  save_models: bool = False) -> dict[tuple[int, int], dict[str, Any]]:
        self.stages_run += 1
        found = {}
        for candidate in chosen:
            found_key = key(candidate.describe())
            record = truncated(self.curves[found_key], self.first_rung[found_key], stage.epochs)
            found[(candidate.order, rec.SEARCH_SEED)] = {**record, "_position": (self.stages_run, self.run_order[found_key])}
            self.used += record["metrics"]["wall_seconds"]
        return found


def epoch_cost_ratio(case_dir: Path) -> float:
    """The median, over the trained seed-100 cells of 5 epochs or more, of their seconds per epoch (the slope from
    the search's 1-epoch cell) over their metrics.epoch_seconds."""
    search = ReplaySearch(case_dir, RECOMMENDS)
    ratios = []
    for found, record in search.curves.items():
        metrics = record["metrics"]
        if record["seed"] == rec.SEARCH_SEED and found in search.first_rung and metrics["epochs"] >= 5 \
                and not rec.fits_once(record["params"]["strategy"]):
            slope = (metrics["wall_seconds"] - search.first_rung[found]["metrics"]["wall_seconds"]) / (metrics["epochs"] - 1)
            ratios.append(slope / metrics["epoch_seconds"])
    return statistics.median(ratios)


def replay(case_dir: Path, pruner: str) -> dict[str, Any]:
    search = ReplaySearch(case_dir, pruner)
    outcomes, stopped = search.search(search.result["scores"])
    pick = rec.finalists(outcomes)[0]
    value = search.values[key(pick.describe())]
    ranked = sorted(search.values.values(), reverse=True)
    row = {"pruner": pruner, "search_seconds": search.used - search.scores_seconds, "stopped": stopped,
           "pick": pick.describe(), "pick_value": value, "best_value": ranked[0], "regret": ranked[0] - value,
           "rank": ranked.index(value) + 1, "candidates": len(outcomes),
           "trained_per_rung": [sum(o.rung >= i and not o.candidate.fits_once for o in outcomes) for i in range(len(search.rungs))]}
    if pruner == RECOMMENDS:
        recorded = {key(c): (c["last_rung"], c["dropped_at"]) for c in search.result["candidates"]}
        row["same_as_recorded"] = sum(recorded.get(key(o.candidate.describe())) == (o.rung, o.dropped) for o in outcomes)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", type=Path, default=REPO / "results" / "reference" / "recommend-agreement")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "reference" / "recommend-pruners")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finished = [c for c in CASES if (args.agreement / c / FULL_GRID_FINISHED).is_file()]
    rows = [{"case": case, **replay(args.agreement / case, pruner)} for case in finished for pruner in PRUNERS]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pruners.json").write_text(json.dumps(rows, indent=2))
    lines = ["| case | pruner | search min | trained per rung (1, 3, 9, 27, 30 epochs) | pick | regret | rank | same as recorded |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        options = ",".join(f"{k}={v}" for k, v in row["pick"]["options"].items())
        same = f"{row['same_as_recorded']}/{row['candidates']}" if "same_as_recorded" in row else "-"
        lines.append(f"| {row['case']} | {row['pruner']} | {row['search_seconds'] / 60:.1f} "
                     f"| {', '.join(map(str, row['trained_per_rung']))} | {row['pick']['backbone'].split('/')[-1]} "
                     f"{row['pick']['strategy']}[{options}] | {row['regret']:.3f} | {row['rank']} | {same} |")
    lines.append("")
    for pruner in PRUNERS:
        mine = [r for r in rows if r["pruner"] == pruner]
        lines.append(f"{pruner}: {len(mine)} cases, search {sum(r['search_seconds'] for r in mine) / 60:.1f} min in all, "
                     f"regret mean {statistics.fmean(r['regret'] for r in mine):.3f} (max {max(r['regret'] for r in mine):.3f}), "
                     f"the best candidate picked in {sum(r['rank'] == 1 for r in mine)}.")
    lines.append("One epoch's seconds over metrics.epoch_seconds (training only), median per case: " + ", ".join(
        f"{case} {epoch_cost_ratio(args.agreement / case):.2f}" for case in finished) + ".")
    (args.out / "pruners.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
