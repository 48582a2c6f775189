//! The composition root: chooses the backends from their URLs, builds the
//! scheduler, the API and the local worker slots, and owns their tasks until
//! shutdown. `stratus up` and `stratus server` both come through here, with
//! different roles switched on.

use crate::api::{self, AppState};
use crate::front::{self, Front, Role};
use crate::metrics::Metrics;
use crate::scheduler::{Background, DispatchConfig, Scheduler};
use std::future::Future;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stratus_core::url::redact;
use stratus_core::wire::WireBroker;
use stratus_core::{Clock, SystemClock, new_id};
use stratus_runtime::OutputCaps;
use stratus_runtime::sandbox::{Sandbox, SandboxConfig};
use stratus_runtime::wasm::WasmRuntime;
use stratus_store::Seat;
use stratus_worker::{Executor, TaskSource};

/// The broker's default work queue.
pub const DEFAULT_QUEUE: &str = "stratus.work";
/// Deliveries of a dispatch message before it is dead-lettered, by default.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Local worker slots; 0 runs no local worker.
    pub slots: usize,
    /// `sqlite://PATH`; default: `sqlite://<data_dir>/state.db`.
    pub state_url: Option<String>,
    /// `file://DIR`; default: `file://<data_dir>/objects`.
    pub objects_url: Option<String>,
    /// `amqp://…`: remote workers take their tasks from this broker;
    /// default: they lease them from the server over HTTP.
    pub broker_url: Option<String>,
    /// The broker's work queue (its dead letters go to `QUEUE.dead`).
    pub broker_queue: String,
    /// Deliveries of a dispatch message before it is dead-lettered.
    pub delivery_limit: u32,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    pub caps: OutputCaps,
    /// A remote worker silent for this long is lost; its attempts run again.
    /// Also the lease of the leading server among several on one database.
    pub lease_timeout: Duration,
    /// This server's URL as other servers reach it, when several share a
    /// database; default: `http://` and the listening address (the host
    /// name when listening on all interfaces).
    pub advertise: Option<String>,
    /// How the local slots' process functions are walled in.
    pub sandbox: SandboxOptions,
    /// Whether every API request needs a token. Without, the node only
    /// listens on loopback and every request acts as an admin.
    pub auth: bool,
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may call the
    /// API, besides the node's own; their hosts are allowed in `Host`.
    pub allowed_origins: Vec<String>,
    /// The key secrets are sealed with (64 hex digits), which every server
    /// of a cluster shares; default: `<data_dir>/secret.key`, drawn on
    /// first start.
    pub secret_key_file: Option<PathBuf>,
    /// Keys secrets may still be sealed with: the leading server seals
    /// them again under the current key.
    pub previous_secret_key_files: Vec<PathBuf>,
    /// A file holding the token `/metrics` requires (`Authorization:
    /// Bearer`); without one, `/metrics` is open.
    pub metrics_token_file: Option<PathBuf>,
}

/// The sandbox of process functions, as the node is told to make it.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// No sandbox at all (functions run as the server's user).
    pub disabled: bool,
    /// Refuse to start unless every layer is on.
    pub required: bool,
    pub uid: u32,
    pub gid: u32,
    /// More host paths functions see: read-only, or writable when `true`.
    pub extra_paths: Vec<(PathBuf, bool)>,
}

/// The uid and gid process functions run as by default: a number no
/// account of a Debian or Red Hat system uses.
pub const SANDBOX_UID: u32 = 64_123;

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions { disabled: false, required: false, uid: SANDBOX_UID, gid: SANDBOX_UID, extra_paths: Vec::new() }
    }
}

impl SandboxOptions {
    /// Builds the sandbox of a node whose unpacked bundles are under
    /// `cache_dir`; refuses when it is required and a layer is off.
    pub fn build(&self, cache_dir: &std::path::Path, root_dir: PathBuf) -> Result<Arc<Sandbox>, NodeError> {
        let pyenvs = stratus_runtime::pyenv::pyenvs_dir(cache_dir);
        stratus_runtime::pyenv::make_dir(&pyenvs).map_err(|e| NodeError::DataDir(pyenvs.clone(), e))?;
        let sandbox = Sandbox::new(&SandboxConfig {
            uid: self.uid,
            gid: self.gid,
            bundles_dir: stratus_worker::bundles_dir(cache_dir),
            root_dir,
            extra_paths: self.extra_paths.clone(),
            pyenvs_dir: Some(pyenvs),
            disabled: self.disabled,
        });
        let layers = sandbox.layers();
        if layers.all() {
            tracing::info!(uid = self.uid, "process functions run in a sandbox with every layer on");
        } else {
            let missing = layers.missing().join(", ");
            for reason in sandbox.reasons() {
                tracing::warn!(%reason, "sandbox layer off");
            }
            if self.required {
                return Err(NodeError::Sandbox(format!(
                    "--require-sandbox: these layers are off: {missing} ({})",
                    sandbox.reasons().join("; ")
                )));
            }
            tracing::warn!(%missing, "process functions run with some sandbox layers off (stratus info lists them)");
        }
        Ok(Arc::new(sandbox))
    }
}

