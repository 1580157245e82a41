"""``tlbench recommend FOLDER``: which backbone, strategy, depth and learning rate, measured on a
user's own images at a bounded cost.

Every cell runs through the :class:`~tlbench.run.runner.Runner` into ``OUT/cells`` (records in its
``runs.jsonl``), so a killed command, run again, redoes no finished cell and takes every decision
again from the same records, to the same result.

1. **Scores** (:func:`score_backbones`). LogME of each candidate backbone's frozen features
   (strategy ``transferability``: one forward pass, cached). The KEEP_BACKBONES best go on; a
   backbone whose cell fails (offline: no weights on this machine) is dropped with its reason.
2. **Search** (:meth:`Search.search`). Successive halving on validation accuracy over backbone x
   strategy x learning rate (:func:`candidates`), epochs as the resource, decided by Optuna's
   ``SuccessiveHalvingPruner`` (min_resource FIRST_RUNG epochs, reduction factor REDUCTION). A
   rung is a run of cells at the rung's epochs on SEARCH_SEED, restarted from the pretrained
   weights; each epoch's best-so-far validation accuracy is reported to the pruner, candidate by
   candidate in the order their cells finished. The pruner is asynchronous (ASHA): it promotes a
   candidate that is in the top 1/REDUCTION of those reported at that rung so far, so the first
   reported go on more easily than a strict halving would let them, and the best one always
   does. A candidate whose cell stopped early (converged) keeps that cell at later rungs; the
   logistic-regression extractor (fitted to convergence once) completes at the first rung and
   takes no rung's place. Search cells never read the test split (train setting
   ``test: false``). The next rung runs only while the budget still pays for it and for the
   confirmation.
3. **Confirm** (:meth:`Search.confirm`). Two finalists (:func:`finalists`: the best candidate, and
   the best of another family, the alternative answer) train until they stop improving
   (MAX_EPOCHS, PATIENCE) on fresh seeds. The pick is the one with the higher validation accuracy
   there; only these cells read the test split, and their paired difference uses the report's
   statistics (the seed is the unit).
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlbench.files import write_text
from tlbench.grid.tuning import best_validation
from tlbench.plugin.specs import PluginError
from tlbench.report.stats import Interval, mean_ci, paired_difference, paired_difference_from_accuracies
from tlbench.results import RunsLog, load_test_predictions
from tlbench.run.runner import Runner, make_run_dir, wildcard_match
from tlbench.train.protocol import fits_once

if TYPE_CHECKING:
    from tlbench.plugin.registry import Registries
    from tlbench.run.executors import Executor
    from tlbench.run.progress import Progress

log = logging.getLogger(__name__)

RECOMMENDATION_FILE = "recommendation.json"
CELLS_DIR = "cells"  # OUT/cells: the run directory of every stage's cells
SEARCH_SEED = 100  # the search's one seed; the confirmation's seeds are 0 .. N-1, never it
KEEP_BACKBONES = 2  # stage 1 keeps the backbones with the two highest LogME scores
FIRST_RUNG, REDUCTION = 1, 3  # rungs at 1, 3, 9, 27 epochs; about a third of the candidates go on each time
MAX_EPOCHS, PATIENCE = 30, 3  # the last rung and the confirmation: at most 30 epochs, stop 3 after the best
DEFAULT_BUDGET_MINUTES = 10.0
DEFAULT_SEEDS = 3
DEFAULT_IMAGE_SIZE = 64
BATCH_SIZE = 32
MAX_BACKBONES = 12  # --backbones may choose at most this many: a search, not the registry
TUNE_SEEDS = 2  # the full protocol grid's tuning seeds, for its cost estimate
SIGNIFICANCE = 0.05  # the pick against the runner-up: one comparison, its p-value unadjusted


@dataclass(frozen=True)
class Shortlisted:
    """A default candidate backbone and its ImageNet top-1 accuracy (for the task-agnostic baseline)."""

    name: str
    imagenet_top1: float
    source: str


# The default backbones: well-known ImageNet models, cheapest first; the first four have weights in pip
# packages that work offline (../shared/data/README.md), the others are downloaded where there is internet.
SHORTLIST = (
    Shortlisted("timm/mobilenetv2_100", 71.88, "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (the weights used offline)"),
    Shortlisted("timm/tf_efficientnet_lite0", 75.1, "TensorFlow EfficientNet-Lite README"),
    Shortlisted("timm/tf_efficientnet_lite1", 76.7, "TensorFlow EfficientNet-Lite README"),
    Shortlisted("timm/tf_efficientnet_lite2", 77.6, "TensorFlow EfficientNet-Lite README"),
    Shortlisted("timm/efficientnet_b0", 77.7, "timm results-imagenet.csv, efficientnet_b0.ra_in1k"),
    Shortlisted("timm/resnet50", 80.4, "timm results-imagenet.csv, resnet50.a1_in1k"),
    Shortlisted("timm/convnext_tiny", 82.1, "timm results-imagenet.csv, convnext_tiny.fb_in1k"),
)

# The default strategies: each family with a small set of learning rates (C for the logistic regression).
STRATEGY_SETS: Mapping[str, tuple[Mapping[str, Any], ...]] = {
    "extractor": tuple({"name": "extractor", "head": "logreg", "C": c} for c in (0.1, 1.0, 10.0)),
    "finetune": tuple({"name": "finetune", "depth": depth, "lr": lr} for depth in (1, 2, "all") for lr in (1e-3, 1e-4)),
    "lp-ft": tuple({"name": "lp-ft", "depth": "all", "lr": lr} for lr in (1e-3, 1e-4)),
    "scratch": ({"name": "scratch", "lr": 1e-3},),
}


class BadRequest(PluginError):
    """The folder, a pattern or the budget cannot give a recommendation; the message says what to do."""


@dataclass(frozen=True)
class Candidate:
    """One configuration the search may pick: a backbone and a strategy entry with its options."""

    backbone: str
    strategy: Mapping[str, Any]  # a grid strategy entry: {"name": ..., options and lr}
    order: int  # its place among the candidates (the pruner sees them in the order their cells finish)

    @property
    def label(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in self.strategy.items() if k != "name")
        return f"{self.backbone} {self.strategy['name']}" + (f"[{options}]" if options else "")

    @property
    def fits_once(self) -> bool:
        """The logistic-regression extractor: fitted to convergence once, whatever the epochs."""
        return fits_once(self.strategy)

    @property
    def family(self) -> str:
        """Its answer to the question: extractor, finetune-part, finetune-all, lp-ft or scratch."""
        name = self.strategy["name"]
        if name == "finetune":
            return "finetune-all" if self.strategy.get("depth") == "all" else "finetune-part"
        return str(name)

    @property
    def advice(self) -> str:
        """What to do, in words: 'Fine-tune the last 2 blocks of timm/x at lr 0.001'."""
        s, backbone = self.strategy, self.backbone
        if self.fits_once:
            return f"Freeze {backbone} and fit a logistic-regression head on its features (C={s['C']:g})"
        lr = f" at lr {s['lr']:g}"
        if s["name"] == "finetune":
            depth = s["depth"]
            part = "all of" if depth == "all" else f"the last {depth} block{'s' if depth != 1 else ''} of"
            return f"Fine-tune {part} {backbone}{lr}"
        if s["name"] == "lp-ft":
            return f"Train a linear probe, then fine-tune all of {backbone} (LP-FT){lr}"
        return f"Train {backbone} from scratch (no transfer){lr}"  # the STRATEGY_SETS have no other

    def describe(self) -> dict[str, Any]:
        options = {k: v for k, v in self.strategy.items() if k != "name"}
        return {"backbone": self.backbone, "strategy": self.strategy["name"], "options": options}


def candidates(backbones: Sequence[str], strategy_sets: Sequence[str]) -> list[Candidate]:
    """Every backbone with every strategy of the chosen sets, in a fixed order."""
    chosen = [entry for name in strategy_sets for entry in STRATEGY_SETS[name]]
    return [Candidate(b, dict(s), i) for i, (b, s) in enumerate((b, s) for b in backbones for s in chosen)]


def strategy_entries(chosen: Sequence[Candidate]) -> list[dict[str, Any]]:
    """The grid's strategy entries for ``chosen``: each strategy once, paired with its candidates' backbones."""
    entries: list[dict[str, Any]] = []
    for candidate in chosen:
        entry = next((e for e in entries if {k: v for k, v in e.items() if k != "backbones"} == candidate.strategy), None)
        if entry is None:
            entries.append(entry := {**candidate.strategy, "backbones": []})
        entry["backbones"].append(candidate.backbone)
    return entries


def choose_backbones(registries: Registries, patterns: Sequence[str] | None) -> list[str]:
    """The candidate backbones: ``patterns`` matched against the registry (each must match, at most
    MAX_BACKBONES in all), else the shortlist's registered ones."""
    names = registries.backbones.names()
    if not patterns:
        return [s.name for s in SHORTLIST if s.name in names]
    found: list[str] = []
    for pattern in patterns:
        matched = [n for n in names if n == pattern or wildcard_match(pattern, n)]
        if not matched:
            close = registries.backbones.suggestions(pattern)
            raise BadRequest(f"--backbones {pattern}: matches no registered backbone"
                             + (f" (did you mean {', '.join(close[:3])}?)" if close else "")
                             + "; `tlbench list backbones PATTERN` shows what is registered")
        found += [n for n in matched if n not in found]
    if len(found) > MAX_BACKBONES:
        raise BadRequest(f"--backbones {' '.join(patterns)}: matches {len(found)} backbones (e.g. "
                         f"{', '.join(found[:3])}); a search takes at most {MAX_BACKBONES}: give narrower patterns")
    return found


