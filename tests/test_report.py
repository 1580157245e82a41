"""The report: paired-test verdicts, tables, plots, report.md, report.html and verdicts.json, from real
runs.jsonl files (the toy plugin's, and hand-made records shaped after a real one)."""

from __future__ import annotations

import copy
import html.parser
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import tlbench
from tlbench.cli import main
from tlbench.report import stats
from tlbench.report.document import MANIFEST_FILE, write_report
from tlbench.report.frame import cells_frame
from tlbench.report.render import SORT_SCRIPT
from tlbench.report.verdicts import SHIFT_THRESHOLD
from tlbench.results import RunsLog, latest_per_cell

VERDICT_KEYS = ["dataset", "train_size", "backbone", "images_per_class", "size", "domain", "domain_label",
                "shift", "shift_threshold", "shift_reads", "recommended", "best", "alternative", "difference", "ci_low",
                "ci_high", "p_value", "verdict", "method", "converged"]
ALL_PLOTS = ("verdict_forest.png",
             "accuracy_by_strategy.png", "accuracy_vs_blocks.png", "accuracy_vs_train_size.png", "accuracy_vs_cost.png",
             "transferability_vs_accuracy.png", "shift_profile.png", "confusion_matrix.png")
TOY_GRID = {
    "name": "toy-report",
    "datasets": [{"name": "stripes", "per_class": 12, "train_size": [2, "all"]}],
    "backbones": ["toy/centroid"],
    "strategies": ["extractor", {"name": "finetune", "depth": [1, 2]}, "scratch", "classifier"],
    "seeds": [0, 1],
}
VERDICTS_HEADING = "Verdicts: the four-scenario rule, tested"
TEST_IMAGES, PER_CLASS = 400, 200
LABELS = np.repeat([0, 1], PER_CLASS)


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
                rows.append(dict(zip(headers, _cells(lines[i]), strict=True)))
                i += 1
            tables.setdefault(heading, rows)
            continue
        i += 1
    return tables


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
        image.verify()


def shown(interval: stats.Interval) -> str:
    """How the report writes a mean with its 95% CI."""
    return f"{interval.mean:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def verdicts_of(run_dir: Path) -> dict[tuple[str, str], dict]:
    rows = json.loads((run_dir / "verdicts.json").read_text())
    for row in rows:
        assert list(row) == VERDICT_KEYS
    return {(r["dataset"], r["train_size"]): r for r in rows}


# ---------------------------------------------------------------- a real toy run


def test_a_run_writes_the_report_of_a_real_toy_grid(toy_plugin, tmp_path):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    frame = tlbench.run_grid(TOY_GRID, out=out, device="cpu")
    text = (out / "report.md").read_text()
    tables = markdown_tables(text)

    small = {r["strategy"]: r for r in tables["stripes, train_size=2 (4 training images, 24 test images)"]}
    # in the order the cells ran: those that train from an earlier block first, then grid order
    assert list(small) == ["finetune[depth=2]", "finetune[depth=1]", "extractor", "scratch", "classifier"]
    ok = frame[(frame.status == "ok") & frame.cell_id.str.contains("train_size=2")
               & frame.cell_id.str.contains("/extractor/")]
    interval = stats.mean_ci(list(ok.test_accuracy))
    assert small["extractor"]["test accuracy: mean (95% CI)"] == shown(interval)
    assert small["extractor"]["n"] == "2" and small["extractor"]["status"] == "ok 2"
    assert small["extractor"]["family"] == "extractor" and small["finetune[depth=2]"]["family"] == "finetune-all"
    assert small["classifier"]["status"] == "not-applicable 2" and small["classifier"]["test accuracy: mean (95% CI)"] == "-"

    by_size = tables["Accuracy vs train size: stripes"]
    assert [r["strategy"] for r in by_size] == ["finetune[depth=2]", "finetune[depth=1]", "extractor", "scratch"]
    assert {"train_size=2 (4 images): 95% CI", "train_size=all (24 images): 95% CI"} <= set(by_size[0])

    verdicts = verdicts_of(out)
    assert [(v["train_size"], v["images_per_class"], v["size"]) for v in verdicts.values()] == [
        ("2", 2.0, "small"), ("all", 12.0, "small")]
    for row in verdicts.values():  # the toy backbone ignores the strategy: every strategy scores the same
        assert (row["domain_label"], row["domain"]) == ("synthetic", "different")
        assert (row["shift"], row["shift_threshold"], row["shift_reads"]) == (None, None, None)  # no shift cell
        assert row["recommended"] == ["extractor", "finetune-part"]
        assert row["best"] == "finetune[depth=1]"  # a tie goes to the first in the table: the order the cells ran
        assert row["alternative"] == "finetune[depth=2]"  # the best not recommended: finetune-all
        assert (row["difference"], row["ci_low"], row["ci_high"], row["verdict"]) == (0.0, 0.0, 0.0, "not significant")
        assert row["method"].startswith("paired seed-unit t over 2 seeds and 24 test images")
    assert markdown_tables(text)[VERDICTS_HEADING][0]["domain"] == "synthetic: different"

    written = [name for name in ALL_PLOTS if (out / name).exists()]
    assert written == [n for n in ALL_PLOTS if n not in ("transferability_vs_accuracy.png", "shift_profile.png")]
    for name in written:
        assert_png(out / name)
        assert f"]({name})" in text
    page = (out / "report.html").read_text()
    assert page.count("<img src=\"data:image/png;base64,") == len(written)


def test_report_settings_are_stored_with_the_run_and_the_flag_overrides_them(toy_plugin, tmp_path, capsys):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    grid = {**TOY_GRID, "strategies": ["extractor", "scratch"], "seeds": [0], "report": {"small_per_class": 5}}
    tlbench.run_grid(grid, out=out, device="cpu")
    assert json.loads((out / "env.json").read_text())["report"] == {"small_per_class": 5}

    def sizes() -> list[tuple[str, str]]:
        return [(v["size"], v["verdict"]) for v in verdicts_of(out).values()]

    assert sizes() == [("small", "not significant"), ("large", "not covered")]  # 2 and 12 images per class
    text = (out / "report.md").read_text()
    assert "at most 5 training images per class" in text and "set by the grid" in text
    assert "\"Large\" is relative to this setting (5 per class)" in text
    large = verdicts_of(out)[("stripes", "all")]
    assert large["recommended"] == ["finetune-all"] and large["best"] == "extractor" and large["alternative"] is None
    assert large["method"] == "no strategy of the recommended families (finetune-all) finished with a test accuracy"
    assert large["difference"] is None and large["p_value"] is None

    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0  # the stored setting, without the grid
    printed = [Path(p).name for p in capsys.readouterr().out.split()]
    assert printed[:5] == ["summary.csv", "summary.md", "report.md", "report.html", "verdicts.json"]
    assert sizes() == [("small", "not significant"), ("large", "not covered")]

    assert main(["report", str(out), "--small-per-class", "20"]) == 0
    assert sizes() == [("small", "not significant"), ("small", "not significant")]
    text = (out / "report.md").read_text()
    assert "given as `--small-per-class 20`" in text and "relative to this setting" not in text
    with pytest.raises(SystemExit) as exited:
        main(["report", str(out), "--small-per-class", "0"])
    assert exited.value.code == 2


