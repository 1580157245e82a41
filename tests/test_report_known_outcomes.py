"""Real models on real photos, with outcomes known in advance: the verdicts a person would expect.

dogs-vs-cats at 10 training images per class is small and (labelled natural-photo) similar, so the
rule recommends the frozen extractor. Every side trains until it stops improving (`epochs` a
maximum, `patience` 5), so the rows are judged (timm/mobilenetv2_100, offline ImageNet weights,
64 px, seeds 0-4):

- a trained extractor against scratch: the extractor far ahead, agrees; the photos measure similar
  (seed 0's shift cell, at the threshold's image size, at or below the threshold), as the label says;
- an extractor whose learning rate is too small to learn anything (1e-6: its random head stays
  where it started, so it stops improving at once and counts as converged: convergence is
  necessary for a verdict, not sufficient for a fair one) against fine-tuning two blocks:
  fine-tuning far ahead, disagrees.
"""

from __future__ import annotations

import json

import pytest

import tlbench
from support import SHARED_DATA
from tlbench.report.verdicts import SHIFT_THRESHOLD

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "dogs-vs-cats").is_dir(), reason=f"{SHARED_DATA} is not available")
BASE = {
    "datasets": [{"name": "dogs-vs-cats", "plugin": "folder", "root": str(SHARED_DATA / "dogs-vs-cats"),
                  "domain": "natural-photo", "train_size": 10}],
    "backbones": ["timm/mobilenetv2_100"],
    "seeds": [0, 1, 2, 3, 4],
    "train": {"image_size": 64, "epochs": 3, "patience": 5},
}


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """One feature cache for both runs: the extractor's features are computed once."""
    return tmp_path_factory.mktemp("features")


def verdict_of(grid: dict, out, cache_dir) -> dict:
    tlbench.run_grid({**BASE, **grid}, out=out, device="cpu", cache_dir=cache_dir, executor="inline")
    return the_verdict(out)


def the_verdict(out) -> dict:
    (verdict,) = json.loads((out / "verdicts.json").read_text())
    assert (verdict["size"], verdict["domain"], verdict["recommended"]) == ("small", "similar", ["extractor"])
    assert verdict["method"].startswith("paired seed-unit t over 5 seeds and 451 test images")
    return verdict


def test_on_few_photos_a_trained_extractor_beats_scratch_and_the_photos_measure_similar(tmp_path, features):
    verdict = verdict_of({"name": "agrees", "strategies": [{"name": "extractor", "epochs": 40, "lr": 0.01},
                                                          {"name": "scratch", "epochs": 40}]}, tmp_path, features)
    assert (verdict["best"], verdict["alternative"], verdict["verdict"]) == ("extractor", "scratch", "agrees")
    assert verdict["converged"] is True
    assert verdict["difference"] > 0.15 and verdict["ci_low"] > 0 and verdict["p_value"] < 0.05
    assert verdict["shift"] is None

    # the same run directory, one more cell: seed 0's shift at the threshold's image size
    tlbench.run_grid({**BASE, "name": "agrees", "strategies": [{"name": "shift", "image_size": SHIFT_THRESHOLD.image_size}],
                      "seeds": [0]}, out=tmp_path, device="cpu", cache_dir=features, executor="inline")
    verdict = the_verdict(tmp_path)
    assert verdict["verdict"] == "agrees" and verdict["shift_threshold"] == SHIFT_THRESHOLD.value
    assert verdict["shift_reads"] == "similar" and verdict["shift"] <= SHIFT_THRESHOLD.value  # 0.37 measured
    assert "label says" not in (tmp_path / "report.md").read_text()  # label and measurement agree: no flag
    assert (tmp_path / "shift_profile.png").exists()


def test_an_extractor_that_cannot_learn_loses_to_fine_tuning_two_blocks(tmp_path, features):
    verdict = verdict_of({"name": "disagrees", "strategies": [
        {"name": "extractor", "lr": 0.000001, "epochs": 40},
        {"name": "finetune", "depth": 2, "epochs": 40, "lr": 0.01, "batch_size": 8}]}, tmp_path, features)
    assert (verdict["best"], verdict["alternative"], verdict["verdict"]) == ("finetune[depth=2]", "extractor", "disagrees")
    assert verdict["converged"] is True
    assert verdict["difference"] > 0.05 and verdict["ci_low"] > 0 and verdict["p_value"] < 0.05
