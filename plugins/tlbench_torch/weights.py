"""Reading and fitting torch weight files, shared by every torch model source.

Files are read with safetensors or ``torch.load(weights_only=True)``; nothing else is ever
unpickled. torch is imported inside the functions, so sources can resolve files cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from tlbench.plugin.specs import PluginError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model")


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


def apply_state_dict(model, state_dict: Mapping[str, Any], origin: str,
                     translations: Iterable[Callable[[Mapping[str, Any]], Mapping[str, Any] | None]] = ()) -> None:
    """Load ``state_dict`` into ``model``: by name, else through each of ``translations``
    (e.g. timm's checkpoint filter), else in order.

    "In order" pairs the file's tensors with the model's in their stored order and accepts
    the pairing only if every pair has the same shape and the same role (weight, bias,
    running_mean, ...): that is how torchvision and EfficientNet-Lite files map onto timm.
    """
    target = model.state_dict()
    candidates = (state_dict, *(translate(state_dict) for translate in translations),
                  _paired_in_order(state_dict, target))
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


def _paired_in_order(
    state_dict: Mapping[str, Any], target: Mapping[str, Any]
) -> dict[str, Any] | None:
    def counted(keys):
        return [k for k in keys if not k.endswith("num_batches_tracked")]

    source_keys, target_keys = counted(state_dict), counted(target)
    if len(source_keys) != len(target_keys):
        return None
    paired = {}
    for source, name in zip(source_keys, target_keys, strict=True):
        same_role = source.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]
        if not same_role or state_dict[source].shape != target[name].shape:
            return None
        paired[name] = state_dict[source]
    return paired


# ---------------------------------------------------------------- where files live


def torch_hub_file(url: str) -> tuple[Path | None, str]:
    """The torch hub cache's copy of the checkpoint at ``url``, and the place searched."""
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    path = checkpoints / Path(url.split("?")[0]).name
    return (path if path.is_file() else None), f"torch hub cache: {path}"


def installed_file(distribution: str, filename: str) -> tuple[Path | None, str]:
    """``filename`` inside the installed pip ``distribution``, and the place searched."""
    place = f"pip package {distribution}: {filename}"
    try:
        found = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None, f"{place} (not installed: pip install {distribution})"
    for file in found.files or ():
        if file.name == filename:
            path = Path(str(found.locate_file(file)))  # a Path, typed as importlib's SimplePath protocol
            if path.is_file():
                return path, place
    return None, f"{place} (installed, but the file is missing)"