# ---------------------------------------------------------------- hand-made records


def real_record(tmp_path: Path) -> dict:
    """One real result line of the toy plugin, to shape hand-made records after."""
    grid = {"name": "one", "datasets": ["stripes"], "backbones": ["toy/centroid"], "strategies": ["extractor"]}
    tlbench.run_grid(grid, out=tmp_path / "real", device="cpu")
    (line,) = (tmp_path / "real" / "runs.jsonl").read_text().splitlines()
    return json.loads(line)


def correct_images(dataset: str, label: str, seed: int, accuracy: float) -> np.ndarray:
    """Which of the test images a hand-made cell gets right: ``accuracy`` of them, fixed by its name."""
    rng = np.random.default_rng([zlib.crc32(f"{dataset}/{label}".encode()), seed])
    correct = np.zeros(TEST_IMAGES, dtype=bool)
    correct[rng.choice(TEST_IMAGES, round(accuracy * TEST_IMAGES), replace=False)] = True
    return correct


class HandMade:
    """Records shaped after a real one, appended to ``run_dir``'s runs.jsonl, with kept predictions."""

    def __init__(self, base: dict, run_dir: Path):
        self.base, self.run_dir, self.runs = base, run_dir, RunsLog(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)

    def record(self, dataset: str, domain: str, per_class: int, strategy: str, seed: int, backbone: str) -> dict:
        r = copy.deepcopy(self.base)
        r.update(dataset=dataset, strategy=strategy, seed=seed, backbone=backbone)
        r["plugins"] = {**r["plugins"], "dataset": "folder", "strategy": strategy}
        r["params"]["dataset"] = {"root": f"/data/{dataset}", "train_size": "all", **({"domain": domain} if domain else {})}
        r["params"]["backbone"] = {"weights": "pretrained"}
        r["metrics"].pop("family")  # as in records written before families: the strategy plugin declares it
        r["metrics"].pop("converged")  # and before `converged`: the report derives it from the history
        r["metrics"].update(predictions_file=None, transferability=None, train_images=2 * per_class, test_images=TEST_IMAGES)
        r["metrics"]["dataset_info"] = {**r["metrics"]["dataset_info"], "train_size_real": 2 * per_class, "domain": domain}
        if not domain:  # nothing names it: neither the grid, nor the record, nor the folder plugin
            del r["metrics"]["dataset_info"]["domain"]
        return r

    def add(self, dataset: str, domain: str, per_class: int, strategy: str, accuracies: list[float | None], depth=None,
            backbone: str = "net-a", keep: bool = True, validation: float | None = None,
            converged: bool = True) -> dict[int, np.ndarray]:
        """One cell per seed (None: a failed cell); returns each seed's per-image correctness. The
        best epoch (2) has validation accuracy ``validation`` when given, else the test accuracy - 0.01;
        training ran 5 epochs (converged: 3 without improvement), else 3 (not converged)."""
        label = f"{strategy}[depth={depth}]" if depth is not None else strategy
        kept = {}
        for seed, accuracy in enumerate(accuracies):
            r = self.record(dataset, domain, per_class, strategy, seed, backbone)
            key = f"{dataset}-{backbone}-{label}-{seed}".replace("/", "-")
            r.update(cell_id=f"{dataset}/{backbone}/{label}/seed={seed}", key=key)
            r["params"]["strategy"] = {"head": "linear", **({"depth": depth} if depth is not None else {})}
            if accuracy is None:
                r.update(status="failed", error="RuntimeError: out of memory", metrics={"wall_seconds": 1.0})
                self.runs.append(r)
                continue
            correct = kept[seed] = correct_images(dataset, label, seed, accuracy)
            right = [int(correct[c == LABELS].sum()) for c in (0, 1)]
            trained = {"all": 8, None: 0, "scratch": 8}.get("scratch" if strategy == "scratch" else depth, depth)
            r["metrics"].update(
                test_accuracy=float(correct.mean()), test_loss=1 - accuracy, blocks=8, trainable_blocks=trained,
                trained_blocks=list(range(8 - trained, 8)),
                confusion_matrix=[[right[0], PER_CLASS - right[0]], [PER_CLASS - right[1], right[1]]],
                trainable_params={"extractor": 2562}.get(strategy, 1_000_000), epoch_seconds=1.5,
                wall_seconds={"extractor": 5.0, "scratch": 40.0}.get(strategy, 20.0 + trained), best_epoch=2,
                history=[{"epoch": 1, "val_accuracy": accuracy - 0.05},
                         {"epoch": 2, "val_accuracy": accuracy - 0.01 if validation is None else validation},
                         *({"epoch": e, "val_accuracy": accuracy - 0.03} for e in range(3, 6 if converged else 4))])
            if keep:
                r["metrics"]["predictions_file"] = f"predictions/{key}.npz"
                probabilities = np.where(correct, 0.9, 0.1)[:, None] * np.eye(2)[LABELS] + \
                    np.where(correct, 0.1, 0.9)[:, None] * np.eye(2)[1 - LABELS]
                (self.run_dir / "predictions").mkdir(exist_ok=True)
                np.savez(self.run_dir / r["metrics"]["predictions_file"], test_probabilities=probabilities.astype(np.float16),
                         test_labels=LABELS)
            self.runs.append(r)
        return kept

    def add_scores(self, dataset: str, domain: str, per_class: int, backbone: str, scores: list[dict]) -> None:
        """A transferability cell per seed with the given scores (no test accuracy, no predictions)."""
        for seed, found in enumerate(scores):
            r = self.record(dataset, domain, per_class, "transferability", seed, backbone)
            r.update(cell_id=f"{dataset}/{backbone}/transferability/seed={seed}", key=f"{dataset}-{backbone}-t-{seed}")
            r["params"]["strategy"] = {}
            r["metrics"].update(test_accuracy=None, test_loss=None, confusion_matrix=None, epochs=0, history=[],
                                best_epoch=None, epoch_seconds=None, transferability=found, family="evidence")
            self.runs.append(r)

    def add_shift(self, dataset: str, domain: str, per_class: int, backbone: str, profiles: list[list[float | None]],
                  image_size: int = SHIFT_THRESHOLD.image_size) -> None:
        """A shift cell per seed with the given profile, of the backbone plugin ``backbone`` at ``image_size`` px."""
        for seed, profile in enumerate(profiles):
            r = self.record(dataset, domain, per_class, "shift", seed, backbone)
            r.update(cell_id=f"{dataset}/{backbone}/shift/seed={seed}", key=f"{dataset}-{backbone}-s-{seed}")
            r["plugins"]["backbone"] = backbone
            r["params"]["strategy"] = {}
            r["metrics"].update(test_accuracy=None, test_loss=None, confusion_matrix=None, epochs=0, history=[],
                                best_epoch=None, epoch_seconds=None, family="evidence", image_size=image_size,
                                shift_profile=profile, shift=float(np.mean([v for v in profile if v is not None])))
            self.runs.append(r)


