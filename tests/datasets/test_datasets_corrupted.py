"""Dataset ``corrupted-folder``: ImageNet-C-style corruptions of an image folder, deterministic,
ordered by severity, applied to every split, and part of every identity a cache or a resume
matches on (split fingerprints, the feature cache, cell ids and keys); bad options are refused
naming the option."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlbench.grid.loading import GridError, load_grid
from tlbench.plugin.registry import collect
from tlbench.plugin.specs import CellContext, PluginError, TrainSettings
from tlbench.testing import check_dataset, train_cell
from tlbench_datasets.corrupted import CORRUPTIONS, SEVERITIES, corrupt

SIZE = 32


@pytest.fixture
def textured_tree(tmp_path):
    """root/<split>/<class>/<i>.png: 4 textured photos-to-be per class and split (smooth
    gradients plus detail, so that blur, contrast and colour changes all show)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 40)
    for split in ("train", "valid", "test"):
        for k, name in enumerate(("cat", "dog")):
            for i in range(4):
                base = np.stack([np.add.outer(ramp, ramp * (c + 1) / 3) for c in range(3)], axis=-1) * 100 + 40 * k
                pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
                path = tmp_path / "data" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return tmp_path / "data"


def load(specs, root, **options):
    return specs["corrupted-folder"].load(root=str(root), **options)


def test_every_split_is_corrupted_deterministically_and_keeps_its_labels(specs, textured_tree):
    clean = specs["folder"].load(root=str(textured_tree))
    for corruption in CORRUPTIONS:
        data = check_dataset(specs["corrupted-folder"], size=SIZE, root=str(textured_tree), corruption=corruption, severity=3)
        again = load(specs, textured_tree, corruption=corruption, severity=3)
        assert data.info["corruption"] == corruption and data.info["severity"] == 3
        for name, split in data.splits.items():
            images = np.asarray(split.images(SIZE))
            assert not np.array_equal(images, np.asarray(clean.splits[name].images(SIZE))), (corruption, name)
            assert np.array_equal(images, np.asarray(again.splits[name].images(SIZE))), (corruption, name)
            assert split.labels.tolist() == clean.splits[name].labels.tolist()
            part = split.subset([2, 0])
            assert np.array_equal(np.asarray(part.images(SIZE)), images[[2, 0]])  # seeded by the image, not its place


def test_the_change_from_the_clean_image_rises_with_severity(specs, textured_tree):
    # 64 px: at 32, ImageNet-C's mildest blur (sigma 1 of 224 px) is a seventh of a pixel, invisible after rounding
    images = np.asarray(specs["folder"].load(root=str(textured_tree)).splits["train"].images(64))
    for corruption in CORRUPTIONS:
        change = [np.mean([np.abs(corrupt(image, corruption, s).astype(float) - image).mean() for image in images])
                  for s in SEVERITIES]
        assert change[0] > 0 and all(np.diff(change) > 0), (corruption, change)
    assert np.array_equal(corrupt(images[0], "invert", 5), 255 - images[0])
    gray = corrupt(images[0], "grayscale", 5).astype(int)
    assert np.abs(gray - gray[..., :1]).max() <= 1  # every channel the same luminance, up to rounding


def test_noise_is_drawn_per_image_and_scaled_by_severity(textured_tree, specs):
    first, second = np.asarray(specs["folder"].load(root=str(textured_tree)).splits["train"].images(SIZE))[:2]
    noise = [corrupt(first, "gaussian_noise", s).astype(float) - first for s in (1, 2)]
    unclipped = (first > 100) & (first < 155)
    assert np.corrcoef(noise[0][unclipped], noise[1][unclipped])[0, 1] > 0.9  # one pattern at every severity
    other = corrupt(second, "gaussian_noise", 1).astype(float) - second
    assert abs(np.corrcoef(noise[0].ravel(), other.ravel())[0, 1]) < 0.2  # another image, another draw