impl NodeConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf, slots: usize) -> Self {
        NodeConfig {
            listen,
            data_dir,
            slots,
            state_url: None,
            objects_url: None,
            broker_url: None,
            broker_queue: DEFAULT_QUEUE.into(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            max_body: 64 << 20,
            caps: OutputCaps::default(),
            lease_timeout: Duration::from_secs(10),
            advertise: None,
            sandbox: SandboxOptions::default(),
            auth: true,
            allowed_origins: Vec::new(),
            secret_key_file: None,
            previous_secret_key_files: Vec::new(),
            metrics_token_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("data directory {0} is in use by another stratus process")]
    Locked(PathBuf),
    #[error(transparent)]
    Store(#[from] stratus_store::Error),
    #[error(transparent)]
    Objects(#[from] stratus_blob::Error),
    #[error(transparent)]
    Broker(#[from] stratus_broker::Error),
    #[error("--broker {0}: the in-process queue is the default; give a RabbitMQ URL (amqp://…) or none")]
    InProcessBroker(String),
    #[error(transparent)]
    Runtime(#[from] stratus_runtime::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error(
        "refusing to listen on {0} without authentication: --insecure-no-auth is for loopback addresses only (127.0.0.1, ::1)"
    )]
    InsecureListen(SocketAddr),
    #[error("--allowed-origin {0}: {1}")]
    Origin(String, String),
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("secret key file {0}: {1}")]
    SecretKey(PathBuf, String),
    #[error("metrics token file {0}: {1}")]
    MetricsToken(PathBuf, String),
    /// This server led and lost its lease: it stopped at once.
    #[error("{0}; a standby server takes over")]
    LeaseLost(#[from] crate::front::LeaseLost),
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::Error),
}

pub struct Node;

/// Tasks a local slot takes at a time: enough to amortise the queue, few
/// enough that the other slots are not starved.
const LOCAL_BATCH: usize = 32;

/// Holds an exclusive lock on the data directory for the life of the node.
struct DirLock(#[allow(dead_code)] std::fs::File);

fn lock_dir(dir: &std::path::Path) -> Result<DirLock, NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| NodeError::DataDir(dir.into(), e))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))
        .map_err(|e| NodeError::DataDir(dir.into(), e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(NodeError::Locked(dir.into()));
    }
    Ok(DirLock(file))
}

/// The error a node stops with when its lease task ends: the lease was
/// lost while it led.
fn lease_lost(ended: Result<front::LeaseLost, tokio::task::JoinError>) -> NodeError {
    match ended {
        Ok(lost) => {
            tracing::error!(error = %lost, "stopping at once");
            lost.into()
        }
        Err(e) => NodeError::Serve(std::io::Error::other(e)),
    }
}

fn worker_name() -> String {
    format!("{}/{}", host_name(), std::process::id())
}

/// What a leading server runs; see [`crate::front`].
struct Leading {
    scheduler: Arc<Scheduler>,
    /// The scheduler's and the dispatcher's tasks.
    background: Background,
    slots: Option<tokio::task::JoinHandle<()>>,
}

/// The backends and parts a node builds once, whichever role it plays.
struct Parts {
    store: Arc<dyn stratus_store::StateStore>,
    objects: Arc<dyn stratus_blob::ObjectStore>,
    objects_url: String,
    wasm: Arc<WasmRuntime>,
    cache: PathBuf,
    clock: Arc<dyn Clock>,
    /// The local slots' sandbox (none without local slots).
    sandbox: Option<Arc<Sandbox>>,
    secret_keys: Arc<stratus_core::settings::SecretKeys>,
    /// The SHA-256 of the token `/metrics` requires.
    metrics_token: Option<String>,
}

/// Where functions' API traffic goes: this node's own listener, by
/// loopback when it listens on every interface.
fn local_target(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() { SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port()) } else { addr }
}

