"""--track mlflow: one MLflow run per cell in a real local store, never duplicated on a rerun."""

from __future__ import annotations

import json
import textwrap

import mlflow

from support import tlbench


def write_grid(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: tracked
        datasets: [stripes]
        backbones: [toy/centroid, {name: broken, plugin: toy/centroid, fail: true}]
        strategies: [extractor]
        seeds: [0, 1]
        train: {epochs: 2}
    """))
    return grid


def active_runs(out):
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    return client, client.search_runs([experiment.experiment_id])


def test_each_cell_is_one_mlflow_run_with_params_epochs_metrics_and_artifacts(toy_plugin, tmp_path):
    out = tmp_path / "out"
    result = tlbench("run", "--grid", str(write_grid(tmp_path)), "--out", str(out), "--track", "mlflow")
    assert result.returncode == 1, result.stderr  # the broken cells failed
    records = {r["key"]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    client, runs = active_runs(out)
    assert sorted(run.data.tags["tlbench.key"] for run in runs) == sorted(records)
    for run in runs:
        record = records[run.data.tags["tlbench.key"]]
        assert run.info.run_name == record["cell_id"]
        assert run.data.params["train.epochs"] == "2" and run.data.params["strategy.head"] == "linear"
        assert run.info.status == ("FINISHED" if record["status"] == "ok" else "FAILED")
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        if record["status"] == "ok":
            assert run.data.metrics["test_accuracy"] == record["metrics"]["test_accuracy"]
            history = client.get_metric_history(run.info.run_id, "val_accuracy")
            assert [m.step for m in history] == [1, 2]
            assert artifacts == {"confusion_matrix.json", "result.json"}
        else:
            assert artifacts == {"result.json"}
            assert "toy backbone asked to fail" in json.loads(
                (out / "mlflow-artifacts").joinpath(run.info.run_id, "artifacts", "result.json").read_text())["error"]


def test_a_rerun_never_duplicates_a_run(toy_plugin, tmp_path):
    out, grid = tmp_path / "out", write_grid(tmp_path)
    tlbench("run", "--grid", str(grid), "--out", str(out), "--track", "mlflow")
    tlbench("run", "--grid", str(grid), "--out", str(out), "--track", "mlflow")  # the failed cells run again
    forced = tlbench("run", "--grid", str(grid), "--out", str(out), "--track", "mlflow", "--rerun", "--only", "seed=0")
    assert forced.returncode == 1
    _, runs = active_runs(out)
    keys = [run.data.tags["tlbench.key"] for run in runs]
    assert len(keys) == len(set(keys)) == 4


def test_an_unknown_tracker_is_refused_before_any_cell(toy_plugin, tmp_path):
    result = tlbench("run", "--grid", str(write_grid(tmp_path)), "--out", str(tmp_path / "out"), "--track", "wandb")
    assert result.returncode == 2 and "--track wandb: no installed plugin tracks that (served: none)" in result.stderr
    assert not (tmp_path / "out" / "runs.jsonl").exists()
