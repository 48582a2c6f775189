//! `stratus`: one binary for every role — the all-in-one node (`up`), the
//! control plane (`server`), and the client verbs. `main` only parses,
//! runs, and prints the error once (see [`errors`]).

mod commands;
mod config;
mod credentials;
mod errors;
mod output;
mod parse;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = commands::parse();
    commands::run(cli).await
}
