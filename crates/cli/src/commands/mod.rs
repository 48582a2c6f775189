//! One enum of subcommands, one small module per subcommand.

mod functions;
mod invocations;
mod jobs;
mod node;
mod objects;
mod workers;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "stratus", version, about = "Self-hosted serverless functions, jobs and workflows in one binary")]
pub struct Cli {
    /// Server URL for client commands and workers [default: http://127.0.0.1:7878].
    #[arg(long, global = true, env = "STRATUS_URL")]
    server: Option<String>,
    /// Settings file (see docs/configuration.md); flags and environment win over it.
    #[arg(long, global = true, env = "STRATUS_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine: API, scheduler and local worker slots.
    Up(node::UpArgs),
    /// Run the control plane (API and scheduler) without local worker slots.
    Server(node::ServerArgs),
    /// Upgrade the state store's schema (servers also do this when they start).
    Migrate(node::MigrateArgs),
    /// Deploy, list, show and delete functions.
    #[command(subcommand, name = "fn")]
    Fn(functions::FnCommand),
    /// Invoke a function and print its output.
    Invoke(invocations::InvokeArgs),
    /// Wait for an invocation to finish and print its output.
    Wait(invocations::IdArg),
    /// Print the captured stderr of an invocation.
    Logs(invocations::IdArg),
    /// Show an invocation: state, attempts, timings.
    Show(invocations::IdArg),
    /// List recent invocations.
    Invocations(invocations::ListArgs),
    /// Store, fetch, list and delete objects.
    #[command(subcommand)]
    Object(objects::ObjectCommand),
    /// Run a function over many inputs or over objects (map / map_reduce).
    Map(jobs::MapArgs),
    /// Show, list, cancel jobs and read their results.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Join a server as a worker and run its tasks.
    Worker(workers::WorkerArgs),
    /// List the workers a server knows.
    Workers,
    /// What the server is and runs: version, slots, sandbox layers.
    Info,
}

pub struct Ctx {
    pub client: stratus_client::Client,
    pub json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let file = match &cli.config {
        Some(path) => crate::config::FileConfig::load(path)?,
        None => Default::default(),
    };
    let server = cli
        .server
        .or_else(|| matches!(cli.command, Command::Worker(_)).then(|| file.worker.server.clone()).flatten())
        .unwrap_or_else(|| "http://127.0.0.1:7878".into());
    let ctx = Ctx { client: stratus_client::Client::new(&server), json: cli.json };
    match cli.command {
        Command::Up(a) => node::up(a, &file).await,
        Command::Server(a) => node::server(a, &file).await,
        Command::Migrate(a) => node::migrate(a, &file, ctx.json).await,
        Command::Fn(c) => functions::run(&ctx, c).await,
        Command::Invoke(a) => invocations::invoke(&ctx, a).await,
        Command::Wait(a) => invocations::wait(&ctx, a).await,
        Command::Logs(a) => invocations::logs(&ctx, a).await,
        Command::Show(a) => invocations::show(&ctx, a).await,
        Command::Invocations(a) => invocations::list(&ctx, a).await,
        Command::Object(c) => objects::run(&ctx, c).await,
        Command::Map(a) => jobs::map(&ctx, a).await,
        Command::Job(c) => jobs::job(&ctx, c).await,
        Command::Worker(a) => workers::worker(&ctx, a, &file.worker).await,
        Command::Workers => workers::list(&ctx).await,
        Command::Info => workers::info(&ctx).await,
    }
}
