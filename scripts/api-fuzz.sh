#!/usr/bin/env bash
# Schemathesis against the real server's OpenAPI document, with a developer
# token in a scratch project (bounded examples):
#   1. positive and negative generated requests: no answer is a 5xx;
#   2. negative requests only: every one is refused (4xx), and the state
#      store is the same before and after (a dump of its rows);
#   3. prints the operations that answered no 2xx (a developer may not use
#      the admin and worker operations; others lack data to act on).
# Usage: scripts/api-fuzz.sh [STRATUS_BINARY]  (default target/release/stratus)
# Installs schemathesis into bench/.venv-fuzz from PyPI the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/stratus}")
venv=$PWD/bench/.venv-fuzz
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi
st="$venv/bin/schemathesis"

work=$(mktemp -d)
# Schemathesis keeps a cache in its working directory: run it in ours.
cd "$work"
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
export STRATUS_CREDENTIALS="$work/credentials.toml"
STRATUS_LOG=warn "$bin" up --listen 127.0.0.1:0 --slots 1 --data-dir "$work/data" >"$work/up.out" 2>"$work/up.err" &
pid=$!
for _ in $(seq 600); do grep -q "listening on" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^stratus listening on //p' "$work/up.out")
[ -n "$url" ] || { echo "stratus up did not start:" >&2; cat "$work/up.err" >&2; exit 1; }
export STRATUS_URL=$url
"$bin" project create scratch >/dev/null
token=$("$bin" token create --project scratch --role developer --name fuzz)
auth="Authorization: Bearer $token"
# The job event stream stays open while a job runs: left out.
common=(--max-examples 25 --exclude-path-regex '/events$' -w 1 --seed 1 --suppress-health-check=filter_too_much)

echo "-- every answer is below 500"
"$st" run "$url/v1/openapi.json" -H "$auth" "${common[@]}" --checks not_a_server_error \
    --report vcr --report-vcr-path "$work/positive.yaml"

dump() {
    python3 - "$work/data/state.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
for line in db.iterdump():
    # Rows the server writes on its own: the health probe and the lease.
    if not line.startswith(('INSERT INTO "health"', 'INSERT INTO "leader"')):
        print(line)
EOF
}
echo "-- invalid requests are refused and change nothing"
dump >"$work/before.sql"
# Not the stateful phase: its scenarios make their resources with valid
# requests first (a limit, say, before its invalid delete).
"$st" run "$url/v1/openapi.json" -H "$auth" "${common[@]}" --mode negative \
    --phases examples,coverage,fuzzing --checks not_a_server_error,negative_data_rejection
dump >"$work/after.sql"
if ! diff -q "$work/before.sql" "$work/after.sql" >/dev/null; then
    echo "error: refused requests changed the state store:" >&2
    diff "$work/before.sql" "$work/after.sql" | head -40 >&2
    exit 1
fi

echo "-- operations that answered no 2xx"
"$venv/bin/python" - "$work/positive.yaml" "$url" <<'EOF'
import json, re, sys, urllib.request, yaml
cassette, url = sys.argv[1], sys.argv[2]
doc = json.load(urllib.request.urlopen(url + "/v1/openapi.json"))
ops = []
for path, item in doc["paths"].items():
    last = list(re.finditer(r"\{[^}]+\}", path))
    pattern = re.escape(path)
    for m in last:
        pattern = pattern.replace(re.escape(m.group(0)), ".+" if m.group(0) == "{key}" else "[^/]+")
    for method in item:
        ops.append((method.upper(), path, re.compile(f"^{pattern}$")))
ok = set()
for i in yaml.safe_load(open(cassette))["http_interactions"]:
    req, status = i["request"], int(i["response"]["status"]["code"]) if i.get("response") else 0
    path = "/" + req["uri"].split("/", 3)[3].split("?")[0]
    for method, template, rx in ops:
        if method == req["method"] and rx.match(path) and 200 <= status < 300:
            ok.add((method, template))
missing = sorted({(m, t) for m, t, _ in ops} - ok)
for m, t in missing:
    print(f"  {m} {t}")
print(f"{len(ops) - len(missing)} of {len(ops)} operations answered a 2xx")
EOF
