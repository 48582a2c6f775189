//! `stratus-bench compare`: the same workloads on Stratus and on its peers
//! (Lithops localhost v1 and v2, Ray, Prefect, plain Python), in one run on
//! this machine, with a table of figures and ratios.
//!
//! Stratus is driven here; each peer runs in `bench/peers/peers.py` inside
//! the virtualenv `bench/peers/setup.sh` makes, one (system, workload) per
//! process, and answers with one JSON line per repetition. Every result is
//! checked on both sides: a wrong answer is a failure, never a figure.

use crate::core_bench::invoke_latencies;
use crate::map_bench::{gen_text, run_map_job};
use crate::node::{Node, TempDir, TreeRss, build_guest};
use crate::stats::Spread;
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// How big each workload is: the full run and the `--quick` smoke run.
struct Sizes {
    reps: usize,
    calls: usize,
    warmup: usize,
    /// Round trips for the peers whose calls take a large fraction of a second.
    slow_calls: usize,
    /// Repetitions of the maps for Lithops v2 (a process per task: minutes per run).
    v2_reps: usize,
    maps: Vec<u64>,
    hash_tasks: u64,
    /// Calls of the Python SDK's no-op map (workload 5).
    sdk_tasks: u64,
    text_mib: usize,
    chunk_mib: usize,
    /// Task counts beyond which a peer is not run but projected from its
    /// smaller run (system, limit).
    limits: Vec<(&'static str, u64)>,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                reps: 1,
                calls: 200,
                warmup: 20,
                slow_calls: 3,
                v2_reps: 1,
                maps: vec![200],
                hash_tasks: 50,
                sdk_tasks: 500,
                text_mib: 8,
                chunk_mib: 2,
                limits: vec![("lithops-v2", 20), ("prefect", 200)],
            }
        } else {
            Sizes {
                reps: 3,
                calls: 1000,
                warmup: 100,
                slow_calls: 30,
                v2_reps: 1,
                maps: vec![1000, 100_000],
                hash_tasks: 1000,
                sdk_tasks: 10_000,
                text_mib: 1024,
                chunk_mib: 64,
                limits: vec![("lithops-v1", 10_000), ("lithops-v2", 1000), ("prefect", 10_000)],
            }
        }
    }

    fn limit(&self, system: &str) -> u64 {
        self.limits.iter().find(|(s, _)| *s == system).map(|(_, n)| *n).unwrap_or(u64::MAX)
    }
}

/// One figure: a workload on a system, over repetitions.
#[derive(Debug, Clone)]
struct Row {
    workload: String,
    system: String,
    /// The headline figure of each repetition (seconds, µs...).
    values: Vec<f64>,
    unit: &'static str,
    /// Secondary figures, already formatted (p99, tasks/s, memory...).
    detail: String,
    /// Set when the system did not run it or failed (the reason).
    missing: Option<String>,
    raw: Vec<Value>,
}

impl Row {
    fn median(&self) -> Option<f64> {
        (self.missing.is_none() && !self.values.is_empty()).then(|| Spread::of(&self.values).median)
    }
}

struct Peers {
    python: PathBuf,
    log: PathBuf,
}

impl Peers {
    fn setup(out: &Path) -> Result<Peers> {
        eprintln!("setting up the peers' virtualenv (bench/peers/setup.sh)...");
        let o = Command::new("bash").arg("bench/peers/setup.sh").stderr(Stdio::inherit()).output()?;
        ensure!(o.status.success(), "bench/peers/setup.sh failed");
        let python =
            String::from_utf8(o.stdout)?.lines().last().context("setup.sh printed no python path")?.to_string();
        Ok(Peers { python: python.into(), log: out.join("peers.log") })
    }

    /// Runs one (system, workload) in peers.py; one JSON object per repetition.
    fn run(&self, system: &str, workload: &str, args: &[String]) -> Result<Vec<Value>> {
        self.run_with(system, workload, args, &[])
    }

