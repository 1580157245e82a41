"""Loading PyTorch and TensorFlow side by side in one process."""

from __future__ import annotations

import os
import sys


def prepare_tensorflow_import() -> None:
    """Call before the first ``import tensorflow``.

    torchvision 0.29 crashes the process (segmentation fault) when it is imported after
    TensorFlow 2.21; imported before, both work. A grid that mixes timm and Keras
    backbones needs both, so whoever is about to import TensorFlow loads torchvision first
    when it is installed.

    It also asks for TensorFlow's oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS=1``, unless the user
    set it). TensorFlow turns them on by default only on CPUs with AVX-512 VNNI or newer; on
    others (AVX2: this project's 2-core machines) convolution gradients fall back to slower
    kernels (a Keras fine-tuning cell 1.45x slower: ``benchmarks/test_benchmark_keras_onednn.py``),
    and the same grid trains with different kernels on different CPUs.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        pass
