//! `stratus up` and `stratus server`: the same node, with different roles;
//! and `stratus migrate`, which upgrades the state store's schema.

use crate::config::FileConfig;
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use stratus_server::{Node, NodeConfig, NodeError};

/// Where the state lives; shared by the node and `migrate`.
#[derive(Args)]
pub struct StateArgs {
    /// Where state, objects and caches live [default: ./.stratus].
    #[arg(long, env = "STRATUS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// State store URL: sqlite://PATH or postgres://USER@HOST/DB [default: sqlite://DATA_DIR/state.db].
    #[arg(long, env = "STRATUS_STATE", hide_env_values = true)]
    state: Option<String>,
}

impl StateArgs {
    /// Absolute: process functions run in bundles unpacked under it, from
    /// their own directory, where a relative path no longer leads there.
    fn data_dir(&self, file: &FileConfig) -> PathBuf {
        let dir = self.data_dir.clone().or_else(|| file.data_dir.clone()).unwrap_or_else(|| "./.stratus".into());
        std::path::absolute(&dir).unwrap_or(dir)
    }

    fn state_url(&self, file: &FileConfig) -> String {
        self.state
            .clone()
            .or_else(|| file.state.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir(file).join("state.db").display()))
    }
}

#[derive(Args)]
pub struct NodeArgs {
    /// Address of the HTTP API, HOST:PORT (port 0: any free port) [default: 127.0.0.1:7878].
    #[arg(long, env = "STRATUS_LISTEN", value_parser = crate::parse::listen_addr)]
    listen: Option<SocketAddr>,
    #[command(flatten)]
    state: StateArgs,
    /// Object store URL: file://DIR or s3://BUCKET[/PREFIX]?endpoint=… [default: file://DATA_DIR/objects].
    #[arg(long, env = "STRATUS_OBJECTS", hide_env_values = true)]
    objects: Option<String>,
    /// Message broker remote workers take their tasks from: amqp://USER:PASS@HOST:PORT/VHOST
    /// [default: none; they lease tasks from the server over HTTP].
    #[arg(long, env = "STRATUS_BROKER", hide_env_values = true)]
    broker: Option<String>,
    /// The broker's work queue; deployments sharing a broker use different ones [default: stratus.work].
    #[arg(long, env = "STRATUS_BROKER_QUEUE")]
    broker_queue: Option<String>,
    /// Deliveries of a dispatch message before it is dead-lettered and its tasks fail [default: 5].
    #[arg(long, env = "STRATUS_DELIVERY_LIMIT", value_parser = clap::value_parser!(u32).range(1..=1000))]
    delivery_limit: Option<u32>,
    /// A remote worker silent for this long is declared lost [default: 10s].
    #[arg(long, env = "STRATUS_LEASE_TIMEOUT", value_parser = crate::parse::duration_ms)]
    lease_timeout: Option<u64>,
    /// This server's URL as other servers on the same database reach it; a standby
    /// forwards requests there while this one leads [default: http://LISTEN].
    #[arg(long, env = "STRATUS_ADVERTISE", value_parser = crate::parse::server_url)]
    advertise: Option<String>,
    /// Largest request body accepted [default: 64M].
    #[arg(long, env = "STRATUS_MAX_BODY", value_parser = crate::parse::memory_mb)]
    max_body: Option<u64>,
    /// Serve the API without tokens, every request acting as an admin;
    /// only on a loopback address.
    #[arg(long, env = "STRATUS_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// A web origin (https://host[:port]) whose pages may call the API, or
    /// '*' for any (repeatable); others are refused.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// The key secrets are sealed with: a file of 64 hex digits (e.g. from
    /// `openssl rand -hex 32`), the same on every server of a cluster
    /// [default: DATA_DIR/secret.key, drawn on first start].
    #[arg(long, env = "STRATUS_SECRET_KEY_FILE", value_name = "FILE")]
    secret_key_file: Option<std::path::PathBuf>,
    /// A key secrets were sealed with before --secret-key-file: the leading
    /// server seals them again under the new key (repeatable).
    #[arg(long = "previous-secret-key-file", value_name = "FILE")]
    previous_secret_key_files: Vec<std::path::PathBuf>,
    /// A file holding the token /metrics then requires (Authorization:
    /// Bearer TOKEN), at least 16 characters [default: /metrics is open].
    #[arg(long, env = "STRATUS_METRICS_TOKEN_FILE", value_name = "FILE")]
    metrics_token_file: Option<std::path::PathBuf>,
}

/// How process functions are walled in; shared by `up` and `worker`.
#[derive(Args)]
pub struct SandboxArgs {
    /// Run process functions without a sandbox, as the server's own user
    /// (for hosts that cannot have one; see docs/security.md).
    #[arg(long, env = "STRATUS_NO_SANDBOX", conflicts_with = "require_sandbox")]
    no_sandbox: bool,
    /// Refuse to start unless every sandbox layer is on.
    #[arg(long, env = "STRATUS_REQUIRE_SANDBOX")]
    require_sandbox: bool,
    /// The uid (and gid) process functions run as [default: 64123].
    #[arg(long, env = "STRATUS_SANDBOX_UID")]
    sandbox_uid: Option<u32>,
    /// A host path process functions may read, e.g. a Python environment
    /// (repeatable); PATH:rw makes it writable.
    #[arg(long = "sandbox-path", value_name = "PATH[:rw]")]
    sandbox_paths: Vec<String>,
}

