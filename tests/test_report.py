"""The report: tables, plots and the four-scenario verdict, from real runs.jsonl files."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from PIL import Image

import tlbench
from tlbench.cli import main
from tlbench.report import write_report
from tlbench.results import RunsLog

PLOTS = ("accuracy_by_strategy.png", "accuracy_vs_train_size.png", "accuracy_vs_cost.png")
TOY_GRID = {
    "name": "toy-report",
    "datasets": [{"name": "stripes", "per_class": 12, "train_size": [2, "all"]}],
    "backbones": ["toy/centroid"],
    "strategies": ["extractor", {"name": "finetune", "depth": [1, 2]}, "scratch", "classifier"],
    "seeds": [0, 1],
}


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each GitHub table of a markdown text, as rows of {header: cell}, under its heading."""
    tables, heading, lines, i = {}, None, text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("#"):
            heading = lines[i].lstrip("#").strip()
        elif lines[i].startswith("|") and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            headers, rows = _cells(lines[i]), []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(dict(zip(headers, _cells(lines[i]))))
                i += 1
            tables[heading] = rows
            continue
        i += 1
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        image.verify()


def test_a_run_writes_the_report_of_a_real_toy_grid(toy_plugin, tmp_path):
    frame = tlbench.run_grid(TOY_GRID, out=tmp_path, device="cpu")
    text = (tmp_path / "report.md").read_text()
    tables = markdown_tables(text)

    small = {r["strategy"]: r for r in tables["stripes, train_size=2 (4 training images, 24 test images)"]}
    assert list(small) == ["extractor", "finetune[depth=1]", "finetune[depth=2]", "scratch", "classifier"]
    ok = frame[(frame.status == "ok") & frame.cell_id.str.contains("train_size=2")
               & frame.cell_id.str.contains("/extractor/")]
    mean, std = ok.test_accuracy.mean(), ok.test_accuracy.std()
    assert small["extractor"]["test accuracy"] == f"{mean:.4f} ± {std:.4f} (n=2)"
    assert small["extractor"]["status"] == "ok 2" and small["extractor"]["trainable params"] == "0"
    assert small["extractor"]["best val accuracy"] == "1.0000 ± 0.0000"  # its valid split is its train split
    assert small["classifier"]["status"] == "not-applicable 2" and small["classifier"]["test accuracy"] == "-"

    by_size = tables["Accuracy vs train size: stripes"]
    assert [r["strategy"] for r in by_size] == ["extractor", "finetune[depth=1]", "finetune[depth=2]", "scratch"]
    assert {"train_size=2 (4 images)", "train_size=all (24 images)"} <= set(by_size[0])

    verdicts = tables["The four-scenario rule"]
    assert [(v["train_size"], v["images/class"], v["size"]) for v in verdicts] == [("2", "2.0", "small"),
                                                                                   ("all", "12.0", "small")]
    for row in verdicts:  # the toy backbone ignores the strategy: every strategy ties
        assert row["domain"] == "synthetic (dataset record)" and row["similarity"] == "different"
        assert row["rule recommends"] == "fine-tune a part (or extractor)"
        assert row["verdict"] == "inconclusive"
    assert text.count("(not recommended) is within noise") == 2

    for name in PLOTS:
        assert_png(tmp_path / name)
        assert f"]({name})" in text