def test_fingerprints_tell_clean_corruption_and_severity_apart(specs, textured_tree):
    variants = [specs["folder"].load(root=str(textured_tree))]
    variants += [load(specs, textured_tree, corruption=c, severity=s) for c in CORRUPTIONS for s in (1, 2)]
    for name in ("train", "valid", "test"):
        prints = [data.splits[name].fingerprint for data in variants]
        subsets = [data.splits[name].subset([0, 1]).fingerprint for data in variants]
        assert len(set(prints + subsets)) == 2 * len(variants), name
    same = load(specs, textured_tree, corruption="contrast", severity=2)
    assert same.splits["train"].fingerprint == variants[6].splits["train"].fingerprint  # stable: a cache can hit


def test_the_feature_cache_never_serves_clean_features_for_corrupted_images(specs, textured_tree, tmp_path):
    from tlbench_timm import build

    backbone = build("mobilenetv2_100", weights="pretrained", image_size=SIZE)  # ImageNet weights, offline
    strategies = collect().strategies
    cache = tmp_path / "cache"

    def run(data, strategy):
        spec = strategies.get(strategy)
        ctx = CellContext(seed=0, device="cpu", cache_dir=str(cache))
        return train_cell(backbone, spec.plan({}, data), data, TrainSettings(epochs=1, batch_size=8), ctx, strategy=spec)

    clean = specs["folder"].load(root=str(textured_tree))
    inverted = load(specs, textured_tree, corruption="invert", severity=5)
    milder = load(specs, textured_tree, corruption="invert", severity=4)
    measured = {}
    for name, data in (("clean", clean), ("inverted", inverted), ("milder", milder)):
        measured[name] = run(data, "shift")
        assert measured[name]["cache"] == {"bn-statistics": "miss"}, name
        assert run(data, "extractor")["cache"] == {"features": "miss"}, name
    assert len({m["shift"] for m in measured.values()}) == 3
    again = run(load(specs, textured_tree, corruption="invert", severity=5), "shift")
    assert again["cache"] == {"bn-statistics": "hit"} and again["shift_profile"] == measured["inverted"]["shift_profile"]


def grid(root, **dataset) -> dict:
    return {"name": "ladder", "datasets": [{"name": "clean", "plugin": "folder", "root": str(root)},
                                           {"name": "c", "plugin": "corrupted-folder", "root": str(root), **dataset}],
            "backbones": ["timm/mobilenetv2_100"], "strategies": ["shift"]}


def test_cell_ids_and_keys_carry_the_corruption_and_severity(textured_tree):
    cells = load_grid(grid(textured_tree, corruption=["contrast", "invert"], severity=[1, 5]), collect()).cells()
    assert [c.dataset.label for c in cells] == ["clean", "c[corruption=contrast,severity=1]", "c[corruption=contrast,severity=5]",
                                               "c[corruption=invert,severity=1]", "c[corruption=invert,severity=5]"]
    assert len({c.cell_id for c in cells}) == len({c.key for c in cells}) == 5
    single = load_grid(grid(textured_tree, corruption="invert", severity=5), collect()).cells()[1]
    assert single.params["dataset"]["corruption"] == "invert" and single.params["dataset"]["severity"] == 5
    assert single.key == cells[4].key


@pytest.mark.parametrize(("options", "named"), [
    ({"corruption": "noise", "severity": 1}, "option corruption must be one of gaussian_noise, gaussian_blur"),
    ({"severity": 1}, "option corruption must be one of"),
    ({"corruption": "invert", "severity": 6}, "option severity must be an integer from 1 to 5, not 6"),
    ({"corruption": "invert", "severity": True}, "option severity must be an integer from 1 to 5, not True"),
    ({"corruption": "invert", "severity": "3"}, "option severity must be an integer from 1 to 5, not '3'"),
    ({"corruption": "invert"}, "option severity must be an integer from 1 to 5, not None"),
])
def test_bad_options_are_refused_naming_the_option(textured_tree, specs, options, named):
    with pytest.raises(GridError) as refused:
        load_grid(grid(textured_tree, **options), collect())
    assert f"datasets[1] (c): corrupted-folder: {named}" in str(refused.value)
    with pytest.raises(PluginError, match=named.split(",")[0]):
        load(specs, textured_tree, **options)