/// Serves the Stratus API inside the functions' network namespace: each
/// connection to `STRATUS_URL` there is forwarded, as bytes, to `target`.
/// The task ends with the runtime.
pub fn serve_api_to_functions(sandbox: &Sandbox, target: SocketAddr) {
    let Some(listener) = sandbox.take_api_listener() else { return };
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve the API to sandboxed functions");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok((mut inside, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                if let Ok(mut outside) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                }
            });
        }
    });
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    }
}

/// The id of the server whose data directory this is (created on first use):
/// only one process at a time holds the directory ([`lock_dir`]).
fn server_id(dir: &std::path::Path) -> Result<stratus_core::Id, NodeError> {
    let path = dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Ok(id) = text.trim().parse() {
                return Ok(id);
            }
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(NodeError::DataDir(path, e)),
        Err(_) => {}
    }
    let id = new_id();
    let tmp = dir.join("server-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| NodeError::DataDir(path, e))?;
    Ok(id)
}

async fn resign(parts: &Parts, front: &Front) {
    if let Err(e) = parts.store.resign(front.seat()).await {
        tracing::warn!(error = %e, "cannot give up the lead; a standby takes over when the lease runs out");
    }
}

fn advertised(config: &NodeConfig, addr: SocketAddr) -> String {
    match &config.advertise {
        Some(url) => url.trim_end_matches('/').to_string(),
        None if addr.ip().is_unspecified() => format!("http://{}:{}", host_name(), addr.port()),
        None => format!("http://{addr}"),
    }
}

