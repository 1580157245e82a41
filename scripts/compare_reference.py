"""Rerun reference grids and print, cell by cell, how their test accuracy differs from the committed runs.

    .venv/bin/python scripts/compare_reference.py                      # quickstart and textbook
    .venv/bin/python scripts/compare_reference.py quickstart --only scratch
    .venv/bin/python scripts/compare_reference.py quickstart --runs DIR  # compare finished runs, no rerun

Without ``--runs``, each grid ``benchmarks/NAME.yaml`` runs into a new temporary folder with an
empty cache. With ``--runs DIR``, nothing runs: DIR is the run folder (one grid) or the folder
holding ``NAME/`` for each grid. Every cell is then matched to ``results/reference/NAME`` by its key.
Exit code 0 when every compared cell has the same test accuracy, 1 otherwise, 2 when a run is missing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRIDS = ("quickstart", "textbook")


def latest_accuracy(run_dir: Path) -> dict[str, tuple[str, float | None]]:
    """cell key -> (cell id, test accuracy) of the latest record of each cell."""
    from tlbench.results import RunsLog, latest_per_cell

    return {r["key"]: (r["cell_id"], (r.get("metrics") or {}).get("test_accuracy"))
            for r in latest_per_cell(RunsLog(run_dir).read())}


def compare(reference: Path, rerun: Path, partial: bool = False) -> int:
    """Print one line per cell; return how many cells differ (or are missing, unless ``partial``)."""
    old, new = latest_accuracy(reference), latest_accuracy(rerun)
    differ = 0
    print(f"\n{reference.name}: {rerun} against {reference}")
    print(f"{'cell':70} {'reference':>9} {'rerun':>9} {'diff':>8}")
    for key, (cell_id, before) in old.items():
        after = new.get(key, (cell_id, None))[1]
        if key not in new:
            line, differ = "not rerun", differ + (not partial)
        elif before is None or after is None:
            line = "no accuracy" if before == after else "status differs"
            differ += before != after
        else:
            line = f"{after - before:+8.4f}" + ("" if after == before else "  DIFFERS")
            differ += after != before
        print(f"{cell_id:70} {_fmt(before):>9} {_fmt(after):>9} {line}")
    for key in new.keys() - old.keys():
        print(f"{new[key][0]:70} {'-':>9} {_fmt(new[key][1]):>9} not in the reference (its key changed?)")
        differ += 1
    return differ


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="*", default=list(GRIDS), help=f"grid names (default: {' '.join(GRIDS)})")
    parser.add_argument("--runs", type=Path, metavar="DIR",
                        help="compare finished runs, no rerun: the run folder (one grid) or the folder holding NAME/")
    parser.add_argument("--only", help="passed to tlbench run --only")
    args = parser.parse_args(argv)
    if args.runs:
        try:
            runs = {name: finished_run(args.runs, name, len(args.grids)) for name in args.grids}
        except LookupError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        runs = rerun(args.grids, Path(tempfile.mkdtemp(prefix="tlbench-reference-")), args.only)
    differ = sum(compare(REPO / "results" / "reference" / name, out, partial=bool(args.only)) for name, out in runs.items())
    print(f"\n{differ} cell(s) differ" if differ else "\nevery compared cell has the same test accuracy")
    return 1 if differ else 0


def finished_run(runs: Path, name: str, grids: int) -> Path:
    """The run folder of grid ``name`` in ``runs`` (itself, for one grid, or ``runs/name``); LookupError if none."""
    from tlbench.results import RUNS_FILE

    candidates = [runs / name] + ([runs] if grids == 1 else [])
    for folder in candidates:
        if (folder / RUNS_FILE).is_file():
            return folder
    grid = (REPO / "benchmarks" / f"{name}.yaml").relative_to(REPO)
    raise LookupError(f"no finished run of {name}: no {' or '.join(str(f / RUNS_FILE) for f in candidates)}; "
                      f"make it with `.venv/bin/tlbench run --grid {grid} --out {runs / name} --cache-dir <empty dir>` "
                      "(or leave out --runs to rerun into a temporary folder)")


def rerun(grids: list[str], runs: Path, only: str | None) -> dict[str, Path]:
    """Run each grid into ``runs/NAME`` with an empty cache; grid name -> run folder."""
    for name in grids:
        with tempfile.TemporaryDirectory(prefix="tlbench-cache-") as cache:
            command = [sys.executable, "-m", "tlbench.cli", "run", "--grid", str(REPO / "benchmarks" / f"{name}.yaml"),
                       "--out", str(runs / name), "--cache-dir", cache, *(["--only", only] if only else [])]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, check=False)
    return {name: runs / name for name in grids}


if __name__ == "__main__":
    sys.exit(main())
