"""predict_images and load_for_backbone on real image files, with a numpy stand-in backbone."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tlbench import predict
from tlbench.data.imagenet import imagenet_class_names
from tlbench.plugin.specs import PluginError
from tlbench.predict import load_for_backbone, predict_images


class MeanColourBackbone:
    """Probabilities from a fixed random projection of each image's mean colour."""

    image_size = 32
    crop_pct = 0.875
    interpolation = "bicubic"

    def __init__(self):
        self.seen: list[tuple[int, ...]] = []
        self.projection = np.random.default_rng(0).normal(size=(3, 1000))

    def imagenet_probabilities(self, images: np.ndarray) -> np.ndarray:
        assert images.dtype == np.uint8
        self.seen.append(images.shape)
        logits = images.mean(axis=(1, 2)) / 255 @ self.projection * 10
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[235] == "German shepherd"
    assert (names[0], names[999]) == ("tench", "toilet tissue")


def test_predict_images_ranks_classes_per_image_in_batches(tmp_path, monkeypatch):
    photo, red, blue = tmp_path / "photo.jpg", tmp_path / "red.png", tmp_path / "blue.png"
    Image.effect_mandelbrot((120, 90), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(photo)
    Image.new("RGB", (50, 40), (255, 0, 0)).save(red)
    Image.new("L", (30, 60), 200).save(blue)  # grayscale files are read as RGB
    monkeypatch.setattr(predict, "BATCH_SIZE", 2)
    backbone = MeanColourBackbone()
    results = predict_images([str(photo), red, blue], backbone, top=3)
    assert backbone.seen == [(2, 32, 32, 3), (1, 32, 32, 3)]
    assert [r["image"] for r in results] == [str(photo), str(red), str(blue)]
    for result in results:
        probabilities = [entry["probability"] for entry in result["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        for entry in result["top"]:
            assert entry["label"] == imagenet_class_names()[entry["index"]]
    assert results[0]["top"] != results[1]["top"]


def test_center_crop_keeps_the_middle_and_squash_keeps_everything(tmp_path):
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 50:150] = (0, 0, 255)  # blue middle square, black left and right quarters
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    cropped = load_for_backbone(str(path), 40, crop_pct=1.0, interpolation="nearest")
    assert cropped.shape == (40, 40, 3) and (cropped == (0, 0, 255)).all()
    squashed = load_for_backbone(str(path), 40, crop_pct=None, interpolation="nearest")
    assert (squashed[:, :5] == 0).all() and (squashed[:, 18:22] == (0, 0, 255)).all()
    larger_view = load_for_backbone(str(path), 40, crop_pct=0.5, interpolation="nearest")
    assert (larger_view == (0, 0, 255)).all()


def test_bad_inputs_name_the_problem(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(PluginError, match=r"broken\.jpg"):
        predict_images([broken], MeanColourBackbone())
    with pytest.raises(PluginError, match="unknown interpolation 'cubic'"):
        load_for_backbone(str(broken), 32, 0.9, "cubic")
    with pytest.raises(PluginError, match="top must be at least 1"):
        predict_images([broken], MeanColourBackbone(), top=0)


def test_predict_refuses_an_image_too_elongated_to_resize(tmp_path):
    sliver = tmp_path / "sliver.png"
    Image.new("L", (1, 60000)).save(sliver)  # a few hundred bytes; 256 x 15,360,000 once resized
    assert sliver.stat().st_size < 1000
    with pytest.raises(PluginError, match=r"sliver.png is 1 x 60000 pixels: too elongated .* at most 16384"):
        load_for_backbone(str(sliver), 224, crop_pct=0.875)
    assert load_for_backbone(str(sliver), 224, crop_pct=None).shape == (224, 224, 3)  # squashing is bounded
