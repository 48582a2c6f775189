#!/usr/bin/env bash
# The Python SDK's tests against a real `stratus up`: installs sdk/python
# (with pytest, from PyPI) into a fresh venv in bench/.venv-sdk, builds it as
# a wheel too, and runs sdk/python/tests.
# Usage: scripts/sdk-tests.sh [STRATUS_BINARY]  (default: the workspace's build)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/bench/.venv-sdk
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q './sdk/python[test]'
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$venv/bin/pip" wheel -q --no-deps -w "$wheels" ./sdk/python
ls "$wheels"/stratus_sdk-*.whl >/dev/null
if [ -n "${1:-}" ]; then
    export STRATUS_BIN=$(realpath "$1")
fi
cd sdk/python
"$venv/bin/python" -m pytest -q tests
