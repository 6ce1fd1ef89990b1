#!/usr/bin/env bash
# The headless browser the report-editor test drives (tests/failtax/test_browser.py):
# Debian's `chromium` and `chromium-driver` (or any Chrome/Chromium with a matching
# `chromedriver` on PATH). Installs them with apt-get when they are missing and apt-get
# can run (as root, or with passwordless sudo).
# Exit status: 0 when a browser and its driver are ready, 1 when not (with the reason on
# stderr); scripts/test.sh then lets the browser test skip instead of requiring it.
set -uo pipefail

browser() { command -v chromium || command -v chromium-browser || command -v google-chrome; }
ready() { command -v chromedriver >/dev/null 2>&1 && browser >/dev/null 2>&1; }

if ready; then
  echo "browser ready: $(chromedriver --version 2>/dev/null | head -n 1)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_browser: no apt-get here; install chromium and chromedriver to run the browser test" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    echo "setup_browser: not root and no passwordless sudo; run: apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
fi
$sudo apt-get update -qq || echo "setup_browser: apt-get update failed; trying the install anyway" >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null \
  || echo "setup_browser: apt-get could not install chromium chromium-driver" >&2
if ready; then
  echo "browser ready: $(chromedriver --version 2>/dev/null | head -n 1)"
  exit 0
fi
echo "setup_browser: no chromium + chromedriver after apt-get; the browser test will skip" >&2
exit 1