def test_verdicts_agree_disagree_are_not_significant_or_not_covered_with_holm_over_rows(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    made.add("photos", "natural-photo", 20, "classifier", [0.84, 0.84, 0.84])
    photos = made.add("photos", "natural-photo", 20, "extractor", [0.90, 0.92, 0.94])
    photos_other = made.add("photos", "natural-photo", 20, "finetune", [0.80, 0.82, 0.84], depth=1)
    made.add("photos", "natural-photo", 20, "scratch", [0.60, 0.62, 0.64, None])
    xrays = made.add("xrays", "x-ray", 1500, "extractor", [0.94, 0.96, 0.98])
    xrays_other = made.add("xrays", "x-ray", 1500, "finetune", [0.78, 0.80, 0.82], depth="all")
    leaves = made.add("leaves", "leaf-scan", 20, "finetune", [0.80, 0.81, 0.80], depth=1)
    leaves_other = made.add("leaves", "leaf-scan", 20, "scratch", [0.79, 0.80, 0.81])
    made.add("sketches", "sketch", 1500, "extractor", [0.70, 0.72])
    made.add("sketches", "sketch", 1500, "scratch", [0.50, 0.52])
    (mystery_correct,) = made.add("mystery", None, 1500, "extractor", [0.70]).values()
    made.add("mystery", None, 1500, "scratch", [0.50])
    stale = made.run_dir / "transferability_vs_accuracy.png"
    stale.write_bytes(b"from an earlier report")
    (made.run_dir / MANIFEST_FILE).write_text(json.dumps({"files": [stale.name]}))  # which listed what it wrote

    paths = write_report(made.run_dir)
    assert not stale.exists()  # no transferability cell any more: its plot is removed
    assert [p.name for p in paths] == ["report.md", "report.html", "verdicts.json", "verdict_forest.png", "accuracy_by_strategy.png",
                                       "accuracy_vs_blocks.png", "accuracy_vs_cost.png", "confusion_matrix.png"]
    for path in paths[3:]:
        assert_png(path)
    verdicts = verdicts_of(made.run_dir)
    assert {k[0]: v["verdict"] for k, v in verdicts.items()} == {
        "photos": "agrees", "xrays": "disagrees", "leaves": "not significant", "sketches": "not covered",
        "mystery": "not covered"}

    photo = verdicts[("photos", "all")]
    assert (photo["size"], photo["domain"], photo["domain_label"]) == ("small", "similar", "natural-photo")
    assert photo["recommended"] == ["extractor"] and (photo["best"], photo["alternative"]) == ("extractor", "finetune[depth=1]")
    assert photo["difference"] == pytest.approx(0.10) and 0 < photo["ci_low"] < 0.10 < photo["ci_high"]

    xray = verdicts[("xrays", "all")]
    assert (xray["size"], xray["domain"], xray["recommended"]) == ("large", "different", ["finetune-all"])
    assert (xray["best"], xray["alternative"]) == ("extractor", "finetune[depth=all]")  # the best is not recommended
    assert xray["difference"] == pytest.approx(0.16) and xray["ci_low"] > 0

    leaf = verdicts[("leaves", "all")]
    assert leaf["ci_low"] < 0 < leaf["ci_high"] and leaf["best"] == "finetune[depth=1]" and leaf["alternative"] == "scratch"
    assert verdicts[("sketches", "all")]["method"] == (
        "no strategy of the recommended families (finetune-all) finished with a test accuracy")
    mystery = verdicts[("mystery", "all")]
    assert (mystery["domain"], mystery["domain_label"], mystery["recommended"], mystery["p_value"]) == ("unknown", "unknown", [], None)
    assert mystery["method"] == "the domain of the target data is unknown, so the rule names no family"

    raw = [stats.paired_difference(best, other).p_value
           for best, other in ((photos, photos_other), (xrays, xrays_other), (leaves, leaves_other))]
    assert [verdicts[(d, "all")]["p_value"] for d in ("photos", "xrays", "leaves")] == pytest.approx(stats.holm(raw))
    assert verdicts[("photos", "all")]["p_value"] > raw[0]  # adjusted over the three compared rows
    assert all("Holm-adjusted over the 3 compared rows" in verdicts[(d, "all")]["method"] for d in ("photos", "xrays"))

    text = paths[0].read_text()
    tables = markdown_tables(text)
    rows = {r["dataset"]: r for r in tables[VERDICTS_HEADING]}
    extractor = stats.mean_ci([0.90, 0.92, 0.94], [photos[seed] for seed in range(3)])  # seeds and test images
    assert rows["photos"]["best: accuracy (95% CI)"] == (
        f"✓ extractor {shown(extractor)} (n=3)")
    assert rows["xrays"]["alternative: accuracy (95% CI)"].startswith("✓ finetune[depth=all] 0.800 [")
    assert rows["photos"]["rule recommends"] == "feature extractor" and rows["photos"]["verdict"] == "agrees"
    assert rows["photos"]["p (Holm)"] == f"{verdicts[('photos', 'all')]['p_value']:.4f}"

    assert rows["mystery"]["domain"] == "unknown: unknown" and "nan" not in text
    one_seed = stats.mean_ci([0.70], [mystery_correct])  # an interval over the test images
    assert tables["mystery (3000 training images, 400 test images)"][0]["test accuracy: mean (95% CI)"] == shown(one_seed)
    assert one_seed.low < 0.70 < one_seed.high

    table = {r["strategy"]: r for r in tables["photos (40 training images, 400 test images)"]}
    assert table["extractor"]["test accuracy: mean (95% CI)"] == shown(extractor)
    validation = stats.mean_ci([0.89, 0.91, 0.93])  # the best epoch's, not the last
    assert table["extractor"]["best val accuracy: mean (95% CI)"] == shown(validation)
    assert table["extractor"]["trainable params"] == "2,562" and table["scratch"]["status"] == "ok 3, failed 1"
    assert table["classifier"]["family"] == "evidence"
    assert ("- **agrees**: photos, train_size=all, net-a (20 training images per class: small; domain natural-photo "
            "(dataset option): similar): paired seed-unit t over 3 seeds and 400 test images") in text
    assert "domain unknown (named nowhere): unknown" in text


def test_each_side_picks_its_series_on_validation_accuracy_never_on_test_accuracy(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")  # small x-rays: extractor or a partial fine-tune
    made.add("xrays", "x-ray", 20, "finetune", [0.80, 0.81, 0.82], depth=1, validation=0.95)  # A: wins on validation
    made.add("xrays", "x-ray", 20, "finetune", [0.90, 0.91, 0.92], depth=2, validation=0.85)  # B: wins on test
    made.add("xrays", "x-ray", 20, "scratch", [0.60, 0.66, 0.63], validation=0.70)
    made.add("xrays", "x-ray", 20, "finetune", [0.95, 0.96, 0.97], depth="all", validation=0.50)  # not recommended
    write_report(made.run_dir)
    verdict = verdicts_of(made.run_dir)[("xrays", "all")]
    assert verdict["best"] == "finetune[depth=1]"  # A, although B and depth=all score higher on the test images
    assert verdict["alternative"] == "scratch"
    assert verdict["difference"] == pytest.approx(0.81 - 0.63)  # A's test accuracy against scratch's
    from tlbench.report.plots import confusion_matrices

    cells = cells_frame(RunsLog(made.run_dir).read(), made.run_dir)
    (axes,) = confusion_matrices(cells).axes
    assert "finetune[depth=1], seed 0" in axes.get_title()  # the cell best on validation, not on test


def test_a_row_is_judged_only_when_both_picks_converged_in_most_of_their_seeds(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    made.add("photos", "natural-photo", 20, "extractor", [0.90, 0.92, 0.94])
    made.add("photos", "natural-photo", 20, "scratch", [0.60, 0.62, 0.64], converged=False)  # best epoch = last
    made.add("leaves", "leaf-scan", 20, "extractor", [0.90, 0.92, 0.94])
    made.add("leaves", "leaf-scan", 20, "scratch", [0.60, 0.62, 0.64])
    write_report(made.run_dir)
    verdicts = verdicts_of(made.run_dir)
    photos, leaves = verdicts[("photos", "all")], verdicts[("leaves", "all")]
    assert (photos["verdict"], photos["converged"], photos["p_value"]) == ("not covered", False, None)
    assert photos["method"].startswith("not converged: scratch in 0 of its 3 seeds (best epoch / epochs run: 2/3, 2/3, 2/3)")
    assert "raise `epochs`" in photos["method"]
    assert (leaves["verdict"], leaves["converged"]) == ("agrees", True)
    assert "Holm-adjusted over 1 compared row" in leaves["method"]  # the unconverged row is not counted


def test_a_row_whose_own_ci_excludes_zero_is_not_significant_once_holm_adjusts_its_p_value(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    near = made.add("near", "natural-photo", 20, "extractor", [0.88, 0.90, 0.92])
    near_other = made.add("near", "natural-photo", 20, "finetune", [0.80, 0.82, 0.84], depth=1)
    made.add("xrays", "x-ray", 1500, "extractor", [0.94, 0.96, 0.98])
    made.add("xrays", "x-ray", 1500, "finetune", [0.78, 0.80, 0.82], depth="all")
    made.add("leaves", "leaf-scan", 20, "finetune", [0.80, 0.81, 0.80], depth=1)
    made.add("leaves", "leaf-scan", 20, "scratch", [0.79, 0.80, 0.81])
    raw = stats.paired_difference(near, near_other)
    assert raw.ci_low > 0 and raw.p_value < 0.05  # on its own, the extractor is ahead

    write_report(made.run_dir)
    verdict = verdicts_of(made.run_dir)[("near", "all")]
    assert verdict["p_value"] == pytest.approx(2 * raw.p_value)  # second smallest of three p-values
    assert verdict["p_value"] > 0.05 and verdict["verdict"] == "not significant"


def test_the_measured_shift_reads_the_domain_flags_a_label_it_contradicts_and_compares_no_other_backbone(
        toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    near, far = 0.5 * SHIFT_THRESHOLD.value, 2 * SHIFT_THRESHOLD.value
    mobilenet = SHIFT_THRESHOLD.backbone
    rows = (("photos", "natural-photo", mobilenet, [[near, None, 0.5 * near], [0.5 * near, None, near]], 96),
            ("scans", "natural-photo", mobilenet, [[far, far]], 96),  # labelled similar, measured different
            ("xrays", "x-ray", mobilenet, [[far, 2 * far]], 96),
            ("leaves", "leaf-scan", "timm/resnet18", [[near, near]], 96),  # no threshold for this network
            ("sketches", "sketch", mobilenet, [[near, near]], 64))  # nor for this image size
    for dataset, domain, backbone, profiles, size in rows:
        made.add(dataset, domain, 20, "extractor", [0.9, 0.92], backbone=backbone)
        made.add(dataset, domain, 20, "scratch", [0.5, 0.52], backbone=backbone)
        made.add_shift(dataset, domain, 20, backbone, profiles, image_size=size)

    write_report(made.run_dir)
    verdicts = {v["dataset"]: v for v in json.loads((made.run_dir / "verdicts.json").read_text())}
    measured = {d: (v["shift"], v["shift_threshold"], v["shift_reads"]) for d, v in verdicts.items()}
    assert measured == {"photos": (pytest.approx(0.75 * near), SHIFT_THRESHOLD.value, "similar"),  # mean over seeds
                        "scans": (pytest.approx(far), SHIFT_THRESHOLD.value, "different"),
                        "xrays": (pytest.approx(1.5 * far), SHIFT_THRESHOLD.value, "different"),
                        "leaves": (pytest.approx(near), None, "no threshold for this backbone"),
                        "sketches": (pytest.approx(near), None, "no threshold for this image size")}
    assert verdicts["scans"]["domain"] == "similar"  # the measurement never changes the scenario

    text = (made.run_dir / "report.md").read_text()
    shown = {r["dataset"]: r["measured shift"] for r in markdown_tables(text)[VERDICTS_HEADING]}
    assert shown["photos"] == f"{0.75 * near:.3f} (similar)" and shown["xrays"] == f"{1.5 * far:.3f} (different)"
    assert shown["scans"] == f"{far:.3f} (different) (!) label says similar"  # flagged
    assert shown["leaves"] == f"{near:.3f} (no threshold for this backbone)"  # shown, not compared, not flagged
    assert f"At or below {SHIFT_THRESHOLD.value:g} it reads *similar*" in text
    assert f"a threshold for {mobilenet} at {SHIFT_THRESHOLD.image_size} px" in text

    from tlbench.report.plots import shift_profiles

    fig = shift_profiles(report_inputs(made.run_dir)[0])
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {f"{mobilenet}, 96 px", "timm/resnet18, 96 px", f"{mobilenet}, 64 px"}
    photos, scans, xrays = panels[f"{mobilenet}, 96 px"].lines
    assert scans.get_label() == "scans"
    assert (photos.get_label(), list(photos.get_xdata())) == ("photos", [0, 1, 2])
    np.testing.assert_allclose(photos.get_ydata(), [0.75 * near, np.nan, 0.75 * near])  # per block over seeds
    assert [xrays.get_label(), *xrays.get_ydata()] == ["xrays", far, 2 * far]


def test_scores_are_ranked_against_accuracy(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    for backbone, accuracy, logme, leep in (("net-a", 0.90, -0.2, -0.05), ("net-b", 0.80, -0.4, -0.10), ("net-c", 0.70, -0.6, None)):
        made.add("photos", "natural-photo", 20, "extractor", [accuracy - 0.01, accuracy + 0.01], backbone=backbone)
        made.add("photos", "natural-photo", 20, "scratch", [0.5, 0.5], backbone=backbone)
        made.add_scores("photos", "natural-photo", 20, backbone, [
            {"logme": logme + d, "leep": None if leep is None else leep + d, "nce": None if leep is None else leep,
             "leep_gain": None if leep is None else -leep, "hscore": -logme} for d in (-0.01, 0.01)])

    write_report(made.run_dir)
    tables = markdown_tables((made.run_dir / "report.md").read_text())
    scores = {r["backbone"]: r for r in tables["Scores per backbone"]}
    assert (scores["net-a"]["LEEP"], scores["net-a"]["LEEP gain"], scores["net-c"]["LEEP gain"]) == ("-0.0500", "0.0500", "-")
    taus = {r["score"]: r for r in tables["Do the scores rank the backbones as their accuracy does?"]}
    assert (taus["LogME"]["backbones (n)"], taus["LogME"]["Kendall's tau"], taus["LogME"]["weighted tau"]) == ("3", "1.000", "1.000")
    assert (taus["H-score"]["Kendall's tau"], taus["H-score"]["weighted tau"]) == ("-1.000", "-1.000")
    assert (taus["LEEP"]["Kendall's tau"], taus["LEEP"]["weighted tau"], taus["LEEP"]["note"]) == ("NaN", "NaN", "missing for net-c")
    assert taus["LEEP gain"]["note"] == "missing for net-c"
    assert_png(made.run_dir / "transferability_vs_accuracy.png")


def test_a_combined_report_finds_each_records_predictions_in_its_own_run(toy_plugin, tmp_path, capsys):
    base = real_record(tmp_path)
    first, second = HandMade(base, tmp_path / "a"), HandMade(base, tmp_path / "b")
    first.add("photos", "natural-photo", 20, "extractor", [0.90, 0.92, 0.94])
    second.add("photos", "natural-photo", 20, "finetune", [0.80, 0.82, 0.84], depth=1)
    second.add("photos", "natural-photo", 20, "scratch", [0.60, 0.62, 0.64])
    for made, threshold in ((first, 10), (second, 10)):
        (made.run_dir / "env.json").write_text(json.dumps({"report": {"small_per_class": threshold}}))
    both = tmp_path / "both"
    sources = [str(first.run_dir), str(second.run_dir)]

    assert main(["report", *sources, "--out", str(both)]) == 0
    records = RunsLog(both).read()
    assert sorted({r["run_dir"] for r in records}) == [str(first.run_dir.resolve()), str(second.run_dir.resolve())]
    assert not (both / "predictions").exists()
    (verdict,) = verdicts_of(both).values()
    assert verdict["method"].startswith("paired seed-unit t over 3 seeds and 400 test images")
    assert (verdict["size"], verdict["verdict"]) == ("large", "disagrees")  # 20 per class > the sources' 10
    assert (verdict["best"], verdict["alternative"]) == ("extractor", "finetune[depth=1]")  # from a and from b
    assert json.loads((both / "combined.json").read_text())["report"] == {"small_per_class": 10, "set_by": "grids"}
    assert "set by the grids of the combined runs" in (both / "report.md").read_text()

    (second.run_dir / "env.json").write_text(json.dumps({"report": {"small_per_class": 50}}))
    capsys.readouterr()
    assert main(["report", *sources, "--out", str(both)]) == 2
    assert "different small_per_class thresholds" in capsys.readouterr().err
    assert main(["report", *sources, "--out", str(both), "--small-per-class", "30"]) == 0
    assert json.loads((both / "combined.json").read_text())["report"] == {"small_per_class": 30, "set_by": "flag"}
    (verdict,) = verdicts_of(both).values()
    assert (verdict["size"], verdict["verdict"], verdict["ci_low"] > 0) == ("small", "agrees", True)

    next((first.run_dir / "predictions").iterdir()).unlink()  # one cell's predictions lost
    assert main(["report", str(both)]) == 0  # the combined directory alone: its stored settings
    (verdict,) = verdicts_of(both).values()
    assert verdict["size"] == "small" and verdict["method"].startswith("paired t interval over 3 seeds (accuracies only")
    assert verdict["difference"] == pytest.approx(0.10) and verdict["verdict"] == "agrees"
    table = {r["strategy"]: r for r in markdown_tables((both / "report.md").read_text())[
        "photos (40 training images, 400 test images)"]}
    assert table["extractor"]["n"] == "3"  # the cell without predictions still counts for its accuracy
    assert "given as `--small-per-class 30`" in (both / "report.md").read_text()


# ---------------------------------------------------------------- the HTML page


class _Page(html.parser.HTMLParser):
    """Every tag with its attributes, the text of each header cell, all text."""

    def __init__(self):
        super().__init__()
        self.tags, self.headers, self.text, self._in_header = [], [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_header = tag == "th"
        if tag == "th":
            self.headers.append("")

    def handle_endtag(self, tag):
        self._in_header = self._in_header and tag != "th"

    def handle_data(self, data):
        self.text.append(data)
        if self._in_header:
            self.headers[-1] += data


def test_the_html_report_is_self_contained_escaped_and_says_95_percent_ci(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    made.add("<b>cats & dogs</b>", "natural-photo", 20, "extractor", [0.90, 0.92, 0.94])
    made.add("<b>cats & dogs</b>", "natural-photo", 20, "scratch", [0.60, 0.62, 0.64])
    write_report(made.run_dir)
    source = (made.run_dir / "report.html").read_text()
    page = _Page()
    page.feed(source)

    assert "<b>cats" not in source and "&lt;b&gt;cats &amp; dogs&lt;/b&gt;" in source
    assert not [t for t, _ in page.tags if t in ("link", "iframe", "object")]
    assert [a for t, a in page.tags if t == "script"] == [{}] and SORT_SCRIPT in source  # inline, and only to sort
    references = [a[k] for _, a in page.tags for k in ("src", "href") if k in a]
    assert references and all(r.startswith("data:image/png;base64,") or r == "#notes" for r in references)
    assert "http://" not in source and "https://" not in source and "url(" not in source
    images = [a for t, a in page.tags if t == "img"]
    assert len(images) == len([p for p in ALL_PLOTS if (made.run_dir / p).exists()]) >= 3
    assert [t for t, a in page.tags if a.get("id") == "verdicts"] == ["section"]
    ci_headers = [h for h in page.headers if "95% CI" in h]
    assert {"best: accuracy (95% CI)", "difference (95% CI)", "test accuracy: mean (95% CI)"} <= set(ci_headers)
    verdict_cells = [a.get("class") for t, a in page.tags if t == "td" and a.get("class", "").startswith("verdict-")]
    assert verdict_cells == ["verdict-agrees"]


# ---------------------------------------------------------------- runs, merges, failures


def test_a_report_failure_never_loses_results(toy_plugin, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    def broken(*args, **kwargs):
        raise RuntimeError("report bug")

    monkeypatch.setattr("tlbench.run.runner.write_report", broken)
    with caplog.at_level(logging.WARNING, logger="tlbench.run.runner"):
        frame = tlbench.run_grid({**TOY_GRID, "strategies": ["extractor"], "seeds": [0]}, out=out, device="cpu")
    assert list(frame.status) == ["ok", "ok"] and (out / "summary.md").exists()
    assert "could not write the report" in caplog.text and "report bug" in caplog.text


def test_an_empty_run_gets_a_short_report(tmp_path):
    (tmp_path / "runs.jsonl").write_text("")
    report, page, verdicts = write_report(tmp_path)
    assert "No cells recorded" in report.read_text() and "No cells recorded" in page.read_text()
    assert json.loads(verdicts.read_text()) == []


def test_old_records_without_families_or_predictions_still_report_and_unconverged_picks_are_not_judged(tmp_path):
    reference = Path(__file__).resolve().parents[1] / "results" / "reference" / "quickstart" / "runs.jsonl"
    (tmp_path / "runs.jsonl").write_bytes(reference.read_bytes())
    write_report(tmp_path)
    (verdict,) = verdicts_of(tmp_path).values()  # mnist-5k: 350 handwritten digits per class, one seed
    assert (verdict["size"], verdict["domain"], verdict["domain_label"]) == ("small", "different", "handwriting")
    assert (verdict["best"], verdict["alternative"]) == ("finetune[depth=2]", "scratch")
    # 3 epochs, the last the best: nothing says training had stopped improving, so no verdict
    assert (verdict["verdict"], verdict["converged"], verdict["difference"], verdict["p_value"]) == (
        "not covered", False, None, None)
    assert verdict["method"] == (
        "not converged: finetune[depth=2] in 0 of its 1 seeds (best epoch / epochs run: 3/3), scratch in 0 of its "
        "1 seeds (best epoch / epochs run: 3/3); raise `epochs` (a maximum) and set `patience`, so that training "
        "runs until it stops improving")


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
    assert {r["run_dir"] for r in merged if r["strategy"] == "scratch"} == {str((tmp_path / "b").resolve())}
    table = markdown_tables((tmp_path / "both" / "report.md").read_text())["stripes (24 training images, 24 test images)"]
    assert [r["strategy"] for r in table] == ["extractor", "scratch", "finetune[depth=1]"]
    assert (tmp_path / "both" / "summary.csv").read_text().count("\n") == 1 + 6

    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "need --out" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "a")]) == 2
    assert "is one of the runs being merged" in capsys.readouterr().err


def test_a_dataset_at_another_path_is_the_same_dataset(toy_plugin, tmp_path):
    made = HandMade(real_record(tmp_path), tmp_path / "run")
    made.add("photos", "natural-photo", 20, "extractor", [0.9, 0.9])
    lines = (made.run_dir / "runs.jsonl").read_text().splitlines()
    moved = json.loads(lines[1])
    moved["params"]["dataset"]["root"] = "/mnt/gpu-box/photos"  # two machines, one dataset
    (made.run_dir / "runs.jsonl").write_text(lines[0] + "\n" + json.dumps(moved) + "\n")
    tables = markdown_tables(write_report(made.run_dir)[0].read_text())
    assert tables["photos (40 training images, 400 test images)"][0]["status"] == "ok 2"


def test_merging_keeps_one_record_of_a_cell_run_on_two_machines(toy_plugin, tmp_path):
    base = real_record(tmp_path)
    for run, root, finished, accuracy in (("cpu", "/data/photos", "2026-01-02T00:00:00+00:00", 0.9),
                                          ("gpu", "/mnt/gpu-box/photos", "2026-01-01T00:00:00+00:00", 0.8)):
        made = HandMade(base, tmp_path / run)
        made.add("photos", "natural-photo", 20, "extractor", [accuracy])
        (line,) = (made.run_dir / "runs.jsonl").read_text().splitlines()
        moved = {**json.loads(line), "key": f"{run}-key", "finished": finished}
        moved["params"]["dataset"]["root"] = root
        (made.run_dir / "runs.jsonl").write_text(json.dumps(moved) + "\n")
    assert main(["report", str(tmp_path / "gpu"), str(tmp_path / "cpu"), "--out", str(tmp_path / "both")]) == 0
    (kept,) = RunsLog(tmp_path / "both").read()
    assert kept["key"] == "cpu-key" and kept["metrics"]["test_accuracy"] == 0.9  # the later-finished
    assert kept["run_dir"] == str((tmp_path / "cpu").resolve())


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
    assert marker["report"] == {"small_per_class": 1000, "set_by": "default"}
    assert len(RunsLog(both).read()) == 3


def test_report_out_honours_the_run_lock(toy_plugin, tmp_path, capsys):
    from tlbench.run.runner import run_lock

    tlbench.run_grid({"name": "l", "datasets": ["stripes"], "backbones": ["toy/centroid"],
                      "strategies": ["extractor"]}, out=tmp_path / "a", device="cpu")
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):  # e.g. `tlbench run --out out` is writing there
        capsys.readouterr()
        assert main(["report", str(tmp_path / "a"), "--out", str(out)]) == 2
        assert f"{out} is in use by pid" in capsys.readouterr().err
    assert not (out / "runs.jsonl").exists()


def test_labels_show_which_blocks_train_and_what_tells_entries_apart(toy_plugin, tmp_path):
    from tlbench.report.frame import cells_frame

    out = tmp_path / "run"  # not tmp_path itself: it holds the fake site (a run refuses a folder of other files)
    grid = {"name": "labels", "datasets": ["stripes"], "backbones": ["toy/centroid"],
            "strategies": [{"name": "finetune", "depth": 1}, {"name": "finetune", "blocks": [0]}, "extractor"]}
    tlbench.run_grid(grid, out=out, device="cpu")
    frame = cells_frame(latest_per_cell(RunsLog(out).read()))
    assert list(frame.strategy_label) == ["finetune[blocks=[0]]", "finetune[depth=1]", "extractor"]  # as they ran


# ---------------------------------------------------------------- a report read in a minute

SCENARIOS_HEADING = "The four scenarios: does the rule hold here?"


def report_inputs(run_dir: Path):
    """What ``write_report`` draws from: cells, series, verdicts and taus of ``run_dir``'s records."""
    from tlbench.report.document import SIMILAR_DOMAINS, SMALL_PER_CLASS
    from tlbench.report.frame import series_stats
    from tlbench.report.verdicts import scenario_verdicts, transferability_taus

    cells = cells_frame(latest_per_cell(RunsLog(run_dir).read()), run_dir)
    series = series_stats(cells)
    return cells, series, scenario_verdicts(series, SMALL_PER_CLASS, frozenset(SIMILAR_DOMAINS)), transferability_taus(series)


def test_the_first_screen_answers_the_rule_and_numbers_read_as_people_write_them(toy_plugin, tmp_path):
    from tlbench.report.plots import VERDICT_COLOURS, verdict_forest

    made = HandMade(real_record(tmp_path), tmp_path / "run")
    made.add("photos", "natural-photo", 20, "extractor", [0.90, 0.92, 0.94])
    made.add("photos", "natural-photo", 20, "finetune", [0.80, 0.82, 0.84], depth=1)
    made.add("xrays", "x-ray", 1500, "extractor", [0.94, 0.96, 0.98])
    made.add("xrays", "x-ray", 1500, "finetune", [0.78, 0.80, 0.82], depth="all")
    made.add("mystery", None, 1500, "extractor", [0.70])
    made.add("mystery", None, 1500, "scratch", [0.50])
    write_report(made.run_dir)
    verdicts = verdicts_of(made.run_dir)
    photo, xray = verdicts[("photos", "all")], verdicts[("xrays", "all")]
    text = (made.run_dir / "report.md").read_text()

    assert text.startswith("# tlbench report: run\n")  # no grid name stored (an older run): the folder's name
    assert [line for line in text.splitlines() if line.startswith("## ")][:2] == [f"## {SCENARIOS_HEADING}",
                                                                               f"## {VERDICTS_HEADING}"]
    grid = {r["target data"]: r for r in markdown_tables(text)[SCENARIOS_HEADING]}
    assert grid["small"]["similar domain"] == (
        "rule: feature extractor<br>1 row: 1 agrees, 0 disagrees, 0 not significant, 0 not covered<br>largest effect: "
        f"{photo['difference']:+.3f} [{photo['ci_low']:+.3f}, {photo['ci_high']:+.3f}] (photos, train_size=all, net-a)")
    assert grid["large"]["different domain"].endswith(  # the rule's pick is worse: a negative effect
        f"1 disagrees, 0 not significant, 0 not covered<br>largest effect: {-xray['difference']:+.3f} "
        f"[{-xray['ci_high']:+.3f}, {-xray['ci_low']:+.3f}] (xrays, train_size=all, net-a)")
    assert grid["large"]["similar domain"] == "rule: fine-tune (a part or the whole)<br>no row"
    assert "1 row outside the grid (size or domain unknown): not covered." in text
    how_to_read = text.split("## Verdicts")[0].split("(verdict_forest.png))\n\n")[1].strip().splitlines()
    assert len(how_to_read) == 5 and how_to_read[-1].endswith("[how this report reads the rule](#notes).")

    rows = {r["dataset"]: r for r in markdown_tables(text)[VERDICTS_HEADING]}
    assert list(rows["photos"])[:4] == ["dataset", "train_size", "backbone", "verdict"]  # the verdict right after the row
    assert rows["photos"]["images/class"] == "20" and rows["xrays"]["images/class"] == "1500"  # counts, not 20.0
    assert rows["photos"]["best: accuracy (95% CI)"].startswith("✓ extractor 0.920 [")  # accuracies to 3 digits
    page = (made.run_dir / "report.html").read_text()
    assert '<a href="#notes">how this report reads the rule</a>' in page and '<section id="notes">' in page
    assert '<table class="sortable">' in page and '<table class="scenarios">' in page

    (ax,) = verdict_forest(report_inputs(made.run_dir)[2]).axes
    effects = [(bars.lines[0].get_xdata()[0], bars.lines[0].get_color()) for bars in ax.containers]
    assert effects == [(pytest.approx(photo["difference"]), VERDICT_COLOURS["agrees"]),
                       (pytest.approx(-xray["difference"]), VERDICT_COLOURS["disagrees"])]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "photos, train_size=all, net-a", "xrays, train_size=all, net-a", "mystery, train_size=all, net-a"]
    assert [t.get_text().strip() for t in ax.texts] == ["no comparison"]  # the row not covered: named, not drawn
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.lines)  # the line at 0


def _text_boxes(fig) -> list[tuple[str, object]]:
    """The boxes (in pixels) of a drawn figure's titles, axis labels, visible tick labels and legends."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(f"legend {i}", legend.get_window_extent(renderer)) for i, legend in enumerate(fig.legends)]
    for ax in (a for a in fig.axes if a.get_visible()):
        (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
        texts = [ax.title, ax.xaxis.label, ax.yaxis.label]  # tick labels: only those drawn, of ticks inside the view
        texts += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]
        texts += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
        boxes += [(repr(t.get_text()), t.get_window_extent(renderer)) for t in texts if t.get_visible() and t.get_text()]
        if ax.get_legend() is not None:
            boxes.append(("axes legend", ax.get_legend().get_window_extent(renderer)))
    return boxes


def _overlap(a, b) -> float:
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def plot_runs(tmp_path: Path) -> list[Path]:
    """A real toy run (train sizes, depths, class names) and hand-made records with long names, accuracies near 1,
    costs within a decade and transferability scores."""
    out = tmp_path / "toy"
    tlbench.run_grid(TOY_GRID, out=out, device="cpu")
    made = HandMade(real_record(tmp_path), tmp_path / "made")
    for dataset in ("sign-language-digits", "caltech-101-silhouettes"):
        for backbone, accuracy, logme in (("timm/tf_efficientnet_lite0", 0.97, -0.2), ("timm/mobilenetv2_100", 0.9, -0.4),
                                          ("timm/resnet18", 0.8, -0.6)):
            made.add(dataset, "hand-gesture", 20, "extractor", [accuracy, accuracy + 0.02, accuracy - 0.02], backbone=backbone)
            made.add(dataset, "hand-gesture", 20, "finetune", [0.95, 0.99, 0.97], depth=1, backbone=backbone)
            made.add(dataset, "hand-gesture", 20, "scratch", [0.5, 0.52, 0.54], backbone=backbone)
            made.add_scores(dataset, "hand-gesture", 20, backbone, [{"logme": logme, "leep": -0.1, "nce": -0.1, "hscore": 1}])
            made.add_shift(dataset, "hand-gesture", 20, backbone, [[0.1, None, 0.5, 30.0], [0.2, None, 0.4, 20.0]])
    return [out, made.run_dir]


def test_side_by_side_cost_panels_keep_their_drawn_tick_labels_apart():
    """Costs whose neighbouring panels have a tick just outside each view: its label is not drawn, so not counted."""
    from tlbench.report.plots import accuracy_vs_cost

    measured = {"2": [(0.00494, 0.932), (0.02315, 0.735), (0.01377, 0.722), (0.00463, 0.66)],
                "all": [(0.01913, 0.549), (0.01726, 0.809), (0.03046, 0.791), (0.00802, 0.985)]}
    done = pd.DataFrame([{"dataset": "stripes", "train_size": size, "backbone": "toy/centroid", "strategy_label": label,
                          "family": family, "wall_seconds": cost, "accuracy": accuracy}
                         for size, points in measured.items()
                         for label, family, (cost, accuracy) in zip(
                             ("extractor", "finetune[depth=1]", "finetune[depth=2]", "scratch"),
                             ("extractor", "finetune-part", "finetune-part", "scratch"), points, strict=True)])
    boxes = _text_boxes(accuracy_vs_cost(done))
    assert sum(label.startswith("'0.0") for label, _ in boxes) >= 8  # the drawn tick labels of both panels
    assert [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if _overlap(box, other) > 1] == []


def test_no_two_texts_of_a_plot_overlap_and_legends_stay_off_the_data(toy_plugin, tmp_path):
    from tlbench.report.plots import PLOTS, figures

    drawn = set()
    for run_dir in plot_runs(tmp_path):
        for name, fig in figures(*report_inputs(run_dir)):
            drawn.add(name)
            boxes = _text_boxes(fig)
            overlapping = [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1:] if _overlap(box, other) > 1]
            assert overlapping == [], f"{run_dir.name}/{name}"
            frames = [ax.get_window_extent() for ax in fig.axes if ax.get_visible()]
            legends = [box for label, box in boxes if "legend" in label]
            assert not [1 for legend in legends for frame in frames if _overlap(legend, frame) > 1], f"{run_dir.name}/{name}"
    assert drawn == set(PLOTS)  # every figure maker was checked


def test_plots_share_family_colours_tick_real_values_name_classes_and_keep_accuracy_in_0_1(toy_plugin, tmp_path):
    from tlbench.report.plots import FAMILY_COLOURS, PLOTS, figures

    toy, made = plot_runs(tmp_path)
    plots = {name: fig for run_dir in (toy, made) for name, fig in figures(*report_inputs(run_dir))
             if run_dir == toy or name in ("accuracy_vs_cost.png", "transferability_vs_accuracy.png", "shift_profile.png")}
    for name, fig in plots.items():
        fig.canvas.draw()
        for ax in fig.axes:
            if "accuracy" in ax.get_ylabel():
                assert 0 <= ax.get_ylim()[0] < ax.get_ylim()[1] <= 1, name

    series = report_inputs(toy)[1]
    family = dict(zip(series.strategy_label, series.family, strict=True))
    (panel,) = plots["accuracy_vs_train_size.png"].axes
    lines = {c.get_label(): c.lines[0].get_color() for c in panel.containers}
    assert lines and lines == {label: FAMILY_COLOURS[family[label]] for label in lines}  # a family's colour, everywhere
    assert [t.get_text() for t in panel.get_xticklabels()] == ["2", "12"]  # the images per class the cells had

    (cost,) = [ax for ax in plots["accuracy_vs_cost.png"].axes if ax.get_visible()][:1]
    low, high = cost.get_xlim()
    assert len([t for t in cost.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]) >= 2

    (matrix,) = plots["confusion_matrix.png"].axes
    assert [t.get_text() for t in matrix.get_xticklabels()] == ["plain", "striped"]  # the record's class names
    assert [t.get_text() for t in matrix.get_yticklabels()] == ["plain", "striped"]
    assert "counts the test images" in PLOTS["confusion_matrix.png"]  # the caption says what the cells show

    shift = [ax for ax in plots["shift_profile.png"].axes if ax.get_visible()]
    assert len(shift) == 3 and {ax.get_yscale() for ax in shift} == {"log"}  # a panel per backbone; 0.1 to 30
    assert [line.get_label() for line in shift[0].lines] == ["sign-language-digits", "caltech-101-silhouettes"]
    assert all(float(tick).is_integer() for tick in shift[0].xaxis.get_majorticklocs())  # blocks are whole numbers


def test_a_confusion_matrix_of_records_without_class_names_numbers_them(toy_plugin, tmp_path):
    from tlbench.report.plots import confusion_matrices

    base = real_record(tmp_path)
    del base["metrics"]["dataset_info"]["class_names"]  # as in records written before they carried them
    made = HandMade(base, tmp_path / "run")
    made.add("photos", "natural-photo", 20, "extractor", [0.90, 0.92])
    (matrix,) = confusion_matrices(report_inputs(made.run_dir)[0]).axes
    assert [t.get_text() for t in matrix.get_xticklabels()] == ["0", "1"]


def test_the_report_is_titled_by_the_grid_name_stored_in_env_json(toy_plugin, tmp_path):
    out = tmp_path / "elsewhere"
    tlbench.run_grid({**TOY_GRID, "strategies": ["extractor"], "seeds": [0]}, out=out, device="cpu")
    assert json.loads((out / "env.json").read_text())["grid"] == TOY_GRID["name"]
    assert (out / "report.md").read_text().startswith(f"# tlbench report: {TOY_GRID['name']}\n")
    assert f"<title>tlbench report: {TOY_GRID['name']}</title>" in (out / "report.html").read_text()
