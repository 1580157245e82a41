"""The README's plain ``nn.Module`` backbone, installed as its own plugin, runs every strategy
through the torch engine with exactly its chosen blocks training."""

from __future__ import annotations

import json

import tlbench
from support import install_fake_distribution, readme_example

HEADING = "### A plain `torch.nn.Module` as a backbone"


def test_the_example_is_short_and_runs_every_strategy(fake_site, tmp_path):
    source = readme_example(HEADING)
    assert len(source.strip().splitlines()) <= 30
    install_fake_distribution(fake_site, "tlbench-tinycnn", "tinycnn", "tlbench_tinycnn", source)
    strategies = ["classifier", "extractor", {"name": "finetune", "depth": 1}, {"name": "finetune", "blocks": [0, 2]},
                  {"name": "finetune", "blocks": ["middle"]}, "lp-ft", {"name": "gradual", "epochs": 3}, "scratch"]
    out = tmp_path / "run"
    tlbench.run_grid({"name": "tiny", "datasets": [{"name": "digits", "train_size": 20}], "backbones": ["mine/tiny-cnn"],
                      "strategies": strategies, "train": {"epochs": 2, "batch_size": 16}}, out=out, device="cpu")
    records = {r["cell_id"].split("/")[3]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    assert records["classifier"]["status"] == "not-applicable"  # digits have no ImageNet classes
    stem, middle, top = 3 * 16 * 9 + 16 * 3, 16 * 32 * 9 + 32 * 3, 32 * 64 * 9 + 64 * 3  # conv + bias, BN
    head = 64 * 10 + 10
    trained = {"extractor": 0, "finetune[depth=1]": top, "finetune[blocks=[0,2]]": stem + top,
               "finetune[blocks=[\"middle\"]]": middle, "lp-ft": stem + middle + top, "gradual": stem + middle + top,
               "scratch": stem + middle + top}
    for label, params in trained.items():
        metrics = records[label]["metrics"]
        assert records[label]["status"] == "ok", records[label]["error"]
        assert (metrics["trainable_params"], metrics["non_trainable_params"]) == (head + params,
                                                                                  stem + middle + top - params), label
        assert 0 <= metrics["test_accuracy"] <= 1 and metrics["weights"] == "none (random init)"
    assert records["finetune[blocks=[0,2]]"]["metrics"]["cache"] == {"activations": "off"}
    assert records["finetune[blocks=[\"middle\"]]"]["metrics"]["cache"] == {"activations": "miss"}
    assert [h["phase"] for h in records["gradual"]["metrics"]["history"]] == ["head", "top-1", "top-2"]
