"""Does `tlbench recommend` agree with the full protocol grid over the same candidates, and at what cost? (issue 32)

Per case (dataset @ training images per class: 10 or all) the dataset is exported to an image folder
(CASE/data), `tlbench recommend` runs on it (CASE/recommend), then the full grid of the same candidates
under the protocol (every scored backbone x every strategy entry of recommend's STRATEGY_SETS, lr or C
tuned on validation over tune seeds 100 and 101, each pick tested on recommend's confirmation seeds
0..N-1, training to convergence as recommend's: MAX_EPOCHS, PATIENCE, BATCH_SIZE, image size) runs into
CASE/full. Everything resumes: run the same command again after a kill. A case counts once its full grid
has run every cell (CASE/full-grid.finished); before that its row says unfinished.

- full grid's best: the series (backbone x strategy series) whose pick has the highest mean best-epoch
  validation accuracy over its evaluation seeds (never chosen on test); its test accuracy with the 95%
  CI of tlbench.report.stats.mean_ci (seeds and test images).
- agrees: recommend's pick is the best's configuration (backbone, strategy, options), or its test mean
  lies within the best's test CI. The baselines count by the same rule: task-agnostic = the scored
  backbone with the highest ImageNet top-1 fine-tuned whole (its finetune[depth=all] pick); score-only =
  the top-LogME backbone as a frozen logistic-regression extractor (its pick).
- cost ratio: recommend's spent_seconds / the full grid's summed metrics.wall_seconds (all its cells).
  The two share the feature cache, so the full grid may reuse features recommend computed. An unfinished
  case's ratio is bounded from above by its cells so far (cost_ratio_at_most): its grid only costs more.
Goal: agreement in at least 7 of 8 cases at a cost ratio of at most 0.2 in every case. It is met once the
cases that agree reach 7 and every case's ratio (or bound) is at most 0.2, whatever an unfinished case gives.

Run:  python benchmarks/recommend_agreement.py [--cases mnist-5k@10 ...] [--out results/reference/recommend-agreement]
      [--budget MINUTES] [--backbones PATTERN ...] [--strategies NAME ...] [--seeds N] [--image-size PX] [--report-only]
Writes OUT/agreement.json, OUT/agreement.md and OUT/agreement.png (from whatever cases have finished).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import tlbench.recommend.search as rec
from tlbench.cli import show_logs
from tlbench.grid.tuning import best_validation, picks, tested_records
from tlbench.report.stats import mean_ci
from tlbench.results import RunsLog, latest_per_cell, load_test_predictions

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FOLDER_DATASETS = ("sign-language-digits", "dogs-vs-cats")
DATASETS = ("mnist-5k", "digits", *FOLDER_DATASETS)
CASES = tuple(f"{d}@{size}" for size in ("10", "all") for d in DATASETS)
SMALL = 10  # training images per class of the @10 cases
TUNED = ("lr", "C")  # the keys the full grid tunes on validation; other varying keys are separate series
TUNE_SEEDS = [rec.SEARCH_SEED + i for i in range(rec.TUNE_SEEDS)]  # 100, 101: as recommend estimates the full grid
GOAL_CASES, GOAL_COST = 7, 0.2
FULL_GRID_FINISHED = "full-grid.finished"  # in a case's folder once its full grid has run every cell
NOT_DONE = {  # a case's table cell by status; none of these counts
    "not run": "not run",
    "unfinished": "full grid unfinished ({full_grid_records} records so far; the same command resumes it): not judged",
    "failed": "full grid finished without one successful series ({full_grid_records} records): not counted"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def first_per_class(labels: Iterable[Any], count: int) -> list[int]:
    """The indices of the first ``count`` images of each class, in label order."""
    seen: collections.Counter[int] = collections.Counter()
    keep = []
    for i, label in enumerate(int(x) for x in labels):
        seen[label] += 1
        if seen[label] <= count:
            keep.append(i)
    return keep


def export(case: str, folder: Path) -> None:
    """The case's train/valid/test images as FOLDER/<split>/<class>/<n>.png (the folder sets' files copied)."""
    if folder.is_dir():
        return
    from PIL import Image

    from tlbench.plugin.registry import collect

    name, size = case.split("@")
    registries = collect()
    if name in FOLDER_DATASETS:
        spec, options = registries.datasets.get("folder"), {"root": str(SHARED / name)}
    else:
        spec = registries.datasets.get(name)
        options = dict(spec.options)
    data = spec.load(**options)
    pixels = (data.info.get("original_size") or [rec.DEFAULT_IMAGE_SIZE])[0]
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split_name, split in data.splits.items():
        keep = first_per_class(split.labels, SMALL) if split_name == "train" and size != "all" else list(range(len(split.labels)))
        paths = getattr(split, "paths", None)  # a folder's files: copied as they are
        images: Any = split.subset(keep).images(pixels) if paths is None else []
        for n, i in enumerate(keep):
            target = partial / split_name / data.class_names[int(split.labels[i])]
            target.mkdir(parents=True, exist_ok=True)
            if paths:
                shutil.copyfile(paths[i], target / f"{n}{Path(paths[i]).suffix.lower()}")
            else:
                Image.fromarray(images[n:n + 1][0]).convert("RGB").save(target / f"{n}.png")
        log(f"{case}: exported {len(keep)} {split_name} images")
    partial.rename(folder)


def strategy_entries(sets: Sequence[str]) -> list[dict[str, Any]]:
    """The grid's strategy entries for recommend's STRATEGY_SETS: TUNED keys under tune:, other varying keys as lists."""
    entries = []
    for name in sets:
        chosen = rec.STRATEGY_SETS[name]
        values = {k: list(dict.fromkeys(e[k] for e in chosen)) for k in chosen[0]}
        entry: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in values.items() if k not in TUNED or len(v) == 1}
        tuned = {k: v for k, v in values.items() if k in TUNED and len(v) > 1}
        if tuned:
            entry["tune"] = tuned
        entries.append(entry)
    return entries


def run_full_grid(case: str, folder: Path, case_dir: Path, backbones: list[str], args: argparse.Namespace) -> None:
    from tlbench.run.progress import Progress
    from tlbench.run.runner import run_grid

    grid = {"name": f"recommend-agreement-{case}", "datasets": [{"name": case, "plugin": "folder", "root": str(folder)}],
            "backbones": backbones, "strategies": strategy_entries(rec.choose_strategies(args.strategies)),
            "seeds": list(range(args.seeds)), "tune_seeds": TUNE_SEEDS,
            "train": {"epochs": rec.MAX_EPOCHS, "patience": rec.PATIENCE, "batch_size": rec.BATCH_SIZE, "image_size": args.image_size}}
    path, finished = case_dir / "full-grid.yaml", case_dir / FULL_GRID_FINISHED
    finished.unlink(missing_ok=True)  # until this grid has run every cell
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    log(f"{case}: full grid {path} into {case_dir / 'full'}")
    run_grid(path, out=case_dir / "full", progress=Progress())
    finished.write_text(f"{path.name} ran every cell into full/ (written when tlbench's run_grid returned)\n")


def run_recommend(case: str, folder: Path, case_dir: Path, args: argparse.Namespace) -> None:
    command = [sys.executable, "-m", "tlbench.cli", "recommend", str(folder), "--out", str(case_dir / "recommend"),
               "--seeds", str(args.seeds), "--image-size", str(args.image_size)]
    for flag, value in (("--budget", args.budget), ("--backbones", args.backbones), ("--strategies", args.strategies)):
        if value:
            command += [flag, *map(str, value if isinstance(value, list) else [value])]
    log(f"{case}: {' '.join(command[2:])}")
    done = subprocess.run(command, stdout=sys.stderr)
    if done.returncode:
        raise SystemExit(f"{case}: tlbench recommend exited {done.returncode} (its message is above); the cases before "
                         "it are in the table. Fix that and run the same command again (a case whose recommend needs "
                         "more than the default budget: --cases CASE --budget MINUTES)")


def configuration(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record's candidate as recommend describes one: backbone, strategy and the STRATEGY_SETS options."""
    params = record["params"]
    values = {**params["strategy"], **params["train"]}
    keys = dict.fromkeys(k for e in rec.STRATEGY_SETS.get(record["strategy"], ()) for k in e if k != "name")
    return {"backbone": record["backbone"], "strategy": record["strategy"], "options": {k: values.get(k) for k in keys}}


