//! `stratus`: one binary for every role — the all-in-one node (`up`), the
//! control plane (`server`), and the client verbs. `main` only parses,
//! runs, and prints the error chain once.

mod commands;
mod config;
mod parse;

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