impl Node {
    /// Runs until `shutdown` resolves. `on_listen` is called with the bound
    /// address once the API accepts connections (forwarded to the leading
    /// server, when another server on the same database leads).
    ///
    /// A node that leads and loses its lease returns
    /// [`NodeError::LeaseLost`] at once, without writing what its writer
    /// holds or waiting for running functions (another server drives the
    /// queue now, and everything acknowledged is in the store): the caller
    /// must end the process then, as the CLI does (exit code 3).
    pub async fn run(
        config: NodeConfig,
        on_listen: impl FnOnce(SocketAddr),
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        if !config.auth && !config.listen.ip().is_loopback() {
            return Err(NodeError::InsecureListen(config.listen));
        }
        let mut origins = crate::origin::Origins::new(&config.allowed_origins)?;
        // The address first: a busy port is reported before a new data
        // directory is created for nothing.
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.map_err(|e| NodeError::Listen(config.listen, e))?;
        let addr = listener.local_addr().map_err(|e| NodeError::Listen(config.listen, e))?;
        let _lock = lock_dir(&config.data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let state_url = config
            .state_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("state.db").display()));
        let objects_url = config
            .objects_url
            .clone()
            .unwrap_or_else(|| format!("file://{}", config.data_dir.join("objects").display()));
        if let Some(url) = &config.broker_url
            && (url == "memory://" || url == "memory")
        {
            return Err(NodeError::InProcessBroker(redact(url)));
        }
        let secret_keys = Arc::new(crate::settings::load_keys(
            &config.data_dir,
            config.secret_key_file.as_deref(),
            &config.previous_secret_key_files,
        )?);
        let metrics_token = match &config.metrics_token_file {
            None => None,
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| NodeError::MetricsToken(path.clone(), e.to_string()))?;
                let token = text.trim();
                if token.len() < 16 {
                    let why = "holds fewer than 16 characters: use a long random token (openssl rand -hex 32)";
                    return Err(NodeError::MetricsToken(path.clone(), why.into()));
                }
                Some(stratus_core::trust::hash_token(token))
            }
        };
        let store = stratus_store::open(&state_url).await?;
        let objects = stratus_blob::open(&objects_url)?;
        let cache = config.data_dir.join("cache");
        let wasm = WasmRuntime::new(config.slots as u32 + 4, Some(cache.join("wasm")))?;
        let sandbox = match config.slots {
            0 => None,
            _ => Some(config.sandbox.build(&cache, config.data_dir.join("sandbox-root"))?),
        };
        let parts = Parts { store, objects, objects_url, wasm, cache, clock, sandbox, secret_keys, metrics_token };

        if let Some(sandbox) = &parts.sandbox {
            sandbox.set_outside_url(format!("http://{}", local_target(addr)));
            serve_api_to_functions(sandbox, local_target(addr));
        }
        let server = server_id(&config.data_dir)?;
        let health = crate::health::Health::new(parts.store.clone(), parts.objects.clone(), parts.clock.clone());
        let url = advertised(&config, addr);
        if let Some(host) = url.split("://").nth(1).map(|r| r.split(['/', ':']).next().unwrap_or(r)) {
            origins.allow_host(host);
        }
        let front = Front::new(Seat { server, url, incarnation: new_id() }, health, origins);
        let lease = config.lease_timeout;
        // The same server restarted takes its lease back at once.
        let role = match parts.store.lead(front.seat(), lease, true).await? {
            None => Role::Leader,
            Some(holder) => Role::Standby(holder),
        };
        let (role_tx, mut role_rx) = tokio::sync::watch::channel(role.clone());
        // Renewed from now on, also while the leader recovers the queue and
        // while it shuts down.
        let mut lease_task = tokio::spawn(front::keep_lease(parts.store.clone(), front.seat().clone(), lease, role_tx));
        let mut leading = None;
        match role {
            Role::Leader => leading = Some(Self::take_lead(&config, &parts, &front, &lease_task).await?),
            Role::Standby(holder) => {
                tracing::info!(leader = %holder.url, "another server leads: forwarding requests to it, ready to take over");
                front.follow(&holder);
            }
        }

        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        // Every server ingests the events published to its broker.
        let ingest = match &config.broker_url {
            Some(url) => {
                let broker = stratus_broker::open(url).await?;
                let queue = config.broker_queue.clone();
                let first = crate::events::subscribe_ingest(&*broker, &queue).await?;
                let (store, clock) = (parts.store.clone(), parts.clock.clone());
                Some(tokio::spawn(crate::events::ingest(broker, queue, first, store, clock, stop_rx.clone())))
            }
            None => None,
        };
        let mut stop_http = stop_rx.clone();
        on_listen(addr);
        let dispatch = config.broker_url.as_deref().map_or("by HTTP leases".into(), redact);
        tracing::info!(%addr, advertise = %front.seat().url, slots = config.slots, state = %redact(&state_url), objects = %redact(&parts.objects_url), %dispatch, "stratus node started");
        let http = tokio::spawn(
            axum::serve(listener, front.router())
                .with_graceful_shutdown(async move {
                    let _ = stop_http.wait_for(|s| *s).await;
                })
                .into_future(),
        );

        loop {
            tokio::select! {
                _ = stop_rx.wait_for(|s| *s) => break,
                changed = role_rx.changed() => if changed.is_err() { break },
                lost = &mut lease_task => {
                    if let Some(leading) = &leading {
                        leading.scheduler.close();
                    }
                    return Err(lease_lost(lost));
                }
            }
            let role = role_rx.borrow_and_update().clone();
            match role {
                Role::Leader if leading.is_none() => {
                    tracing::warn!("the leading server's lease ran out: taking over");
                    leading = Some(Self::take_lead(&config, &parts, &front, &lease_task).await?);
                }
                Role::Leader => {}
                Role::Standby(holder) => front.follow(&holder),
            }
        }
        // The lease is still watched while the node stops: a leader that
        // loses it meanwhile stops at once, as above.
        let stopping = async {
            match http.await {
                Ok(served) => served.map_err(NodeError::Serve)?,
                Err(e) => return Err(NodeError::Serve(std::io::Error::other(e))),
            }
            if let Some(leading) = leading.as_mut() {
                tracing::info!("shutting down: finishing running invocations");
                leading.scheduler.close();
                let slots = leading.slots.take();
                let running = async {
                    if let Some(slots) = slots {
                        let _ = slots.await;
                    }
                    leading.scheduler.ran_here().await;
                };
                if tokio::time::timeout(Duration::from_secs(10), running).await.is_err() {
                    tracing::warn!("running invocations did not finish in 10 s; they will run again on the next start");
                }
                leading.scheduler.flush().await;
                // The writer writes what it still holds, then every task ends.
                leading.background.stop.cancel();
                leading.background.tasks.close();
                leading.background.tasks.wait().await;
            }
            Ok(())
        };
        tokio::select! {
            stopped = stopping => stopped?,
            lost = &mut lease_task => {
                if let Some(leading) = &leading {
                    leading.scheduler.close();
                }
                return Err(lease_lost(lost));
            }
        }
        lease_task.abort();
        if let Some(ingest) = ingest {
            ingest.abort();
        }
        if leading.is_some() {
            resign(&parts, &front).await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Leads: [`Self::start_leading`]. A server that cannot (the broker is
    /// unreachable, say) gives the lease up, so another may take it, and
    /// stops with the error.
    async fn take_lead(
        config: &NodeConfig,
        parts: &Parts,
        front: &Front,
        lease_task: &tokio::task::JoinHandle<front::LeaseLost>,
    ) -> Result<Leading, NodeError> {
        match Self::start_leading(config, parts, front).await {
            Ok(l) => Ok(l),
            Err(e) => {
                lease_task.abort();
                resign(parts, front).await;
                Err(e)
            }
        }
    }

    /// Starts the scheduler (recovering what the last leader left), the
    /// dispatcher and the local slots, and serves the API from then on.
    async fn start_leading(config: &NodeConfig, parts: &Parts, front: &Front) -> Result<Leading, NodeError> {
        let metrics = Arc::new(Metrics::default());
        let background = Background::default();
        let scheduler = Scheduler::start(
            parts.store.clone(),
            parts.clock.clone(),
            metrics,
            config.lease_timeout,
            background.clone(),
        )
        .await?;
        let broker = match &config.broker_url {
            None => None,
            Some(url) => {
                let dispatch = DispatchConfig {
                    url: url.clone(),
                    queue: config.broker_queue.clone(),
                    delivery_limit: config.delivery_limit,
                };
                let opened = stratus_broker::open(url).await?;
                scheduler.start_dispatch(dispatch, opened).await?;
                Some(WireBroker { url: url.clone(), queue: config.broker_queue.clone() })
            }
        };
        let key = Arc::new(stratus_core::trust::AttemptKey::random());
        scheduler.sign_attempts_with(key.clone());
        let trust = Arc::new(api::auth::Trust::new(config.auth, parts.store.trust().await?, key));
        if api::trust::first_admin_token(&*parts.store, &trust, &config.data_dir, parts.clock.now_ms()).await? {
            tracing::info!(file = %config.data_dir.join("admin.token").display(), "created the first admin token");
        }
        if !config.previous_secret_key_files.is_empty() {
            let (store, keys, clock) = (parts.store.clone(), parts.secret_keys.clone(), parts.clock.clone());
            background.tasks.spawn(async move {
                match crate::settings::reseal(&*store, &keys, &*clock).await {
                    Ok(n) => tracing::info!(
                        secrets = n,
                        key = keys.current.id(),
                        "sealed secrets again under the current key"
                    ),
                    Err(e) => tracing::warn!(error = %e, "cannot seal secrets again; the next leader tries again"),
                }
            });
        }
        let retention =
            api::trust::keep_retention(parts.store.clone(), parts.objects.clone(), trust.clone(), parts.clock.clone());
        background.tasks.spawn(background.stop.clone().run_until_cancelled_owned(retention));
        let events = crate::events::EventProcessor::start(
            parts.store.clone(),
            parts.objects.clone(),
            scheduler.clone(),
            parts.clock.clone(),
            background.stop.clone(),
            &background.tasks,
        );
        let pyenvs = Arc::new(stratus_runtime::pyenv::PyEnvs::new(stratus_runtime::pyenv::pyenvs_dir(&parts.cache)));
        let state = AppState {
            events,
            trust,
            ui_codes: Default::default(),
            worker_tokens: Default::default(),
            functions: Default::default(),
            scheduler: scheduler.clone(),
            store: parts.store.clone(),
            objects: parts.objects.clone(),
            wasm: parts.wasm.clone(),
            clock: parts.clock.clone(),
            max_body: config.max_body,
            slots: config.slots,
            lease_timeout: config.lease_timeout,
            shared_objects: (!parts.objects_url.starts_with("file://")).then(|| parts.objects_url.clone()),
            broker,
            sandbox: parts.sandbox.as_ref().map(|s| (s.layers(), s.reasons().to_vec())),
            secret_keys: parts.secret_keys.clone(),
            metrics_token: parts.metrics_token.clone(),
            object_usage: Default::default(),
            pyenvs: (config.slots > 0).then(|| pyenvs.clone()),
        };
        front.lead(api::router(state));
        let slots = if config.slots > 0 {
            let name = worker_name();
            let host = name.split('/').next().unwrap_or_default().to_string();
            scheduler.register_worker(&name, &host, config.slots, true);
            let executor = Arc::new(Executor::new(
                name,
                parts.wasm.clone(),
                parts.objects.clone(),
                parts.cache.clone(),
                config.slots,
                config.caps,
                parts.clock.clone(),
                parts.sandbox.clone().unwrap_or_else(|| Arc::new(Sandbox::off())),
                Arc::new(crate::settings::StoreSettings {
                    store: parts.store.clone(),
                    keys: parts.secret_keys.clone(),
                }),
                pyenvs,
            ));
            scheduler.run_here_on(executor.clone(), config.slots);
            let source: Arc<dyn TaskSource> = scheduler.clone();
            Some(tokio::spawn(stratus_worker::run_slots(executor, source, config.slots, LOCAL_BATCH)))
        } else {
            None
        };
        Ok(Leading { scheduler, background, slots })
    }
}
