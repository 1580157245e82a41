"""Loading PyTorch and TensorFlow side by side in one process."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def prepare_tensorflow_import() -> None:
    """Call before the first ``import tensorflow``.

    torchvision 0.29 crashes the process (segmentation fault) when it is imported after
    TensorFlow 2.21; imported before, both work. A grid that mixes timm and Keras
    backbones needs both, so whoever is about to import TensorFlow loads torchvision first
    when it is installed.

    It also asks for TensorFlow's oneDNN kernels (``TF_ENABLE_ONEDNN_OPTS=1``, unless the user
    set it). TensorFlow turns them on by default only on CPUs with AVX-512 VNNI or newer; on
    others (AVX2: this project's 2-core machines) convolution gradients fall back to slower
    kernels (measured by ``benchmarks/test_benchmark_keras_onednn.py``, figures in
    benchmarks/README.md), and the same grid trains with different kernels on different CPUs.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    with contextlib.suppress(ImportError):
        import torchvision  # noqa: F401


@contextlib.contextmanager
def quiet_tensorflow_import() -> Iterator[None]:
    """Around the first ``import tensorflow``: the lines its C++ code prints before its logging
    starts (absl's notice, oneDNN, "Could not find cuda drivers") ignore ``TF_CPP_MIN_LOG_LEVEL``,
    so at level 1 or more (INFO filtered) the import's stderr goes to /dev/null."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    if "tensorflow" in sys.modules or not level.isdigit() or int(level) < 1:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
