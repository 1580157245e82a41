"""The ``tlbench`` command line: run | recommend | list | plugins | report | predict | cache."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from tlbench import __version__

if TYPE_CHECKING:
    from types import FrameType

    from tlbench.plugin.registry import Registries, Registry
    from tlbench.plugin.specs import BackboneSpec, Cell

log = logging.getLogger("tlbench")
EXIT_FAILED_CELLS, EXIT_BAD_INPUT = 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM


def show_logs(level: int = logging.INFO) -> None:
    """tlbench's log lines on stderr (a run's progress cell by cell), as every command prints them."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, a batch scheduler, ``kill``) stops a run the way Ctrl-C does."""


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    from tlbench.report.document import SMALL_PER_CLASS

    parser = argparse.ArgumentParser(
        prog="tlbench",
        description="Benchmark transfer-learning strategies (pretrained classifier, frozen feature "
        "extractor, fine-tuning at depth k, training from scratch) on image datasets.",
        epilog="Start with: tlbench run --grid benchmarks/quickstart.yaml",
    )
    parser.add_argument("--version", action="version", version=f"tlbench {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run a grid of cells (resumes an interrupted run)",
                              description="Run every cell of a grid file; cells already finished in "
                              "the out dir are skipped, failed ones are retried.")
    run.add_argument("--grid", required=True, metavar="FILE", help="grid YAML file")
    run.add_argument("--out", metavar="DIR", help="run directory (default: results/<grid name>)")
    run.add_argument("--only", metavar="PATTERN", help="run only cells whose id matches (wildcards or substring)")
    run.add_argument("--dry-run", action="store_true", help="validate the grid and print the cell ids")
    run.add_argument("--rerun", action="store_true", help="run every cell again, finished or not")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default auto)")
    run.add_argument("--cache-dir", metavar="DIR",
                     help="feature/activation cache (default $TLBENCH_CACHE_DIR or ~/.cache/tlbench)")
    run.add_argument("--save-models", action="store_true", help="keep each cell's trained model in DIR/models")
    run.add_argument("--executor", choices=("local", "ray", "inline"), default="local",
                     help="where cells run: local (default) a worker subprocess, so a crashing cell costs only "
                     "its worker; ray: Ray tasks on a local instance or --ray-address's cluster; inline: in "
                     "this process (debugging)")
    run.add_argument("--ray-address", metavar="ADDRESS", help="an existing Ray cluster: HOST:PORT (its head's GCS), "
                     "ray://HOST:PORT (Ray Client) or auto (default: $RAY_ADDRESS, else start a local one)")
    run.add_argument("--retries", type=int, default=1, metavar="N",
                     help="run a cell again N times when its worker dies (default 1); then it is failed")
    run.add_argument("--track", action="append", default=[], metavar="TRACKER",
                     help="log every cell to a tracker, e.g. mlflow (a plugin; repeat for several)")
    run.add_argument("--tracking-uri", metavar="URI",
                     help="the tracker's store (mlflow default: a SQLite file DIR/mlflow.db)")

    _add_recommend(commands)

    lister = commands.add_parser("list", help="list registered datasets, backbones or strategies")
    lister.add_argument("kind", choices=("datasets", "backbones", "strategies"))
    lister.add_argument("pattern", nargs="?", default="*", help="shell wildcard, e.g. 'timm/resnet*'")
    lister.add_argument("--blocks", metavar="NAME", help="(backbones) print NAME's blocks with parameter counts")

    commands.add_parser("plugins", help="installed plugins, their distributions and what they register")

    report = commands.add_parser(
        "report", help="rebuild the summaries and the report (report.html, report.md, verdicts.json, plots) of a "
        "run directory, or compare several runs in one report",
        description="Rebuild summary.csv, summary.md, report.html, report.md, verdicts.json and the plots of DIR "
        "from its runs.jsonl and kept predictions. "
        "With several DIRs, --out OUT gets the latest record of every cell of all of them (a cell in "
        "more than one run keeps its later-finished record) and the report over them.")
    report.add_argument("run_dirs", nargs="+", metavar="DIR")
    report.add_argument("--out", metavar="OUT", help="with several DIRs: the directory for the combined report")
    report.add_argument("--small-per-class", type=_at_least_one, default=None, metavar="N",
                        help="a target set with at most N training images per class counts as small "
                        f"(default: the grid's report.small_per_class stored with the run, else {SMALL_PER_CLASS})")

    predict = commands.add_parser("predict", help="classify images with a pretrained head or a saved cell model")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--backbone", metavar="NAME", help="backbone whose ImageNet head predicts")
    source.add_argument("--cell", metavar="RUN_DIR/CELL_ID", help="a cell run with --save-models")
    predict.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON only on stdout")

    cache = commands.add_parser("cache", help="inspect or clear the feature cache")
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("--cache-dir", metavar="DIR")
    return parser


