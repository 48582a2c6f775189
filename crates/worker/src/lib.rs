//! Workers: slots that take tasks, run them on the right runtime, and report.
//!
//! A worker does not know where its tasks come from: [`TaskSource`] is the
//! in-process queue when it runs inside `stratus up`, and the server's HTTP
//! API when it runs as its own process (`stratus worker`). The [`Executor`]
//! turns a task into a completion: it fetches the artifact (cached by content
//! hash), compiles or unpacks it once, reads the task's object partition when
//! it has one, and runs it.

pub mod brokered;
mod partition;
pub mod remote;

use async_trait::async_trait;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use stratus_blob::{Key, ObjectStore};
use stratus_core::{Clock, Completion, Failure, FailureKind, Runtime, Task};
use stratus_runtime::sandbox::Sandbox;
use stratus_runtime::warm::{WarmPool, WarmRequest};
use stratus_runtime::wasm::WasmRuntime;
use stratus_runtime::{OutputCaps, RunOutcome, bundle, process};
use tokio_util::sync::CancellationToken;

pub use partition::read_partition;

/// A task handed to a slot, with the signal that cancels it.
#[derive(Debug, Clone)]
pub struct Leased {
    pub task: Task,
    pub cancel: CancellationToken,
}

/// Where tasks come from and completions go.
#[async_trait]
pub trait TaskSource: Send + Sync + 'static {
    /// Between one and `max` tasks for a slot; `None` when the worker should stop.
    async fn next(&self, worker: &str, max: usize) -> Option<Vec<Leased>>;
    /// Reports the end of an attempt.
    async fn complete(&self, completion: Completion);
    /// Says that a slot of `worker` has run all it took with its last
    /// [`TaskSource::next`] and is free again.
    fn slot_free(&self, _worker: &str) {}
}

/// Runs tasks. One per worker, shared by its slots.
pub struct Executor {
    pub name: String,
    wasm: Arc<WasmRuntime>,
    warm: WarmPool,
    objects: Arc<dyn ObjectStore>,
    bundles_dir: PathBuf,
    caps: OutputCaps,
    clock: Arc<dyn Clock>,
    /// Where process functions run.
    sandbox: Arc<Sandbox>,
    /// Bundles unpacked or checked against their digest by this process.
    checked_bundles: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn failed(f: Failure) -> RunOutcome {
    RunOutcome { result: Err(f), logs: Vec::new() }
}

fn internal(msg: impl Into<String>) -> Failure {
    Failure::new(FailureKind::Internal, msg)
}

/// Where an executor with this cache directory unpacks bundles.
pub fn bundles_dir(cache_dir: &std::path::Path) -> PathBuf {
    cache_dir.join("bundles")
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        wasm: Arc<WasmRuntime>,
        objects: Arc<dyn ObjectStore>,
        cache_dir: PathBuf,
        slots: usize,
        caps: OutputCaps,
        clock: Arc<dyn Clock>,
        sandbox: Arc<Sandbox>,
    ) -> Self {
        let bundles_dir = bundles_dir(&cache_dir);
        bundle::remove_partial_unpacks(&bundles_dir);
        Executor {
            name,
            wasm,
            warm: WarmPool::new(slots),
            objects,
            bundles_dir,
            caps,
            clock,
            sandbox,
            checked_bundles: Default::default(),
        }
    }

    async fn fetch(&self, digest: &str) -> Result<Bytes, Failure> {
        self.objects
            .get(&Key::artifact(digest))
            .await
            .map_err(|e| internal(format!("cannot fetch artifact {digest}: {e}")))
    }

    /// Runs one attempt and says how it ended.
    pub async fn execute(&self, leased: Leased) -> Completion {
        let started_at = self.clock.now_ms();
        let Leased { task, cancel } = leased;
        let outcome = if cancel.is_cancelled() {
            failed(Failure::new(FailureKind::Cancelled, "cancelled before it started"))
        } else {
            self.run(&task, &cancel).await
        };
        Completion {
            invocation: task.invocation,
            attempt: task.attempt,
            worker: self.name.clone(),
            started_at,
            finished_at: self.clock.now_ms(),
            result: outcome.result,
            logs: outcome.logs,
        }
    }

