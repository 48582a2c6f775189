//! One enum of subcommands, one small module per subcommand.

mod apply;
mod events;
mod explain;
mod functions;
mod invocations;
mod jobs;
mod limits;
mod node;
mod objects;
mod pyenvs;
mod settings;
mod trust;
mod workers;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "stratus", version, about = "Self-hosted serverless functions, jobs and workflows in one binary")]
pub struct Cli {
    // STRATUS_URL and STRATUS_CONFIG are read in `dispatch`, not by clap: a
    // global argument clap fills from the environment is shown as required
    // in the usage line of every error.
    /// Server URL for client commands and workers, or STRATUS_URL [default: http://127.0.0.1:7878].
    #[arg(long, global = true)]
    server: Option<String>,
    /// Settings file (see docs/configuration.md), or STRATUS_CONFIG; flags and environment win over it.
    #[arg(long, global = true)]
    config: Option<std::path::PathBuf>,
    /// API token, or STRATUS_TOKEN [default: the credentials file's for the server].
    #[arg(long, global = true)]
    token: Option<String>,
    /// The project to act in (admin tokens; others act in their own), or STRATUS_PROJECT.
    #[arg(long, global = true)]
    project: Option<String>,
    /// Print JSON: one object for one thing, one object per line for lists and
    /// streams; errors as {"error": {"code", "message"}} on stderr.
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
    /// Store a token for a server in the credentials file.
    Login(trust::LoginArgs),
    /// The token's name, role and project.
    Whoami,
    /// Print a link that logs a browser in to the dashboard (single use, 60 s).
    Dashboard(trust::DashboardArgs),
    /// Create, list, show and delete projects (admin).
    #[command(subcommand)]
    Project(trust::ProjectCommand),
    /// Create, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(trust::TokenCommand),
    /// Set, get, list and delete the project's variables.
    #[command(subcommand)]
    Var(settings::VarCommand),
    /// Set, list and delete the project's secrets (values are never shown).
    #[command(subcommand)]
    Secret(settings::SecretCommand),
    /// Set, list, show, delete and reset the project's concurrency limits
    /// by tag.
    #[command(subcommand)]
    Limit(limits::LimitCommand),
    /// Set, list, show and delete the project's Python environments.
    #[command(subcommand)]
    Pyenv(pyenvs::PyEnvCommand),
    /// Make the project what a file says: functions, variables, secrets,
    /// triggers and schedules; prints the plan first.
    Apply(apply::ApplyArgs),
    /// Write the project as a file `stratus apply` takes.
    Export(apply::ExportArgs),
    /// Changes to projects, tokens and functions: who, what, when.
    Audit(trust::AuditArgs),
    /// Publish events.
    #[command(subcommand)]
    Event(events::EventCommand),
    /// Read the event stream (--follow to keep reading).
    Events(events::EventsArgs),
    /// Create, list, show, delete, enable and disable triggers.
    #[command(subcommand)]
    Trigger(events::TriggerCommand),
    /// Create, list, show, pause, resume, delete and backfill schedules.
    #[command(subcommand)]
    Schedule(events::ScheduleCommand),
}

pub struct Ctx {
    pub client: stratus_client::Client,
    pub json: bool,
}

/// Parses the command line. A usage error with `--json` is the JSON error
/// envelope (code `usage`) on stderr, exit code 2, like clap's own.
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let wants_json = std::env::args_os().any(|a| a == "--json");
            if !wants_json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit()
            }
            // The error without clap's usage and help lines, on one line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(|l| l.trim().trim_start_matches("error: "))
                .collect();
            let message = message.join(" ");
            crate::errors::print("usage", &message, true, None);
            std::process::exit(2)
        }
    }
}

/// Runs the command and reports its error, if any, once.
pub async fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    let mut server = String::new();
    match dispatch(cli, &mut server).await {
        Ok(code) => code,
        Err(e) if crate::output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let (code, message) = crate::errors::describe(&e, &server);
            crate::errors::print(&code, &message, json, None);
            ExitCode::FAILURE
        }
    }
}

fn is_client(c: &Command) -> bool {
    !matches!(c, Command::Up(_) | Command::Server(_) | Command::Migrate(_))
}

async fn dispatch(cli: Cli, server_out: &mut String) -> anyhow::Result<ExitCode> {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let config = cli.config.clone().or_else(|| env("STRATUS_CONFIG").map(Into::into));
    let file = match &config {
        Some(path) => crate::config::FileConfig::load(path)?,
        None => Default::default(),
    };
    let server = cli
        .server
        .or_else(|| env("STRATUS_URL").map(|v| v.to_string_lossy().into_owned()))
        .or_else(|| matches!(cli.command, Command::Worker(_)).then(|| file.worker.server.clone()).flatten())
        .unwrap_or_else(|| "http://127.0.0.1:7878".into());
    *server_out = server.clone();
    // Node roles do not talk to a server: a stale STRATUS_URL must not stop them.
    let server = if is_client(&cli.command) {
        crate::parse::server_url(&server)
            .map_err(|e| crate::errors::invalid(format!("--server / STRATUS_URL: {e}, e.g. http://127.0.0.1:7878")))?
    } else {
        server
    };
    // The token: --token, STRATUS_TOKEN, else the credentials file's for
    // this server. Node roles have none (`up` writes the first one).
    let token = match cli.token.clone().or_else(|| env("STRATUS_TOKEN").map(|v| v.to_string_lossy().into_owned())) {
        Some(t) => Some(t),
        None if is_client(&cli.command) && !matches!(cli.command, Command::Login(_)) => {
            crate::credentials::token_for(&server)?
        }
        None => None,
    };
    let project = cli.project.clone().or_else(|| env("STRATUS_PROJECT").map(|v| v.to_string_lossy().into_owned()));
    if let Some(p) = &project {
        stratus_core::validate_name("--project", p)?;
    }
    let client = stratus_client::Client::new(&server).with_auth(token.as_deref(), project.as_deref())?;
    let ctx = Ctx { client, json: cli.json };
    match cli.command {
        Command::Up(a) => node::up(a, &file, ctx.json).await,
        Command::Server(a) => node::server(a, &file, ctx.json).await,
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
        Command::Login(a) => trust::login(&ctx, a).await,
        Command::Whoami => trust::whoami(&ctx).await,
        Command::Dashboard(a) => trust::dashboard(&ctx, a).await,
        Command::Project(c) => trust::project(&ctx, c).await,
        Command::Token(c) => trust::token(&ctx, c).await,
        Command::Audit(a) => trust::audit(&ctx, a).await,
        Command::Var(c) => settings::var(&ctx, c).await,
        Command::Apply(a) => apply::apply(&ctx, a).await,
        Command::Export(a) => apply::export(&ctx, a).await,
        Command::Secret(c) => settings::secret(&ctx, c).await,
        Command::Limit(c) => limits::run(&ctx, c).await,
        Command::Pyenv(c) => pyenvs::run(&ctx, c).await,
        Command::Event(c) => events::event(&ctx, c).await,
        Command::Events(a) => events::events(&ctx, a).await,
        Command::Trigger(c) => events::trigger(&ctx, c).await,
        Command::Schedule(c) => events::schedule(&ctx, c).await,
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `--help` describes every argument of every command.
    #[test]
    fn every_argument_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "stratus", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
        Cli::command().debug_assert();
    }
}
