"""The built-in strategies on both engines: exactly the chosen blocks train, in the phases the
strategy says; a third-party strategy's callback changes training with no engine change."""

from __future__ import annotations

import json

import pytest

import tlbench
from support import SHARED_DATA, install_fake_distribution
from tlbench.plugin.registry import collect

HEAD = 1280 * 2 + 2  # a linear head on MobileNetV2's 1280 pooled features, two classes
BACKBONES = [{"name": "timm/mobilenetv2_100", "weights": "none"}, {"name": "keras/MobileNetV2", "weights": "none"}]
DATA = {"name": "cats", "plugin": "folder", "root": str(SHARED_DATA / "dogs-vs-cats"), "train_size": 4}
TRAIN = {"epochs": 2, "batch_size": 4, "image_size": 32}

THIRD_PARTY = '''
import tlbench
from tlbench.plugin.specs import StrategySpec, Trainable, TrainPlan


def every_other_epoch(view):
    """The last block trains in even epochs only; the head in every epoch."""
    if view.epoch % 2 == 0:
        return Trainable(frozenset({len(view.blocks) - 1}), 0.1, "block")
    return Trainable(frozenset(), 0.1, "head-only")


@tlbench.hookimpl
def tlbench_register_strategies():
    yield StrategySpec("thirdparty/alternate", family="finetune", on_epoch_start=every_other_epoch,
                       plan=lambda options, data: TrainPlan(trainable_blocks=1, backbone_lr_mult=0.1))
'''


def records(out) -> dict[tuple[str, str], dict]:
    """(backbone, strategy label as in the cell id) -> record."""
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return {(r["backbone"], r["cell_id"][len(r["dataset"]) + len(r["backbone"]) + 2: r["cell_id"].rindex("/")]): r
            for r in lines}


@pytest.fixture(scope="module")
def strategy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("strategies")
    strategies = [{"name": "finetune", "blocks": "first:1"}, {"name": "finetune", "blocks": [1, 3]},
                  {"name": "finetune", "depth": 2}, "lp-ft", {"name": "gradual", "depth": 2, "epochs": 3}]
    tlbench.run_grid({"name": "strategies", "datasets": [DATA], "backbones": BACKBONES, "strategies": strategies,
                      "train": TRAIN}, out=out, device="cpu", executor="inline")
    return records(out)


@pytest.mark.parametrize("backbone", [b["name"] for b in BACKBONES])
@pytest.mark.parametrize("label, chosen", [
    ("finetune[blocks=first:1]", lambda n: {0}),
    ("finetune[blocks=[1,3]]", lambda n: {1, 3}),
    ("finetune[depth=2]", lambda n: {n - 2, n - 1}),
    ("lp-ft", lambda n: set(range(n))),
    ("gradual", lambda n: {n - 2, n - 1}),
])
def test_exactly_the_chosen_blocks_and_the_head_train(strategy_run, backbone, label, chosen):
    record = strategy_run[(backbone, label)]
    assert record["status"] == "ok", record["error"]
    blocks = collect().backbones.get(backbone).build(weights="none", image_size=32).blocks
    expected = chosen(len(blocks))
    metrics = record["metrics"]
    assert metrics["trained_blocks"] == sorted(expected)
    assert metrics["trainable_params"] == HEAD + sum(blocks[i].params for i in expected)
    assert metrics["non_trainable_params"] == sum(b.params for i, b in enumerate(blocks) if i not in expected)
    assert metrics["family"] == ("finetune-all" if len(expected) == len(blocks) else "finetune-part")


@pytest.mark.parametrize("backbone", [b["name"] for b in BACKBONES])
def test_the_phases_each_strategy_runs(strategy_run, backbone):
    phases = {label: [h["phase"] for h in strategy_run[(backbone, label)]["metrics"]["history"]]
              for label in ("finetune[depth=2]", "lp-ft", "gradual")}
    assert phases == {"finetune[depth=2]": ["all", "all"], "lp-ft": ["probe", "all"],
                      "gradual": ["head", "top-1", "top-2"]}
    cache = {label: strategy_run[(backbone, label)]["metrics"]["cache"]
             for label in ("finetune[blocks=first:1]", "finetune[blocks=[1,3]]")}
    assert cache == {"finetune[blocks=first:1]": {"activations": "off"},  # block 0 trains: nothing frozen first
                     "finetune[blocks=[1,3]]": {"activations": "miss"}}  # the stem runs once, cached


def test_a_third_party_callback_changes_training_on_both_engines(fake_site, tmp_path):
    install_fake_distribution(fake_site, "tlbench-alternate", "alternate", "tlbench_alternate", THIRD_PARTY)
    out = tmp_path / "run"
    tlbench.run_grid({"name": "callback", "datasets": [DATA], "backbones": BACKBONES,
                      "strategies": ["thirdparty/alternate", {"name": "finetune", "depth": 1}],
                      "train": {**TRAIN, "epochs": 3}}, out=out, device="cpu", executor="inline")
    found = records(out)
    for backbone in (b["name"] for b in BACKBONES):
        alternate = found[(backbone, "thirdparty/alternate")]["metrics"]
        plain = found[(backbone, "finetune")]["metrics"]
        assert [h["phase"] for h in alternate["history"]] == ["block", "head-only", "block"]
        # the first epoch trains the same blocks from the same seed; then the callback freezes the block
        assert alternate["history"][0]["val_loss"] == pytest.approx(plain["history"][0]["val_loss"], rel=1e-6)
        assert alternate["history"][1]["val_loss"] != pytest.approx(plain["history"][1]["val_loss"], rel=1e-6)
        assert alternate["trainable_params"] == plain["trainable_params"]