    /// Runs several attempts. Wasm tasks whose module is compiled run one
    /// after another on one blocking thread: one hand-off for the batch
    /// instead of one per task.
    pub async fn execute_batch(self: &Arc<Self>, tasks: Vec<Leased>) -> Vec<Completion> {
        let (quick, rest): (Vec<Leased>, Vec<Leased>) = tasks.into_iter().partition(|l| {
            l.task.partition.is_none()
                && l.task.function.spec.runtime == Runtime::Wasm
                && self.wasm.cached(&l.task.function.spec.artifact).is_some()
        });
        let mut out = Vec::with_capacity(quick.len() + rest.len());
        if !quick.is_empty() {
            let me = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                quick
                    .into_iter()
                    .map(|l| {
                        let started_at = me.clock.now_ms();
                        let module = me.wasm.cached(&l.task.function.spec.artifact).expect("checked above");
                        let mut env = base_env(&l.task);
                        env.push(("STRATUS_INVOCATION_ID".into(), l.task.invocation.to_string()));
                        let run = || {
                            me.wasm.run(
                                &module,
                                l.task.input.clone(),
                                &env,
                                l.task.function.spec.limits,
                                me.caps,
                                &l.cancel,
                            )
                        };
                        let o = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run))
                            .unwrap_or_else(|_| failed(internal("the wasm runtime panicked")));
                        Completion {
                            invocation: l.task.invocation,
                            attempt: l.task.attempt,
                            worker: me.name.clone(),
                            started_at,
                            finished_at: me.clock.now_ms(),
                            result: o.result,
                            logs: o.logs,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await;
            match done {
                Ok(c) => out.extend(c),
                Err(e) => {
                    tracing::error!(error = %e, "wasm batch thread failed; its tasks will be retried when their lease ends")
                }
            }
        }
        for l in rest {
            out.push(self.execute(l).await);
        }
        out
    }

    async fn run(&self, task: &Task, cancel: &CancellationToken) -> RunOutcome {
        let f = &task.function;
        let mut env = base_env(task);
        let input = match &task.partition {
            None => task.input.clone(),
            Some(p) => match read_partition(self.objects.as_ref(), &f.project, p).await {
                Ok((bytes, range)) => {
                    env.push(("STRATUS_OBJECT".into(), p.object.clone()));
                    env.push(("STRATUS_RANGE".into(), format!("{}-{}", range.start, range.end)));
                    bytes
                }
                Err(e) => return failed(e),
            },
        };
        let digest = &f.spec.artifact;
        match &f.spec.runtime {
            Runtime::Wasm => {
                env.push(("STRATUS_INVOCATION_ID".into(), task.invocation.to_string()));
                let module = match self.wasm.cached(digest) {
                    Some(m) => m,
                    None => {
                        let bytes = match self.fetch(digest).await {
                            Ok(b) => b,
                            Err(e) => return failed(e),
                        };
                        let wasm = self.wasm.clone();
                        let d = digest.clone();
                        match tokio::task::spawn_blocking(move || wasm.load(&d, || Ok(bytes.to_vec()))).await {
                            Ok(Ok(m)) => m,
                            Ok(Err(e)) => return failed(internal(e.to_string())),
                            Err(e) => return failed(internal(e.to_string())),
                        }
                    }
                };
                let wasm = self.wasm.clone();
                let (limits, caps, cancel) = (f.spec.limits, self.caps, cancel.clone());
                tokio::task::spawn_blocking(move || wasm.run(&module, input, &env, limits, caps, &cancel))
                    .await
                    .unwrap_or_else(|e| failed(internal(format!("wasm worker thread: {e}"))))
            }
            Runtime::Process { cmd, warm } => {
                env.push(("STRATUS_WORKER".into(), self.name.clone()));
                // A warm process serves many attempts: it gets none of their tokens.
                if let (Some(token), false) = (&task.token, *warm) {
                    env.push(("STRATUS_TOKEN".into(), token.clone()));
                }
                let dir = self.bundles_dir.join(digest);
                if dir.is_dir() && !self.checked_bundles.lock().unwrap().contains(digest) {
                    // Unpacked before this process started: packed again, it
                    // must give its digest back, or it is unpacked afresh.
                    let (d, want) = (dir.clone(), digest.clone());
                    let intact = tokio::task::spawn_blocking(move || {
                        bundle::pack_dir(&d).is_ok_and(|bytes| bundle::digest(&bytes) == want)
                    })
                    .await
                    .unwrap_or(false);
                    if intact {
                        self.checked_bundles.lock().unwrap().insert(digest.clone());
                    } else {
                        tracing::warn!(bundle = %digest, "a cached bundle changed on disk: unpacking it again");
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
                if !dir.is_dir() {
                    let bytes = match self.fetch(digest).await {
                        Ok(b) => b,
                        Err(e) => return failed(e),
                    };
                    let d = dir.clone();
                    match tokio::task::spawn_blocking(move || bundle::unpack_once(&bytes, &d)).await {
                        Ok(Ok(())) => {
                            self.checked_bundles.lock().unwrap().insert(digest.clone());
                        }
                        Ok(Err(e)) => return failed(internal(format!("cannot unpack bundle: {e}"))),
                        Err(e) => return failed(internal(e.to_string())),
                    }
                }
                if *warm {
                    let key = format!("{}/{}/{}", f.project, f.name, f.version);
                    let id = task.invocation.to_string();
                    self.warm
                        .run(WarmRequest {
                            key: &key,
                            dir: &dir,
                            cmd,
                            env: &env,
                            id: &id,
                            input: &input,
                            limits: f.spec.limits,
                            caps: self.caps,
                            cancel,
                            place: Some((&self.sandbox, f.spec.network)),
                        })
                        .await
                } else {
                    env.push(("STRATUS_INVOCATION_ID".into(), task.invocation.to_string()));
                    let place = Some((&self.sandbox, f.spec.network));
                    process::run(&dir, cmd, &env, input, f.spec.limits, self.caps, cancel, place).await
                }
            }
        }
    }
}

/// The environment every attempt gets, before its invocation id.
fn base_env(task: &Task) -> Vec<(String, String)> {
    let f = &task.function;
    let mut env: Vec<(String, String)> = f.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.push(("STRATUS_FUNCTION".into(), f.name.clone()));
    env.push(("STRATUS_FUNCTION_VERSION".into(), f.version.to_string()));
    if let Some(job) = task.job {
        env.push(("STRATUS_JOB_ID".into(), job.to_string()));
    }
    env
}

/// Runs `slots` slot loops until the source says stop; returns when all
/// slots have finished their current task. Each slot takes up to `batch`
/// tasks at a time.
pub async fn run_slots(executor: Arc<Executor>, source: Arc<dyn TaskSource>, slots: usize, batch: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..slots {
        let (ex, src) = (executor.clone(), source.clone());
        set.spawn(async move {
            while let Some(tasks) = src.next(&ex.name, batch).await {
                if tasks.len() == 1 {
                    for leased in tasks {
                        let c = ex.execute(leased).await;
                        src.complete(c).await;
                    }
                } else {
                    for c in ex.execute_batch(tasks).await {
                        src.complete(c).await;
                    }
                }
                src.slot_free(&ex.name);
            }
        });
    }
    while set.join_next().await.is_some() {}
}
