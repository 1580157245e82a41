"""One grid, both engines, one process: Keras (TensorFlow) first, then timm (PyTorch), on the same data."""

from __future__ import annotations

import json
import textwrap

from support import tlbench


def test_keras_then_timm_in_one_process(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent("""
        name: two-engines
        datasets: [{name: digits, train_size: 10, split: [0.9, 0.05, 0.05]}]  # 90 valid, 90 test images
        backbones:
          - {name: keras/VGG16, weights: none}
          - {name: timm/resnet10t, weights: none}
        strategies: [extractor, {name: finetune, depth: 1}]
        train: {epochs: 1, batch_size: 16, image_size: 32}
    """))
    result = tlbench("run", "--grid", str(grid), "--out", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 4
    cells = {(r["backbone"], r["strategy"]): r for r in records}
    keras_cell, timm_cell = cells["keras/VGG16", "extractor"], cells["timm/resnet10t", "extractor"]
    for key in ("train_images", "valid_images", "test_images", "image_size", "epochs"):
        assert keras_cell["metrics"][key] == timm_cell["metrics"][key], key
    assert keras_cell["metrics"]["non_trainable_params"] == 14_714_688  # VGG16 frozen, exactly
    for frozen, partial in ((keras_cell, cells["keras/VGG16", "finetune"]),
                            (timm_cell, cells["timm/resnet10t", "finetune"])):
        assert partial["metrics"]["trainable_params"] > frozen["metrics"]["trainable_params"]
        assert partial["metrics"]["non_trainable_params"] < frozen["metrics"]["non_trainable_params"]