def series_rows(full: Path, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per series of the full grid (run into ``full``, its ``records``): its pick's configuration, validation and
    test accuracy over the evaluation seeds."""
    records = latest_per_cell(records)
    groups: dict[str, tuple[dict[str, Any], list[Mapping[str, Any]]]] = {}
    for record in tested_records(records, picks(records)):
        if record.get("status") == "ok" and best_validation(record["metrics"]) is not None:
            config = configuration(record)
            groups.setdefault(json.dumps(config, sort_keys=True), (config, []))[1].append(record)
    rows = []
    for config, group in groups.values():
        metrics = [r["metrics"] for r in sorted(group, key=lambda r: r["seed"])]
        kept = [load_test_predictions(full, m.get("predictions_file")) for m in metrics]
        test = mean_ci([m["test_accuracy"] for m in metrics], [k.correct if k else None for k in kept])
        rows.append({**config, "seeds": sorted(r["seed"] for r in group),
                     "converged_seeds": sum(bool(m.get("converged")) for m in metrics),
                     "validation_accuracy": statistics.fmean(best_validation(m)[0] for m in metrics),  # type: ignore[index]
                     "test_accuracy": rec.interval_dict(test)})  # NaN bounds (one seed) as None
    return rows


def same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a[k] == b[k] for k in ("backbone", "strategy", "options"))


def judged(side: Mapping[str, Any] | None, best: Mapping[str, Any]) -> dict[str, Any] | None:
    """``side`` with whether it agrees with ``best`` (the same configuration, or its test mean within the best's CI)
    and how far its test mean is behind the best's (negative: ahead)."""
    if side is None:
        return None
    low, high, mean = best["test_accuracy"]["low"], best["test_accuracy"]["high"], side["test_accuracy"]["mean"]
    within = low is not None and high is not None and low <= mean <= high
    return {**{k: side[k] for k in ("backbone", "strategy", "options", "test_accuracy")},
            "same_configuration": same(side, best), "within_best_ci": within, "agrees": same(side, best) or within,
            "behind_best": best["test_accuracy"]["mean"] - mean}


def compare(case: str, case_dir: Path) -> dict[str, Any]:
    result_file, full = case_dir / "recommend" / rec.RECOMMENDATION_FILE, case_dir / "full"
    records = RunsLog(full).read() if (full / "runs.jsonl").is_file() else []
    if not result_file.is_file() or not records:
        return {"case": case, "status": "not run"}
    result = json.loads(result_file.read_text())
    full_seconds = math.fsum((r.get("metrics") or {}).get("wall_seconds") or 0.0 for r in records)
    if not (case_dir / FULL_GRID_FINISHED).is_file():  # interrupted, or still running: its best is not the grid's
        return {"case": case, "status": "unfinished", "full_grid_records": len(records),
                "recommend_seconds": result["spent_seconds"], "full_grid_seconds_so_far": full_seconds,
                "cost_ratio_at_most": result["spent_seconds"] / full_seconds if full_seconds else None}
    rows = series_rows(full, records)
    if not rows:
        return {"case": case, "status": "failed", "full_grid_records": len(records)}
    scored = [s for s in result["scores"] if s["logme"] is not None]
    best = max(rows, key=lambda r: r["validation_accuracy"])
    top1 = {s.name: s.imagenet_top1 for s in rec.SHORTLIST}
    agnostic = max((s["backbone"] for s in scored if s["backbone"] in top1), key=top1.__getitem__, default=None)
    top_logme = max(scored, key=lambda s: s["logme"])["backbone"]

    def find(backbone: str | None, strategy: str, **options: Any) -> dict[str, Any] | None:
        return next((r for r in rows if r["backbone"] == backbone and r["strategy"] == strategy
                     and all(r["options"].get(k) == v for k, v in options.items())), None)

    pick = judged(result["pick"], best)
    assert pick is not None
    return {"case": case, "status": "done", "complete": all(r["seeds"] == result["pick"]["seeds"] for r in rows),
            "full_grid_best": best, "recommend_pick": pick, "agrees": pick["agrees"],
            "recommend_seconds": result["spent_seconds"], "full_grid_seconds": full_seconds,
            "cost_ratio": result["spent_seconds"] / full_seconds if full_seconds else None,
            "task_agnostic": judged(find(agnostic, "finetune", depth="all"), best),
            "score_only": judged(find(top_logme, "extractor", head="logreg"), best), "series": rows}


def label(side: Mapping[str, Any]) -> str:
    options = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in side["options"].items())
    return f"{side['backbone'].split('/')[-1]} {side['strategy']}[{options}]"


def interval(found: Mapping[str, Any]) -> str:
    bounds = f" [{found['low']:.3f}, {found['high']:.3f}]" if found["low"] is not None else ""
    return f"{found['mean']:.3f}{bounds}"


def yes(side: Mapping[str, Any]) -> str:
    return "yes" if side["agrees"] else "no"


def baseline(side: Mapping[str, Any] | None) -> str:
    return "-" if side is None else f"{side['test_accuracy']['mean']:.3f}, {yes(side)}"


def behind(sides: Sequence[Mapping[str, Any] | None]) -> str:
    """The mean (max) of the sides' ``behind_best``, and how many cases they cover when some have no such side."""
    gaps = [side["behind_best"] for side in sides if side is not None]
    if not gaps:
        return "-"
    missing = f" in {len(gaps)} of {len(sides)}" if len(gaps) < len(sides) else ""
    return f"{statistics.fmean(gaps):.3f} ({max(gaps):.3f}){missing}"


def goal(rows: Sequence[Mapping[str, Any]]) -> str:
    """Whether the goal is met, not met, or not yet decided; an unfinished case counts once the goal holds (or
    fails) whatever it gives: its cost ratio's bound from its cells so far, its agreement either way."""
    done = [r for r in rows if r["status"] == "done"]
    open_cases = [r for r in rows if r["status"] in ("not run", "unfinished")]
    agreed = sum(r["agrees"] for r in done)
    costs = [r["cost_ratio"] if r["status"] == "done" else r.get("cost_ratio_at_most") for r in rows]
    if len(rows) == len(CASES) and agreed >= GOAL_CASES and all(c is not None and c <= GOAL_COST for c in costs):
        if not open_cases:
            return "met."
        names = ", ".join(r["case"] for r in open_cases)
        return (f"met, whatever {names} gives: {agreed} cases agree, and its cost ratio is at most "
                f"{max(r['cost_ratio_at_most'] for r in open_cases):.3f} already (its grid's cells so far).")
    finished_over = any(r["status"] == "done" and (r["cost_ratio"] is None or r["cost_ratio"] > GOAL_COST) for r in done)
    if finished_over or agreed + len(open_cases) < GOAL_CASES or any(r["status"] == "failed" for r in rows):
        return "not met."
    return "not met (yet)."


def write_outputs(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "agreement.json").write_text(json.dumps(rows, indent=2, allow_nan=False))
    lines = ["| case | full-grid best (config, val, test [95% CI]) | recommend pick (config, test) | agrees | cost ratio "
             "| task-agnostic (test, agrees) | score-only (test, agrees) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["status"] != "done":
            bound = row.get("cost_ratio_at_most")
            lines.append(f"| {row['case']} | {NOT_DONE[row['status']].format(**row)} | | | "
                         f"{'' if bound is None else f'at most {bound:.3f} (so far)'} | | |")
            continue
        best, pick, ratio = row["full_grid_best"], row["recommend_pick"], row["cost_ratio"]
        lines.append(f"| {row['case']} | {label(best)}, {best['validation_accuracy']:.3f}, {interval(best['test_accuracy'])} "
                     f"| {label(pick)}, {interval(pick['test_accuracy'])} | {yes(pick)} | "
                     f"{'-' if ratio is None else f'{ratio:.3f}'} | {baseline(row['task_agnostic'])} "
                     f"| {baseline(row['score_only'])} |")
    done = [r for r in rows if r["status"] == "done"]
    ratios = [r["cost_ratio"] for r in done if r["cost_ratio"] is not None]
    agreed = sum(r["agrees"] for r in done)
    lines += ["", f"Agreement in {agreed} of {len(done)} cases run ({len(rows)} listed); cost ratio median "
              + (f"{statistics.median(ratios):.3f}, max {max(ratios):.3f}." if ratios else "-, max -."),
              f"Goal: agreement in at least {GOAL_CASES} of {len(CASES)} cases at a cost of at most {GOAL_COST}: "
              + goal(rows),
              "Test accuracy behind the full grid's best, mean (max) over the cases run, not tested for significance: "
              + ", ".join(f"{name} {behind([r[key] for r in done])}" for name, key in
                          (("recommend", "recommend_pick"), ("score-only", "score_only"), ("task-agnostic", "task_agnostic")))
              + ".",
              "The full grid's best converged (metrics.converged: it stopped improving, or its logistic-regression fit "
              f"converged) on {sum(r['full_grid_best']['converged_seeds'] for r in done)} of its "
              f"{sum(len(r['full_grid_best']['seeds']) for r in done)} evaluation seeds in the cases run."]
    (out / "agreement.md").write_text("\n".join(lines) + "\n")
    plotted = [r for r in done if r["cost_ratio"] is not None]
    figure, axes = plt.subplots(figsize=(7, 1.5 + 0.4 * max(1, len(plotted))))
    for y, row in enumerate(plotted):  # a row per case, labelled on the y axis: labels never overlap
        axes.plot(row["cost_ratio"], y, "o", color="C0", markerfacecolor="C0" if row["agrees"] else "none", markersize=8)
    axes.axvline(GOAL_COST, color="grey", linestyle="--", label=f"goal: at most {GOAL_COST}")
    axes.set(xlabel="cost ratio (recommend seconds / full grid seconds)", yticks=range(len(plotted)),
             yticklabels=[r["case"] for r in plotted], ylim=(-0.6, max(1, len(plotted)) - 0.4),
             xlim=(0, 1.1 * max([GOAL_COST, *(r["cost_ratio"] for r in plotted)])),
             title="recommend vs the full grid (filled: agrees, hollow: does not)")
    axes.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small")
    figure.tight_layout()
    figure.savefig(out / "agreement.png", dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), metavar="CASE")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "reference" / "recommend-agreement")
    parser.add_argument("--budget", type=float, metavar="MINUTES")
    parser.add_argument("--backbones", nargs="+", metavar="PATTERN")
    parser.add_argument("--strategies", nargs="+", choices=tuple(rec.STRATEGY_SETS), metavar="NAME")
    parser.add_argument("--seeds", type=int, default=rec.DEFAULT_SEEDS, metavar="N")
    parser.add_argument("--image-size", type=int, default=rec.DEFAULT_IMAGE_SIZE, metavar="PX")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the outputs from existing runs")
    args = parser.parse_args(argv)
    show_logs()  # the full grid runs in this process: hours of cells, each one's progress on stderr
    out = args.out.resolve()
    for case in [] if args.report_only else args.cases:
        case_dir = out / case
        folder = case_dir / "data"
        export(case, folder)
        run_recommend(case, folder, case_dir, args)
        result = json.loads((case_dir / "recommend" / rec.RECOMMENDATION_FILE).read_text())
        run_full_grid(case, folder, case_dir, [s["backbone"] for s in result["scores"] if s["logme"] is not None], args)
        write_outputs(out, [compare(c, out / c) for c in CASES])
    write_outputs(out, [compare(c, out / c) for c in CASES])
    log(f"wrote {out / 'agreement.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