def _add_recommend(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tlbench.recommend.search import (
        DEFAULT_BUDGET_MINUTES,
        DEFAULT_IMAGE_SIZE,
        DEFAULT_SEEDS,
        KEEP_BACKBONES,
        SHORTLIST,
        STRATEGY_SETS,
    )

    recommend = commands.add_parser(
        "recommend", help="which backbone, strategy, depth and learning rate for a folder of images, measured",
        description="Answer 'freeze or fine-tune, how deep, which backbone and learning rate?' for FOLDER by "
        f"measurement at a bounded cost: (1) LogME of each candidate backbone's frozen features, keeping the "
        f"best {KEEP_BACKBONES}; (2) successive halving on validation accuracy (Optuna's SuccessiveHalvingPruner, "
        "epochs as the resource) over backbone x strategy x learning rate, the test split unread; (3) the best "
        "candidate and the best of another family trained until they stop improving on fresh seeds, tested "
        "once, compared paired by seed. Writes OUT/recommendation.json, OUT/report.html and every cell's "
        "record in OUT/cells (interrupted, the same command resumes without redoing a finished cell).",
        epilog="Default backbones: " + ", ".join(s.name for s in SHORTLIST) + " (offline: those whose weights are on "
        "this machine). Candidates per strategy family: " + "; ".join(
            f"{name}: " + ", ".join(" ".join(f"{k}={v}" for k, v in entry.items() if k != "name") for entry in entries)
            for name, entries in STRATEGY_SETS.items()) + ".")
    recommend.add_argument("folder", metavar="FOLDER", help="class folders (FOLDER/<class>/<image>), or split "
                           "folders (FOLDER/train|valid|test/<class>/<image>), as the folder dataset reads them")
    recommend.add_argument("--backbones", nargs="+", metavar="PATTERN",
                           help="candidate backbones: registered names or wildcards (e.g. 'timm/resnet*'); default "
                           "the shortlist above")
    recommend.add_argument("--strategies", nargs="+", metavar="NAME", choices=tuple(STRATEGY_SETS),
                           help=f"strategy families to search: {', '.join(STRATEGY_SETS)} (default all)")
    recommend.add_argument("--budget", type=float, default=DEFAULT_BUDGET_MINUTES, metavar="MINUTES",
                           help="cell time for the whole command, confirmation included, planned from measured seconds: "
                           "the next rung runs only if it and the confirmation (to convergence) fit; when the first rung leaves "
                           "too little for the least confirmation, it stops with exit 2 and the budget it needs "
                           f"(default {DEFAULT_BUDGET_MINUTES:g})")
    recommend.add_argument("--seeds", type=_at_least_one, default=DEFAULT_SEEDS, metavar="N",
                           help=f"fresh seeds for the confirmation (default {DEFAULT_SEEDS}, at least 2)")
    recommend.add_argument("--image-size", type=_at_least_one, default=DEFAULT_IMAGE_SIZE, metavar="PX",
                           help=f"image size for every cell (default {DEFAULT_IMAGE_SIZE}, sized for a CPU)")
    recommend.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train (default auto)")
    recommend.add_argument("--out", metavar="DIR", help="output folder (default results/recommend-<folder name>)")
    recommend.add_argument("--write-grid", metavar="FILE", help="also write a grid file that reruns the final "
                           "comparison with `tlbench run --grid FILE`")
    recommend.add_argument("--executor", choices=("local", "ray", "inline"), default="local",
                           help="where cells run, as for `tlbench run` (default local)")
    recommend.add_argument("--ray-address", metavar="ADDRESS", help="with --executor ray: an existing cluster")
    recommend.add_argument("--save-model", action="store_true",
                           help="keep the pick's models for `tlbench predict --cell`")
    recommend.add_argument("--cache-dir", metavar="DIR",
                           help="feature cache (default $TLBENCH_CACHE_DIR or ~/.cache/tlbench)")


def _at_least_one(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ logs (e.g. a failed cuInit on a CPU machine), read when it is imported: all with -v, else none
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if args.verbose else "3")
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    show_logs(level)
    from tlbench.grid.loading import GridError
    from tlbench.plugin.specs import BadSetting, PluginError, UnusableDir

    try:
        return COMMANDS[args.command](args)
    except (GridError, PluginError, UnusableDir, BadSetting, OSError) as exc:  # UnknownName, RunLocked: subclasses
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        print("interrupted: finished cells are saved; run the same command again to resume", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def cmd_run(args: argparse.Namespace) -> int:
    from tlbench.grid.loading import load_grid
    from tlbench.grid.tuning import stage_two_summary
    from tlbench.plugin.engine import intra_op_threads
    from tlbench.plugin.registry import collect
    from tlbench.run.executors import make_executor
    from tlbench.run.progress import Progress
    from tlbench.run.runner import Runner, run_dir_for, select_cells

    signal.signal(signal.SIGTERM, _terminate)
    intra_op_threads()  # a bad $TLBENCH_THREADS stops the run before anything starts
    registries = collect()
    with make_executor(args.executor, retries=args.retries, ray_address=args.ray_address) as executor:
        grid = load_grid(args.grid, registries, block_lookup=executor.blocks, allow_unprepared=args.dry_run)
        cells = select_cells(grid.cells(), args.only)
        if not cells:
            print(f"error: --only {args.only!r} matches none of the {len(grid.cells())} cells of {args.grid}; "
                  "`--dry-run` without --only lists their ids", file=sys.stderr)
            return EXIT_BAD_INPUT
        if args.dry_run:
            for cell in cells:
                print(cell.cell_id)
            print(f"{len(cells)} cells; grid {args.grid} is valid", file=sys.stderr)
            if stage_two := stage_two_summary(grid, cells):
                print(stage_two, file=sys.stderr)
            _print_cost(_not_finished(cells, run_dir_for(grid, args.out)), args.cache_dir, registries)
            if grid.unprepared:
                print(f"{len(grid.unprepared)} dataset(s) must be prepared before this grid can run:\n"
                      + "\n".join(f"  - {line}" for line in grid.unprepared), file=sys.stderr)
                return EXIT_BAD_INPUT
            return 0
        runner = Runner(grid, registries, executor, args.out, device=args.device, cache_dir=args.cache_dir,
                        save_models=args.save_models, progress=Progress(), argv=sys.argv,
                        track=tuple(args.track), tracking_uri=args.tracking_uri)
        records = runner.run(cells, rerun=args.rerun)
    failed = [r for r in records if r["status"] == "failed"]
    print(f"{len(records)} cells run, {len(failed)} failed; results in {runner.out}", file=sys.stderr)
    return EXIT_FAILED_CELLS if failed else 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from tlbench.plugin.engine import intra_op_threads
    from tlbench.plugin.registry import collect
    from tlbench.recommend.search import Search, write_grid
    from tlbench.run.executors import make_executor
    from tlbench.run.progress import Progress

    signal.signal(signal.SIGTERM, _terminate)
    intra_op_threads()
    registries = collect()
    with make_executor(args.executor, ray_address=args.ray_address) as executor:
        search = Search(args.folder, registries, executor, out=args.out, backbones=args.backbones,
                        strategies=args.strategies, budget_minutes=args.budget, seeds=args.seeds, device=args.device,
                        image_size=args.image_size, cache_dir=args.cache_dir, save_model=args.save_model,
                        progress=Progress(), argv=sys.argv)
        result = search.run()
    print(result["answer"])
    if args.write_grid:
        print(f"grid of the final comparison: {write_grid(result, args.write_grid)}", file=sys.stderr)
    if result["saved_model"]:
        print(f"the pick's model: tlbench predict --cell {result['saved_model']} IMAGE", file=sys.stderr)
    print(f"details: {search.out / 'report.html'} and {search.out / 'recommendation.json'}", file=sys.stderr)
    return 0


def _not_finished(cells: Sequence[Cell], run_dir: Path) -> Sequence[Cell]:
    """The cells a run into ``run_dir`` would run (it resumes), saying how many it skips (to stderr)."""
    from tlbench.results import RunsLog

    runs = RunsLog(run_dir)
    done = runs.finished_keys() if runs.path.is_file() else set()
    left = [cell for cell in cells if cell.key not in done]
    if len(left) < len(cells):
        print(f"{len(cells) - len(left)} of them already finished in {run_dir} (a run resumes): the cost below is "
              f"for the other {len(left)}", file=sys.stderr)
    return left


def _print_cost(cells: Sequence[Cell], cache_dir: str | None, registries: Registries) -> None:
    """The epochs per strategy (at most: `patience` may stop a cell early; none for the evidence
    strategies, which do not train, nor for a head fitted once) and the time estimated from the
    cache's timings (to stderr)."""
    from tlbench.data.cache import Timings, default_cache_dir
    from tlbench.train.protocol import fits_once

    epochs: dict[str, list[int]] = {}
    for cell in cells:
        trains = (registries.strategies.get(cell.strategy.plugin).family != "evidence"
                  and not fits_once(cell.strategy.options))
        epochs.setdefault(cell.strategy.label, []).append(cell.settings.epochs if trains else 0)
    print("epochs per strategy, at most: " + ", ".join(f"{label} {sum(n):,} ({len(n)} cells)"
                                                      for label, n in epochs.items()), file=sys.stderr)
    timings = Timings(cache_dir or default_cache_dir())
    seconds, timed = timings.estimate(cells)
    untimed = f" ({len(cells) - timed} cells have no timing yet)" if timed < len(cells) else ""
    if timed:
        print(f"estimated {_duration(seconds)} for {timed} of {len(cells)} cells{untimed}, from {timings.path}", file=sys.stderr)
    else:
        print(f"no time estimate: no cell has a timing yet in {timings.path} (each finished cell adds its own)",
              file=sys.stderr)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def cmd_list(args: argparse.Namespace) -> int:
    from tlbench.plugin.registry import collect

    registries = collect()
    if args.blocks:
        if args.kind != "backbones":  # a dataset's or a strategy's spec has no blocks
            print(f"error: --blocks lists a backbone's blocks: tlbench list backbones --blocks {args.blocks}",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        return _print_blocks(registries.backbones, args.blocks)
    registry = registries.of(args.kind)
    specs = registry.select(args.pattern)
    for spec in specs:
        extra = f" [{spec.num_classes} classes]" if getattr(spec, "num_classes", None) else ""
        print(f"{spec.name}{extra}  {spec.description}".rstrip())
    if not specs:
        print(f"no {args.kind} match {args.pattern!r}", file=sys.stderr)
    return 0


def _print_blocks(registry: Registry[BackboneSpec], name: str) -> int:
    from tabulate import tabulate

    spec = registry.get(name)
    blocks = spec.blocks(**spec.options) if spec.blocks is not None else spec.build(weights="none").blocks
    rows = [(i, b.name, b.params) for i, b in enumerate(blocks)]
    print(tabulate(rows, headers=("block", "name", "params"), intfmt=","))
    print(f"{len(rows)} blocks; finetune depth k trains the last k", file=sys.stderr)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from tlbench.plugin.registry import KINDS, collect

    registries = collect()
    pm = registries.plugin_manager
    rows = []
    for name, plugin in pm.list_name_plugin():
        dist, version = pm.distributions.get(name, ("-", "-"))
        provider = pm.describe(plugin)
        counts = [f"{registries.of(kind).count_by(provider)} {kind}" for kind in KINDS]
        rows.append((name, dist, version, ", ".join(c for c in counts if not c.startswith("0 ")) or "hooks only"))
    for name, error in pm.failed.items():
        rows.append((name, "-", "-", f"FAILED TO LOAD: {error}"))
    from tabulate import tabulate

    print(tabulate(rows, headers=("plugin", "distribution", "version", "registers")))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tlbench.report.document import ReportSettings
    from tlbench.results import RUNS_FILE, merge_runs
    from tlbench.run.runner import make_run_dir, run_lock

    if len(args.run_dirs) == 1 and not args.out:
        run_dir = Path(args.run_dirs[0])
        if not (run_dir / RUNS_FILE).exists():
            raise FileNotFoundError(f"{run_dir / RUNS_FILE} does not exist: is {run_dir} a tlbench run directory?")
        return _write_tables(run_dir, args.small_per_class)
    if not args.out:
        print("error: several run directories need --out OUT for the combined report", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = make_run_dir(args.out)
    with run_lock(out):
        try:
            settings = ReportSettings.of_sources(args.run_dirs, args.small_per_class)
            merge_runs(args.run_dirs, out, report=settings.stored())
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return _write_tables(out)


def _write_tables(run_dir: Path, small_per_class: int | None = None) -> int:
    from tlbench.report.document import write_report
    from tlbench.results import write_summaries

    for path in [*write_summaries(run_dir), *write_report(run_dir, small_per_class=small_per_class)]:
        print(path)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tlbench.plugin.engine import intra_op_threads
    from tlbench.predict import predict_cell, predict_with_backbone

    intra_op_threads()  # a bad $TLBENCH_THREADS stops before any image is read

    if args.cell:
        results = predict_cell(args.images, args.cell, top=args.top)
    else:
        results = predict_with_backbone(args.images, args.backbone, top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(result["image"])
        for row in result["top"]:
            print(f"  {row['probability']:7.2%}  {row['label']} ({row['index']})")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from tlbench.data.cache import ArrayCache, default_cache_dir

    cache = ArrayCache(args.cache_dir or default_cache_dir())
    if args.action == "clear":
        removed, kept = cache.clear()
        print(f"removed {removed} entries from {cache.root}" + _kept(kept, cache.root))
    else:
        info = cache.info()
        print(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 2**20:.1f} MiB")
    return 0


def _kept(files: list[Path], root: Path, listed: int = 5) -> str:
    """'; kept 1 file tlbench did not write: thesis.tex' (or '' when nothing was kept)."""
    if not files:
        return ""
    names = ", ".join(str(f.relative_to(root)) for f in files[:listed])
    more = f" and {len(files) - listed} more" if len(files) > listed else ""
    return f"; kept {len(files)} file{'s' if len(files) > 1 else ''} tlbench did not write: {names}{more}"


COMMANDS = {"run": cmd_run, "recommend": cmd_recommend, "list": cmd_list, "plugins": cmd_plugins, "report": cmd_report,
            "predict": cmd_predict, "cache": cmd_cache}

if __name__ == "__main__":
    sys.exit(main())
