//! Map throughput and server memory, and word count over object storage.

use crate::http::Conn;
use crate::node::{Node, TempDir, build_guest, proc_status_mib};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn wait_job(url: &str, id: &str) -> Result<Value> {
    let mut conn = Conn::open(url)?;
    loop {
        let r = conn.request("GET", &format!("/v1/jobs/{id}?wait=30"), b"")?;
        ensure!(r.status == 200, "GET job: {}", r.status);
        let v: Value = serde_json::from_slice(&r.body)?;
        if ["succeeded", "failed", "cancelled"].contains(&v["state"].as_str().unwrap_or("")) {
            return Ok(v);
        }
    }
}

/// Checks every result of job `id` with `check(index, output)`.
fn verify_results(url: &str, id: &str, n: u64, check: impl Fn(u64, &[u8]) -> bool) -> Result<()> {
    let mut conn = Conn::open(url)?;
    let mut from = 0u64;
    while from < n {
        let r = conn.request("GET", &format!("/v1/jobs/{id}/results?from={from}&limit=1000"), b"")?;
        let v: Value = serde_json::from_slice(&r.body)?;
        let results = v["results"].as_array().context("results")?;
        ensure!(!results.is_empty(), "results end early at {from}");
        for r in results {
            let i = r["index"].as_u64().context("index")?;
            let out = r["output"].as_str().unwrap_or_default();
            ensure!(r["status"] == "succeeded" && check(i, out.as_bytes()), "wrong result for task {i}: {r}");
        }
        from += results.len() as u64;
    }
    Ok(())
}

/// Maps `function` over `inputs` (one per line) on `node`, checks every
/// result, and returns the seconds from the job's creation to its end.
pub fn run_map_job(node: &Node, function: &str, inputs: &[String], check: impl Fn(u64, &[u8]) -> bool) -> Result<f64> {
    let dir = TempDir::new("inputs")?;
    let file = dir.0.join("inputs.txt");
    let mut text = String::with_capacity(inputs.len() * 8);
    for i in inputs {
        text.push_str(i);
        text.push('\n');
    }
    std::fs::write(&file, text)?;
    let n = inputs.len() as u64;
    let t = Instant::now();
    let id = node.cli(&["map", function, "--inputs", file.to_str().unwrap(), "--detach"])?.trim().to_string();
    let job = wait_job(&node.url, &id)?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(job["state"] == "succeeded" && job["succeeded"] == n, "job did not succeed: {job}");
    verify_results(&node.url, &id, n, check)?;
    Ok(secs)
}

/// Runs a map of `n` no-op wasm tasks, every result checked; returns
/// (seconds, tasks/s, server peak RSS MiB).
pub fn map_noop(bin: &Path, n: u64) -> Result<(f64, f64, f64)> {
    let node = Node::up(bin, &["--slots", "2"])?;
    let secs = map_noop_on(&node, n)?;
    let peak = proc_status_mib(node.child.id(), "VmHWM")?;
    Ok((secs, n as f64 / secs, peak))
}

/// Deploys the no-op guest on `node` and maps it over `n` inputs, every
/// result checked; returns the seconds of the job.
pub fn map_noop_on(node: &Node, n: u64) -> Result<f64> {
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    node.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
    let inputs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    run_map_job(node, "noop", &inputs, |i, out| out == i.to_string().as_bytes())
}

/// The same map with every task carrying a tag limited to `limit` slots
/// (the node has 2): returns (seconds, tasks/s, server peak RSS MiB).
pub fn map_noop_tagged(bin: &Path, n: u64, limit: u32) -> Result<(f64, f64, f64)> {
    let node = Node::up(bin, &["--slots", "2"])?;
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    node.cli(&["limit", "set", "bench", &limit.to_string()])?;
    node.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap(), "--tag", "bench"])?;
    let inputs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let secs = run_map_job(&node, "noop", &inputs, |i, out| out == i.to_string().as_bytes())?;
    let peak = proc_status_mib(node.child.id(), "VmHWM")?;
    Ok((secs, n as f64 / secs, peak))
}

