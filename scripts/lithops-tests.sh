#!/usr/bin/env bash
# Lithops' own tests run on Stratus: takes tests/functions.py,
# test_call_async.py and test_map.py from the lithops 3.8.0 wheel on PyPI,
# changes `import lithops` to `import stratus.lithops as lithops` (as a
# Lithops program would), and runs them against a real `stratus up` with
# the SDK's venv (scripts/sdk-tests.sh makes it).
# Usage: scripts/lithops-tests.sh [STRATUS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$PWD/bench/.venv-sdk
[ -x "$venv/bin/python" ] || { echo "run scripts/sdk-tests.sh first (it makes $venv)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/pip" download -q --no-deps 'lithops==3.8.0' -d "$work/wheel"
"$venv/bin/python" - "$work" <<'PY'
import pathlib, re, sys, zipfile
work = pathlib.Path(sys.argv[1])
wheel = next((work / "wheel").glob("lithops-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in ("functions", "test_call_async", "test_map"):
        text = z.read(f"lithops/tests/{name}.py").decode()
        text = re.sub(r"^import lithops$", "import stratus.lithops as lithops", text, flags=re.M)
        text = text.replace("from lithops.tests.functions import", "from functions import")
        (work / f"{name}.py").write_text(text)
PY
cp sdk/python/lithops-suite/conftest.py "$work/"
export STRATUS_SDK_TESTS=$PWD/sdk/python/tests
if [ -n "${1:-}" ]; then
    export STRATUS_BIN=$(realpath "$1")
fi
cd "$work"
"$venv/bin/python" -m pytest -q -p no:cacheprovider test_call_async.py test_map.py
