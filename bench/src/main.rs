//! `stratus-bench`: measures Stratus on this machine and prints its figures.
//!
//! `stratus-bench core` — the core figures: sync invoke round trip of a no-op
//! wasm function, of a warm and a cold process function, a bare fork+exec
//! beside them, and the idle resident memory of `stratus up`.

mod core_bench;
mod http;
mod map_bench;
mod node;
mod stats;

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
    /// Everything above.
    All,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.out)?;
    match cli.cmd {
        Cmd::Core => core_bench::run(&cli.stratus, cli.quick, &cli.out),
        Cmd::Map => map_bench::run_map(&cli.stratus, cli.quick, &cli.out),
        Cmd::Wordcount => map_bench::run_wordcount(&cli.stratus, cli.quick, &cli.out),
        Cmd::All => {
            core_bench::run(&cli.stratus, cli.quick, &cli.out)?;
            map_bench::run_map(&cli.stratus, cli.quick, &cli.out)?;
            map_bench::run_wordcount(&cli.stratus, cli.quick, &cli.out)
        }
    }
}
