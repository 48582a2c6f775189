//! `stratus-bench`: measures Stratus on this machine and prints its figures.
//!
//! `stratus-bench core` — the core figures: sync invoke round trip of a no-op
//! wasm function, of a warm and a cold process function, a bare fork+exec
//! beside them, and the idle resident memory of `stratus up`.
//! `stratus-bench compare` — the same workloads on Stratus and its peers.
//! `stratus-bench events` — event ingest and trigger latency.
//! `stratus-bench ui` — the dashboard's page of a 100,000-task job.
//! `stratus-bench ab --against OLD` — invoke round trips of this build and
//! another side by side.

mod ab;
mod compare;
mod core_bench;
mod distributed;
mod events_bench;
mod http;
mod map_bench;
mod node;
mod stats;
mod ui_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    /// The stratus binary to measure.
    #[arg(long, default_value = "target/release/stratus", global = true)]
    stratus: std::path::PathBuf,
    /// Fewer iterations (a smoke run).
    #[arg(long, global = true)]
    quick: bool,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "bench/out", global = true)]
    out: std::path::PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Invoke round trips and idle memory.
    Core,
    /// Map throughput (100k and 1M no-op tasks) and server peak memory.
    Map,
    /// Word count map_reduce over text in object storage.
    Wordcount,
    /// The map and the word count on PostgreSQL + S3 with one server and
    /// two worker processes, beside the embedded node (needs PostgreSQL and
    /// s3s-fs, as the tests do).
    Distributed,
    /// Events: batched ingest rate, and the latency from an event's commit
    /// to the start of its trigger's action (embedded, and on PostgreSQL +
    /// RabbitMQ; needs both, as the tests do).
    Events,
    /// The dashboard's page of a 100,000-task job: served in, weight, and
    /// drawn in by headless chromium when it is installed.
    Ui,
    /// Everything above but `distributed`, `events` and `ui`.
    All,
    /// Invoke round trips of this build and another (`--against`), side by
    /// side in alternating blocks.
    Ab {
        /// The other stratus binary (e.g. a release build of the previous commit).
        #[arg(long)]
        against: std::path::PathBuf,
    },
    /// The same workloads on Stratus and its peers (Lithops, Ray, Prefect,
    /// plain Python) in one run, with a table of figures and ratios.
    Compare {
        /// Only these peers (comma-separated: ray,prefect,lithops-v1,lithops-v2).
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Only these workloads (comma-separated numbers, e.g. 4,5); the
        /// table of a partial run is not written into the docs.
        #[arg(long, value_delimiter = ',', conflicts_with = "write_docs")]
        only: Vec<u32>,
        /// Write the table into docs/benchmarks.md.
        #[arg(long)]
        write_docs: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    match cli.cmd {
        Cmd::Core => core_bench::run(&cli.stratus, cli.quick, &cli.out),
        Cmd::Map => map_bench::run_map(&cli.stratus, cli.quick, &cli.out),
        Cmd::Wordcount => map_bench::run_wordcount(&cli.stratus, cli.quick, &cli.out),
        Cmd::Distributed => distributed::run(&cli.stratus, cli.quick, &cli.out),
        Cmd::Events => events_bench::run(&cli.stratus, cli.quick, &cli.out),
        Cmd::Ui => ui_bench::run(&cli.stratus, cli.quick, &cli.out),
        Cmd::Compare { peers, only, write_docs } => {
            compare::Compare { stratus: cli.stratus, quick: cli.quick, out: cli.out, peers, only, write_docs }.run()
        }
        Cmd::Ab { against } => ab::run(&cli.stratus, &against, cli.quick),
        Cmd::All => {
            core_bench::run(&cli.stratus, cli.quick, &cli.out)?;
            map_bench::run_map(&cli.stratus, cli.quick, &cli.out)?;
            map_bench::run_wordcount(&cli.stratus, cli.quick, &cli.out)
        }
    }
}
