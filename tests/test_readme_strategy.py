"""The README's example strategy, installed as its own plugin, trains exactly the blocks its
callbacks choose, epoch by epoch, on the README's example backbone."""

from __future__ import annotations

import json

import tlbench
from support import install_fake_distribution, readme_example

STRATEGY, BACKBONE = "### Writing a strategy", "### A plain `torch.nn.Module` as a backbone"


def test_the_example_strategy_trains_the_stem_then_also_the_last_block(fake_site, tmp_path):
    install_fake_distribution(fake_site, "tlbench-tinycnn", "tinycnn", "tlbench_tinycnn", readme_example(BACKBONE))
    install_fake_distribution(fake_site, "tlbench-ends", "ends", "tlbench_ends", readme_example(STRATEGY))
    out = tmp_path / "run"
    tlbench.run_grid({"name": "ends", "datasets": [{"name": "digits", "train_size": 20}], "backbones": ["mine/tiny-cnn"],
                      "strategies": ["ends", {"name": "ends", "wait": 2}], "train": {"epochs": 3, "batch_size": 16}},
                     out=out, device="cpu")
    records = {r["cell_id"].split("/")[3]: r for r in map(json.loads, (out / "runs.jsonl").read_text().splitlines())}
    stem, middle, top, head = 3 * 16 * 9 + 16 * 3, 16 * 32 * 9 + 32 * 3, 32 * 64 * 9 + 64 * 3, 64 * 10 + 10
    for label, phases in {"ends": ["stem", "ends", "ends"], "ends[wait=2]": ["stem", "stem", "ends"]}.items():
        record = records[label]
        assert record["status"] == "ok", record["error"]
        metrics = record["metrics"]
        assert (metrics["trainable_params"], metrics["non_trainable_params"]) == (head + stem + top, middle)
        assert [h["phase"] for h in metrics["history"]] == phases
        assert metrics["family"] == "finetune-part"
