#!/usr/bin/env bash
# The image pipeline, end to end, on this machine: a server with no local
# slots, two worker processes, the filter (Rust → wasm) and a trigger from
# uploads/ to processed/. Uploads 20 images, kills one worker with -9
# midway, and checks that every image comes out processed, exactly once.
#
#   examples/image-pipeline/run.sh [path/to/stratus]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
stratus=${1:-$here/../../target/release/stratus}
[ -x "$stratus" ] || { echo "build stratus first: cargo build --release -p stratus" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
export STRATUS_CREDENTIALS=$work/credentials.toml

echo "== building the filter"
cargo build -q --release --target wasm32-wasip1 --manifest-path "$here/filter/Cargo.toml"
wasm=$here/filter/target/wasm32-wasip1/release/image-filter.wasm

echo "== starting a server (no local slots) and two workers"
"$stratus" server --listen 127.0.0.1:0 --data-dir "$work/server" >"$work/server.out" 2>"$work/server.log" &
pids+=($!); disown
until grep -q "listening on" "$work/server.out" 2>/dev/null; do sleep 0.1; done
export STRATUS_URL=$(sed -n 's/^stratus listening on //p' "$work/server.out")
worker_token=$("$stratus" token create --role worker --name pipeline-workers)
for i in 1 2; do
    "$stratus" worker --slots 1 --token "$worker_token" --data-dir "$work/worker$i" >/dev/null 2>"$work/worker$i.log" &
    pids+=($!); disown
done

echo "== deploying the filter and the trigger"
"$stratus" fn deploy invert --wasm "$wasm"
"$stratus" trigger create pipeline --on stratus.object.created --subject-prefix photos/uploads/ \
    --invoke invert --input object --output photos/processed/

echo "== uploading 20 images"
for i in $(seq -w 1 20); do
    f=$work/img$i.ppm
    { printf 'P6\n64 64\n255\n'; head -c $((64 * 64 * 3)) /dev/urandom; } >"$f"
    "$stratus" object put "photos/uploads/img$i.ppm" "$f" >/dev/null
    if [ "$i" = 05 ]; then
        echo "== killing worker 1 with -9"
        kill -9 "${pids[1]}"
    fi
done

echo "== waiting for every image"
for _ in $(seq 600); do
    n=$("$stratus" object ls photos/processed/ | wc -l)
    [ "$n" -ge 20 ] && break
    sleep 0.1
done
"$stratus" object ls photos/processed/

echo "== checking each output is its upload's negative"
for i in $(seq -w 1 20); do
    "$stratus" object get "photos/processed/uploads/img$i.ppm" "$work/out$i.ppm"
    python3 - "$work/img$i.ppm" "$work/out$i.ppm" <<'PY'
import sys
a, b = (open(p, "rb").read() for p in sys.argv[1:])
h = len(b"P6\n64 64\n255\n")
assert a[:h] == b[:h] and all(x + y == 255 for x, y in zip(a[h:], b[h:])), sys.argv[2]
PY
done
runs=$("$stratus" invocations --fn invert --limit 100 --json | wc -l)
echo "20 images processed, $runs invocations of the filter (one per upload);"
echo "(an image the killed worker held ran again elsewhere once its lease ran out)"
[ "$runs" = 20 ]
