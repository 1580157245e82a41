"""The corruption ladder's table (issue 30, items 3 and 4), from the records of a run of
benchmarks/shift-ladder.yaml (and, optionally, of benchmarks/surgical.yaml).

- Per corruption: Spearman's rho of the summary shift (``metrics.shift``) against severity 1..5
  (goal: >= 0.9), and the extractor's validation accuracy on each rung.
- With ``--datasets``: the summary shift of the reference study's four datasets (a run of
  benchmarks/shift-datasets.yaml), per image size, and whether they are in the expected order
  (dogs-vs-cats < sign-language-digits < mnist-5k and digits).
- The "similar" threshold, chosen on the ladder alone (RULE below); the study's datasets never
  enter it (clean dogs-vs-cats is the ladder's reference rung, the zero of every drop).
- Where the shift is (item 4): per input-level corruption and severity, the block whose shift
  grew most over the clean images', absolutely and relatively.
- With ``--surgical``: finetune ``blocks: first:1`` against ``last:1`` per dataset, the mean
  test accuracy of each pick over its evaluation seeds and their paired difference.

Run:  python benchmarks/shift_ladder.py results/reference/shift-ladder [--datasets results/reference/shift-datasets]
      [--surgical results/reference/surgical]
Writes RUN/ladder.md and RUN/ladder.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from tlbench.grid.tuning import best_validation, picks, tested_records
from tlbench.report.stats import paired_difference_from_accuracies
from tlbench.results import RunsLog, latest_per_cell

DROP = 0.05  # a rung "breaks" when its validation accuracy is at least this far below clean
RHO_GOAL = 0.9
INPUT_LEVEL = ("gaussian_noise", "gaussian_blur", "contrast")  # Lee et al.'s input-level corruptions
STUDY_ORDER = (("dogs-vs-cats",), ("sign-language-digits",), ("mnist-5k", "digits"))  # each tier below the next
RULE = (f"Per corruption, its breaking shift is the summary shift at which the frozen extractor's (head logreg, C "
        f"picked on validation) VALIDATION accuracy first falls {DROP * 100:.0f} points below the clean images' "
        "(severity 0), linearly interpolated between the last rung within that and the first beyond it; a corruption "
        "that never falls that far has none. The threshold is the median of the breaking shifts over the corruptions "
        "that have one; a target whose summary shift is at or below it reads similar. Chosen on the corrupted "
        "dogs-vs-cats ladder alone, at one backbone and image size; no test accuracy and no other dataset enters it.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the run directory of benchmarks/shift-ladder.yaml")
    parser.add_argument("--datasets", type=Path, help="the run directory of benchmarks/shift-datasets.yaml")
    parser.add_argument("--surgical", type=Path, help="the run directory of benchmarks/surgical.yaml")
    parser.add_argument("--out", type=Path, help="where ladder.md and ladder.json go (default: the run directory)")
    args = parser.parse_args(argv)
    for folder in (args.run, args.datasets, args.surgical):
        if folder is not None and not (folder / "runs.jsonl").is_file():
            parser.error(f"{folder} has no runs.jsonl: give a run directory")
    table = ladder_table(read_ok(args.run))
    if args.datasets is not None:
        table["datasets"] = dataset_ordering(shift_records(read_ok(args.datasets)))
    if args.surgical is not None:
        table["surgical"] = surgical_table(read_ok(args.surgical))
    out = args.out or args.run
    out.mkdir(parents=True, exist_ok=True)
    (out / "ladder.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / "ladder.md").write_text(markdown(table))
    print(f"wrote {out / 'ladder.md'} and {out / 'ladder.json'}")
    return 0


def read_ok(run: Path) -> list[dict[str, Any]]:
    """The latest record of every cell of ``run`` that finished ``ok``."""
    return [r for r in latest_per_cell(RunsLog(run).read()) if r["status"] == "ok"]


def label(record: Mapping[str, Any]) -> str:
    """The dataset's label in the cell id (a dataset label holds no '/')."""
    return record["cell_id"].split("/")[0]