def test_report_command_rebuilds_with_another_size_threshold(toy_plugin, tmp_path, capsys):
    tlbench.run_grid({**TOY_GRID, "strategies": ["extractor", "scratch"], "seeds": [0]}, out=tmp_path, device="cpu")
    assert main(["report", str(tmp_path), "--small-per-class", "5"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["summary.csv", "summary.md", "report.md", *PLOTS]
    verdicts = markdown_tables((tmp_path / "report.md").read_text())["The four-scenario rule"]
    assert [(v["size"], v["rule recommends"]) for v in verdicts] == [
        ("small", "fine-tune a part (or extractor)"), ("large", "fine-tune the whole network")]
    assert verdicts[1]["verdict"] == "inconclusive"  # finetune at depth all was not run


def real_record(tmp_path: Path) -> dict:
    """One real result line of the toy plugin, to shape hand-made records after."""
    grid = {"name": "one", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    tlbench.run_grid(grid, out=tmp_path / "real", device="cpu")
    (line,) = (tmp_path / "real" / "runs.jsonl").read_text().splitlines()
    return json.loads(line)


def record(base: dict, dataset: str, domain: str, per_class: int, strategy: str, seed: int, accuracy: float | None,
           depth=None) -> dict:
    """``base`` moved to another dataset, strategy, seed and accuracy (two classes, 100 test images)."""
    r = copy.deepcopy(base)
    label = f"{strategy}[depth={depth}]" if depth is not None else strategy
    r.update(cell_id=f"{dataset}/toy/centroid/{label}/seed={seed}", key=f"{dataset}-{label}-{seed}",
             dataset=dataset, strategy=strategy, seed=seed)
    r["plugins"] = {**r["plugins"], "dataset": "folder", "strategy": strategy}
    r["params"]["dataset"] = {"root": f"/data/{dataset}", "domain": domain, "train_size": "all"}
    r["params"]["strategy"] = {"head": "linear", **({"depth": depth} if depth is not None else {})}
    if accuracy is None:
        r.update(status="failed", error="RuntimeError: out of memory", metrics={"wall_seconds": 1.0})
        return r
    correct = round(accuracy * 50)
    r["metrics"].pop("family")  # as in records written before families: the strategy plugin declares it
    r["metrics"].update(blocks=8, trainable_blocks={"all": 8, None: 0}.get(depth, depth))
    r["metrics"].update(test_accuracy=accuracy, test_loss=1 - accuracy, test_images=100,
                        confusion_matrix=[[correct, 50 - correct], [50 - correct, correct]],
                        trainable_params={"extractor": 2562}.get(strategy, 1_000_000), epoch_seconds=1.5,
                        train_images=2 * per_class, best_epoch=2,
                        history=[{"epoch": 1, "val_accuracy": accuracy - 0.05}, {"epoch": 2, "val_accuracy": accuracy - 0.01},
                                 {"epoch": 3, "val_accuracy": accuracy - 0.03}])
    r["metrics"]["dataset_info"] = {**r["metrics"]["dataset_info"], "train_size_real": 2 * per_class, "domain": domain}
    return r


def test_hand_made_records_give_agrees_disagrees_and_inconclusive(toy_plugin, tmp_path):
    base = real_record(tmp_path)
    runs = RunsLog(tmp_path)
    cases = [  # (dataset, domain, images per class, strategy, depth, accuracies per seed)
        ("photos", "natural-photo", 20, "classifier", None, [0.84, 0.84, 0.84]),
        ("photos", "natural-photo", 20, "extractor", None, [0.90, 0.92, 0.94]),
        ("photos", "natural-photo", 20, "finetune", 1, [0.80, 0.82, 0.84]),
        ("photos", "natural-photo", 20, "scratch", None, [0.60, 0.62, 0.64, None]),
        ("xrays", "x-ray", 1500, "extractor", None, [0.94, 0.96, 0.98]),
        ("xrays", "x-ray", 1500, "finetune", "all", [0.78, 0.80, 0.82]),
        ("mystery", "unknown", 1500, "extractor", None, [0.70]),
        ("mystery", "unknown", 1500, "scratch", None, [0.50]),
    ]
    for dataset, domain, per_class, strategy, depth, accuracies in cases:
        for seed, accuracy in enumerate(accuracies):
            runs.append(record(base, dataset, domain, per_class, strategy, seed, accuracy, depth))

    paths = write_report(tmp_path)
    assert [p.name for p in paths] == ["report.md", "accuracy_by_strategy.png", "accuracy_vs_cost.png"]
    for path in paths[1:]:
        assert_png(path)
    text = paths[0].read_text()
    tables = markdown_tables(text)

    photos = {r["strategy"]: r for r in tables["photos (40 training images, 100 test images)"]}
    assert photos["extractor"]["test accuracy"] == "0.9200 ± 0.0200 (n=3)"
    assert photos["extractor"]["best val accuracy"] == "0.9100 ± 0.0200"  # the best epoch's, not the last
    assert photos["extractor"]["trainable params"] == "2,562"
    assert photos["finetune[depth=1]"]["test loss"] == "0.1800"
    assert photos["scratch"]["status"] == "ok 3, failed 1"

    verdicts = {v["dataset"]: v for v in tables["The four-scenario rule"]}
    assert verdicts["photos"]["size"] == "small" and verdicts["photos"]["similarity"] == "similar"
    assert verdicts["photos"]["domain"] == "natural-photo (dataset option)"
    assert verdicts["photos"]["classifier acc."] == "0.8400 (chance 0.50)"
    assert verdicts["photos"]["rule recommends"] == "feature extractor"
    assert verdicts["photos"]["measured best"] == "extractor 0.9200 ± 0.0200 (n=3)"
    assert verdicts["photos"]["verdict"] == "agrees"

    assert (verdicts["xrays"]["size"], verdicts["xrays"]["similarity"]) == ("large", "different")
    assert verdicts["xrays"]["rule recommends"] == "fine-tune the whole network"
    assert verdicts["xrays"]["measured best"] == "extractor 0.9600 ± 0.0200 (n=3)"
    assert verdicts["xrays"]["verdict"] == "disagrees"
    assert ("the best measured is extractor 0.9600 ± 0.0200 (n=3), ahead of the best recommended strategy "
            "finetune[depth=all] 0.8000 ± 0.0200 (n=3) by 0.1600 (noise margin 0.0200): disagrees.") in text

    assert verdicts["mystery"]["similarity"] == "unknown" and verdicts["mystery"]["verdict"] == "inconclusive"
    assert "- **agrees**: photos (20 training images per class <= 1000: small; domain natural-photo: similar)" in text


def test_a_report_failure_never_loses_results(toy_plugin, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("report bug")

    monkeypatch.setattr("tlbench.runner.write_report", broken)
    with caplog.at_level(logging.WARNING, logger="tlbench.runner"):
        frame = tlbench.run_grid({**TOY_GRID, "strategies": ["extractor"], "seeds": [0]}, out=tmp_path, device="cpu")
    assert list(frame.status) == ["ok", "ok"] and (tmp_path / "summary.md").exists()
    assert "could not write the report" in caplog.text and "report bug" in caplog.text


def test_an_empty_run_gets_a_short_report(tmp_path):
    (tmp_path / "runs.jsonl").write_text("")
    (report,) = write_report(tmp_path)
    assert "No cells recorded" in report.read_text()


def test_one_report_compares_several_runs(toy_plugin, tmp_path, capsys):
    base = {"name": "part", "datasets": ["stripes"], "backbones": ["toy/centroid"], "seeds": [0, 1]}
    tlbench.run_grid({**base, "strategies": ["extractor", "scratch"]}, out=tmp_path / "a", device="cpu")
    tlbench.run_grid({**base, "strategies": ["scratch", {"name": "finetune", "depth": 1}]}, out=tmp_path / "b",
                     device="cpu")  # scratch again: the same cells, finished later
    later = {r["key"]: r["finished"] for r in RunsLog(tmp_path / "b").read()}

    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both")]) == 0
    merged = RunsLog(tmp_path / "both").read()
    assert sorted(r["strategy"] for r in merged) == ["extractor"] * 2 + ["finetune"] * 2 + ["scratch"] * 2
    assert all(r["finished"] == later[r["key"]] for r in merged if r["strategy"] == "scratch")
    table = next(iter(markdown_tables((tmp_path / "both" / "report.md").read_text()).values()))
    assert [r["strategy"] for r in table] == ["extractor", "scratch", "finetune[depth=1]"]
    assert (tmp_path / "both" / "summary.csv").read_text().count("\n") == 1 + 6

    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "need --out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "a")]) == 2
    assert "is one of the runs being merged" in capsys.readouterr().err


def test_a_dataset_at_another_path_is_the_same_dataset(toy_plugin, tmp_path):
    base = real_record(tmp_path)
    runs = RunsLog(tmp_path)
    for seed, root in enumerate(["/data/photos", "/mnt/gpu-box/photos"]):  # two machines, one dataset
        moved = record(base, "photos", "natural-photo", 20, "extractor", seed, 0.9)
        moved["params"]["dataset"]["root"] = root
        runs.append(moved)
    tables = markdown_tables(write_report(tmp_path)[0].read_text())
    assert tables["photos (40 training images, 100 test images)"][0]["status"] == "ok 2"


def test_merging_keeps_one_record_of_a_cell_run_on_two_machines(toy_plugin, tmp_path):
    base = real_record(tmp_path)
    for run, root, finished in (("cpu", "/data/photos", "2026-01-02T00:00:00+00:00"),
                                ("gpu", "/mnt/gpu-box/photos", "2026-01-01T00:00:00+00:00")):
        moved = record(base, "photos", "natural-photo", 20, "extractor", 0, 0.9 if run == "cpu" else 0.8)
        moved.update(key=f"{run}-key", finished=finished)
        moved["params"]["dataset"]["root"] = root
        (tmp_path / run).mkdir()
        RunsLog(tmp_path / run).append(moved)
    assert main(["report", str(tmp_path / "gpu"), str(tmp_path / "cpu"), "--out", str(tmp_path / "both")]) == 0
    (kept,) = RunsLog(tmp_path / "both").read()
    assert kept["key"] == "cpu-key" and kept["metrics"]["test_accuracy"] == 0.9  # the later-finished


def test_report_out_never_replaces_another_runs_records(toy_plugin, tmp_path, capsys):
    base = {"name": "part", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    tlbench.run_grid(base, out=tmp_path / "a", device="cpu")
    tlbench.run_grid({**base, "seeds": [0, 1, 2]}, out=tmp_path / "b", device="cpu")
    records = (tmp_path / "b" / "runs.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 2
    assert "holds the records of a run" in capsys.readouterr().err
    assert (tmp_path / "b" / "runs.jsonl").read_bytes() == records

    both = tmp_path / "both"  # a combined report is marked, so it can be made again
    for _ in range(2):
        assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(both)]) == 0
    marker = json.loads((both / "combined.json").read_text())
    assert marker["combined_from"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert len(RunsLog(both).read()) == 3


def test_report_out_honours_the_run_lock(toy_plugin, tmp_path, capsys):
    from tlbench.runner import run_lock

    tlbench.run_grid({"name": "l", "datasets": ["stripes"], "backbones": ["toy/centroid"],
                      "strategies": ["extractor"]}, out=tmp_path / "a", device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):  # e.g. `tlbench run --out out` is writing there
        capsys.readouterr()
        assert main(["report", str(tmp_path / "a"), "--out", str(out)]) == 2
        assert f"{out} is in use by pid" in capsys.readouterr().err
    assert not (out / "runs.jsonl").exists()