pub fn run_map(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    let sizes: Vec<u64> = if quick { vec![10_000] } else { vec![100_000, 1_000_000] };
    let mut figures = Vec::new();
    let mut untagged = Vec::new();
    for &n in &sizes {
        let reps = if quick || n >= 1_000_000 { 1 } else { 3 };
        for rep in 0..reps {
            let (secs, rate, peak) = map_noop(bin, n)?;
            println!(
                "map of {n} no-op wasm tasks, run {}: {secs:.2} s, {rate:.0} tasks/s, server peak RSS {peak:.0} MiB",
                rep + 1
            );
            if n == sizes[0] {
                untagged.push(rate);
            }
            figures.push(json!({"tasks": n, "seconds": secs, "tasks_per_s": rate, "peak_rss_mib": peak}));
        }
    }
    // Concurrency limits: the first size again, every task tagged, with a
    // limit of as many slots as the node has (N >= slots), then 1000.
    let n = sizes[0];
    let base = untagged.iter().sum::<f64>() / untagged.len() as f64;
    let mut tagged = Vec::new();
    for limit in [2u32, 1000] {
        let (secs, rate, peak) = map_noop_tagged(bin, n, limit)?;
        let ratio = rate / base;
        println!(
            "map of {n} no-op wasm tasks tagged, limit {limit} (2 slots): {secs:.2} s, {rate:.0} tasks/s \
             ({ratio:.2}x untagged {base:.0}; {}), server peak RSS {peak:.0} MiB",
            if ratio >= 0.8 { "within 20%" } else { "NOT within 20%" }
        );
        tagged.push(json!({"tasks": n, "limit": limit, "seconds": secs, "tasks_per_s": rate,
                           "vs_untagged": ratio, "peak_rss_mib": peak}));
    }
    let doc = json!({"benchmark": "map", "runs": figures, "tagged": tagged});
    std::fs::write(out.join("map.json"), serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

/// Deterministic text of about `bytes` bytes.
pub fn gen_text(bytes: usize) -> Vec<u8> {
    let words = [
        "lorem",
        "ipsum",
        "dolor",
        "sit",
        "amet",
        "consectetur",
        "adipiscing",
        "elit",
        "sed",
        "do",
        "eiusmod",
        "tempor",
        "incididunt",
        "ut",
        "labore",
        "et",
        "dolore",
        "magna",
        "aliqua",
        "stratus",
    ];
    let mut out = Vec::with_capacity(bytes + 100);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while out.len() < bytes {
        let n = 4 + (x % 12) as usize;
        for k in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(words[(x % words.len() as u64) as usize].as_bytes());
            out.push(if k + 1 == n { b'\n' } else { b' ' });
        }
    }
    out
}

/// A text file of about `size_mib` MiB and its word counts, counted here.
pub struct Corpus {
    _dir: TempDir,
    pub file: std::path::PathBuf,
    pub expected: BTreeMap<String, u64>,
}

impl Corpus {
    pub fn new(size_mib: usize) -> Result<Corpus> {
        let dir = TempDir::new("wc")?;
        let file = dir.0.join("text.txt");
        let text = gen_text(size_mib << 20);
        std::fs::write(&file, &text)?;
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for w in text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
            *expected.entry(String::from_utf8_lossy(w).into_owned()).or_default() += 1;
        }
        Ok(Corpus { _dir: dir, file, expected })
    }
}

pub fn run_wordcount(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    let size_mib = if quick { 64 } else { 1024 };
    let chunk = if quick { "8MiB" } else { "64MiB" };
    let corpus = Corpus::new(size_mib)?;
    let node = Node::up(bin, &["--slots", "2"])?;
    let secs = wordcount_on(&node, &corpus, chunk)?;
    let mbs = (size_mib as f64 * 1.048576) / secs;
    println!(
        "word count map_reduce over {size_mib} MiB in object storage, chunks of {chunk}, Python mapper and reducer: {secs:.2} s, {mbs:.0} MB/s (result checked)"
    );
    std::fs::write(
        out.join("wordcount.json"),
        serde_json::to_string_pretty(
            &json!({"benchmark": "wordcount", "size_mib": size_mib, "chunk": chunk, "seconds": secs, "mb_per_s": mbs}),
        )?,
    )?;
    Ok(())
}

/// Uploads the corpus, deploys the Python word count and runs it as a
/// map_reduce over `chunk`-sized pieces; checks the answer; returns the
/// seconds of the job.
pub fn wordcount_on(node: &Node, corpus: &Corpus, chunk: &str) -> Result<f64> {
    node.cli(&["object", "put", "corpus/text.txt", corpus.file.to_str().unwrap()])?;
    node.cli(&[
        "fn",
        "deploy",
        "wc-map",
        "--dir",
        "examples/wordcount",
        "--cmd",
        "python3 mapper.py",
        "--memory",
        "2G",
    ])?;
    node.cli(&[
        "fn",
        "deploy",
        "wc-reduce",
        "--dir",
        "examples/wordcount",
        "--cmd",
        "python3 reducer.py",
        "--memory",
        "2G",
    ])?;
    let t = Instant::now();
    let result =
        node.cli(&["map", "wc-map", "--objects", "corpus/", "--chunk-size", chunk, "--reduce", "wc-reduce"])?;
    let secs = t.elapsed().as_secs_f64();
    let got: BTreeMap<String, u64> = serde_json::from_str(result.trim())?;
    ensure!(got == corpus.expected, "word count differs from the direct count");
    Ok(secs)
}
