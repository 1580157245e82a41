"""Tuned series: candidates picked on validation accuracy, then the pick evaluated on other seeds.

A strategy entry's ``tune:`` makes each of its series (the entry with its listed options chosen)
a set of candidates. Stage 1 (:data:`SELECT`) runs every candidate on the grid's ``tune_seeds``;
the pick of each (dataset, train size, backbone, series) is the candidate with the highest mean
best-epoch validation accuracy over them (ties: the lower mean validation loss, then grid order);
stage 2 (:data:`EVALUATE`) runs the pick on ``seeds``, and only those cells are tested. Without
``tune_seeds`` the candidates run on ``seeds`` (:data:`BOTH`) and the pick's cells are its
evaluation cells: the same seeds choose and test (the weaker design).

:func:`picks` works from records alone (their ``tune`` object, results/README.md), so the
runner (which derives stage 2 with :func:`evaluation_cells`) and the report agree.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tlbench.plugin.specs import Cell, content_hash

if TYPE_CHECKING:
    from tlbench.grid.loading import Grid

SELECT, EVALUATE, BOTH = "select", "evaluate", "select+evaluate"
STAGES = (SELECT, EVALUATE, BOTH)


@dataclass(frozen=True)
class Candidate:
    """One candidate of a series, over the selection seeds."""

    values: Mapping[str, Any]  # the tuned keys and this candidate's values
    order: int  # its place among the series' candidates, in grid order
    seeds: tuple[int, ...]  # selection seeds with a usable record: ok, with a best-epoch validation accuracy
    failed: tuple[int, ...]  # selection seeds without one (failed, not applicable, no validation, not run)
    val_accuracy: float | None  # mean best-epoch validation accuracy over the selection seeds; None unless eligible
    val_loss: float | None  # mean validation loss of those epochs; None unless eligible (or a loss is missing)
    cell_seconds: float  # sum of its selection cells' metrics.wall_seconds, failed ones included

    @property
    def eligible(self) -> bool:
        return not self.failed and self.val_accuracy is not None


@dataclass(frozen=True)
class Pick:
    """The choice for one tuned series: its candidates, the chosen one and the seeds of each stage."""

    series_id: str  # dataset label/backbone label/series: the cell id without the tuned values and the seed
    series: str  # the strategy label without the tuned keys, e.g. finetune[depth=2]
    separate_seeds: bool  # True: picked on tune_seeds, tested on other seeds; False: the same seeds (weaker)
    candidates: tuple[Candidate, ...]  # in grid order
    chosen: Candidate | None  # None: no candidate is eligible (``reason`` says why)
    selection_seeds: tuple[int, ...]
    evaluation_seeds: tuple[int, ...]  # the chosen candidate's evaluation records' seeds (so far)
    reason: str | None = None

    @property
    def cell_seconds(self) -> float:
        """What choosing cost: the cell-seconds of every candidate's selection cells."""
        return math.fsum(c.cell_seconds for c in self.candidates)

    def evaluates(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` is one of this pick's evaluation cells (they alone enter the test statistics)."""
        tune = _tune(record)
        return (self.chosen is not None and tune is not None and tune["series_id"] == self.series_id
                and tune["stage"] == (EVALUATE if self.separate_seeds else BOTH)
                and content_hash(tune["candidate"]) == content_hash(self.chosen.values))


def tested_records(records: Iterable[Mapping[str, Any]], found: Iterable[Pick]) -> list[Mapping[str, Any]]:
    """The records that enter the test statistics: every untuned one, and each pick's evaluation
    cells (never a candidate's selection cells, nor a pick's that a later pick replaced)."""
    found = list(found)
    return [r for r in records if r.get("tune") is None or any(p.evaluates(r) for p in found)]


def best_validation(metrics: Mapping[str, Any]) -> tuple[float, float | None] | None:
    """(validation accuracy, validation loss) of the best (restored) epoch; None without training or validation."""
    history, best = metrics.get("history") or [], metrics.get("best_epoch")
    if not (best and len(history) >= best) or history[best - 1].get("val_accuracy") is None:
        return None
    return history[best - 1]["val_accuracy"], history[best - 1].get("val_loss")


def picks(records: Iterable[Mapping[str, Any]]) -> list[Pick]:
    """One :class:`Pick` per tuned series of ``records`` (the last record of each cell key in a
    series counts; records without a ``tune`` object are ignored), in first-seen order."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for record in records:
        if (tune := _tune(record)) is not None:
            latest.pop((tune["series_id"], record["key"]), None)  # one key may serve two series
            latest[(tune["series_id"], record["key"])] = record
    selection: dict[tuple[str, bool], list[Mapping[str, Any]]] = {}
    evaluation: dict[str, list[Mapping[str, Any]]] = {}
    for record in latest.values():
        tune = record["tune"]
        if tune["stage"] == EVALUATE:
            evaluation.setdefault(tune["series_id"], []).append(record)
        else:
            selection.setdefault((tune["series_id"], tune["stage"] == SELECT), []).append(record)
    return [_pick(series_id, separate, chosen, evaluation.get(series_id, []))
            for (series_id, separate), chosen in selection.items()]


def _pick(series_id: str, separate: bool, records: list[Mapping[str, Any]], evaluated: list[Mapping[str, Any]]) -> Pick:
    seeds = tuple(sorted({r["seed"] for r in records}))
    by_values: dict[str, list[Mapping[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["seed"]):
        by_values.setdefault(content_hash(record["tune"]["candidate"]), []).append(record)
    candidates = sorted((_candidate(group, seeds) for group in by_values.values()), key=lambda c: c.order)

    def rank(c: Candidate) -> tuple[float, float, int]:
        assert c.val_accuracy is not None  # an eligible candidate has one
        return -c.val_accuracy, math.inf if c.val_loss is None else c.val_loss, c.order

    chosen = min((c for c in candidates if c.eligible), default=None, key=rank)
    reason = None if chosen else (f"none of its {len(candidates)} candidates has an ok cell with a validation accuracy "
                                  f"on every selection seed ({', '.join(map(str, seeds))})")
    if chosen is None:
        tested: tuple[int, ...] = ()
    elif separate:
        tested = tuple(sorted(r["seed"] for r in evaluated if content_hash(r["tune"]["candidate"]) == content_hash(chosen.values)))
    else:
        tested = chosen.seeds
    return Pick(series_id, records[0]["tune"]["series"], separate, tuple(candidates), chosen, seeds, tested, reason)


def _candidate(records: list[Mapping[str, Any]], seeds: tuple[int, ...]) -> Candidate:
    validated = {r["seed"]: best_validation(r.get("metrics") or {}) for r in records if r.get("status") == "ok"}
    scores = {seed: score for seed, score in validated.items() if score is not None}
    failed = tuple(seed for seed in seeds if seed not in scores)
    losses = [loss for _, loss in scores.values()]
    known_losses = [loss for loss in losses if loss is not None]
    seconds = [(r.get("metrics") or {}).get("wall_seconds") for r in records]
    tune = records[0]["tune"]
    return Candidate(
        values=dict(tune["candidate"]), order=tune["order"], seeds=tuple(scores), failed=failed,
        val_accuracy=None if failed else math.fsum(acc for acc, _ in scores.values()) / len(scores),
        val_loss=None if failed or len(known_losses) < len(losses) else math.fsum(known_losses) / len(known_losses),
        cell_seconds=math.fsum(s for s in seconds if isinstance(s, (int, float))))


def _tune(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A record's ``tune`` object when it is well formed, else None."""
    tune = record.get("tune")
    ok = (isinstance(tune, dict) and tune.get("stage") in STAGES and isinstance(tune.get("candidate"), dict)
          and isinstance(tune.get("series"), str) and isinstance(tune.get("series_id"), str)
          and isinstance(tune.get("order"), int))
    return tune if ok else None


def evaluation_cells(grid: Grid, cells: Iterable[Cell], records: Iterable[Mapping[str, Any]],
                     waiting: Iterable[Cell] = ()) -> tuple[list[Cell], list[str]]:
    """Stage 2: the pick of each tuned series of ``cells`` on the grid's ``seeds``, derived from
    the latest ``records`` of the series' selection cells (all of the grid's; a series whose
    selection cells have not all run, or are ``waiting`` to, is not decided yet). Returns the
    cells and a line per series saying what was picked, or why it has no evaluation cells."""
    if not grid.tune_seeds:
        return [], []
    asked = {cell.series_id for cell in cells if cell.stage == SELECT}
    selection: dict[str, list[Cell]] = {}
    for cell in grid.cells():
        if cell.stage == SELECT and cell.series_id in asked:
            selection.setdefault(cell.series_id, []).append(cell)
    latest = {record["key"]: record for record in records}
    pending = {cell.key for cell in waiting}
    found, notes = [], []
    for series_id, group in selection.items():
        missing = [cell for cell in group if cell.key not in latest or cell.key in pending]
        if missing:
            notes.append(f"{series_id}: no pick, {len(missing)} of its {len(group)} selection cells have not run "
                         "(--only left them out?)")
            continue
        (pick,) = picks([{**latest[cell.key], "tune": cell.tune} for cell in group])  # this grid's candidates
        if pick.chosen is None:
            notes.append(f"{series_id}: no evaluation cells: {pick.reason}")
            continue
        model = next(cell for cell in group if cell.strategy.order == pick.chosen.order)
        found += [dataclasses.replace(model, seed=seed, stage=EVALUATE) for seed in grid.seeds]
        notes.append(f"{series_id}: picked {model.strategy.label} (mean validation accuracy {pick.chosen.val_accuracy:.4f} "
                     f"over tune_seeds {', '.join(map(str, pick.selection_seeds))}), evaluated on seeds "
                     f"{', '.join(map(str, grid.seeds))}")
    return found, notes


def stage_two_summary(grid: Grid, cells: Iterable[Cell]) -> str | None:
    """For ``--dry-run``: how many evaluation cells will follow ``cells``; None when none will."""
    series = {cell.series_id for cell in cells if cell.stage == SELECT}
    if not series:
        return None
    return (f"then up to {len(series) * len(grid.seeds)} evaluation cells (stage 2): the pick of each of the "
            f"{len(series)} tuned series (the highest mean validation accuracy over tune_seeds "
            f"{', '.join(map(str, grid.tune_seeds))}) on seeds {', '.join(map(str, grid.seeds))}")
