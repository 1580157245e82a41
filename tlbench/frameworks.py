"""Loading PyTorch and TensorFlow side by side in one process."""

from __future__ import annotations

import sys


def prepare_tensorflow_import() -> None:
    """Call before the first ``import tensorflow``.

    torchvision 0.29 crashes the process (segmentation fault) when it is imported after
    TensorFlow 2.21; imported before, both work. A grid that mixes timm and Keras
    backbones needs both, so whoever is about to import TensorFlow loads torchvision first
    when it is installed.
    """
    if "tensorflow" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
