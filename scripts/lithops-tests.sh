#!/usr/bin/env bash
# Lithops' own tests run on Stratus: takes tests/functions.py,
# test_call_async.py, test_map.py, test_map_reduce.py and test_storage.py
# from the lithops 3.8.0 wheel on PyPI, changes `import lithops` to `import
# stratus.lithops as lithops` and `from lithops.X` to `from
# stratus.lithops.X` (as a Lithops program would), and runs them against a
# real `stratus up` with the SDK's venv (scripts/sdk-tests.sh makes it).
# test_map_reduce.py reads its data sets from URLs on the internet, which
# this machine has not: they are generated here (five word lists, as its
# own are) and served by a local HTTP server instead.
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
    for name in ("functions", "test_call_async", "test_map", "test_map_reduce", "test_storage"):
        text = z.read(f"lithops/tests/{name}.py").decode()
        text = re.sub(r"^import lithops$", "import stratus.lithops as lithops", text, flags=re.M)
        text = text.replace("from lithops.tests.functions import", "from functions import")
        text = text.replace("from lithops.tests.conftest import", "from conftest import")
        text = re.sub(r"^from lithops\.", "from stratus.lithops.", text, flags=re.M)
        text = re.sub(r"^TEST_FILES_REPO = .*$", 'TEST_FILES_REPO = __import__("os").environ["LITHOPS_TEST_FILES"]',
                      text, flags=re.M)
        (work / f"{name}.py").write_text(text)
# The data sets: five lists of words, one a line, of 0.9 to 2.5 MB.
files = work / "files"
files.mkdir()
words = [w.strip() for w in "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()]
for n, name in enumerate(["vocab.enron.txt", "vocab.kos.txt", "vocab.nips.txt", "vocab.nytimes.txt", "vocab.pubmed.txt"]):
    lines = [f"{words[(i * 7 + n) % len(words)]}{i}" for i in range(100_000 + 60_000 * n)]
    (files / name).write_text("\n".join(lines) + "\n")
PY
cp sdk/python/lithops-suite/conftest.py "$work/"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$venv/bin/python" -m http.server "$port" --bind 127.0.0.1 --directory "$work/files" >/dev/null 2>&1 &
http_pid=$!
trap 'kill $http_pid 2>/dev/null; rm -rf "$work"' EXIT
export LITHOPS_TEST_FILES="http://127.0.0.1:$port/"
export STRATUS_SDK_TESTS=$PWD/sdk/python/tests
if [ -n "${1:-}" ]; then
    export STRATUS_BIN=$(realpath "$1")
fi
cd "$work"
"$venv/bin/python" -m pytest -q -p no:cacheprovider test_call_async.py test_map.py test_map_reduce.py test_storage.py
