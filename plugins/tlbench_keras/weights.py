"""Where a Keras backbone's weights come from: ImageNet (Keras cache or download), a file, none.

Resolving is stdlib-only and fast: offline, a missing ImageNet file is reported within a
few seconds (a bounded network probe), before TensorFlow is even imported.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from tlbench.data.downloads import download_blocker
from tlbench.plugin.specs import PluginError

from .catalog import KerasModel

WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"  # Keras downloads here
WEIGHT_SUFFIXES = (".h5", ".hdf5", ".keras")


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` (else ``~/.keras/models``),
    the home Keras itself fixed when it was imported (if it differs), and
    ``/tmp/.keras/models``, Keras's fallback when the home is not writable."""
    homes = [Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())]
    keras_config = sys.modules.get("keras.src.backend.config")
    if keras_config is not None:
        homes.append(Path(keras_config.keras_home()).expanduser())
    homes.append(Path("/tmp/.keras"))
    return list(dict.fromkeys(home / "models" for home in homes))


@dataclass(frozen=True)
class WeightsSource:
    """Resolved ``weights`` option: kind "imagenet", "file" or "none"."""

    kind: str
    spec: KerasModel
    image_size: int
    path: Path | None = None  # the user's file (kind "file")

    def cached_file(self, top: bool) -> Path | None:
        """The Keras-cache ImageNet file with (``top``) or without the ImageNet head, if present."""
        name = self.spec.weight_files(self.image_size)[0 if top else 1]
        return next((d / name for d in keras_cache_dirs() if (d / name).is_file()), None)

    def require_imagenet_file(self, top: bool) -> Path | None:
        """The cached file, or None when Keras may download it; offline: PluginError, fast."""
        found = self.cached_file(top)
        blocker = None if found else download_blocker(WEIGHTS_URL)
        if found or blocker is None:
            return found
        with_top, without_top = self.spec.weight_files(self.image_size)
        name = with_top if top else without_top
        places = " or ".join(str(d / name) for d in keras_cache_dirs())
        head_note = "" if top else f" (the ImageNet head, for classifier and predict, needs {with_top})"
        raise PluginError(
            f"keras/{self.spec.name}: ImageNet weights are not available offline: looked for "
            f"{places} and cannot download them from {WEIGHTS_URL} ({blocker}). Copy the file "
            f"{name} there{head_note} (Keras downloads to ~/.keras/models when online), or give a "
            f"local weights file in the grid: `weights: PATH/TO/{name}`; "
            f"`weights: none` gives random init"
        )

    def label(self, top: bool) -> str:
        """Where the weights (with the ImageNet head or without) come from, for results."""
        if self.kind == "file":
            return f"file {self.path}"
        if self.kind == "none":
            return "none (random init)"
        return f"imagenet ({self.cached_file(top) or 'Keras download'})"

    @property
    def identity(self) -> str:
        """What identifies the weights for cache keys (a file's name, size and mtime)."""
        if self.kind == "file":
            assert self.path is not None  # kind "file" comes with its path (resolve_weights)
            stat = self.path.stat()
            return f"file:{self.path}:{stat.st_size}:{int(stat.st_mtime)}"
        if self.kind == "imagenet":
            return f"imagenet:{self.spec.weight_files(self.image_size)[1]}"
        return "none"


def resolve_weights(spec: KerasModel, weights: str | None, image_size: int) -> WeightsSource:
    """Check the ``weights`` option now, so a cell fails before any work when they are missing."""
    option = "none" if weights is None else str(weights)
    if option.lower() == "none":
        return WeightsSource("none", spec, image_size)
    if option.lower() in ("pretrained", "imagenet"):
        source = WeightsSource("imagenet", spec, image_size)
        source.require_imagenet_file(top=False)
        return source
    path = Path(option).expanduser()
    if path.is_dir():
        raise PluginError(f"keras/{spec.name}: weights {path} is a folder; `weights` takes the path of "
                          f"the weights file in it (one of {', '.join(WEIGHT_SUFFIXES)})")
    if not path.is_file():
        raise PluginError(
            f"keras/{spec.name}: weights file {path} does not exist; `weights` takes "
            f"'pretrained' (= 'imagenet'), 'none' or the path of a .h5 / .weights.h5 file"
        )
    if not path.name.endswith(WEIGHT_SUFFIXES):
        raise PluginError(
            f"keras/{spec.name}: weights file {path} is not a Keras weights file "
            f"(expected one of {', '.join(WEIGHT_SUFFIXES)})"
        )
    return WeightsSource("file", spec, image_size, path)