def choose_strategies(names: Sequence[str] | None) -> list[str]:
    if not names:
        return list(STRATEGY_SETS)
    unknown = [n for n in names if n not in STRATEGY_SETS]
    if unknown:
        raise BadRequest(f"--strategies {' '.join(unknown)}: unknown; choose from {', '.join(STRATEGY_SETS)}")
    return list(dict.fromkeys(names))


def dataset_entry(registries: Registries, folder: Path) -> dict[str, Any]:
    """The grid's dataset entry for ``folder``, after the checks a search needs: the folder
    plugin's own (readable, two classes or more), then every class in every split."""
    spec = registries.datasets.get("folder")
    problems = spec.check(root=str(folder)) if spec.check else []
    if problems:
        raise BadRequest("\n".join(problems))
    data = spec.load(root=str(folder))
    short = []
    for split in ("train", "valid", "test"):
        present = set(int(label) for label in data.splits[split].labels)
        short += [f"class {name!r} has no {split} image" for i, name in enumerate(data.class_names) if i not in present]
    if short:
        total = {name: 0 for name in data.class_names}
        for part in data.splits.values():
            for label in part.labels:
                total[data.class_names[int(label)]] += 1
        fewest = min(total, key=total.__getitem__)
        raise BadRequest(f"folder {folder}: " + "; ".join(short[:5]) + (f" and {len(short) - 5} more" if len(short) > 5 else "")
                         + f" (class {fewest!r} has {total[fewest]} images in all). The search chooses on valid and "
                         "confirms on test, so every class needs images in train, valid and test: add images "
                         "(at least 7 per class with the default 70/15/15 split) or give valid/ and test/ folders")
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.resolve().name).strip("-.") or "folder"
    return {"name": label, "plugin": "folder", "root": str(folder.resolve())}


