//! The map and the word count on the distributed backends — state in
//! PostgreSQL, objects in a real S3 server (s3s-fs), one `stratus server`
//! and two `stratus worker` processes — beside the embedded node (SQLite,
//! local files, in-process slots) in the same run, on the same machine.
//!
//! Dispatch to the workers is the server's HTTP leases: the RabbitMQ broker
//! (`stratus-broker`) is not wired into the scheduler yet, so these figures
//! are PostgreSQL + S3, not PostgreSQL + RabbitMQ + S3.

use crate::map_bench::{Corpus, map_noop_on, wordcount_on};
use crate::node::Node;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use stratus_blob::testing::S3Server;

fn postgres_base() -> String {
    std::env::var("STRATUS_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one run, dropped afterwards (with `psql`, when
/// it is there).
struct Schema {
    name: String,
}

impl Schema {
    fn new(tag: &str) -> Schema {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Schema { name: format!("bench_{tag}_{nanos}") }
    }

    fn url(&self) -> String {
        let base = postgres_base();
        format!("{base}{}schema={}", if base.contains('?') { '&' } else { '?' }, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let base = postgres_base();
        let conn = base.split('?').next().unwrap_or(&base);
        let _ = std::process::Command::new("psql")
            .args([conn, "-q", "-c", &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `stratus up --slots 0` on PostgreSQL and S3, with two one-slot workers
/// (the embedded node runs two slots: the same parallelism).
fn distributed_node(bin: &Path, schema: &Schema, s3: &S3Server, prefix: &str) -> Result<Node> {
    let state = schema.url();
    let objects = s3.url(&format!("bench/{prefix}"));
    let mut node = Node::up(bin, &["--slots", "0", "--state", &state, "--objects", &objects])
        .context("starting the server on PostgreSQL and S3")?;
    node.add_workers(2, 1)?;
    Ok(node)
}

pub fn run(bin: &Path, quick: bool, out: &Path) -> Result<()> {
    let (tasks, reps, size_mib, chunk) = if quick { (5_000, 1, 32, "4MiB") } else { (100_000, 3, 256, "16MiB") };
    let s3 = S3Server::start(&["bench"]);
    let corpus = Corpus::new(size_mib)?;
    let mut rows = Vec::new();
    for rep in 0..reps {
        let embedded = Node::up(bin, &["--slots", "2"])?;
        let e_map = map_noop_on(&embedded, tasks)?;
        let e_wc = wordcount_on(&embedded, &corpus, chunk)?;
        drop(embedded);
        let schema = Schema::new("dist");
        let node = distributed_node(bin, &schema, &s3, &format!("run{rep}"))?;
        let d_map = map_noop_on(&node, tasks)?;
        let d_wc = wordcount_on(&node, &corpus, chunk)?;
        drop(node);
        println!(
            "run {}: map of {tasks} no-op tasks: embedded {:.0} tasks/s, PostgreSQL+S3 {:.0} tasks/s; \
             word count {size_mib} MiB: embedded {:.1} MB/s, PostgreSQL+S3 {:.1} MB/s",
            rep + 1,
            tasks as f64 / e_map,
            tasks as f64 / d_map,
            size_mib as f64 * 1.048576 / e_wc,
            size_mib as f64 * 1.048576 / d_wc,
        );
        rows.push(json!({"embedded": {"map_s": e_map, "wordcount_s": e_wc}, "distributed": {"map_s": d_map, "wordcount_s": d_wc}}));
    }
    let median = |f: &dyn Fn(&serde_json::Value) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let e_rate = tasks as f64 / median(&|r| r["embedded"]["map_s"].as_f64().unwrap());
    let d_rate = tasks as f64 / median(&|r| r["distributed"]["map_s"].as_f64().unwrap());
    let e_mbs = size_mib as f64 * 1.048576 / median(&|r| r["embedded"]["wordcount_s"].as_f64().unwrap());
    let d_mbs = size_mib as f64 * 1.048576 / median(&|r| r["distributed"]["wordcount_s"].as_f64().unwrap());
    println!(
        "\n| workload | embedded (SQLite, files, 2 slots) | PostgreSQL + S3, server + 2 workers × 1 slot | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| map of {tasks} no-op wasm tasks | {e_rate:.0} tasks/s | {d_rate:.0} tasks/s | {:.2} |",
        d_rate / e_rate
    );
    println!(
        "| word count, {size_mib} MiB in {chunk} chunks (Python) | {e_mbs:.1} MB/s | {d_mbs:.1} MB/s | {:.2} |",
        d_mbs / e_mbs
    );
    println!("(medians of {reps} run(s); dispatch over HTTP leases — RabbitMQ not wired in yet)");
    let doc = json!({
        "benchmark": "distributed", "tasks": tasks, "size_mib": size_mib, "chunk": chunk, "runs": rows,
        "median": {"embedded_tasks_per_s": e_rate, "distributed_tasks_per_s": d_rate,
                   "embedded_mb_per_s": e_mbs, "distributed_mb_per_s": d_mbs},
    });
    std::fs::write(out.join("distributed.json"), serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}
