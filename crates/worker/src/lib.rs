//! Workers: slots that take tasks, run them on the right runtime, and report.
//!
//! A worker does not know where its tasks come from: [`TaskSource`] is the
//! in-process queue when it runs inside `stratus up`, and the server's HTTP
//! API when it runs as its own process. The [`Executor`] turns a task into a
//! completion: it fetches the artifact (cached by content hash), compiles or
//! unpacks it once, and runs it.

use async_trait::async_trait;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;
use stratus_blob::{Key, ObjectStore};
use stratus_core::{Clock, Completion, Failure, FailureKind, Runtime, Task};
use stratus_runtime::warm::WarmPool;
use stratus_runtime::wasm::WasmRuntime;
use stratus_runtime::{OutputCaps, RunOutcome, bundle, process};

/// Where tasks come from and completions go.
#[async_trait]
pub trait TaskSource: Send + Sync + 'static {
    /// The next task for a slot; `None` when the worker should stop.
    async fn next(&self, worker: &str) -> Option<Task>;
    /// Reports the end of an attempt.
    async fn complete(&self, completion: Completion);
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
}

impl Executor {
    pub fn new(
        name: String,
        wasm: Arc<WasmRuntime>,
        objects: Arc<dyn ObjectStore>,
        cache_dir: PathBuf,
        slots: usize,
        caps: OutputCaps,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Executor {
            name,
            wasm,
            warm: WarmPool::new(slots),
            objects,
            bundles_dir: cache_dir.join("bundles"),
            caps,
            clock,
        }
    }

    async fn fetch(&self, digest: &str) -> Result<Bytes, Failure> {
        self.objects.get(&Key::artifact(digest)).await.map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                format!("cannot fetch artifact {digest}: {e}"),
            )
        })
    }

    /// Runs one attempt and says how it ended.
    pub async fn execute(&self, task: Task) -> Completion {
        let started_at = self.clock.now_ms();
        let outcome = self.run(&task).await;
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

    async fn run(&self, task: &Task) -> RunOutcome {
        let f = &task.function;
        let mut env: Vec<(String, String)> = f
            .spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.push(("STRATUS_FUNCTION".into(), f.name.clone()));
        env.push(("STRATUS_FUNCTION_VERSION".into(), f.version.to_string()));
        env.extend(task.extra_env.iter().cloned());
        let failed = |f: Failure| RunOutcome {
            result: Err(f),
            logs: Vec::new(),
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
                        match tokio::task::spawn_blocking(move || {
                            wasm.load(&d, || Ok(bytes.to_vec()))
                        })
                        .await
                        {
                            Ok(Ok(m)) => m,
                            Ok(Err(e)) => {
                                return failed(Failure::new(FailureKind::Internal, e.to_string()));
                            }
                            Err(e) => {
                                return failed(Failure::new(FailureKind::Internal, e.to_string()));
                            }
                        }
                    }
                };
                let wasm = self.wasm.clone();
                let input = task.input.clone();
                let (limits, caps) = (f.spec.limits, self.caps);
                tokio::task::spawn_blocking(move || wasm.run(&module, input, &env, limits, caps))
                    .await
                    .unwrap_or_else(|e| {
                        failed(Failure::new(
                            FailureKind::Internal,
                            format!("wasm worker thread: {e}"),
                        ))
                    })
            }
            Runtime::Process { cmd, warm } => {
                let dir = self.bundles_dir.join(digest);
                if !dir.is_dir() {
                    let bytes = match self.fetch(digest).await {
                        Ok(b) => b,
                        Err(e) => return failed(e),
                    };
                    let d = dir.clone();
                    let unpacked =
                        tokio::task::spawn_blocking(move || bundle::unpack_once(&bytes, &d)).await;
                    match unpacked {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            return failed(Failure::new(
                                FailureKind::Internal,
                                format!("cannot unpack bundle: {e}"),
                            ));
                        }
                        Err(e) => {
                            return failed(Failure::new(FailureKind::Internal, e.to_string()));
                        }
                    }
                }
                if *warm {
                    let key = format!("{}/{}/{}", f.project, f.name, f.version);
                    let id = task.invocation.to_string();
                    self.warm
                        .run(
                            &key,
                            &dir,
                            cmd,
                            &env,
                            &id,
                            &task.input,
                            f.spec.limits,
                            self.caps,
                        )
                        .await
                } else {
                    env.push(("STRATUS_INVOCATION_ID".into(), task.invocation.to_string()));
                    process::run(
                        &dir,
                        cmd,
                        &env,
                        task.input.clone(),
                        f.spec.limits,
                        self.caps,
                    )
                    .await
                }
            }
        }
    }
}

/// Runs `slots` slot loops until the source says stop; returns when all
/// slots have finished their current task.
pub async fn run_slots(executor: Arc<Executor>, source: Arc<dyn TaskSource>, slots: usize) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..slots {
        let (ex, src) = (executor.clone(), source.clone());
        set.spawn(async move {
            while let Some(task) = src.next(&ex.name).await {
                let c = ex.execute(task).await;
                src.complete(c).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
}
