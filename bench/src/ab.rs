//! `stratus-bench ab --against OLD`: the invoke round trips and the map
//! throughput of this build and another one side by side, alternating, so a
//! change to the invoke or map path is judged against the build before it
//! in the same minutes.

use crate::http::Conn;
use crate::map_bench::map_noop;
use crate::node::{Node, TempDir, build_guest};
use crate::stats::{Latency, Spread};
use anyhow::{Result, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

fn once(conn: &mut Conn, path: &str) -> Result<Duration> {
    let t = Instant::now();
    let r = conn.request("POST", path, b"")?;
    let took = t.elapsed();
    ensure!(r.status == 200 && r.body.is_empty(), "HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
    Ok(took)
}

/// Round trips of `function` on each node, in alternating blocks of 100.
pub fn alternating(urls: &[&str], function: &str, warmup: usize, n: usize) -> Result<Vec<Latency>> {
    let path = format!("/v1/functions/{function}/invoke");
    let mut conns = urls.iter().map(|u| Conn::open(u)).collect::<Result<Vec<_>>>()?;
    for c in conns.iter_mut() {
        for _ in 0..warmup {
            once(c, &path)?;
        }
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); urls.len()];
    while samples[0].len() < n {
        let block = 100.min(n - samples[0].len());
        for (c, s) in conns.iter_mut().zip(samples.iter_mut()) {
            for _ in 0..block {
                s.push(once(c, &path)?);
            }
        }
    }
    Ok(samples.into_iter().map(Latency::of).collect())
}

pub fn run(new: &Path, old: &Path, quick: bool) -> Result<()> {
    let (reps, warmup, n) = if quick { (1, 50, 200) } else { (3, 300, 2000) };
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    let cold_dir = TempDir::new("ab-cold")?;
    // Builds: (label, binary, extra arguments of `up`).
    let builds: [(&str, &Path, &[&str]); 3] =
        [("old", old, &[]), ("new", new, &[]), ("new --no-sandbox", new, &["--no-sandbox"])];
    let mut wasm: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    let mut cold: Vec<Vec<f64>> = vec![Vec::new(); builds.len()];
    for _ in 0..reps {
        let mut nodes = Vec::new();
        for (_, bin, extra) in &builds {
            let mut args = vec!["--slots", "2"];
            args.extend_from_slice(extra);
            let node = Node::up(bin, &args)?;
            node.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
            node.cli(&["fn", "deploy", "cold", "--dir", cold_dir.0.to_str().unwrap(), "--cmd", "true"])?;
            nodes.push(node);
        }
        let urls: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
        for (i, l) in alternating(&urls, "noop", warmup, n)?.iter().enumerate() {
            wasm[i].push(l.p50_us);
        }
        for (i, l) in alternating(&urls, "cold", warmup, n)?.iter().enumerate() {
            cold[i].push(l.p50_us);
        }
    }
    println!("\nInvoke round trip p50 (µs), {reps} repetitions of {n} calls in alternating blocks of 100;");
    println!("median (min–max) of the repetitions. old: {}\n", old.display());
    println!("| build | wasm no-op p50 µs | cold process (/bin/true) p50 µs |");
    println!("|---|---|---|");
    for (i, (label, _, _)) in builds.iter().enumerate() {
        println!("| {label} | {} | {} |", Spread::of(&wasm[i]), Spread::of(&cold[i]));
    }
    let (w_old, w_new) = (Spread::of(&wasm[0]).median, Spread::of(&wasm[1]).median);
    let (c_old, c_new) = (Spread::of(&cold[0]).median, Spread::of(&cold[1]).median);
    println!("\nwasm no-op p50, new / old:   {:.3}× (target within 5%)", w_new / w_old);
    println!("cold process p50, new / old: {:.3}× (both with the sandbox the host allows)", c_new / c_old);

    // Map throughput: a job of no-op wasm tasks on a fresh node of each
    // build in turn, every result checked.
    let tasks = if quick { 10_000 } else { 100_000 };
    let mut rates: [Vec<f64>; 2] = Default::default();
    for _ in 0..reps {
        for (i, bin) in [old, new].into_iter().enumerate() {
            let (_, rate, _) = map_noop(bin, tasks)?;
            rates[i].push(rate);
        }
    }
    println!("\nMap of {tasks} no-op wasm tasks (tasks/s), {reps} runs of each build in turn; median (min–max).\n");
    println!("| build | tasks/s |");
    println!("|---|---|");
    for (label, r) in ["old", "new"].iter().zip(&rates) {
        println!("| {label} | {} |", Spread::of(r));
    }
    let (m_old, m_new) = (Spread::of(&rates[0]).median, Spread::of(&rates[1]).median);
    println!("\nmap tasks/s, new / old: {:.3}× (target within 5%)", m_new / m_old);
    Ok(())
}
