#!/usr/bin/env bash
# The dashboard in a real browser: Debian's chromium, headless, driven over
# the DevTools protocol (tests/browser/cdp.py, on websocket-client from
# PyPI) against a real `stratus up`. Installs chromium when it is missing.
# Screenshots go to $UI_SCREENSHOTS (default target/ui-screenshots);
# `UI_SCREENSHOTS=docs/img scripts/ui-tests.sh` refreshes the README's.
# Usage: scripts/ui-tests.sh [STRATUS_BINARY]  (default: the workspace's build)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
venv=$PWD/bench/.venv-ui
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q 'websocket-client==1.8.0' 'pytest>=8,<9'
if [ -n "${1:-}" ]; then
    export STRATUS_BIN=$(realpath "$1")
fi
export UI_SCREENSHOTS=$(realpath -m "${UI_SCREENSHOTS:-${CARGO_TARGET_DIR:-target}/ui-screenshots}")
"$venv/bin/python" -m pytest -q tests/browser