def validation_accuracy(records: list[dict[str, Any]]) -> dict[str, float]:
    """Dataset label -> the extractor's validation accuracy: its pick's (a tuned series) or its cell's."""
    found = {p.series_id.split("/")[0]: p.chosen.val_accuracy for p in picks(records)
             if p.series.startswith("extractor") and p.chosen is not None}
    for record in records:
        if record["strategy"] == "extractor" and record.get("tune") is None:
            found[label(record)] = best_validation(record["metrics"])[0]
    return found


def shift_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["plugins"]["strategy"] == "shift" and r["metrics"].get("shift") is not None]


def ladder_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ladder's figures, as JSON-ready data."""
    shifts = shift_records(records)
    rungs = [r for r in shifts if r["plugins"]["dataset"] == "corrupted-folder"]
    if not rungs:
        raise SystemExit("no ok shift cell of a corrupted-folder dataset in the run")
    first = rungs[0]
    backbone, size, root = first["backbone"], first["metrics"]["image_size"], first["params"]["dataset"]["root"]
    clean = [r for r in shifts if r["plugins"]["dataset"] == "folder" and r["params"]["dataset"]["root"] == root
             and r["metrics"]["image_size"] == size and r["backbone"] == backbone]
    if len(clean) != 1:
        raise SystemExit(f"expected one clean shift cell of {root} at {size} px, found {len(clean)}")
    accuracy = validation_accuracy(records)
    reference = rung_row(clean[0], accuracy)
    corruptions = {}
    for record in rungs:
        options = record["params"]["dataset"]
        corruptions.setdefault(options["corruption"], []).append({"severity": options["severity"], **rung_row(record, accuracy)})
    ladder = {name: corruption_summary(sorted(rows, key=lambda row: row["severity"]), reference)
              for name, rows in corruptions.items()}
    return {"backbone": backbone, "image_size": size, "clean": reference, "corruptions": ladder,
            "threshold": threshold(ladder, backbone, size), "where": where_the_shift_is(ladder, reference)}


def rung_row(record: Mapping[str, Any], accuracy: Mapping[str, float]) -> dict[str, Any]:
    metrics = record["metrics"]
    return {"dataset": label(record), "shift": metrics["shift"], "shift_profile": metrics["shift_profile"],
            "val_accuracy": accuracy.get(label(record))}


