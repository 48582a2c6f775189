/work/main/crates/cli/tests/guest/target/wasm32-wasip1/release/stratus-testfn.wasm: /work/main/crates/cli/tests/guest/src/main.rs
