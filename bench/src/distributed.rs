//! The map and the word count on the distributed backends — state in
//! PostgreSQL, objects in a real S3 server (s3s-fs), one `stratus server`
//! and two `stratus worker` processes — beside the embedded node (SQLite,
//! local files, in-process slots) in the same run, on the same machine.
//!
//! The distributed node runs twice per round: with the workers leasing
//! tasks from the server over HTTP, and with the server dispatching them
//! through the local RabbitMQ (`STRATUS_BENCH_AMQP`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`; a queue of its own per run).

use crate::core_bench::invoke_latencies;
use crate::map_bench::{Corpus, map_noop_on, wordcount_on};
use crate::node::{Node, build_guest};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;
use stratus_blob::testing::S3Server;

fn postgres_base() -> String {
    std::env::var("STRATUS_BENCH_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one run, dropped afterwards (with `psql`, when
/// it is there).
pub struct Schema {
    name: String,
}

impl Schema {
    pub fn new(tag: &str) -> Schema {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Schema { name: format!("bench_{tag}_{nanos}") }
    }

    pub fn url(&self) -> String {
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

/// A work queue of its own for one run, deleted (with its dead-letter
/// queue) on drop; drop it after the node.
pub struct Queue(pub String);

impl Queue {
    pub fn new(tag: &str) -> Queue {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Queue(format!("bench.{tag}.{nanos}"))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        stratus_broker::testing::delete_queue_blocking(&amqp(), &self.0);
    }
}

pub fn amqp() -> String {
    std::env::var("STRATUS_BENCH_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `stratus up --slots 0` on PostgreSQL and S3 (and RabbitMQ with
/// `broker`), with two one-slot workers (the embedded node runs two slots:
/// the same parallelism).
fn distributed_node(bin: &Path, schema: &Schema, s3: &S3Server, prefix: &str, queue: Option<&Queue>) -> Result<Node> {
    node_with_workers(bin, schema, s3, prefix, queue, 2)
}

fn node_with_workers(
    bin: &Path,
    schema: &Schema,
    s3: &S3Server,
    prefix: &str,
    queue: Option<&Queue>,
    workers: usize,
) -> Result<Node> {
    let state = schema.url();
    let objects = s3.url(&format!("bench/{prefix}"));
    let mut args = vec!["--slots".to_string(), "0".into(), "--state".into(), state, "--objects".into(), objects];
    if let Some(q) = queue {
        args.extend(["--broker".into(), amqp(), "--broker-queue".into(), q.0.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut node = Node::up(bin, &args).context("starting the server on PostgreSQL and S3")?;
    node.add_workers(workers, 1)?;
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
        let mut row = json!({"embedded": {"map_s": e_map, "wordcount_s": e_wc}});
        for (key, broker) in [("leases", false), ("rabbitmq", true)] {
            let schema = Schema::new("dist");
            let queue = broker.then(|| Queue::new(&format!("run{rep}")));
            let node = distributed_node(bin, &schema, &s3, &format!("run{rep}{key}"), queue.as_ref())?;
            let d_map = map_noop_on(&node, tasks)?;
            let d_wc = wordcount_on(&node, &corpus, chunk)?;
            drop(node);
            row[key] = json!({"map_s": d_map, "wordcount_s": d_wc});
        }
        let rate = |k: &str| tasks as f64 / row[k]["map_s"].as_f64().unwrap();
        let mbs = |k: &str| size_mib as f64 * 1.048576 / row[k]["wordcount_s"].as_f64().unwrap();
        println!(
            "run {}: map of {tasks} no-op tasks: embedded {:.0}, PostgreSQL+S3 with HTTP leases {:.0}, \
             PostgreSQL+RabbitMQ+S3 {:.0} tasks/s; word count {size_mib} MiB: {:.1}, {:.1}, {:.1} MB/s",
            rep + 1,
            rate("embedded"),
            rate("leases"),
            rate("rabbitmq"),
            mbs("embedded"),
            mbs("leases"),
            mbs("rabbitmq"),
        );
        rows.push(row);
    }
    let median = |f: &dyn Fn(&serde_json::Value) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = |k: &str| tasks as f64 / median(&|r| r[k]["map_s"].as_f64().unwrap());
    let mbs = |k: &str| size_mib as f64 * 1.048576 / median(&|r| r[k]["wordcount_s"].as_f64().unwrap());
    let (e_rate, l_rate, r_rate) = (rate("embedded"), rate("leases"), rate("rabbitmq"));
    let (e_mbs, l_mbs, r_mbs) = (mbs("embedded"), mbs("leases"), mbs("rabbitmq"));
    println!(
        "\n| workload | embedded (SQLite, files, 2 slots) | PostgreSQL + S3, HTTP leases | PostgreSQL + RabbitMQ + S3 | \
         RabbitMQ / embedded |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| map of {tasks} no-op wasm tasks | {e_rate:.0} tasks/s | {l_rate:.0} tasks/s | {r_rate:.0} tasks/s | {:.2} |",
        r_rate / e_rate
    );
    println!(
        "| word count, {size_mib} MiB in {chunk} chunks (Python) | {e_mbs:.1} MB/s | {l_mbs:.1} MB/s | {r_mbs:.1} MB/s | {:.2} |",
        r_mbs / e_mbs
    );
    println!("(medians of {reps} run(s); distributed: one server, two worker processes × 1 slot)");
    let hop = standby_hop(bin, quick)?;
    let growth = with_more_workers(bin, quick, &s3, &corpus, tasks, size_mib, chunk)?;
    let doc = json!({
        "benchmark": "distributed", "tasks": tasks, "size_mib": size_mib, "chunk": chunk, "runs": rows,
        "standby_hop": hop, "workers": growth,
        "median": {"embedded_tasks_per_s": e_rate, "leases_tasks_per_s": l_rate, "rabbitmq_tasks_per_s": r_rate,
                   "embedded_mb_per_s": e_mbs, "leases_mb_per_s": l_mbs, "rabbitmq_mb_per_s": r_mbs},
    });
    std::fs::write(out.join("distributed.json"), serde_json::to_string_pretty(&doc)?)?;
    Ok(())
}

/// Two servers on one PostgreSQL database: a synchronous invoke of a no-op
/// wasm function through the leader (which runs it on its two local
/// slots), and the same through a standby, which forwards it.
fn standby_hop(bin: &Path, quick: bool) -> Result<serde_json::Value> {
    let (warmup, n) = if quick { (50, 200) } else { (300, 3000) };
    let schema = Schema::new("hop");
    let state = schema.url();
    let leader = Node::up(bin, &["--slots", "2", "--state", &state]).context("starting the leader")?;
    let standby = Node::up(bin, &["--slots", "0", "--state", &state]).context("starting the standby")?;
    let guest = build_guest(Path::new("crates/cli/tests/guest"), "stratus-testfn.wasm")?;
    leader.cli(&["fn", "deploy", "noop", "--wasm", guest.to_str().unwrap()])?;
    let direct = invoke_latencies(&leader.url, "noop", warmup, n)?;
    let forwarded = invoke_latencies(&standby.url, "noop", warmup, n)?;
    println!(
        "sync invoke of a no-op wasm function on PostgreSQL, {n} calls: through the leader p50 {:.0} µs, p99 {:.0} µs; \
         through a standby p50 {:.0} µs, p99 {:.0} µs",
        direct.p50_us, direct.p99_us, forwarded.p50_us, forwarded.p99_us
    );
    Ok(json!({"leader": direct, "standby": forwarded}))
}

/// How throughput grows with workers: the same two workloads on
/// PostgreSQL, RabbitMQ and S3 with 1, 2, 3 and 4 one-slot worker
/// processes (1 and 2 with `--quick`), once each.
fn with_more_workers(
    bin: &Path,
    quick: bool,
    s3: &S3Server,
    corpus: &Corpus,
    tasks: u64,
    size_mib: usize,
    chunk: &str,
) -> Result<serde_json::Value> {
    let counts: &[usize] = if quick { &[1, 2] } else { &[1, 2, 3, 4] };
    let mut out = Vec::new();
    println!("\n| one-slot workers (PostgreSQL + RabbitMQ + S3) | map, tasks/s | word count, MB/s |\n|---|---|---|");
    for &n in counts {
        let schema = Schema::new("grow");
        let queue = Queue::new(&format!("grow{n}"));
        let node = node_with_workers(bin, &schema, s3, &format!("grow{n}"), Some(&queue), n)?;
        let rate = tasks as f64 / map_noop_on(&node, tasks)?;
        let mbs = size_mib as f64 * 1.048576 / wordcount_on(&node, corpus, chunk)?;
        drop(node);
        println!("| {n} | {rate:.0} | {mbs:.1} |");
        out.push(json!({"workers": n, "tasks_per_s": rate, "mb_per_s": mbs}));
    }
    Ok(json!(out))
}