    /// As `run`, with more environment (the server the `stratus-sdk` peer uses).
    fn run_with(&self, system: &str, workload: &str, args: &[String], env: &[(&str, &str)]) -> Result<Vec<Value>> {
        let t = Instant::now();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let o = Command::new(&self.python)
            .arg("bench/peers/peers.py")
            .args(["--system", system, "--workload", workload])
            .args(args)
            .envs(env.iter().copied())
            .stderr(log)
            .output()?;
        ensure!(o.status.success(), "peers.py {system} {workload} crashed (see {})", self.log.display());
        eprintln!("   {system} {workload}: {:.1} s", t.elapsed().as_secs_f64());
        String::from_utf8(o.stdout)?
            .lines()
            .filter(|l| l.trim_start().starts_with('{'))
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    }

    fn versions(&self) -> Result<BTreeMap<String, String>> {
        let code = "import importlib.metadata as m, json, sys\n\
                    print(json.dumps({p: m.version(p) for p in ['lithops', 'ray', 'prefect']} | {'python': sys.version.split()[0]}))";
        let o = Command::new(&self.python).args(["-c", code]).output()?;
        ensure!(o.status.success(), "reading the peers' versions failed");
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}

/// Turns peers.py's lines into a row; `key` is the headline field.
fn peer_row(workload: &str, system: &str, lines: Vec<Value>, key: &str, unit: &'static str) -> Row {
    let failed = lines.iter().find(|l| l["ok"] != true);
    let values: Vec<f64> = lines.iter().filter(|l| l["ok"] == true).filter_map(|l| l[key].as_f64()).collect();
    let missing = match failed {
        Some(l) => Some(format!("failed: {}", l["error"].as_str().unwrap_or("wrong result"))),
        None if values.is_empty() => Some("no result".to_string()),
        None => None,
    };
    let mut detail = String::new();
    let spread = |k: &str| -> Option<Spread> {
        let v: Vec<f64> = lines.iter().filter_map(|l| l[k].as_f64()).collect();
        (!v.is_empty()).then(|| Spread::of(&v))
    };
    if let Some(s) = spread("p99_us") {
        let _ = write!(detail, "p99 {s} µs");
    }
    if let Some(s) = spread("tasks_per_s") {
        let _ = write!(detail, "{s} tasks/s");
    }
    if let Some(s) = spread("mb_per_s") {
        let _ = write!(detail, "{s} MB/s");
    }
    if let Some(s) = spread("peak_rss_mib") {
        let _ = write!(detail, "; peak RSS {s} MiB");
    }
    if let Some(s) = spread("startup_s") {
        let _ = write!(detail, "; start-up {:.1} s", s.median);
    }
    Row { workload: workload.into(), system: system.into(), values, unit, detail, missing, raw: lines }
}

fn not_run(workload: &str, system: &str, unit: &'static str, why: String) -> Row {
    Row {
        workload: workload.into(),
        system: system.into(),
        values: vec![],
        unit,
        detail: String::new(),
        missing: Some(why),
        raw: vec![],
    }
}

/// The bench's own copy of `bench/peers/work.py::hash_task`, to check results.
pub fn hash_task(i: u64) -> String {
    let mut h = Sha256::digest(i.to_string().as_bytes());
    let pad = [b'x'; 1024 - 32];
    for _ in 0..1000 {
        let mut s = Sha256::new();
        s.update(h);
        s.update(pad);
        h = s.finalize();
    }
    hex::encode(h)
}

/// Left out of `--quick` runs: Prefect's server takes ~25 s to start per
/// workload, and Lithops v2 starts a Python process per task.
const QUICK_SKIPS: [&str; 2] = ["prefect", "lithops-v2"];

/// The row of Stratus driven by its Python SDK (workload 5).
const SDK: &str = "stratus (python sdk)";

const WARM_ECHO: &str = "from stratus_warm import serve\nserve(lambda data, inv: data)\n";

pub struct Compare {
    pub stratus: PathBuf,
    pub quick: bool,
    pub out: PathBuf,
    /// Only these peers (all when empty).
    pub peers: Vec<String>,
    /// Only these workloads, by number (all when empty).
    pub only: Vec<u32>,
    pub write_docs: bool,
}

impl Compare {
    /// Whether to run workload `n`.
    fn runs(&self, n: u32) -> bool {
        self.only.is_empty() || self.only.contains(&n)
    }

    /// Whether to run `system`: the ones asked for with `--peers`, else
    /// all (a `--quick` run leaves out the two whose start-up or per-task
    /// process alone would take it past two minutes).
    fn wants(&self, system: &str) -> bool {
        if self.peers.is_empty() {
            !(self.quick && QUICK_SKIPS.contains(&system))
        } else {
            self.peers.iter().any(|p| p == system)
        }
    }

    pub fn run(&self) -> Result<()> {
        let started = Instant::now();
        let sz = Sizes::new(self.quick);
        let peers = Peers::setup(&self.out)?;
        let _ = std::fs::remove_file(&peers.log);
        let versions = peers.versions()?;
        let machine = machine();
        eprintln!("machine: {machine}; peers: {versions:?}");
        let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
        let wc_map = build_guest(Path::new("examples/wordcount-wasm"), "wc-map.wasm")?;
        let wc_reduce = wc_map.with_file_name("wc-reduce.wasm");
        let echo_dir = TempDir::new("echo")?;
        std::fs::copy("examples/python-warm/stratus_warm.py", echo_dir.0.join("stratus_warm.py"))?;
        std::fs::write(echo_dir.0.join("main.py"), WARM_ECHO)?;

        let deploy = |node: &Node| -> Result<()> {
            node.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
            let echo = echo_dir.0.to_str().unwrap();
            node.cli(&["fn", "deploy", "echo-py", "--dir", echo, "--cmd", "python3 main.py", "--warm"])?;
            node.cli(&[
                "fn",
                "deploy",
                "hash-py",
                "--dir",
                "examples/python-hash",
                "--cmd",
                "python3 main.py",
                "--warm",
            ])?;
            for (name, cmd) in [("wc-map-py", "python3 mapper.py"), ("wc-reduce-py", "python3 reducer.py")] {
                node.cli(&["fn", "deploy", name, "--dir", "examples/wordcount", "--cmd", cmd, "--memory", "2G"])?;
            }
            node.cli(&["fn", "deploy", "wc-map-wasm", "--wasm", wc_map.to_str().unwrap(), "--memory", "1G"])?;
            node.cli(&["fn", "deploy", "wc-reduce-wasm", "--wasm", wc_reduce.to_str().unwrap(), "--memory", "256M"])?;
            Ok(())
        };

        let mut rows = Vec::new();

        if self.runs(1) {
            // 1. Round trip of one no-op call.
            eprintln!("== round trip");
            let wl = "1. round trip of one no-op call";
            for (system, function) in [("stratus (wasm)", "noop"), ("stratus (warm python)", "echo-py")] {
                let mut lats = Vec::new();
                for _ in 0..sz.reps {
                    let node = Node::up(&self.stratus, &["--slots", "2"])?;
                    deploy(&node)?;
                    lats.push(invoke_latencies(&node.url, function, sz.warmup, sz.calls)?);
                }
                let p99 = Spread::of(&lats.iter().map(|l| l.p99_us).collect::<Vec<_>>());
                rows.push(Row {
                    workload: wl.into(),
                    system: system.into(),
                    values: lats.iter().map(|l| l.p50_us).collect(),
                    unit: "µs p50",
                    detail: format!("p99 {p99} µs; {} calls", sz.calls),
                    missing: None,
                    raw: lats.iter().map(|l| json!(l)).collect(),
                });
            }
            for system in ["ray", "prefect", "lithops-v1", "lithops-v2"] {
                if !self.wants(system) {
                    continue;
                }
                // Lithops and Prefect take ~0.4–1.2 s per call.
                let slow = system != "ray";
                let calls = if slow { sz.slow_calls } else { sz.calls };
                let warmup = if slow { 2 } else { sz.warmup };
                let args = strs(&[
                    "--calls",
                    &calls.to_string(),
                    "--warmup",
                    &warmup.to_string(),
                    "--reps",
                    &sz.reps.to_string(),
                ]);
                let mut row = peer_row(wl, system, peers.run(system, "roundtrip", &args)?, "p50_us", "µs p50");
                let _ = write!(row.detail, "; {calls} calls");
                rows.push(row);
            }
        }

        if self.runs(2) {
            // 2. Map of N no-op tasks (and 5. peak memory during it).
            for &n in &sz.maps {
                eprintln!("== no-op map of {n}");
                let wl = format!("2. map of {n} no-op tasks");
                for (system, function) in [("stratus (wasm)", "noop"), ("stratus (warm python)", "echo-py")] {
                    let mut raw = Vec::new();
                    for _ in 0..sz.reps {
                        let node = Node::up(&self.stratus, &["--slots", "2"])?;
                        deploy(&node)?;
                        let rss = TreeRss::start(node.child.id());
                        let inputs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
                        let secs = run_map_job(&node, function, &inputs, |i, out| out == i.to_string().as_bytes())?;
                        raw.push(json!({"wall_s": secs, "tasks_per_s": n as f64 / secs, "peak_rss_mib": rss.stop()}));
                    }
                    rows.push(peer_row(&wl, system, ok_all(raw), "wall_s", "s"));
                }
                for system in ["ray", "prefect", "lithops-v1", "lithops-v2"] {
                    if !self.wants(system) {
                        continue;
                    }
                    if n > sz.limit(system) {
                        rows.push(not_run(&wl, system, "s", projection(&rows, system, n)));
                        continue;
                    }
                    let reps = if system == "lithops-v2" { sz.v2_reps } else { sz.reps };
                    let args = strs(&["--n", &n.to_string(), "--reps", &reps.to_string(), "--timeout", "600"]);
                    rows.push(peer_row(&wl, system, peers.run(system, "noop-map", &args)?, "wall_s", "s"));
                }
            }
        }

        if self.runs(3) {
            // 3. Map of a small real Python function.
            eprintln!("== hash map");
            let n = sz.hash_tasks;
            let wl = format!("3. map of {n} Python tasks (1,000 SHA-256 rounds over 1 KiB)");
            let expected: Vec<String> = (0..n).map(hash_task).collect();
            let mut raw = Vec::new();
            for _ in 0..sz.reps {
                let node = Node::up(&self.stratus, &["--slots", "2"])?;
                deploy(&node)?;
                let inputs: Vec<String> = (0..n).map(|i| i.to_string()).collect();
                let secs = run_map_job(&node, "hash-py", &inputs, |i, out| out == expected[i as usize].as_bytes())?;
                raw.push(json!({"wall_s": secs, "tasks_per_s": n as f64 / secs}));
            }
            rows.push(peer_row(&wl, "stratus (warm python)", ok_all(raw), "wall_s", "s"));
            for system in ["ray", "prefect", "lithops-v1", "lithops-v2"] {
                if !self.wants(system) {
                    continue;
                }
                if system == "lithops-v2" {
                    let why = "not run: a fresh Python process per task makes it the slowest by far in workload 2";
                    rows.push(not_run(&wl, system, "s", why.into()));
                    continue;
                }
                let args = strs(&["--n", &n.to_string(), "--reps", &sz.reps.to_string(), "--timeout", "600"]);
                rows.push(peer_row(&wl, system, peers.run(system, "hash-map", &args)?, "wall_s", "s"));
            }
        }

        // 4. Word count map_reduce over text in object storage.
        eprintln!("== word count");
        let wl = format!("4. word count of {} MiB, {} MiB chunks", sz.text_mib, sz.chunk_mib);
        let dir = TempDir::new("wc")?;
        let file = dir.0.join("text.txt");
        let (total, distinct) = {
            let text = gen_text(sz.text_mib << 20);
            std::fs::write(&file, &text)?;
            let mut words: BTreeMap<&[u8], u64> = BTreeMap::new();
            for w in text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()) {
                *words.entry(w).or_default() += 1;
            }
            (words.values().sum::<u64>(), words.len() as u64)
        };
        let bytes = std::fs::metadata(&file)?.len() as f64;
        let chunk = format!("{}MiB", sz.chunk_mib);
        if self.runs(4) {
            for (system, map, reduce) in [
                ("stratus (python mapper)", "wc-map-py", "wc-reduce-py"),
                ("stratus (rust/wasm mapper)", "wc-map-wasm", "wc-reduce-wasm"),
            ] {
                let mut raw = Vec::new();
                for _ in 0..sz.reps {
                    let node = Node::up(&self.stratus, &["--slots", "2"])?;
                    deploy(&node)?;
                    node.cli(&["object", "put", "corpus/text.txt", file.to_str().unwrap()])?;
                    let t = Instant::now();
                    let out =
                        node.cli(&["map", map, "--objects", "corpus/", "--chunk-size", &chunk, "--reduce", reduce])?;
                    let secs = t.elapsed().as_secs_f64();
                    let got: BTreeMap<String, u64> = serde_json::from_str(out.trim()).context("word count result")?;
                    let ok = got.values().sum::<u64>() == total && got.len() as u64 == distinct;
                    raw.push(json!({"wall_s": secs, "mb_per_s": bytes / 1e6 / secs, "ok": ok,
                                "error": (!ok).then_some("word counts differ from the direct count")}));
                }
                rows.push(peer_row(&wl, system, raw, "wall_s", "s"));
            }
        }

        let expect = json!({"total": total, "distinct": distinct}).to_string();
        let wc_args = |reps: usize| {
            strs(&[
                "--data",
                file.to_str().unwrap(),
                "--chunk-bytes",
                &(sz.chunk_mib << 20).to_string(),
                "--expect",
                &expect,
                "--reps",
                &reps.to_string(),
                "--timeout",
                "900",
            ])
        };
        if self.runs(4) {
            for system in ["python", "lithops-v1", "lithops-v2"] {
                if system != "python" && !self.wants(system) {
                    continue;
                }
                let mut row = peer_row(&wl, system, peers.run(system, "wordcount", &wc_args(sz.reps))?, "wall_s", "s");
                if system == "python" {
                    row.system = "python floor (same code, multiprocessing over the cores)".into();
                }
                rows.push(row);
            }
        }

        if self.runs(5) {
            // 5. The Python SDK: the Lithops program of the peers' workloads 2
            // and 4 (bench/peers/peers.py), with `import stratus.lithops as
            // lithops`, against a node of two slots.
            eprintln!("== Python SDK");
            let node = Node::up(&self.stratus, &["--slots", "2"])?;
            let token = crate::http::token_for(&node.url).unwrap_or_default();
            let env = [("STRATUS_URL", node.url.as_str()), ("STRATUS_TOKEN", token.as_str())];
            let n = sz.sdk_tasks;
            let wl = format!("5. Python SDK: map of {n} no-op Python functions (the same Lithops program)");
            let args = strs(&["--n", &n.to_string(), "--reps", &sz.reps.to_string(), "--timeout", "600"]);
            rows.push(peer_row(&wl, SDK, peers.run_with("stratus-sdk", "noop-map", &args, &env)?, "wall_s", "s"));
            for system in ["ray", "lithops-v1"] {
                if !self.wants(system) {
                    continue;
                }
                // Lithops v1 takes minutes per 10,000 calls: one repetition.
                let reps = if system == "ray" { sz.reps } else { 1 };
                let args = strs(&["--n", &n.to_string(), "--reps", &reps.to_string(), "--timeout", "900"]);
                rows.push(peer_row(&wl, system, peers.run(system, "noop-map", &args)?, "wall_s", "s"));
            }
            let wl = format!(
                "5. Python SDK: word count map_reduce of {} MiB, {} MiB chunks (the same Lithops program)",
                sz.text_mib, sz.chunk_mib
            );
            rows.push(peer_row(
                &wl,
                SDK,
                peers.run_with("stratus-sdk", "wordcount", &wc_args(sz.reps), &env)?,
                "wall_s",
                "s",
            ));
            for system in ["ray", "lithops-v1"] {
                if self.wants(system) {
                    let reps = if system == "ray" { sz.reps } else { 1 };
                    rows.push(peer_row(&wl, system, peers.run(system, "wordcount", &wc_args(reps))?, "wall_s", "s"));
                }
            }
            drop(node);
        }

        drop(dir);

        let targets = targets(&rows);
        let took = started.elapsed().as_secs_f64();
        let md = markdown(&rows, &targets, &machine, &versions, self.quick, took);
        println!("{md}");
        let doc = json!({
            "benchmark": "compare",
            "date": today(),
            "quick": self.quick,
            "machine": machine,
            "versions": versions,
            "seconds": took,
            "rows": rows.iter().map(|r| json!({
                "workload": r.workload, "system": r.system, "unit": r.unit,
                "median": r.median(), "spread": (!r.values.is_empty()).then(|| Spread::of(&r.values)),
                "missing": r.missing, "runs": r.raw,
            })).collect::<Vec<_>>(),
            "targets": targets.iter().map(|(t, ok, how)| json!({"target": t, "met": ok, "measured": how})).collect::<Vec<_>>(),
        });
        let name = if self.quick { "compare-quick" } else { "compare" };
        std::fs::write(self.out.join(format!("{name}.json")), serde_json::to_string_pretty(&doc)?)?;
        std::fs::write(self.out.join(format!("{name}.md")), &md)?;
        if self.write_docs {
            splice_docs(Path::new("docs/benchmarks.md"), &md)?;
            eprintln!("wrote the table into docs/benchmarks.md");
        }
        let failed: Vec<&Row> =
            rows.iter().filter(|r| r.missing.as_deref().is_some_and(|m| m.starts_with("failed"))).collect();
        if failed.iter().any(|r| r.system.starts_with("stratus")) {
            bail!("Stratus produced a wrong or no result: {:?}", failed.iter().map(|r| &r.system).collect::<Vec<_>>());
        }
        Ok(())
    }
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn ok_all(mut raw: Vec<Value>) -> Vec<Value> {
    for r in raw.iter_mut() {
        r["ok"] = json!(true);
    }
    raw
}

/// A peer whose smaller run projects past 10 minutes is not run at N.
fn projection(rows: &[Row], system: &str, n: u64) -> String {
    let rate = rows
        .iter()
        .filter(|r| r.system == system && r.workload.starts_with("2."))
        .map(|r| r.raw.iter().filter_map(|l| l["tasks_per_s"].as_f64()).collect::<Vec<_>>())
        .find(|rates| !rates.is_empty())
        .map(|rates| Spread::of(&rates).median);
    match rate {
        Some(rate) => format!(
            "not run: at its measured {rate:.0} tasks/s, {n} tasks would take ~{:.0} s (limit 600 s)",
            n as f64 / rate
        ),
        None => format!("not run at {n} tasks"),
    }
}

fn find<'a>(rows: &'a [Row], workload: &str, system: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.workload.starts_with(workload) && r.system.starts_with(system))
}

/// The targets, each with what was measured.
fn targets(rows: &[Row]) -> Vec<(String, bool, String)> {
    let mut t = Vec::new();
    let largest_map = rows.iter().rev().find(|r| r.workload.starts_with("2.")).map(|r| r.workload.clone());
    if let Some(wl) = largest_map {
        let tps = |system: &str| {
            find(rows, &wl, system)
                .filter(|r| r.missing.is_none())
                .map(|r| Spread::of(&r.raw.iter().filter_map(|l| l["tasks_per_s"].as_f64()).collect::<Vec<_>>()).median)
        };
        if let (Some(s), Some(r)) = (tps("stratus (wasm)"), tps("ray")) {
            t.push((
                format!("no-op map throughput ≥ 10× Ray's ({wl})"),
                s >= 10.0 * r,
                format!("{s:.0} vs {r:.0} tasks/s = {:.1}×", s / r),
            ));
        }
    }
    let rt = |system| find(rows, "1.", system).and_then(Row::median);
    if let (Some(s), Some(r)) = (rt("stratus (wasm)"), rt("ray")) {
        t.push(("round trip below Ray's".into(), s < r, format!("p50 {s:.0} µs vs {r:.0} µs")));
    }
    // The size: 10,000 calls (a smaller map is mostly start-up).
    let sdk_map = rows.iter().find(|r| {
        r.workload.starts_with("5.")
            && r.system == SDK
            && r.missing.is_none()
            && r.raw.iter().all(|l| l["n"].as_u64().is_some_and(|n| n >= 10_000))
    });
    if let Some(r) = sdk_map {
        let tps = Spread::of(&r.raw.iter().filter_map(|l| l["tasks_per_s"].as_f64()).collect::<Vec<_>>()).median;
        t.push((
            format!("Python SDK no-op map ≥ 4,000 tasks/s ({})", r.workload),
            tps >= 4000.0,
            format!("{tps:.0} tasks/s"),
        ));
    }
    let sdk_wc = rows.iter().find(|r| r.workload.contains("word count") && r.system == SDK).and_then(Row::median);
    if let (Some(s), Some(c)) = (sdk_wc, find(rows, "4.", "stratus (python mapper)").and_then(Row::median)) {
        t.push((
            "Python SDK word count within 1.2× the `stratus map` CLI's (python mapper)".into(),
            s <= 1.2 * c,
            format!("{s:.2} s vs {c:.2} s = {:.2}×", s / c),
        ));
    }
    let wc = |system| find(rows, "4.", system).and_then(Row::median);
    if let Some(s) = wc("stratus (python mapper)") {
        if let Some(l) = wc("lithops-v1") {
            t.push((
                "word count (same Python code) faster than Lithops v1".into(),
                s < l,
                format!("{s:.2} s vs {l:.2} s"),
            ));
        }
        if let Some(f) = wc("python floor") {
            t.push((
                "word count (same Python code) within 1.3× the compute floor".into(),
                s <= 1.3 * f,
                format!("{s:.2} s vs {f:.2} s = {:.2}×", s / f),
            ));
        }
    }
    t
}

fn markdown(
    rows: &[Row],
    targets: &[(String, bool, String)],
    machine: &str,
    versions: &BTreeMap<String, String>,
    quick: bool,
    took: f64,
) -> String {
    let mut md = String::new();
    let cmd = if quick { "bench/run --quick" } else { "bench/run" };
    let _ = writeln!(md, "Run {} with `{cmd}` on {machine}; took {:.0} s.", today(), took);
    let v: Vec<String> = versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(md, "Peers: {} (pinned in `bench/peers/requirements.txt`).\n", v.join(", "));
    if quick {
        let _ = writeln!(
            md,
            "A `--quick` smoke run: small sizes, one repetition, without {}.\n",
            QUICK_SKIPS.join(" and ")
        );
    }
    let _ = writeln!(
        md,
        "Each figure: median (min–max) of the repetitions; ratio = system ÷ Stratus's best on that row's workload.\n"
    );
    let mut workload = "";
    for r in rows {
        if r.workload != workload {
            workload = &r.workload;
            let _ = writeln!(md, "\n**{workload}**\n\n| system | figure | ratio | details |\n|---|---|---|---|");
        }
        let best = rows
            .iter()
            .filter(|o| o.workload == r.workload && o.system.starts_with("stratus"))
            .filter_map(Row::median)
            .fold(f64::INFINITY, f64::min);
        match (r.median(), &r.missing) {
            (Some(m), _) => {
                let s = Spread::of(&r.values);
                let fig = if r.unit == "s" {
                    format!("{:.2} s ({:.2}–{:.2})", s.median, s.min, s.max)
                } else {
                    format!("{s} {}", r.unit)
                };
                let ratio = if best.is_finite() { format!("{:.1}×", m / best) } else { "–".into() };
                let _ = writeln!(md, "| {} | {fig} | {ratio} | {} |", r.system, r.detail);
            }
            (None, why) => {
                let _ = writeln!(md, "| {} | – | – | {} |", r.system, why.as_deref().unwrap_or(""));
            }
        }
    }
    let _ = writeln!(md, "\n**Targets**\n\n| target | met | measured |\n|---|---|---|");
    for (t, ok, how) in targets {
        let _ = writeln!(md, "| {t} | {} | {how} |", if *ok { "yes" } else { "**no**" });
    }
    md
}

const BEGIN: &str = "<!-- compare:begin (written by `bench/run`; edits inside are overwritten) -->";
const END: &str = "<!-- compare:end -->";

/// Replaces the generated part of docs/benchmarks.md.
fn splice_docs(path: &Path, md: &str) -> Result<()> {
    let doc = std::fs::read_to_string(path)?;
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("{} lacks the markers {BEGIN} … {END}", path.display());
    };
    let new = format!("{}{BEGIN}\n{md}\n{}", &doc[..a], &doc[b..]);
    std::fs::write(path, new)?;
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemTotal:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} CPUs ({model}), {mem:.0} GiB memory")
}

fn today() -> String {
    let o = Command::new("date").arg("+%Y-%m-%d").output();
    o.ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}
