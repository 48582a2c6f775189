//! `stratus-bench events`: how fast events go in, and how soon the action a
//! trigger runs for one starts.
//!
//! - Ingest: batches of 1,000 structured events over one keep-alive
//!   connection, each answered once committed; events/s over the whole
//!   run. A trigger that matches none of them is in place, so the event
//!   processor reads and matches every one meanwhile.
//! - Latency: one event at a time, whose trigger invokes a wasm function
//!   that prints the host's clock when it starts; from the moment the
//!   publish is answered (the event is committed) to that print.
//!
//! On the embedded node (SQLite) and on PostgreSQL with the tasks
//! dispatched through RabbitMQ to a worker process.

use crate::distributed::{Queue, Schema, amqp};
use crate::http::Conn;
use crate::node::{Node, build_guest};
use crate::stats::Latency;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

/// Publishes `total` events in batches of `batch`; events/s.
fn ingest(node: &Node, total: usize, batch: usize) -> Result<f64> {
    let mut conn = Conn::open(&node.url)?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = batch.min(total - sent);
        let events: Vec<Value> = (sent..sent + n)
            .map(|i| json!({"type": "bench.ingest", "source": "/bench", "id": i.to_string(), "subject": format!("s{}", i % 16), "data": {"i": i}}))
            .collect();
        let r = conn.request("POST", "/v1/events", &serde_json::to_vec(&events)?)?;
        ensure!(r.status == 202, "publish: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
        let answer: Value = serde_json::from_slice(&r.body)?;
        ensure!(answer["stored"] == n, "stored {answer}");
        sent += n;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The newest invocation of `function`, once it has finished: (id, output).
fn newest_finished(conn: &mut Conn, function: &str, not: &str) -> Result<Option<String>> {
    let r = conn.request("GET", &format!("/v1/invocations?function={function}&limit=1"), b"")?;
    ensure!(r.status == 200, "list invocations: HTTP {}", r.status);
    let v: Value = serde_json::from_slice(&r.body)?;
    let Some(inv) = v["invocations"].as_array().and_then(|a| a.first()) else { return Ok(None) };
    let id = inv["id"].as_str().context("id")?;
    if id == not || inv["state"] != "succeeded" {
        return Ok(None);
    }
    let out = conn.request("GET", &format!("/v1/invocations/{id}/output"), b"")?;
    ensure!(out.status == 200, "output: HTTP {}", out.status);
    Ok(Some(format!("{id} {}", String::from_utf8_lossy(&out.body))))
}

/// From a publish answered to its action's start, `n` times in turn.
fn latency(node: &Node, n: usize) -> Result<Latency> {
    let mut conn = Conn::open(&node.url)?;
    let mut samples = Vec::with_capacity(n);
    let mut last = String::new();
    for i in 0..n {
        let e = json!({"type": "bench.tick", "source": "/bench", "id": format!("t{i}"), "data": {"print_clock": true}});
        let r = conn.request("POST", "/v1/events", &serde_json::to_vec(&e)?)?;
        ensure!(r.status == 202, "publish: HTTP {}", r.status);
        let committed = now_us();
        let deadline = Instant::now() + Duration::from_secs(30);
        let seen = loop {
            if let Some(s) = newest_finished(&mut conn, "clock", &last)? {
                break s;
            }
            ensure!(Instant::now() < deadline, "the action of event {i} did not run within 30 s");
            std::thread::sleep(Duration::from_micros(200));
        };
        let (id, started) = seen.split_once(' ').context("id and clock")?;
        last = id.to_string();
        let started: u128 = started.trim().parse().with_context(|| format!("clock output {started:?}"))?;
        samples.push(Duration::from_micros(started.saturating_sub(committed) as u64));
    }
    Ok(Latency::of(samples))
}

fn measure(label: &str, node: &Node, quick: bool) -> Result<Value> {
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    node.cli(&["fn", "deploy", "clock", "--wasm", guest.to_str().unwrap()])?;
    node.cli(&["trigger", "create", "idle", "--on", "bench.none", "--emit", "bench.never"])?;
    node.cli(&["trigger", "create", "tick", "--on", "bench.tick", "--invoke", "clock"])?;
    let (total, n) = if quick { (20_000, 30) } else { (200_000, 300) };
    let rate = ingest(node, total, 1000)?;
    let lat = latency(node, n)?;
    println!("| {label} | {rate:.0} | {:.2} | {:.2} |", lat.p50_us / 1000.0, lat.p99_us / 1000.0);
    Ok(json!({"ingest_events_per_s": rate, "latency": lat}))
}

pub fn run(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    println!("\nEvents: ingest in batches of 1,000 over one connection; latency from a publish answered");
    println!("to the start of the action its trigger runs (a wasm function), one event at a time.\n");
    println!("| node | ingest events/s | latency p50 ms | latency p99 ms |");
    println!("|---|---|---|---|");
    let embedded = Node::up(bin, &["--slots", "2"])?;
    let e = measure("embedded (SQLite)", &embedded, quick)?;
    drop(embedded);
    let schema = Schema::new("events");
    let queue = Queue::new("events");
    let state = schema.url();
    let args = ["--slots", "0", "--state", &state, "--broker", &amqp(), "--broker-queue", &queue.0];
    let mut node = Node::up(bin, &args).context("starting a server on PostgreSQL and RabbitMQ")?;
    node.add_workers(1, 2)?;
    let d = measure("PostgreSQL + RabbitMQ, one worker", &node, quick)?;
    drop(node);
    let figures = json!({"embedded": e, "postgres_rabbitmq": d});
    std::fs::write(out.join("events.json"), serde_json::to_vec_pretty(&figures)?)?;
    Ok(())
}
