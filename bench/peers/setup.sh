#!/usr/bin/env bash
# Creates (or updates) the virtualenv the peer benchmarks run in and prints its
# python as the last line of stdout. A second run with an unchanged
# requirements.txt does nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${STRATUS_BENCH_VENV:-$repo/bench/.venv}"
stamp="$venv/.requirements.sha256"
# The Stratus Python SDK (the `stratus-sdk` peer) is installed from the
# checkout: its sources are part of the stamp.
sdk_files() { find "$repo/sdk/python/src" "$repo/sdk/python/pyproject.toml" -type f \( -name '*.py' -o -name '*.toml' \) | sort; }
want="$( (sha256sum "$here/requirements.txt"; sdk_files | xargs sha256sum) | sha256sum | cut -d' ' -f1)"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$here/requirements.txt" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "$repo/sdk/python" >&2
    # The same version number with other code: installed again.
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --force-reinstall --no-deps "$repo/sdk/python" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
