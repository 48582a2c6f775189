//! `stratus worker` (join a server) and `stratus workers` (list them).

use super::Ctx;
use crate::config::WorkerConfig;
use crate::output::out;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use stratus_core::SystemClock;
use stratus_runtime::OutputCaps;
use stratus_runtime::wasm::WasmRuntime;
use stratus_worker::brokered::BrokerSource;
use stratus_worker::remote::{HttpSource, RemoteObjects};
use stratus_worker::{Executor, TaskSource};
use tokio_util::sync::CancellationToken;

/// Tasks a slot leases at a time, at most: one HTTP round trip for many
/// short tasks. The server hands out several only when its queue is long
/// (a 64th of it), so a long task never holds others back from idle slots.
const REMOTE_BATCH: usize = 32;

#[derive(Args)]
pub struct WorkerArgs {
    /// Task slots [default: the number of cores].
    #[arg(long, env = "STRATUS_SLOTS")]
    slots: Option<usize>,
    /// Where compiled modules and unpacked bundles are cached [default: ./.stratus-worker].
    #[arg(long, env = "STRATUS_WORKER_DIR")]
    data_dir: Option<PathBuf>,
    /// Worker name [default: HOST-PID].
    #[arg(long, env = "STRATUS_WORKER_NAME")]
    name: Option<String>,
    #[command(flatten)]
    sandbox: super::node::SandboxArgs,
}

/// The server's address, for the functions' `STRATUS_URL` (plain HTTP).
fn api_target(url: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let parsed = url::Url::parse(url).ok()?;
    (parsed.host_str()?, parsed.port_or_known_default()?).to_socket_addrs().ok()?.next()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub async fn worker(ctx: &Ctx, a: WorkerArgs, file: &WorkerConfig) -> anyhow::Result<ExitCode> {
    super::node::init_logging();
    let slots = a.slots.or(file.slots).unwrap_or_else(super::node::cores);
    anyhow::ensure!(slots > 0, "--slots must be at least 1");
    let data_dir = a.data_dir.or_else(|| file.data_dir.clone()).unwrap_or_else(|| "./.stratus-worker".into());
    // Absolute, for the same reason as the node's (see node::StateArgs::data_dir).
    let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
    let host = hostname();
    let name = a.name.or_else(|| file.name.clone()).unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let stop = CancellationToken::new();
    let stopped = super::node::shutdown_signal();
    // Made before joining: a worker that says it joined is ready to run.
    let sandbox = a.sandbox.options()?.build(&data_dir.join("cache"), data_dir.join("sandbox-root"))?;
    let (source, reporter) = HttpSource::connect(ctx.client.clone(), &name, &host, slots, stop.clone()).await?;
    if ctx.json {
        crate::output::json(
            &serde_json::json!({"worker": source.id(), "server": ctx.client.base_url(), "slots": slots}),
        )?;
    } else {
        println!("stratus worker {} joined {} with {slots} slots", source.id(), ctx.client.base_url());
    }
    let wasm = WasmRuntime::new(slots as u32 + 2, Some(data_dir.join("cache/wasm")))?;
    let objects: Arc<dyn stratus_blob::ObjectStore> = match source.objects_url() {
        Some(url) => stratus_blob::open(url)?,
        None => Arc::new(RemoteObjects(ctx.client.clone())),
    };
    sandbox.set_outside_url(ctx.client.base_url().trim_end_matches('/').to_string());
    if let Some(target) = api_target(ctx.client.base_url()) {
        stratus_server::node::serve_api_to_functions(&sandbox, target);
    }
    let executor = Arc::new(Executor::new(
        source.id(),
        wasm,
        objects,
        data_dir.join("cache"),
        slots,
        OutputCaps::default(),
        Arc::new(SystemClock),
        sandbox,
        source.clone(),
        Arc::new(stratus_runtime::pyenv::PyEnvs::new(stratus_runtime::pyenv::pyenvs_dir(&data_dir.join("cache")))),
    ));
    let (src, acks): (Arc<dyn TaskSource>, _) = match source.broker() {
        Some(broker) => {
            let (s, acks) = BrokerSource::start(source.clone(), broker.clone(), slots);
            (s, Some(acks))
        }
        None => (source.clone(), None),
    };
    let run = tokio::spawn(stratus_worker::run_slots(executor, src, slots, REMOTE_BATCH));
    stopped.await;
    tracing::info!("stopping: finishing the tasks taken");
    stop.cancel();
    let _ = run.await;
    let id = source.id();
    drop(source);
    let grace = std::time::Duration::from_secs(10);
    let _ = tokio::time::timeout(grace, reporter).await;
    if let Some(acks) = acks {
        let _ = tokio::time::timeout(grace, acks).await;
    }
    // Every completion is delivered: leave the server's list now rather than
    // be declared lost a lease timeout later.
    if let Err(e) = ctx.client.deregister_worker(&id).await {
        tracing::warn!(error = %e, "cannot deregister");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let workers = ctx.client.list_workers().await?;
    if ctx.json {
        crate::output::json_rows(&workers)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = crate::output::now_ms();
    out!(
        "{:<40} {:<20} {:>5} {:>7} {:>10} {:>10} {:<6}",
        "ID",
        "HOST",
        "SLOTS",
        "RUNNING",
        "HEARTBEAT",
        "JOINED",
        "STATE"
    )?;
    for w in workers {
        let (beat, joined) = (crate::output::age(w.last_heartbeat, now), crate::output::age(w.registered_at, now));
        out!("{:<40} {:<20} {:>5} {:>7} {beat:>10} {joined:>10} {:<6}", w.id, w.host, w.slots, w.running, w.state)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `stratus info`: the server's version, its local slots, and the sandbox
/// layers of its process functions (and why any is off).
pub async fn info(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let info = ctx.client.info().await?;
    if ctx.json {
        // Through a Value, whose keys are sorted, as this output always was.
        println!("{}", serde_json::to_value(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("version: {}", info.version);
    println!("slots:   {}", info.slots);
    let Some(sandbox) = &info.sandbox else {
        println!("sandbox: none (no local slots)");
        return Ok(ExitCode::SUCCESS);
    };
    let on: Vec<&str> = sandbox.layers.iter().filter(|(_, on)| **on).map(|(k, _)| k.as_str()).collect();
    let off: Vec<&str> = sandbox.layers.iter().filter(|(_, on)| !**on).map(|(k, _)| k.as_str()).collect();
    println!(
        "sandbox: {}",
        if off.is_empty() { "every layer on".to_string() } else { format!("on: {}", on.join(", ")) }
    );
    if !off.is_empty() {
        println!("off:     {}", off.join(", "));
        for r in &sandbox.reasons {
            println!("         {r}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
