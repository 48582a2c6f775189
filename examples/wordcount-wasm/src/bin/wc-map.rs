//! Word count mapper in Rust, for `wasm32-wasip1`: counts the
//! whitespace-separated words of its input (a chunk of text) and prints the
//! counts as one JSON object — the same contract as `examples/wordcount/mapper.py`.
use std::collections::HashMap;
use std::io::{Read, Write};

fn main() {
    let mut text = Vec::new();
    std::io::stdin().lock().read_to_end(&mut text).expect("read stdin");
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    for word in text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
        *counts.entry(word).or_default() += 1;
    }
    let counts: serde_json::Map<String, serde_json::Value> =
        counts.into_iter().map(|(w, n)| (String::from_utf8_lossy(w).into_owned(), n.into())).collect();
    let out = serde_json::to_vec(&counts).expect("json");
    std::io::stdout().lock().write_all(&out).expect("write stdout");
}
