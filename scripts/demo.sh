#!/usr/bin/env bash
# Builds Stratus and the examples, starts `stratus up` on a scratch data
# directory, deploys and invokes the examples, runs a map_reduce, and stops.
# Honours CARGO_TARGET_DIR; the scratch directory is removed however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip1 >/dev/null
cargo build --release --bin stratus
cargo build --release --target wasm32-wasip1 --manifest-path examples/hello-wasm/Cargo.toml
# The examples are outside the workspace: without CARGO_TARGET_DIR each has its own target/.
S=${CARGO_TARGET_DIR:-$PWD/target}/release/stratus
HELLO=${CARGO_TARGET_DIR:-examples/hello-wasm/target}/wasm32-wasip1/release/hello-wasm.wasm
pid=
data=$(mktemp -d)
# The admin token the first start creates goes here, not into ~/.config.
export STRATUS_CREDENTIALS="$data/credentials.toml"
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$data"' EXIT
STRATUS_LOG=warn "$S" up --listen 127.0.0.1:0 --data-dir "$data/state" >"$data/up.out" 2>"$data/up.err" &
pid=$!
# Up to 60 s for the first line; a server that dies says why.
for _ in $(seq 600); do
    grep -q "listening on" "$data/up.out" 2>/dev/null && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "stratus up exited before it listened:" >&2
        cat "$data/up.err" >&2
        exit 1
    fi
    sleep 0.1
done
if ! grep -q "listening on" "$data/up.out"; then
    echo "stratus up did not listen within 60 s:" >&2
    cat "$data/up.err" >&2
    exit 1
fi
export STRATUS_URL=$(sed -n 's/^stratus listening on //p' "$data/up.out")
echo "stratus up is serving $STRATUS_URL"
set -x
"$S" fn deploy hello --wasm "$HELLO"
"$S" invoke hello Ada; echo
"$S" fn deploy count --dir examples/python-hello --cmd "python3 main.py"
echo "one two three" | "$S" invoke count -; echo
"$S" fn deploy wc --dir examples/shell-wc --cmd ./run.sh
"$S" invoke wc "some words here"
"$S" fn deploy hash --dir examples/python-warm --cmd "python3 main.py" --warm
"$S" invoke hash abc; echo
id=$("$S" invoke hello --async Grace); "$S" wait "$id"; echo; "$S" logs "$id"
printf '"a"\n"b"\n"c"\n' > "$data/inputs.jsonl"
"$S" map hello --inputs "$data/inputs.jsonl"
"$S" object put corpus/readme.txt README.md
"$S" fn deploy wc-map --dir examples/wordcount --cmd "python3 mapper.py"
"$S" fn deploy wc-reduce --dir examples/wordcount --cmd "python3 reducer.py"
# Chunks this small need the project's quota lowered (64 KiB by default).
"$S" project set default --min-chunk-size 1KiB >/dev/null
"$S" map wc-map --objects corpus/ --chunk-size 1KiB --reduce wc-reduce | head -c 300; echo
"$S" fn list
"$S" workers
