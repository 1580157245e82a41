"""benchmarks/shift_ladder.py on made-up records: Spearman per corruption, the breaking shift
interpolated on validation accuracy, the threshold as the median over corruptions (test
accuracy never read), the dataset ordering, and where the shift grew most."""

from __future__ import annotations

import json

import pytest

from support import load_script

ladder = load_script("benchmarks/shift_ladder.py")

ROOT = "/data/dogs-vs-cats"


def record(dataset: str, plugin: str, strategy: str, options: dict, size: int = 96, **metrics) -> dict:
    label = dataset if "corruption" not in options else f"{dataset}[corruption={options['corruption']},severity={options['severity']}]"
    return {"cell_id": f"{label}/timm/mobilenetv2_100/{strategy}/seed=0", "key": label + strategy, "dataset": dataset,
            "backbone": "timm/mobilenetv2_100", "strategy": strategy, "status": "ok", "seed": 0,
            "plugins": {"dataset": plugin, "strategy": strategy},
            "params": {"dataset": {"root": ROOT, "train_size": "all", **options}}, "metrics": {"image_size": size, **metrics}}


def rung(dataset: str, plugin: str, options: dict, profile: list[float], val_accuracy: float) -> list[dict]:
    shift = record(dataset, plugin, "shift", options, shift_profile=profile, shift=sum(profile) / len(profile))
    extractor = record(dataset, plugin, "extractor", options, best_epoch=1, test_accuracy=1.0,
                       history=[{"val_accuracy": val_accuracy, "val_loss": 0.1}])
    return [shift, extractor]


@pytest.fixture
def records() -> list[dict]:
    found = rung("dogs-vs-cats", "folder", {}, [1.0, 1.0], 0.90)
    for severity, (early, accuracy) in enumerate([(1.0, 0.9), (2.0, 0.88), (3.0, 0.80), (5.0, 0.70), (4.0, 0.60)], 1):
        found += rung("c", "corrupted-folder", {"corruption": "contrast", "severity": severity}, [early, 1.0], accuracy)
    for severity in range(1, 6):
        found += rung("c", "corrupted-folder", {"corruption": "invert", "severity": severity}, [1.0, 1.0 + severity], 0.89)
    for name, shift in (("sign-language-digits", 2.0), ("mnist-5k", 4.0), ("digits", 3.0)):
        found.append(record(name, "folder" if "sign" in name else name, "shift", {"root": f"/data/{name}"},
                            shift_profile=[shift], shift=shift))
    return found


def test_the_table_from_records(records):
    table = ladder.ladder_table(records)
    contrast, invert = table["corruptions"]["contrast"], table["corruptions"]["invert"]
    assert contrast["spearman_rho"] == pytest.approx(0.9) and contrast["meets_goal"]  # severities 4 and 5 swapped
    assert invert["spearman_rho"] == pytest.approx(1.0)
    # 0.88 at summary shift 1.5, 0.80 at 2.0: 0.85 is reached 3/8 of the way
    assert contrast["breaking_shift"] == pytest.approx(1.5 + 0.375 * 0.5)
    assert invert["breaking_shift"] is None
    threshold = table["threshold"]
    assert threshold["value"] == pytest.approx(contrast["breaking_shift"]) and threshold["never_breaking"] == ["invert"]
    assert threshold["median_over_ordered_corruptions"] == threshold["min_over_corruptions"] == threshold["value"]
    assert (threshold["backbone"], threshold["image_size"]) == ("timm/mobilenetv2_100", 96)
    ordering = ladder.dataset_ordering(ladder.shift_records(records))["by_image_size"]["96"]
    assert ordering["shift"] == {"dogs-vs-cats": 1.0, "sign-language-digits": 2.0, "mnist-5k": 4.0, "digits": 3.0}
    assert ordering["in_order"]
    assert [row["largest_increase_block"] for row in table["where"]["contrast"]] == [0, 0, 0, 0, 0]
    assert "## Where the shift is" in ladder.markdown(table) and json.dumps(table)


def test_the_threshold_ignores_test_accuracy_and_the_ordering_catches_a_swap(records):
    for r in records:
        if r["strategy"] == "extractor":
            r["metrics"]["test_accuracy"] = 0.0
    before = ladder.ladder_table(records)["threshold"]["value"]
    assert before == pytest.approx(1.6875)
    next(r for r in records if r["dataset"] == "digits")["metrics"]["shift"] = 1.5  # below sign language
    assert not ladder.dataset_ordering(ladder.shift_records(records))["by_image_size"]["96"]["in_order"]


def test_the_reports_threshold_is_the_one_the_committed_ladder_chose():
    import json
    from pathlib import Path

    from tlbench.report.verdicts import SHIFT_THRESHOLD

    ladder = json.loads((Path(__file__).resolve().parents[1] / "results/reference/shift-ladder/ladder.json").read_text())
    chosen = ladder["threshold"]
    assert (SHIFT_THRESHOLD.value, SHIFT_THRESHOLD.backbone, SHIFT_THRESHOLD.image_size) == (
        round(chosen["value"], 3), chosen["backbone"], chosen["image_size"])
