"""Rerun reference grids and print, cell by cell, how their test accuracy differs from the committed runs.

    .venv/bin/python scripts/compare_reference.py                      # quickstart and textbook
    .venv/bin/python scripts/compare_reference.py quickstart --only scratch
    .venv/bin/python scripts/compare_reference.py --runs DIR           # compare finished runs, no rerun

Each grid ``benchmarks/NAME.yaml`` runs into ``--runs/NAME`` (default a new temporary folder)
with an empty cache, then every cell is matched to ``results/reference/NAME`` by its key.
Exit code 0 when every compared cell has the same test accuracy, 1 otherwise.
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
    parser.add_argument("--runs", type=Path, help="where the reruns go (or are, with --no-run)")
    parser.add_argument("--no-run", action="store_true", help="compare runs already in --runs")
    parser.add_argument("--only", help="passed to tlbench run --only")
    args = parser.parse_args(argv)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="tlbench-reference-"))
    differ = 0
    for name in args.grids:
        out = runs / name
        if not args.no_run:
            with tempfile.TemporaryDirectory(prefix="tlbench-cache-") as cache:
                command = [sys.executable, "-m", "tlbench.cli", "run", "--grid", str(REPO / "benchmarks" / f"{name}.yaml"),
                           "--out", str(out), "--cache-dir", cache, *(["--only", args.only] if args.only else [])]
                print("$", " ".join(command), flush=True)
                subprocess.run(command, check=False)
        differ += compare(REPO / "results" / "reference" / name, out, partial=bool(args.only))
    print(f"\n{differ} cell(s) differ" if differ else "\nevery compared cell has the same test accuracy")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
