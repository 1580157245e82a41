"""Built-in observer: every cell becomes one MLflow run (``tlbench run ... --track mlflow``).

One experiment per grid (its name), one run per cell, tagged with the cell key so that a cell
run again replaces its MLflow run instead of adding one. The default store is a SQLite file
in the run directory. MLflow loads only when a run tracks with it.
"""

from __future__ import annotations

from tlbench.plugin.hookspecs import hookimpl

TRACKER = "mlflow"


@hookimpl
def tlbench_run_started(run):
    if TRACKER not in run.track:
        return None
    from .tracking import MlflowTracker

    run.observers[TRACKER] = MlflowTracker(run)
    return [TRACKER]


@hookimpl
def tlbench_cell_finished(cell, result, run):
    tracker = run.observers.get(TRACKER) if run is not None else None
    if tracker is not None:
        tracker.log_cell(cell, result)
