/work/main/crates/cli/tests/guest/target/wasm32-wasip1/release/deps/stratus_testfn-57a34e5934ec9ee6.d: src/main.rs

/work/main/crates/cli/tests/guest/target/wasm32-wasip1/release/deps/stratus_testfn-57a34e5934ec9ee6.wasm: src/main.rs

src/main.rs:
