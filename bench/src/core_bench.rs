//! Invoke round trips over HTTP on loopback, and idle memory.

use crate::http::Conn;
use crate::node::{Node, TempDir, build_guest};
use crate::stats::{Latency, Spread};
use anyhow::{Result, ensure};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const WARM_NOOP: &str = "import sys\nfrom stratus_warm import serve\nserve(lambda data, inv: b'')\n";

/// One sync invoke of `function` with an empty input, which must answer 200 with no output.
fn invoke_once(conn: &mut Conn, path: &str, function: &str) -> Result<Duration> {
    let t = Instant::now();
    let r = conn.request("POST", path, b"")?;
    let took = t.elapsed();
    ensure!(r.status == 200 && r.body.is_empty(), "{function}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
    Ok(took)
}

pub fn invoke_latencies(url: &str, function: &str, warmup: usize, n: usize) -> Result<Latency> {
    let mut conn = Conn::open(url)?;
    let path = format!("/v1/functions/{function}/invoke");
    for _ in 0..warmup {
        invoke_once(&mut conn, &path, function)?;
    }
    let samples = (0..n).map(|_| invoke_once(&mut conn, &path, function)).collect::<Result<Vec<_>>>()?;
    Ok(Latency::of(samples))
}

fn fork_exec_once() -> Result<Duration> {
    let t = Instant::now();
    let s = std::process::Command::new("/bin/true").status()?;
    let took = t.elapsed();
    ensure!(s.success());
    Ok(took)
}

/// The cold process function in the sandbox (`url`), the same without a
/// sandbox (`plain_url`), and a bare fork+exec of the same program,
/// measured in alternating blocks of [`BLOCK`] calls: this machine's speed
/// drifts by a tenth within a minute, and the three figures are compared.
fn cold_and_fork_exec(
    url: &str,
    plain_url: &str,
    function: &str,
    warmup: usize,
    n: usize,
) -> Result<(Latency, Latency, Latency)> {
    const BLOCK: usize = 100;
    let mut conn = Conn::open(url)?;
    let mut plain = Conn::open(plain_url)?;
    let path = format!("/v1/functions/{function}/invoke");
    for _ in 0..warmup {
        invoke_once(&mut conn, &path, function)?;
        invoke_once(&mut plain, &path, function)?;
        fork_exec_once()?;
    }
    let (mut cold, mut unsandboxed, mut bare) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    while cold.len() < n {
        let block = BLOCK.min(n - cold.len());
        for _ in 0..block {
            cold.push(invoke_once(&mut conn, &path, function)?);
        }
        for _ in 0..block {
            unsandboxed.push(invoke_once(&mut plain, &path, function)?);
        }
        for _ in 0..block {
            bare.push(fork_exec_once()?);
        }
    }
    Ok((Latency::of(cold), Latency::of(unsandboxed), Latency::of(bare)))
}

pub fn run(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    let (reps, warmup, n) = if quick { (1, 50, 200) } else { (3, 300, 3000) };
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    let warm_dir = TempDir::new("warm")?;
    std::fs::copy("examples/python-warm/stratus_warm.py", warm_dir.0.join("stratus_warm.py"))?;
    std::fs::write(warm_dir.0.join("main.py"), WARM_NOOP)?;
    let cold_dir = TempDir::new("cold")?;

    let mut rows: Vec<(&str, Vec<Latency>)> = vec![
        ("wasm no-op", vec![]),
        ("warm process no-op (python)", vec![]),
        ("cold process no-op (/bin/true), sandboxed", vec![]),
        ("bare fork+exec of /bin/true", vec![]),
        ("cold process no-op (/bin/true), --no-sandbox", vec![]),
        ("wasm no-op, --insecure-no-auth (no token checked)", vec![]),
    ];
    let mut idle_rss = Vec::new();
    let mut after_rss = Vec::new();
    for _ in 0..reps {
        let node = Node::up(bin, &["--slots", "2"])?;
        let plain = Node::up(bin, &["--slots", "2", "--no-sandbox"])?;
        let open = Node::up(bin, &["--slots", "2", "--insecure-no-auth"])?;
        open.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
        // Let the node settle: wait for the API to answer.
        node.cli(&["fn", "list"])?;
        idle_rss.push(node.rss_mib()?);
        node.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
        node.cli(&[
            "fn",
            "deploy",
            "warm",
            "--dir",
            warm_dir.0.to_str().unwrap(),
            "--cmd",
            "python3 main.py",
            "--warm",
        ])?;
        node.cli(&["fn", "deploy", "cold", "--dir", cold_dir.0.to_str().unwrap(), "--cmd", "true"])?;
        plain.cli(&["fn", "deploy", "cold", "--dir", cold_dir.0.to_str().unwrap(), "--cmd", "true"])?;
        // With and without token checks, alternating in blocks.
        let mut wasm = crate::ab::alternating(&[&node.url, &open.url], "noop", warmup, n)?.into_iter();
        rows[0].1.push(wasm.next().unwrap());
        rows[5].1.push(wasm.next().unwrap());
        drop(open);
        rows[1].1.push(invoke_latencies(&node.url, "warm", warmup, n)?);
        let (cold, unsandboxed, bare) = cold_and_fork_exec(&node.url, &plain.url, "cold", warmup, n)?;
        rows[2].1.push(cold);
        rows[3].1.push(bare);
        rows[4].1.push(unsandboxed);
        drop(plain);
        std::thread::sleep(Duration::from_millis(200));
        after_rss.push(node.rss_mib()?);
    }

    println!(
        "\nSync invoke round trip over HTTP on loopback, one client, keep-alive; invocation recorded in SQLite (WAL)."
    );
    println!(
        "{} repetitions of {} calls after {} warm-up calls; median (min–max) of the repetitions, in µs.\n",
        reps, n, warmup
    );
    println!("| workload | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|");
    let mut figures = serde_json::Map::new();
    for (name, lats) in &rows {
        let p50 = Spread::of(&lats.iter().map(|l| l.p50_us).collect::<Vec<_>>());
        let p99 = Spread::of(&lats.iter().map(|l| l.p99_us).collect::<Vec<_>>());
        let mean = Spread::of(&lats.iter().map(|l| l.mean_us).collect::<Vec<_>>());
        println!("| {name} | {p50} | {p99} | {mean} |");
        figures.insert(name.to_string(), json!({"p50_us": p50, "p99_us": p99, "mean_us": mean, "runs": lats}));
    }
    let wasm = Spread::of(&rows[0].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let warm = Spread::of(&rows[1].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let cold = Spread::of(&rows[2].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let fork = Spread::of(&rows[3].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let unsandboxed = Spread::of(&rows[4].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let open = Spread::of(&rows[5].1.iter().map(|l| l.p50_us).collect::<Vec<_>>()).median;
    let idle = Spread::of(&idle_rss);
    let after = Spread::of(&after_rss);
    println!();
    println!("warm process p50 / wasm p50:        {:.2}× (target ≤ 2×)", warm / wasm);
    println!("sandboxed cold p50 / bare fork+exec: {:.2}× (target ≤ 2×)", cold / fork);
    println!("unsandboxed cold p50 / bare:         {:.2}× (target ≤ 1.5×)", unsandboxed / fork);
    println!("wasm p50 under 1 ms:                {}", if wasm < 1000.0 { "yes" } else { "NO" });
    println!("wasm p50 with tokens / without:     {:.3}× (target ≤ 1.03×)", wasm / open);
    println!(
        "idle `stratus up` RSS:              {:.1} MiB ({:.1}–{:.1}); after the run {:.1} MiB (target < 50 MiB)",
        idle.median, idle.min, idle.max, after.median
    );
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let doc = json!({
        "benchmark": "core",
        "machine": {"cpus": cpus},
        "reps": reps, "calls": n, "warmup": warmup,
        "latency": figures,
        "ratios": {
            "warm_over_wasm": warm / wasm,
            "cold_over_fork_exec": cold / fork,
            "unsandboxed_cold_over_fork_exec": unsandboxed / fork,
            "auth_over_no_auth": wasm / open,
        },
        "idle_rss_mib": idle, "rss_after_mib": after,
    });
    std::fs::write(out.join("core.json"), serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}
