"""The plugin's one door to the framework: Keras 3 on the TensorFlow backend.

Import this module only inside functions that build or run models, never from
``__init__``, so that ``tlbench list`` does not pay for TensorFlow.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tlbench.plugin.frameworks import prepare_tensorflow_import, quiet_tensorflow_import

prepare_tensorflow_import()

with quiet_tensorflow_import():
    import keras
    import tensorflow as tf

from tlbench.plugin.specs import PluginError

if keras.backend.backend() != "tensorflow":
    raise PluginError(
        f"tlbench_keras needs Keras on the TensorFlow backend, but Keras was already imported "
        f"with the {keras.backend.backend()!r} backend; unset KERAS_BACKEND or set it to "
        f"'tensorflow' before anything imports keras"
    )


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process (see ``prepare_tensorflow_import``)."""
    from tensorflow.python.util import _pywrap_util_port  # TensorFlow's own check; no public API has it

    return bool(_pywrap_util_port.IsMklEnabled())


__all__ = ["keras", "onednn_enabled", "tf"]