def corruption_summary(rows: list[dict[str, Any]], clean: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman's rho against severity, the rungs, and where validation accuracy first falls DROP below clean."""
    rho = stats.spearmanr([row["severity"] for row in rows], [row["shift"] for row in rows]).statistic
    return {"spearman_rho": float(rho), "meets_goal": bool(rho >= RHO_GOAL - 1e-9), "rungs": rows,  # 0.9 is one swap in 5
            "breaking_shift": breaking_shift([clean, *rows], clean["val_accuracy"])}


def breaking_shift(rows: list[Mapping[str, Any]], clean_accuracy: float | None) -> float | None:
    """The shift where the validation accuracy first reaches clean - DROP, interpolated between
    the rungs on either side (``rows``: clean first, then by severity); None if it never does."""
    if clean_accuracy is None or any(row["val_accuracy"] is None for row in rows):
        return None
    line = clean_accuracy - DROP
    for before, after in itertools.pairwise(rows):
        if after["val_accuracy"] <= line + 1e-12:
            fraction = (before["val_accuracy"] - line) / (before["val_accuracy"] - after["val_accuracy"])
            return float(before["shift"] + fraction * (after["shift"] - before["shift"]))
    return None


def threshold(ladder: Mapping[str, Mapping[str, Any]], backbone: str, size: int) -> dict[str, Any]:
    """The threshold by RULE, and how it moves with other choices: the minimum, and the median over
    the corruptions whose shift is ordered by severity alone."""
    broken = {name: c["breaking_shift"] for name, c in ladder.items() if c["breaking_shift"] is not None}
    values = sorted(broken.values())
    ordered = [value for name, value in broken.items() if ladder[name]["meets_goal"]]
    return {"value": statistics.median(values) if values else None, "statistic": "median over corruptions",
            "min_over_corruptions": values[0] if values else None,
            "median_over_ordered_corruptions": statistics.median(ordered) if ordered else None, "breaking_shift": broken,
            "never_breaking": sorted(set(ladder) - set(broken)), "drop": DROP, "backbone": backbone,
            "image_size": size, "rule": RULE}


def dataset_ordering(shifts: list[dict[str, Any]]) -> dict[str, Any]:
    """Per image size, each study dataset's summary shift (full training split) and whether the tiers are in order."""
    names = [name for tier in STUDY_ORDER for name in tier]
    by_size: dict[int, dict[str, float]] = {}
    for record in shifts:
        if record["dataset"] in names and record["params"]["dataset"].get("train_size", "all") == "all":
            by_size.setdefault(record["metrics"]["image_size"], {})[record["dataset"]] = record["metrics"]["shift"]
    result = {}
    for size, values in sorted(by_size.items()):
        tiers = [[values[name] for name in tier if name in values] for tier in STUDY_ORDER]
        ordered = all(lower and upper and max(lower) < min(upper) for lower, upper in itertools.pairwise(tiers))
        result[str(size)] = {"shift": values, "in_order": bool(ordered and len(values) == len(names))}
    return {"goal": " < ".join(" and ".join(tier) for tier in STUDY_ORDER), "by_image_size": result}


def where_the_shift_is(ladder: Mapping[str, Mapping[str, Any]], clean: Mapping[str, Any]) -> dict[str, Any]:
    """Per input-level corruption and severity, the block whose shift grew most over clean:
    as a difference and as a ratio (each block's shift has its own scale)."""
    base = np.asarray(clean["shift_profile"], dtype=float)
    found = {}
    for name in INPUT_LEVEL:
        if name not in ladder:
            continue
        found[name] = []
        for rung in ladder[name]["rungs"]:
            profile = np.asarray(rung["shift_profile"], dtype=float)
            found[name].append({"severity": rung["severity"], "blocks": len(profile),
                                "largest_increase_block": int(np.nanargmax(profile - base)),
                                "largest_ratio_block": int(np.nanargmax(profile / base)),
                                "increase": [round(float(v), 4) for v in profile - base]})
    return found


def surgical_table(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dataset: each block selection's pick (lr), mean test accuracy over its evaluation seeds,
    and first:1 minus last:1 paired by seed with a t-based 95% CI."""
    tested = [r for r in tested_records(records, picks(records)) if r["strategy"] == "finetune"]
    by_dataset: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for record in tested:
        blocks = record["params"]["strategy"].get("blocks")
        by_dataset.setdefault(label(record), {}).setdefault(str(blocks), {})[record["seed"]] = record
    return {name: surgical_row(sides) for name, sides in by_dataset.items()}


def surgical_row(sides: Mapping[str, Mapping[int, Mapping[str, Any]]]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for blocks, cells in sides.items():
        accuracies = [cells[seed]["metrics"]["test_accuracy"] for seed in sorted(cells)]
        tune = next(iter(cells.values())).get("tune") or {}
        row[blocks] = {"lr": tune.get("candidate", {}).get("lr"), "seeds": sorted(cells),
                       "test_accuracy": statistics.fmean(accuracies), "per_seed": accuracies,
                       "converged": sum(cell["metrics"].get("converged") is True for cell in cells.values())}
    if {"first:1", "last:1"} <= set(sides):
        seeds = sorted(set(sides["first:1"]) & set(sides["last:1"]))
        first, last = ({s: sides[side][s]["metrics"]["test_accuracy"] for s in seeds} for side in ("first:1", "last:1"))
        diff = paired_difference_from_accuracies(first, last)  # the report's paired t over seeds
        row["first_minus_last"] = {"mean": diff.difference,
                                   "ci95": None if math.isnan(diff.ci_low) else [diff.ci_low, diff.ci_high], "n": diff.seeds}
    return row


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(table: Mapping[str, Any]) -> str:
    lines = [f"# The corruption ladder: {table['backbone']} at {table['image_size']} px", "",
             f"Clean dogs-vs-cats: summary shift {fmt(table['clean']['shift'])}, extractor validation accuracy "
             f"{fmt(table['clean']['val_accuracy'])}.", "",
             "| corruption | Spearman rho (goal >= 0.9) | shift at severity 1..5 | validation accuracy at severity 1..5 "
             "| breaking shift |", "|---|---|---|---|---|"]
    for name, c in table["corruptions"].items():
        lines.append(f"| {name} | {c['spearman_rho']:.2f} ({'met' if c['meets_goal'] else 'NOT met'}) | "
                     f"{' / '.join(fmt(r['shift']) for r in c['rungs'])} | "
                     f"{' / '.join(fmt(r['val_accuracy']) for r in c['rungs'])} | {fmt(c['breaking_shift'])} |")
    t = table["threshold"]
    lines += ["", f"**Threshold: {fmt(t['value'])}** (the {t['statistic']}; min {fmt(t['min_over_corruptions'])}; "
                  f"median over the corruptions that meet the Spearman goal {fmt(t['median_over_ordered_corruptions'])}; "
                  f"corruptions that never lost {t['drop'] * 100:.0f} points: {', '.join(t['never_breaking']) or 'none'}), "
                  f"for {t['backbone']} at {t['image_size']} px only.", "", t["rule"]]
    if "datasets" in table:
        lines += ordering_markdown(table["datasets"])
    lines += ["", "## Where the shift is (input-level corruptions)", "",
              "Block (0 = stem) whose shift grew most over the clean images': by difference / by ratio.", "",
              "| corruption | " + " | ".join(f"severity {s}" for s in range(1, 6)) + " |", "|---|" + "---|" * 5]
    for name, rows in table["where"].items():
        cells = " | ".join(f"{r['largest_increase_block']} / {r['largest_ratio_block']}" for r in rows)
        lines.append(f"| {name} ({rows[0]['blocks']} blocks) | {cells} |")
    if "surgical" in table:
        lines += surgical_markdown(table["surgical"])
    return "\n".join(lines) + "\n"


def ordering_markdown(ordering: Mapping[str, Any]) -> list[str]:
    names = [name for tier in STUDY_ORDER for name in tier]
    lines = ["", f"## Dataset ordering (goal: {ordering['goal']})", "",
             "| image size | " + " | ".join(names) + " | in order |", "|---|" + "---|" * (len(names) + 1)]
    for size, found in ordering["by_image_size"].items():
        values = " | ".join(fmt(found["shift"].get(name)) for name in names)
        lines.append(f"| {size} | {values} | {'yes' if found['in_order'] else 'NO'} |")
    return lines


def surgical_markdown(rows: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = ["", "## Surgical fine-tuning: blocks first:1 against last:1", "",
             "| dataset | first:1 test accuracy (lr; seeds converged) | last:1 test accuracy (lr; seeds converged) "
             "| first - last [95% CI] | seeds |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        sides = [row.get(s) for s in ("first:1", "last:1")]
        shown = [f"{fmt(s['test_accuracy'])} ({s['lr']}; {s['converged']}/{len(s['seeds'])} converged)" if s else "-"
                 for s in sides]
        diff = row.get("first_minus_last")
        ci = f"{fmt(diff['mean'])} [{fmt(diff['ci95'][0])}, {fmt(diff['ci95'][1])}]" if diff and diff["ci95"] else "-"
        lines.append(f"| {name} | {shown[0]} | {shown[1]} | {ci} | {diff['n'] if diff else '-'} |")
    return lines


if __name__ == "__main__":
    sys.exit(main())