impl SandboxArgs {
    pub fn options(&self) -> anyhow::Result<stratus_server::node::SandboxOptions> {
        let mut o = stratus_server::node::SandboxOptions {
            disabled: self.no_sandbox,
            required: self.require_sandbox,
            ..Default::default()
        };
        if let Some(uid) = self.sandbox_uid {
            (o.uid, o.gid) = (uid, uid);
        }
        for p in &self.sandbox_paths {
            let (path, rw) = match p.strip_suffix(":rw") {
                Some(path) => (path, true),
                None => (p.strip_suffix(":ro").unwrap_or(p), false),
            };
            let path = std::path::Path::new(path);
            anyhow::ensure!(path.is_absolute(), "--sandbox-path {p}: give an absolute path");
            o.extra_paths.push((path.to_path_buf(), rw));
        }
        Ok(o)
    }
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    sandbox: SandboxArgs,
    /// Local worker slots [default: the number of cores].
    #[arg(long, env = "STRATUS_SLOTS")]
    slots: Option<usize>,
}

#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    state: StateArgs,
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

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed
/// when this is called, not when it is first polled: a signal that comes
/// right after a node or worker has said it is ready stops it cleanly.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

async fn run_node(
    args: NodeArgs,
    file: &FileConfig,
    slots: usize,
    sandbox: Option<&SandboxArgs>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    init_logging();
    let listen = args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7878)));
    let mut config = NodeConfig::new(listen, args.state.data_dir(file), slots);
    if let Some(s) = sandbox {
        config.sandbox = s.options()?;
    }
    config.state_url = Some(args.state.state_url(file));
    config.objects_url = args.objects.or_else(|| file.objects.clone());
    config.broker_url = args.broker.or_else(|| file.broker.clone());
    if let Some(q) = args.broker_queue.or_else(|| file.broker_queue.clone()) {
        config.broker_queue = q;
    }
    if let Some(n) = args.delivery_limit.or(file.delivery_limit) {
        config.delivery_limit = n;
    }
    config.advertise = args.advertise.or_else(|| file.advertise.clone());
    config.max_body = (args.max_body.or(file.max_body_mb()).unwrap_or(64) as usize) << 20;
    config.lease_timeout =
        std::time::Duration::from_millis(args.lease_timeout.or(file.lease_timeout_ms()).unwrap_or(10_000));
    config.auth = !(args.insecure_no_auth || file.insecure_no_auth == Some(true));
    config.allowed_origins =
        if args.allowed_origins.is_empty() { file.allowed_origins.clone() } else { args.allowed_origins };
    config.secret_key_file = args.secret_key_file.or_else(|| file.secret_key_file.clone());
    config.metrics_token_file = args.metrics_token_file.or_else(|| file.metrics_token_file.clone());
    config.previous_secret_key_files = if args.previous_secret_key_files.is_empty() {
        file.previous_secret_key_files.clone()
    } else {
        args.previous_secret_key_files
    };
    let admin_token = config.data_dir.join("admin.token");
    let had_token = admin_token.exists();
    let ran = Node::run(
        config,
        |addr| {
            // The first admin token, created by this start (or by an earlier
            // one, when the CLI has no token for this URL yet): the CLI on
            // this machine uses it for this URL from now on.
            let url = format!("http://{addr}");
            let known = || crate::credentials::token_for(&url).ok().flatten().is_some();
            if let Ok(token) = std::fs::read_to_string(&admin_token)
                && (!had_token || !known())
            {
                match crate::credentials::store(&url, token.trim()) {
                    Ok(file) => {
                        tracing::info!(credentials = %file.display(), %url, "stored the admin token for the CLI")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot store the admin token for the CLI"),
                }
            }
            // The first line on stdout, for people and for scripts.
            if json {
                println!("{}", serde_json::json!({"listening": format!("http://{addr}")}));
            } else {
                println!("stratus listening on http://{addr}");
            }
        },
        shutdown_signal(),
    )
    .await;
    if let Err(NodeError::LeaseLost(why)) = &ran {
        // Another server leads now: end at once (returning would wait for
        // the runtime's running functions). Exit code 3 tells a supervisor.
        crate::errors::print("lease_lost", &format!("stopping at once: {why}"), json, None);
        std::process::exit(3);
    }
    ran.map_err(|e| match e {
        NodeError::Listen(addr, io) if io.kind() == std::io::ErrorKind::AddrInUse => crate::errors::CliError {
            code: "address_in_use",
            message: format!(
                "cannot listen on {addr}: the address is in use (another `stratus up`?); give another --listen, e.g. {}:{}",
                addr.ip(),
                addr.port().wrapping_add(1).max(1)
            ),
        }
        .into(),
        other => anyhow::Error::from(other),
    })?;
    Ok(ExitCode::SUCCESS)
}

pub async fn up(a: UpArgs, file: &FileConfig, json: bool) -> anyhow::Result<ExitCode> {
    let slots = a.slots.or(file.slots).unwrap_or_else(cores);
    run_node(a.node, file, slots, Some(&a.sandbox), json).await
}

pub async fn server(a: ServerArgs, file: &FileConfig, json: bool) -> anyhow::Result<ExitCode> {
    run_node(a.node, file, 0, None, json).await
}

/// Opens the state store, which applies pending migrations under the
/// engine's lock, and says what it did.
pub async fn migrate(a: MigrateArgs, file: &FileConfig, json: bool) -> anyhow::Result<ExitCode> {
    let url = a.state.state_url(file);
    let shown = stratus_core::url::redact(&url);
    let store = stratus_store::open(&url).await.map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let v = store.schema();
    if json {
        println!("{}", serde_json::json!({"state": shown, "found": v.found, "now": v.now}));
    } else if v.found == v.now {
        println!("{shown}: schema is at version {}; nothing to do", v.now);
    } else {
        println!("{shown}: schema upgraded from version {} to {}", v.found, v.now);
    }
    Ok(ExitCode::SUCCESS)
}
