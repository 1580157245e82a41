"""The command line as a user drives it: predict, saved models, list, cache, help and version."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from support import SHARED_DATA, tlbench
from tlbench.data.cache import ArrayCache

DOG = SHARED_DATA / "dog.jpg"


def test_predict_json_puts_german_shepherd_first_and_prints_only_json():
    result = tlbench("predict", str(DOG), "--backbone", "timm/mobilenetv2_100", "--json", "--top", "3")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)  # stdout is nothing but the JSON
    assert answer["image"] == str(DOG)
    top = answer["top"]
    assert top[0]["label"] == "German shepherd" and top[0]["index"] == 235
    assert top[0]["probability"] > 0.9 and len(top) == 3
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]


def test_predict_text_output_and_bad_image(tmp_path):
    result = tlbench("predict", str(DOG), "--backbone", "timm/tf_efficientnet_lite0", "--top", "2")
    assert result.returncode == 0 and "German shepherd (235)" in result.stdout
    bad = tmp_path / "not-an-image.jpg"
    bad.write_text("hello")
    # the images are checked before a model loads: a wrong file costs no framework import
    code = ("import sys\nfrom tlbench.cli import main\n"
            f"code = main(['predict', {str(DOG)!r}, {str(bad)!r}, '--backbone', 'timm/mobilenetv2_100'])\n"
            "print('loaded:', [m for m in ('torch', 'timm', 'tensorflow') if m in sys.modules])\nsys.exit(code)\n")
    failed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert failed.returncode == 2 and f"cannot read image {bad}" in failed.stderr and "Traceback" not in failed.stderr
    assert "loaded: []" in failed.stdout


def test_saved_cell_models_predict_target_classes(tmp_path):
    # the real train and valid photos, but 4 test photos per class: the test split changes no weight,
    # and the saved models are what is under test here
    photos = tmp_path / "dogs-vs-cats"
    photos.mkdir()
    for split in ("train", "valid"):
        (photos / split).symlink_to(SHARED_DATA / "dogs-vs-cats" / split)
    for label in ("cat", "dog"):
        (photos / "test" / label).mkdir(parents=True)
        for photo in sorted((SHARED_DATA / "dogs-vs-cats" / "test" / label).iterdir())[:4]:
            (photos / "test" / label / photo.name).symlink_to(photo)
    grid = tmp_path / "grid.yaml"
    grid.write_text(textwrap.dedent(f"""
        name: saved
        datasets: [{{name: dogs-vs-cats, plugin: folder, root: {photos}, train_size: 20, image_size: 128,
                    imagenet_classes: {{cat: "281-285", dog: "151-268"}}}}]
        backbones: [timm/mobilenetv2_100]
        strategies: [extractor, classifier]
        train: {{epochs: 5, lr: 0.01}}
    """))
    out = tmp_path / "run"
    run = tlbench("run", "--grid", str(grid), "--out", str(out), "--save-models")
    assert run.returncode == 0, run.stderr
    for strategy in ("extractor", "classifier"):  # a trained head; the ImageNet head grouped into the classes
        cell = out / f"dogs-vs-cats/timm/mobilenetv2_100/{strategy}/seed=0"
        result = tlbench("predict", str(DOG), "--cell", str(cell), "--json")
        assert result.returncode == 0, result.stderr
        (answer,) = json.loads(result.stdout)
        assert [t["label"] for t in answer["top"]] == ["dog", "cat"], strategy
    missing = tlbench("predict", str(DOG), "--cell", str(out / "nope/seed=0"))
    assert missing.returncode == 2 and "no cell 'nope/seed=0'" in missing.stderr

    # a run directory someone sent: model.json may name anything, and nothing it names is imported
    cell = out / "dogs-vs-cats/timm/mobilenetv2_100/extractor/seed=0"
    (record,) = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()
                 if json.loads(line)["strategy"] == "extractor"]
    info_path = out / "models" / record["key"][:16] / "model.json"
    info = json.loads(info_path.read_text())
    for tampered in ({**info, "framework": "this"}, {**info, "predictor": "this:main", "framework": "this"},
                     {**info, "image_size": "64; import this"}, ["not", "a", "mapping"]):
        info_path.write_text(json.dumps(tampered))
        refused = tlbench("predict", str(DOG), "--cell", str(cell))
        assert refused.returncode == 2, refused.stderr
        assert "Traceback" not in refused.stderr and "Beautiful is better than ugly" not in refused.stdout + refused.stderr
        assert str(info_path) in refused.stderr or "'this'" in refused.stderr, refused.stderr
    info_path.write_text("{torn")
    torn = tlbench("predict", str(DOG), "--cell", str(cell))
    assert torn.returncode == 2 and "is not readable JSON" in torn.stderr and "--save-models" in torn.stderr


def test_list_blocks_help_version_and_cache(tmp_path):
    blocks = tlbench("list", "backbones", "--blocks", "timm/resnet18")
    assert blocks.returncode == 0 and "layer4" in blocks.stdout and "5 blocks" in blocks.stderr
    assert tlbench("--version").stdout.startswith("tlbench ")
    help_text = tlbench("run", "--help").stdout
    for flag in ("--grid", "--out", "--only", "--dry-run", "--rerun", "--device", "--cache-dir", "--save-models"):
        assert flag in help_text
    assert "timm/resnet18" in tlbench("list", "backbones", "timm/resnet1*").stdout
    cache = ArrayCache(tmp_path / "cache")
    cache.store({"n": 0}, np.zeros(10))
    assert "1 entries" in tlbench("cache", "info", "--cache-dir", str(cache.root)).stdout
    assert "removed 1 entries" in tlbench("cache", "clear", "--cache-dir", str(cache.root)).stdout
    assert list(cache.root.iterdir()) == []  # the cache folder itself stays


def test_recommend_help_lists_every_candidate_it_searches():
    from tlbench.recommend.search import STRATEGY_SETS

    help_text = " ".join(tlbench("recommend", "--help").stdout.split())  # argparse wraps lines anywhere
    for name, entries in STRATEGY_SETS.items():
        assert f"{name}: " in help_text
        for entry in entries:
            assert " ".join(f"{k}={v}" for k, v in entry.items() if k != "name") in help_text


def test_unknown_backbone_gets_a_suggestion_not_a_traceback():
    result = tlbench("predict", str(DOG), "--backbone", "timm/mobilenetv2_10")
    assert result.returncode == 2 and "did you mean" in result.stderr and "Traceback" not in result.stderr
