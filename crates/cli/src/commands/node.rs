//! `stratus up` and `stratus server`: the same node, with different roles.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use stratus_server::{Node, NodeConfig};

#[derive(Args)]
pub struct NodeArgs {
    /// Address of the HTTP API.
    #[arg(long, env = "STRATUS_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Where state, objects and caches live.
    #[arg(long, env = "STRATUS_DATA_DIR", default_value = "./.stratus")]
    data_dir: PathBuf,
    /// State store URL (default: sqlite://DATA_DIR/state.db).
    #[arg(long, env = "STRATUS_STATE")]
    state: Option<String>,
    /// Object store URL (default: file://DATA_DIR/objects).
    #[arg(long, env = "STRATUS_OBJECTS")]
    objects: Option<String>,
    /// A remote worker silent for this long is declared lost (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = crate::parse::duration_ms)]
    lease_timeout: u64,
    /// Largest request body accepted (e.g. 64M).
    #[arg(long, default_value = "64M", value_parser = crate::parse::memory_mb)]
    max_body: u64,
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Local worker slots (default: the number of cores).
    #[arg(long)]
    slots: Option<usize>,
}

#[derive(Args)]
pub struct ServerArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG").unwrap_or_else(|_| "info,sqlx=warn".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_node(args: NodeArgs, slots: usize) -> anyhow::Result<ExitCode> {
    init_logging();
    let mut config = NodeConfig::new(args.listen, args.data_dir, slots);
    config.state_url = args.state;
    config.objects_url = args.objects;
    config.max_body = (args.max_body as usize) << 20;
    config.lease_timeout = std::time::Duration::from_millis(args.lease_timeout);
    Node::run(
        config,
        |addr| {
            // The first line on stdout, for people and for scripts.
            println!("stratus listening on http://{addr}");
        },
        shutdown_signal(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

pub async fn up(a: UpArgs) -> anyhow::Result<ExitCode> {
    let slots = a.slots.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    run_node(a.node, slots).await
}

pub async fn server(a: ServerArgs) -> anyhow::Result<ExitCode> {
    run_node(a.node, 0).await
}
