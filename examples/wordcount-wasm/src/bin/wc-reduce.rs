//! Word count reducer in Rust, for `wasm32-wasip1`: sums the mappers' counts
//! (one JSON object per line) and prints the total as one JSON object with
//! sorted keys — the same contract as `examples/wordcount/reducer.py`.
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

fn main() {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("read stdin");
        if line.trim().is_empty() {
            continue;
        }
        let counts: BTreeMap<String, u64> = serde_json::from_str(&line).expect("a JSON object of counts per line");
        for (w, n) in counts {
            *total.entry(w).or_default() += n;
        }
    }
    let out = serde_json::to_vec(&total).expect("json");
    std::io::stdout().lock().write_all(&out).expect("write stdout");
}