# ---------------------------------------------------------------- the stages


@dataclass
class Stage:
    """One stage's cells, run into the shared run directory."""

    name: str
    epochs: int  # train.epochs of its cells
    test: bool  # whether its cells read the test split
    seeds: tuple[int, ...]
    patience: int | None = PATIENCE


@dataclass
class Outcome:
    """One candidate's path through the search."""

    candidate: Candidate
    curve: list[float] = field(default_factory=list)  # best validation accuracy so far, per epoch reached
    rung: int = -1  # the deepest rung it ran
    dropped: str | None = None  # "rung N", "failed" or None (it finished the search)
    reason: str | None = None
    converged: bool = False
    epoch_seconds: float = 0.0  # one epoch's training and validation (epoch_cost)
    other_seconds: float = 0.0
    best_epoch: int | None = None

    @property
    def val_accuracy(self) -> float | None:
        return self.curve[-1] if self.curve else None

    def seconds(self, epochs: float) -> float:
        """A cell of this candidate for ``epochs`` (at most MAX_EPOCHS), at its measured cost."""
        return self.other_seconds + self.epoch_seconds * min(MAX_EPOCHS, epochs)


class Search:
    """The three stages over one folder, into ``out``; :meth:`run` returns the recommendation."""

    def __init__(self, folder: str | Path, registries: Registries, executor: Executor, *,
                 out: str | Path | None = None, backbones: Sequence[str] | None = None,
                 strategies: Sequence[str] | None = None, budget_minutes: float = DEFAULT_BUDGET_MINUTES,
                 seeds: int = DEFAULT_SEEDS, device: str = "auto", image_size: int = DEFAULT_IMAGE_SIZE,
                 cache_dir: str | None = None, save_model: bool = False, progress: Progress | None = None,
                 argv: list[str] | None = None):
        self.folder = Path(folder)
        self.registries, self.executor = registries, executor
        self.dataset = dataset_entry(registries, self.folder)
        self.out = Path(out) if out else Path("results") / f"recommend-{self.dataset['name']}"
        self.backbones = choose_backbones(registries, backbones)
        self.strategy_sets = choose_strategies(strategies)
        if budget_minutes <= 0 or not math.isfinite(budget_minutes):
            raise BadRequest(f"--budget {budget_minutes}: must be a positive number of minutes")
        if seeds < 2:
            raise BadRequest(f"--seeds {seeds}: the confirmation needs at least 2 seeds for an interval")
        self.budget = budget_minutes * 60
        self.seeds = tuple(range(seeds))
        self.device, self.image_size, self.cache_dir = device, image_size, cache_dir
        self.save_model, self.progress, self.argv = save_model, progress, argv
        self.rungs = rung_epochs()
        # the cell-seconds of the cells this command's decisions have used so far (their latest records): the
        # budget is judged on these, so a resumed command, whose run directory holds later cells too, decides the same
        self.used = 0.0
        self.stages_run = 0  # run_cells calls so far: the first part of each record's ``_position``

    # ------------------------------------------------------------ running cells

    def grid(self, stage: Stage, chosen: Sequence[Candidate]) -> dict[str, Any]:
        """The grid of one stage: ``chosen`` on the stage's seeds and epochs."""
        train = {"epochs": stage.epochs, "patience": stage.patience, "batch_size": BATCH_SIZE,
                 "image_size": self.image_size, "test": stage.test}
        return {"name": f"recommend-{self.dataset['name']}-{stage.name}", "datasets": [self.dataset],
                "backbones": list(dict.fromkeys(c.backbone for c in chosen)),
                "strategies": strategy_entries(chosen), "seeds": list(stage.seeds), "train": train}

    def run_cells(self, stage: Stage, chosen: Sequence[Candidate], save_models: bool = False) -> dict[tuple[int, int], dict[str, Any]]:
        """Run a stage's cells (finished ones are skipped); the latest record of each, by (candidate order,
        seed), with its ``_cell`` and its ``_position``: (this stage's number, the cell's place in the run order),
        the order in which the local executor runs and logs the cells. Ray finishes them in another order, which
        timing decides; the search reads them in this one, so it decides the same on any executor."""
        from tlbench.grid.loading import load_grid

        if not chosen:
            return {}
        loaded = load_grid(self.grid(stage, chosen), self.registries, block_lookup=self.executor.blocks)
        cells = loaded.cells()
        runner = Runner(loaded, self.registries, self.executor, self.cells_dir, device=self.device,
                        cache_dir=self.cache_dir, save_models=save_models, progress=self.progress, argv=self.argv,
                        report=False)
        runner.run(cells)
        latest = {r["key"]: r for r in RunsLog(self.cells_dir).read()}
        self.stages_run += 1
        run_order = {cell.key: i for i, cell in enumerate(loaded.in_run_order(cells))}
        found = {}
        for cell in cells:
            values = {"name": cell.strategy.plugin, **cell.strategy.options, **cell.strategy.overrides}
            owner = next(c for c in chosen if c.backbone == cell.backbone.name
                         and all(values.get(k) == v for k, v in c.strategy.items()))
            record = latest.get(cell.key, {"status": "not run"})
            found[(owner.order, cell.seed)] = record = {**record, "_cell": cell,
                                                        "_position": (self.stages_run, run_order[cell.key])}
            self.used += (record.get("metrics") or {}).get("wall_seconds") or 0.0
        return found

    @property
    def cells_dir(self) -> Path:
        return self.out / CELLS_DIR

    def spent(self) -> float:
        """The cell-seconds of every record in the run directory (all stages, earlier runs of the command too)."""
        return math.fsum((r.get("metrics") or {}).get("wall_seconds") or 0.0 for r in RunsLog(self.cells_dir).read())

    # ------------------------------------------------------------ stage 1: scores

    def score_backbones(self) -> list[dict[str, Any]]:
        """LogME per candidate backbone; the KEEP_BACKBONES best are ``kept``, the others say why not."""
        probes = [Candidate(b, {"name": "transferability", "leep": False}, i) for i, b in enumerate(self.backbones)]
        records = self.run_cells(Stage("scores", epochs=1, test=False, seeds=(SEARCH_SEED,), patience=None), probes)
        rows: list[dict[str, Any]] = []
        for probe in probes:
            record = records[(probe.order, SEARCH_SEED)]
            metrics = record.get("metrics") or {}
            logme = (metrics.get("transferability") or {}).get("logme") if record.get("status") == "ok" else None
            rows.append({"backbone": probe.backbone, "logme": logme, "seconds": metrics.get("wall_seconds"),
                         "kept": False, "dropped": None if logme is not None else f"no score: {_first_line(record)}"})
        scored = sorted((r for r in rows if r["logme"] is not None), key=lambda r: -r["logme"])
        for rank, row in enumerate(scored):
            row["kept"] = rank < KEEP_BACKBONES
            if not row["kept"]:
                row["dropped"] = f"LogME {row['logme']:.4f}, below the top {KEEP_BACKBONES}"
        if not scored:
            raise BadRequest("no candidate backbone could be scored on this machine:\n  - " + "\n  - ".join(
                f"{r['backbone']}: {r['dropped']}" for r in rows) + "\nname backbones whose weights are here with "
                "--backbones (offline: timm/mobilenetv2_100 and timm/tf_efficientnet_lite0/1/2 ship in pip packages)")
        return rows

    # ------------------------------------------------------------ stage 2: successive halving

    def search(self, scores: Sequence[Mapping[str, Any]]) -> tuple[list[Outcome], str]:
        """Successive halving over the kept backbones' candidates; the outcomes and why the search stopped."""
        import optuna
        from optuna.trial import TrialState

        pool = candidates([r["backbone"] for r in scores if r["kept"]], self.strategy_sets)
        needed = self.minimum_seconds(scores, pool)
        if needed > self.budget:
            raise BadRequest(f"--budget {self.budget / 60:g}: below what one epoch of the {len(pool)} candidates and "
                             f"of the confirmation costs (at least {needed / 60:.1f} min, the scores' "
                             f"{self.used / 60:.1f} min included); give --budget {math.ceil(needed / 60)} or more, "
                             "or fewer --backbones or --strategies")
        outcomes = [Outcome(c) for c in pool]
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="recommend", direction="maximize", pruner=self.pruner())
        trials = {}
        for candidate in pool:  # one trial per candidate, asked in the fixed order
            study.enqueue_trial({"candidate": candidate.order})
            trials[candidate.order] = trial = study.ask()
            trial.suggest_categorical("candidate", [c.order for c in pool])
        kept_records: dict[int, dict[str, Any]] = {}  # a converged candidate's cell stands for later rungs
        alive, fitted, why = list(outcomes), [], "the last rung ran"
        for rung, epochs in enumerate(self.rungs):
            fresh = [o.candidate for o in alive if o.candidate.order not in kept_records]
            stage = Stage(f"rung{rung}", epochs=epochs, test=False, seeds=(SEARCH_SEED,))
            records = self.run_cells(stage, fresh)
            at = {o.candidate.order: kept_records.get(o.candidate.order) or records[(o.candidate.order, SEARCH_SEED)]
                  for o in alive}
            for outcome in sorted(alive, key=lambda o: at[o.candidate.order]["_position"]):
                order = outcome.candidate.order  # reported in the order the cells run locally, on any executor
                record = at[order]
                trial = trials[order]
                if not self.observe(outcome, record, rung, epochs, trial):
                    study.tell(trial, state=TrialState.FAIL)
                    continue
                if outcome.candidate.fits_once:  # fitted to convergence: complete, it takes no rung's place
                    outcome.dropped = None
                    study.tell(trial, outcome.val_accuracy)
                    continue
                if outcome.converged:
                    kept_records[order] = record
                if trial.should_prune():
                    outcome.dropped = f"rung {rung}"
                    outcome.reason = f"validation accuracy {outcome.val_accuracy:.4f} after {epochs} epochs: not promoted"
                    study.tell(trial, state=TrialState.PRUNED)
            fitted += [o for o in alive if o.candidate.fits_once]
            alive = [o for o in alive if o.dropped is None and not o.candidate.fits_once]
            if len(alive) <= 1:
                why = f"{len(alive) or 'no'} trained candidate was left after rung {rung}"
                break
            if rung + 1 < len(self.rungs):
                cost = self.rung_estimate(alive, self.rungs[rung + 1], kept_records) + self.confirmation_estimate(alive)
                left = self.budget - self.used
                if cost > left:
                    why = (f"the budget stopped it after rung {rung} ({epochs} epochs): rung {rung + 1} and the "
                           f"confirmation would take about {cost / 60:.1f} min more, {max(0.0, left) / 60:.1f} min are left")
                    break
        for outcome in alive:
            study.tell(trials[outcome.candidate.order], outcome.val_accuracy)
        if not alive and not fitted:
            raise BadRequest("every search cell failed: " + "; ".join(f"{o.candidate.label}: {o.reason}" for o in outcomes[:3]))
        return outcomes, why

    def pruner(self) -> Any:
        """Optuna's SuccessiveHalvingPruner at the rungs (benchmarks/recommend_pruners.py measures the alternatives)."""
        import optuna

        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG, reduction_factor=REDUCTION,
                                                      min_early_stopping_rate=0)

    def observe(self, outcome: Outcome, record: Mapping[str, Any], rung: int, epochs: int, trial: Any) -> bool:
        """Read a search cell into ``outcome`` and report its new epochs to the pruner; False when it failed."""
        metrics = record.get("metrics") or {}
        curve: list[float] = []
        for entry in metrics.get("history") or []:
            accuracy = entry.get("val_accuracy")
            if accuracy is None:
                break
            curve.append(max(accuracy, curve[-1]) if curve else accuracy)
        if record.get("status") != "ok" or not curve:
            outcome.dropped, outcome.reason = "failed", f"rung {rung}: {_first_line(record)}"
            return False
        outcome.converged = bool(metrics.get("converged")) or outcome.candidate.fits_once
        if outcome.converged:  # it stopped improving: more epochs would repeat it
            curve += [curve[-1]] * (epochs - len(curve))
        for step in range(len(outcome.curve) + 1, min(epochs, len(curve)) + 1):
            trial.report(curve[step - 1], step)
        outcome.curve, outcome.rung, outcome.best_epoch = curve[:epochs], rung, metrics.get("best_epoch")
        trained = metrics.get("epochs") or 0
        outcome.epoch_seconds = epoch_cost(metrics)
        outcome.other_seconds = max(0.0, (metrics.get("wall_seconds") or 0.0) - outcome.epoch_seconds * trained)
        return True

    def minimum_seconds(self, scores: Sequence[Mapping[str, Any]], pool: Sequence[Candidate]) -> float:
        """A floor for the budget: the scores' seconds, then one epoch of every candidate that trains and
        of the confirmation's two on every seed, each epoch costing at least its backbone's scoring cell
        (one forward pass over the training images)."""
        seconds = {row["backbone"]: row["seconds"] or 0.0 for row in scores}
        trained = [seconds[c.backbone] for c in pool if not c.fits_once]
        return self.used + math.fsum(trained) + 2 * len(self.seeds) * max(trained, default=0.0)

    def rung_estimate(self, alive: Sequence[Outcome], epochs: int, kept_records: Mapping[int, Any]) -> float:
        """The seconds of the next rung: each candidate that trains again at its measured cost per epoch."""
        return math.fsum(o.seconds(epochs) for o in alive if o.candidate.order not in kept_records)

    def confirmation_estimate(self, alive: Sequence[Outcome]) -> float:
        """The seconds of the confirmation: the two costliest candidates left, on every seed, until they
        would stop improving (their best epoch so far + PATIENCE, at most MAX_EPOCHS)."""
        costs = sorted((o.seconds((o.best_epoch or 1) + PATIENCE) for o in alive), reverse=True)
        return len(self.seeds) * math.fsum(costs[:2])

    # ------------------------------------------------------------ stage 3: confirmation

    def refuse_a_confirmation_past_the_budget(self, outcomes: Sequence[Outcome], chosen: Sequence[Candidate]) -> None:
        """Exit 2 before the confirmation when even its least cost would take the command past the budget: each
        finalist on every seed for the epochs early stopping needs at least (1 + PATIENCE; a fitted one 1), at
        its measured cost (the first rung always runs: on many images, one epoch of every candidate can fill the budget)."""
        orders = {c.order for c in chosen}
        least = len(self.seeds) * math.fsum(o.seconds(1 if o.candidate.fits_once else 1 + PATIENCE)
                                            for o in outcomes if o.candidate.order in orders)
        needed = self.used + least
        if needed > self.budget:
            raise BadRequest(
                f"--budget {self.budget / 60:g}: below what these images need: the scores and the search took "
                f"{self.used / 60:.1f} min, and confirming {' and '.join(c.label for c in chosen)} on "
                f"{len(self.seeds)} seeds takes at least {least / 60:.1f} min more; give --budget {math.ceil(needed / 60)} "
                f"or more, or fewer --backbones or --strategies (the cells run so far stay in {self.cells_dir}: the "
                "same command with a larger --budget goes on from them)")

    def confirm(self, finalist: Candidate) -> dict[str, Any]:
        """Train ``finalist`` until it stops improving on the fresh seeds (the test split read now, once)."""
        stage = Stage("confirm", epochs=MAX_EPOCHS, test=True, seeds=self.seeds)
        records = self.run_cells(stage, [finalist], save_models=self.save_model)
        cells = {seed: records[(finalist.order, seed)] for seed in self.seeds}
        failed = [f"seed {seed}: {_first_line(r)}" for seed, r in cells.items() if r.get("status") != "ok"]
        if failed:
            raise PluginError(f"confirming {finalist.label} failed ({'; '.join(failed)}); its records are in "
                              f"{self.cells_dir}, run the same command again to retry")
        metrics = {seed: r["metrics"] for seed, r in cells.items()}
        kept = {seed: load_test_predictions(self.cells_dir, m.get("predictions_file")) for seed, m in metrics.items()}
        validation = [best_validation(m)[0] for m in metrics.values()]  # type: ignore[index]
        tests = [m["test_accuracy"] for m in metrics.values()]
        converged = sum(bool(m.get("converged")) for m in metrics.values())
        return {**finalist.describe(), "family": finalist.family,
                "validation_accuracy": interval_dict(mean_ci(validation)),
                "test_accuracy": interval_dict(mean_ci(tests, [k.correct if k else None for k in kept.values()])),
                "seeds": list(self.seeds), "converged": converged > len(self.seeds) / 2,
                "best_epochs": [m.get("best_epoch") for m in metrics.values()],
                "cell_ids": [r["_cell"].cell_id for r in cells.values()],
                "_correct": {seed: k.correct for seed, k in kept.items() if k is not None},
                "_epochs": [m["epochs"] for m in metrics.values()],
                "_tests": dict(zip(self.seeds, tests, strict=True))}

    def compare(self, pick: Mapping[str, Any], runner_up: Mapping[str, Any]) -> dict[str, Any]:
        """The pick minus the runner-up in test accuracy, paired by seed and image (the seed is the unit)."""
        if len(pick["_correct"]) == len(runner_up["_correct"]) == len(self.seeds):
            found = paired_difference(pick["_correct"], runner_up["_correct"])
        else:
            found = paired_difference_from_accuracies(pick["_tests"], runner_up["_tests"])
        return {"difference": found.difference, "ci_low": found.ci_low, "ci_high": found.ci_high,
                "p_value": found.p_value, "significant": found.p_value <= SIGNIFICANCE, "method": found.method}

    # ------------------------------------------------------------ the whole command

    def run(self) -> dict[str, Any]:
        """The three stages, ``recommendation.json`` and ``report.html``; returns the recommendation."""
        make_run_dir(self.cells_dir)
        scores = self.score_backbones()
        outcomes, stopped = self.search(scores)
        chosen = [c for c in finalists(outcomes) if c is not None]
        self.refuse_a_confirmation_past_the_budget(outcomes, chosen)
        sides = [self.confirm(c) for c in chosen]
        # the pick: the higher validation accuracy at convergence over the fresh seeds (never the test's)
        confirmed, *rest = sorted(sides, key=lambda side: -side["validation_accuracy"]["mean"])
        other = rest[0] if rest else None
        comparison = self.compare(confirmed, other) if other else None
        result = {
            "format": 1, "folder": str(self.folder.resolve()), "dataset": self.dataset,
            "pick": _public(confirmed), "runner_up": _public(other) if other else None, "comparison": comparison,
            "candidates": [_candidate_row(o) for o in outcomes],
            "scores": scores,
            "search": {"scheduler": "optuna.pruners.SuccessiveHalvingPruner", "min_resource": FIRST_RUNG,
                       "reduction_factor": REDUCTION, "rungs": list(self.rungs), "seed": SEARCH_SEED,
                       "image_size": self.image_size, "stopped": stopped},
            "budget_seconds": self.budget, "spent_seconds": self.spent(),
            **self.full_grid_estimate(scores, outcomes, sides),
            "saved_model": (str(self.cells_dir / confirmed["cell_ids"][0]) if self.save_model else None),
        }
        result["answer"] = answer(result)
        write_text(self.out / RECOMMENDATION_FILE, json.dumps(result, indent=2, allow_nan=False, default=_plain))
        from tlbench.recommend.page import write_recommend_report

        write_recommend_report(self.out, result)
        return result

    def full_grid_estimate(self, scores: Sequence[Mapping[str, Any]], outcomes: Sequence[Outcome],
                           confirmed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """What the full protocol grid of these candidates would cost, from this command's own measurements."""
        measured = [o for o in outcomes if o.rung >= 0]
        seconds = {row["backbone"]: row["seconds"] or 0.0 for row in scores}
        trained = [n for side in confirmed if side["strategy"] != "extractor" for n in side["_epochs"]]
        converged = [o.best_epoch + PATIENCE for o in measured if o.converged and not o.candidate.fits_once and o.best_epoch]
        typical = statistics.median(trained or converged or [MAX_EPOCHS])

        def cost(candidate: Candidate, unmeasured: float) -> float:
            own = next((o for o in measured if o.candidate.backbone == candidate.backbone
                        and o.candidate.strategy == candidate.strategy), None)
            like = own or next((o for o in measured if o.candidate.strategy == candidate.strategy), None)
            if like is None:
                return 0.0
            scale = 1.0 if own else seconds[candidate.backbone] / max(seconds[like.candidate.backbone], 1e-9)
            measured_epochs = own.best_epoch + PATIENCE if own and own.converged and own.best_epoch else None
            epochs = 1 if candidate.fits_once else measured_epochs or unmeasured
            return scale * like.seconds(epochs)

        pool = candidates([row["backbone"] for row in scores if row["logme"] is not None], self.strategy_sets)
        series: dict[str, list[Candidate]] = {}
        for candidate in pool:
            untuned = {k: v for k, v in candidate.strategy.items() if k not in ("lr", "C")}
            series.setdefault(f"{candidate.backbone} {sorted(untuned.items(), key=str)}", []).append(candidate)

        def total(unmeasured: float) -> float:
            costs = [[cost(c, unmeasured) for c in members] for members in series.values()]
            return math.fsum((TUNE_SEEDS * math.fsum(c) if len(c) > 1 else 0.0) + len(self.seeds) * statistics.mean(c)
                             for c in costs)

        return {"full_grid_seconds_estimate": total(typical), "full_grid_seconds_at_cap": total(MAX_EPOCHS),
                "full_grid_estimate_method": (
                    f"the protocol's grid of every candidate of every scored backbone ({len(pool)} in {len(series)} "
                    f"series): each series' candidates on {TUNE_SEEDS} tuning seeds (a series of one needs none), then "
                    f"its pick on the {len(self.seeds)} seeds, at the series' mean cost; a candidate costs its own "
                    "measured seconds per epoch and other seconds (a backbone not searched: the same strategy's on a "
                    "searched one, scaled by the two backbones' scoring seconds) times its epochs to convergence: its "
                    "own when its search cell converged, else the median epochs of the confirmation's trained cells "
                    f"({typical:g}; else of the converged search cells, else {MAX_EPOCHS}); full_grid_seconds_at_cap: "
                    f"the same with those unmeasured epochs at the cap, {MAX_EPOCHS}")}


# ---------------------------------------------------------------- pieces


def rung_epochs() -> tuple[int, ...]:
    """The rungs' epochs: FIRST_RUNG x REDUCTION^k below MAX_EPOCHS, then MAX_EPOCHS (1, 3, 9, 27, 30... as set)."""
    rungs = [FIRST_RUNG]
    while rungs[-1] * REDUCTION < MAX_EPOCHS:
        rungs.append(rungs[-1] * REDUCTION)
    return (*rungs, MAX_EPOCHS)


def epoch_cost(metrics: Mapping[str, Any]) -> float:
    """The seconds one more epoch of a cell costs: training and validating (metrics.epoch_seconds, training only,
    where its history has no validation_seconds: records written before they were kept)."""
    both = [e["seconds"] + e["validation_seconds"] for e in metrics.get("history") or []
            if e.get("seconds") is not None and e.get("validation_seconds") is not None]
    return statistics.fmean(both) if both else metrics.get("epoch_seconds") or 0.0


def finalists(outcomes: Sequence[Outcome]) -> tuple[Candidate, Candidate | None]:
    """The search's two finalists: the best validation accuracy among the candidates that finished it
    (the trained ones at the deepest rung, and the fitted ones), ties in candidate order; then, of
    the candidates of another family, the one that went deepest, the best there."""
    def rank(o: Outcome) -> tuple[bool, int, float, int]:
        return (o.dropped is not None, -o.rung if o.dropped else 0, -(o.val_accuracy or 0.0), o.candidate.order)

    ran = sorted((o for o in outcomes if o.dropped != "failed" and o.curve), key=rank)
    first = ran[0].candidate
    other = next((o.candidate for o in ran if o.candidate.family != first.family), None)
    return first, other


def answer(result: Mapping[str, Any]) -> str:
    """The short answer printed on stdout."""
    pick, other, comparison = result["pick"], result["runner_up"], result["comparison"]
    chosen = Candidate(pick["backbone"], {"name": pick["strategy"], **pick["options"]}, 0)

    def interval(found: Mapping[str, Any]) -> str:
        return f"{found['mean']:.2f} [{found['low']:.2f}, {found['high']:.2f}]"

    lines = [f"{chosen.advice}: validation {interval(pick['validation_accuracy'])}, test "
             f"{interval(pick['test_accuracy'])} over {len(pick['seeds'])} seeds."
             + ("" if pick["converged"] else " It had not stopped improving in most seeds: raise the budget.")]
    if other and comparison:
        runner = Candidate(other["backbone"], {"name": other["strategy"], **other["options"]}, 0)
        gap = comparison["difference"]
        where = f"{abs(gap):.2f} {'behind' if gap >= 0 else 'ahead'} on test"
        test = ("significant" if comparison["significant"] else "not significant") + f", p = {comparison['p_value']:.3g}"
        lines.append(f"Runner-up ({runner.family}): {runner.advice[0].lower()}{runner.advice[1:]}, {where} ({test}).")
    lines.append(f"Spent {result['spent_seconds'] / 60:.1f} min of cells{past_the_budget(result)}; the full grid of "
                 "these candidates would take "
                 f"about {result['full_grid_seconds_estimate'] / 60:.0f} min ({result['full_grid_seconds_at_cap'] / 60:.0f} if the "
                 f"candidates stopped early need all {MAX_EPOCHS} epochs).")
    return "\n".join(lines)


def past_the_budget(result: Mapping[str, Any]) -> str:
    """Empty within the budget; else by how much the command went past it, and why it may."""
    over = result["spent_seconds"] - result["budget_seconds"]
    if over <= 0:
        return ""
    return (f", {over / 60:.1f} past the {result['budget_seconds'] / 60:g}-min budget (it plans the stages from measured "
            "costs, then trains the finalists until they stop improving, which took longer than planned)")


def _first_line(record: Mapping[str, Any]) -> str:
    error = record.get("error") or record.get("status") or "no record"
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else "failed"


def interval_dict(found: Interval) -> dict[str, Any]:
    """An interval as JSON: {mean, low, high, method}, a NaN bound (one seed) as null."""
    return {"mean": found.mean, "low": _finite(found.low), "high": _finite(found.high), "method": found.method}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _public(side: Mapping[str, Any]) -> dict[str, Any]:
    """A confirmed side without its working arrays."""
    return {k: v for k, v in side.items() if not k.startswith("_")}


def _candidate_row(outcome: Outcome) -> dict[str, Any]:
    return {**outcome.candidate.describe(), "family": outcome.candidate.family,
            "last_rung": outcome.rung if outcome.rung >= 0 else None, "epochs": len(outcome.curve),
            "val_accuracy": outcome.val_accuracy, "dropped_at": outcome.dropped, "reason": outcome.reason,
            "converged": outcome.converged, "curve": outcome.curve}


def _plain(value: Any) -> Any:
    """numpy scalars in the recommendation, as JSON numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_grid(result: Mapping[str, Any], path: str | Path) -> Path:
    """A grid file that reruns the final comparison (the pick and the runner-up on the same seeds) with ``tlbench run``."""
    import yaml

    sides = [s for s in (result["pick"], result["runner_up"]) if s]
    grid = {"name": f"recommend-{result['dataset']['name']}",
            "datasets": [dict(result["dataset"])],
            "backbones": list(dict.fromkeys(s["backbone"] for s in sides)),
            "strategies": strategy_entries([Candidate(s["backbone"], {"name": s["strategy"], **s["options"]}, i)
                                            for i, s in enumerate(sides)]),
            "seeds": list(result["pick"]["seeds"]),
            "train": {"epochs": MAX_EPOCHS, "patience": PATIENCE, "batch_size": BATCH_SIZE,
                      "image_size": result["search"]["image_size"]}}
    header = ("# The final comparison of `tlbench recommend` (recommendation.json): the pick and the runner-up\n"
              "# trained until they stop improving on the confirmation's seeds. Run: tlbench run --grid THIS_FILE\n")
    path = Path(path)
    write_text(path, header + yaml.safe_dump(grid, sort_keys=False))
    return path
