"""Keras weights: local files are applied, wrong files and offline ImageNet fail clearly, fast."""

from __future__ import annotations

import numpy as np
import pytest

import tlbench_keras
from tlbench.plugin.specs import PluginError
from tlbench.testing import engine_for


def random_images(size: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), np.uint8)


@pytest.fixture(scope="module")
def saved_mobilenet(tmp_path_factory):
    """A random MobileNetV2 (with its ImageNet head) saved to .weights.h5 files."""
    from tlbench_keras._keras import keras

    folder = tmp_path_factory.mktemp("weights")
    full = keras.applications.MobileNetV2(weights=None, include_top=True)
    full.save_weights(folder / "full.weights.h5")
    features = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    features.save_weights(folder / "features.weights.h5")
    return folder, full, features


def test_features_file_is_applied(saved_mobilenet):
    folder, _, features = saved_mobilenet
    backbone = tlbench_keras.build("MobileNetV2", weights=str(folder / "features.weights.h5"), image_size=32)
    x = backbone.preprocess(random_images(32))
    loaded = backbone.build_network().model
    np.testing.assert_allclose(loaded(x, training=False), features(x, training=False), rtol=1e-5, atol=0)
    for got, want in zip(loaded.weights, features.weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    random_init = backbone.build_network(pretrained=False).model
    assert not np.array_equal(random_init.weights[0].numpy(), features.weights[0].numpy())
    assert backbone.weights.label(top=False) == f"file {folder / 'features.weights.h5'}"


def test_full_model_file_serves_backbone_and_imagenet_head(saved_mobilenet):
    folder, full, _ = saved_mobilenet
    backbone = tlbench_keras.build("MobileNetV2", weights=str(folder / "full.weights.h5"), image_size=32)
    network = backbone.build_network().model
    for got, want in zip(network.weights, full.weights[: len(network.weights)], strict=True):  # full adds the classifier
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    images = random_images(224)
    engine = engine_for("keras")
    probs = engine.imagenet_probabilities(engine.open_classifier(backbone, "cpu"), images)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs, full(backbone.preprocess(images), training=False), rtol=1e-5, atol=1e-7)


def test_features_file_has_no_imagenet_head(saved_mobilenet):
    folder, _, _ = saved_mobilenet
    backbone = tlbench_keras.build("MobileNetV2", weights=str(folder / "features.weights.h5"), image_size=32)
    with pytest.raises(PluginError, match=r"features\.weights\.h5 does not fit keras\.applications\.MobileNetV2"):
        engine_for("keras").open_classifier(backbone, "cpu")


def test_wrong_model_file_is_a_clear_error(saved_mobilenet):
    folder, _, _ = saved_mobilenet
    backbone = tlbench_keras.build("EfficientNetB0", weights=str(folder / "features.weights.h5"), image_size=32)
    with pytest.raises(PluginError, match=r"does not fit keras\.applications\.EfficientNetB0.*from that model"):
        backbone.build_network()


def test_missing_or_foreign_file_is_rejected_at_build(tmp_path):
    with pytest.raises(PluginError, match=r"does not exist.*'pretrained'.*'none'"):
        tlbench_keras.build("VGG16", weights=str(tmp_path / "nope.h5"))
    text = tmp_path / "weights.txt"
    text.write_text("not weights")
    with pytest.raises(PluginError, match=r"not a Keras weights file"):
        tlbench_keras.build("VGG16", weights=str(text))
    corrupt = tmp_path / "corrupt.weights.h5"
    corrupt.write_text("not hdf5")
    with pytest.raises(PluginError, match=r"corrupt\.weights\.h5 does not fit"):
        tlbench_keras.build("MobileNetV2", weights=str(corrupt), image_size=32).build_network()


def test_a_weights_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(PluginError, match=f"weights {tmp_path} is a folder; `weights` takes the path of the "
                                          r"weights file in it \(one of .h5"):
        tlbench_keras.build("VGG16", weights=str(tmp_path))


@pytest.mark.timeout(60)  # offline, nothing may wait for the network (the bound covers importing Keras)
def test_offline_imagenet_fails_fast_and_names_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setenv("TLBENCH_OFFLINE", "1")
    with pytest.raises(PluginError) as error:
        tlbench_keras.build("VGG16", weights="pretrained")
    message = str(error.value)
    assert str(tmp_path / "keras-home" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "weights: PATH" in message and "weights: none" in message


def test_cached_imagenet_file_is_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("TLBENCH_OFFLINE", "1")
    (tmp_path / "models").mkdir()
    cached = tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"")
    backbone = tlbench_keras.build("VGG16", weights="imagenet")
    assert backbone.weights.label(top=False) == f"imagenet ({cached})"
