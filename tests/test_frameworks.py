"""PyTorch (with torchvision) and TensorFlow in one process, whichever a grid touches first."""

import subprocess
import sys


def test_torchvision_after_tensorflow_does_not_crash():
    code = ("from tlbench.plugin.frameworks import prepare_tensorflow_import\n"
            "prepare_tensorflow_import()\n"
            "import tensorflow as tf\n"
            "import timm, torch\n"
            "print(timm.create_model('resnet10t').eval()(torch.zeros(1, 3, 32, 32)).shape[1], tf.constant(2).numpy())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1000", "2"]
