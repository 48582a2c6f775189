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
use stratus_runtime::pyenv::PyEnvs;
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
    /// The slots lent to this worker, as they change: one per attempt of
    /// its waiting through the API for calls of its own, which it runs as
    /// more slots meanwhile. `None` for sources that lend none.
    fn loans(&self) -> Option<tokio::sync::watch::Receiver<u32>> {
        None
    }
    /// One take for a lent slot: as [`TaskSource::next`], but `Some` of
    /// nothing when no task came, so that the slot sees whether it is
    /// still lent.
    async fn next_lent(&self, worker: &str, max: usize) -> Option<Vec<Leased>> {
        self.next(worker, max).await
    }
}

/// The values of its project's variables and secrets an attempt runs with.
#[derive(Debug, Clone, Default)]
pub struct AttemptSettings {
    /// In the environment, after the function's own `env`.
    pub env: Vec<(String, String)>,
    /// The secrets' values among them, masked in the attempt's logs.
    pub secrets: Vec<String>,
}

impl From<Vec<stratus_core::api::SettingValue>> for AttemptSettings {
    fn from(values: Vec<stratus_core::api::SettingValue>) -> Self {
        let mut out = AttemptSettings::default();
        for v in values {
            if v.secret {
                out.secrets.push(v.value.clone());
            }
            out.env.push((v.name, v.value));
        }
        out
    }
}

/// Where an attempt of a function that reads variables or secrets gets
/// their values, when it starts: the store, in the server's own slots; the
/// server's API, in a worker of its own (never the broker's messages).
#[async_trait]
pub trait SettingsSource: Send + Sync + 'static {
    async fn settings(&self, task: &Task) -> Result<AttemptSettings, Failure>;
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
    settings: Arc<dyn SettingsSource>,
    /// The Python environments installed here.
    pyenvs: Arc<PyEnvs>,
    /// Bundles unpacked or checked against their digest by this process.
    checked_bundles: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// How long a worker keeps trying to fetch an artifact through errors
/// other than its absence: longer than a standby takes to become leader.
pub const FETCH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

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
        settings: Arc<dyn SettingsSource>,
        pyenvs: Arc<PyEnvs>,
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
            settings,
            pyenvs,
            checked_bundles: Default::default(),
        }
    }

    /// The Python environments of this worker.
    pub fn pyenvs(&self) -> &Arc<PyEnvs> {
        &self.pyenvs
    }

    async fn fetch(&self, digest: &str, cancel: &CancellationToken) -> Result<Bytes, Failure> {
        fetch_artifact(self.objects.as_ref(), digest, cancel, FETCH_PATIENCE).await
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
            claim: task.token,
        }
    }

    /// Runs several attempts. Wasm tasks whose module is compiled run one
    /// after another on one blocking thread: one hand-off for the batch
    /// instead of one per task.
    pub async fn execute_batch(self: &Arc<Self>, tasks: Vec<Leased>) -> Vec<Completion> {
        let (quick, rest): (Vec<Leased>, Vec<Leased>) = tasks.into_iter().partition(|l| {
            l.task.partition.is_none()
                && !l.task.function.spec.uses_settings()
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
                            claim: l.task.token.clone(),
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
        if !task.function.spec.uses_settings() {
            return self.run_with(task, cancel, base_env(task), "").await;
        }
        let settings = match self.settings.settings(task).await {
            Ok(s) => s,
            Err(f) => return failed(f),
        };
        let mut env = base_env(task);
        env.extend(settings.env);
        // Warm processes started with other values are not reused.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&env, &mut h);
        let generation = format!("/{:016x}", std::hash::Hasher::finish(&h));
        let mut out = self.run_with(task, cancel, env, &generation).await;
        if !settings.secrets.is_empty() {
            let secrets: Vec<&[u8]> = settings.secrets.iter().map(|s| s.as_bytes()).collect();
            // Logs cut at their cap end with a marker: a secret's beginning
            // just before it is masked too.
            let marker = stratus_runtime::TRUNCATED_MARKER;
            out.logs = match out.logs.strip_suffix(marker) {
                Some(kept) => [stratus_core::settings::mask(kept, &secrets, true), marker.to_vec()].concat(),
                None => stratus_core::settings::mask(&out.logs, &secrets, false),
            };
            if let Err(f) = &mut out.result {
                f.message =
                    String::from_utf8_lossy(&stratus_core::settings::mask(f.message.as_bytes(), &secrets, false))
                        .into_owned();
            }
        }
        out
    }

    /// Runs `task` with `env`; `generation` tells warm processes started
    /// with another environment apart.
    async fn run_with(
        &self,
        task: &Task,
        cancel: &CancellationToken,
        mut env: Vec<(String, String)>,
        generation: &str,
    ) -> RunOutcome {
        let f = &task.function;
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
                        let bytes = match self.fetch(digest, cancel).await {
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
            Runtime::Process { cmd, warm, token } => {
                env.push(("STRATUS_WORKER".into(), self.name.clone()));
                // A warm process serves many attempts: it gets none of their
                // tokens in its environment, each one in its request header
                // when it asked for them (`token`).
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
                    let bytes = match self.fetch(digest, cancel).await {
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
                if let Some(p) = &f.spec.pyenv {
                    let path = tokio::select! {
                        r = self.pyenvs.ready(p) => r,
                        _ = cancel.cancelled() => return failed(Failure::new(FailureKind::Cancelled, "cancelled")),
                    };
                    let path = match path {
                        Ok(path) => path,
                        Err(message) => {
                            let which = match &p.name {
                                Some(n) => format!("python environment '{n}'"),
                                None => "python environment of its requirements.txt".into(),
                            };
                            return failed(internal(format!("the {which} did not install: {message}")));
                        }
                    };
                    // Its packages first, before any path of the function's own.
                    let mut search = self.sandbox.pyenv_path(&path).to_string_lossy().into_owned();
                    if let Some(i) = env.iter().position(|(k, _)| k == "PYTHONPATH") {
                        search = format!("{search}:{}", env.remove(i).1);
                    }
                    env.push(("PYTHONPATH".into(), search));
                }
                if *warm {
                    let family = format!("{}/{}/", f.project, f.name);
                    let key = format!("{family}{}{generation}", f.version);
                    let id = task.invocation.to_string();
                    self.warm
                        .run(WarmRequest {
                            key: &key,
                            family: &family,
                            dir: &dir,
                            cmd,
                            env: &env,
                            id: &id,
                            token: token.then(|| task.token.as_deref().unwrap_or("-")),
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

/// The artifact `digest`. A missing artifact fails the attempt; any other
/// error — a server failing over, a store briefly unreachable — is tried
/// again for up to `patience`, so that it does not spend the invocation's
/// retries, and then counts as a lost attempt.
async fn fetch_artifact(
    objects: &dyn ObjectStore,
    digest: &str,
    cancel: &CancellationToken,
    patience: std::time::Duration,
) -> Result<Bytes, Failure> {
    let key = Key::artifact(digest);
    let give_up = tokio::time::Instant::now() + patience;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        let e = match objects.get(&key).await {
            Ok(b) => return Ok(b),
            Err(e @ stratus_blob::Error::NotFound(_)) => {
                return Err(internal(format!("cannot fetch artifact {digest}: {e}")));
            }
            Err(e) => e,
        };
        if tokio::time::Instant::now() + pause > give_up {
            return Err(Failure::new(FailureKind::Lost, format!("cannot fetch artifact {digest}: {e}")));
        }
        tracing::warn!(artifact = %digest, error = %e, "cannot fetch an artifact; trying again");
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = cancel.cancelled() => {
                return Err(Failure::new(FailureKind::Cancelled, "cancelled while fetching its artifact"));
            }
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
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
    let done = CancellationToken::new();
    let lender = tokio::spawn(lend_slots(executor.clone(), source.clone(), done.clone()));
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
    done.cancel();
    let _ = lender.await;
}

/// Runs one more slot per slot lent to this worker, while it is lent
/// ([`TaskSource::loans`]); a slot given back stops once its task ends.
async fn lend_slots(executor: Arc<Executor>, source: Arc<dyn TaskSource>, done: CancellationToken) {
    let Some(mut loans) = source.loans() else { return };
    let mut lent: Vec<CancellationToken> = Vec::new();
    let mut slots = tokio::task::JoinSet::new();
    loop {
        let want = *loans.borrow_and_update() as usize;
        while lent.len() < want {
            let (ex, src, stop) = (executor.clone(), source.clone(), CancellationToken::new());
            lent.push(stop.clone());
            slots.spawn(async move {
                while !stop.is_cancelled() {
                    let Some(tasks) = src.next_lent(&ex.name, 1).await else { return };
                    if tasks.is_empty() {
                        continue;
                    }
                    for leased in tasks {
                        let c = ex.execute(leased).await;
                        src.complete(c).await;
                    }
                    src.slot_free(&ex.name);
                }
            });
        }
        while lent.len() > want {
            lent.pop().expect("more lent than wanted").cancel();
        }
        tokio::select! {
            changed = loans.changed() => if changed.is_err() { break },
            _ = done.cancelled() => break,
        }
    }
    for stop in lent {
        stop.cancel();
    }
    while slots.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A real file store whose first `fail` reads fail as a server
    /// failing over does.
    struct Flaky {
        inner: Arc<dyn ObjectStore>,
        fail: AtomicU32,
    }

    #[async_trait]
    impl ObjectStore for Flaky {
        async fn put(&self, key: &Key, data: Bytes) -> stratus_blob::Result<()> {
            self.inner.put(key, data).await
        }
        async fn put_stream(&self, key: &Key, data: stratus_blob::ByteStream) -> stratus_blob::Result<u64> {
            self.inner.put_stream(key, data).await
        }
        async fn get(&self, key: &Key) -> stratus_blob::Result<Bytes> {
            if self.fail.load(Ordering::SeqCst) > 0 {
                self.fail.fetch_sub(1, Ordering::SeqCst);
                return Err(stratus_blob::Error::Backend("503: this server is a standby".into()));
            }
            self.inner.get(key).await
        }
        async fn get_stream(
            &self,
            key: &Key,
            range: Option<std::ops::Range<u64>>,
        ) -> stratus_blob::Result<(stratus_blob::ObjectMeta, stratus_blob::ByteStream)> {
            self.inner.get_stream(key, range).await
        }
        async fn head(&self, key: &Key) -> stratus_blob::Result<Option<stratus_blob::ObjectMeta>> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: Option<&Key>) -> stratus_blob::Result<Vec<stratus_blob::ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &Key) -> stratus_blob::Result<bool> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn an_artifact_is_fetched_through_a_failover_but_a_missing_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let inner = stratus_blob::open(&format!("file://{}", dir.path().display())).unwrap();
        let digest = "ab".repeat(32);
        inner.put(&Key::artifact(&digest), Bytes::from_static(b"module")).await.unwrap();
        let store = Flaky { inner, fail: AtomicU32::new(3) };
        let cancel = CancellationToken::new();
        let patience = std::time::Duration::from_secs(30);
        let got = fetch_artifact(&store, &digest, &cancel, patience).await.unwrap();
        assert_eq!(&got[..], b"module");
        assert_eq!(store.fail.load(Ordering::SeqCst), 0, "it tried through three errors");

        let missing = fetch_artifact(&store, &"cd".repeat(32), &cancel, patience).await.unwrap_err();
        assert_eq!(missing.kind, FailureKind::Internal, "{missing:?}");

        // Errors that outlast its patience make a lost attempt, which is
        // retried beyond the invocation's budget.
        store.fail.store(u32::MAX, Ordering::SeqCst);
        let lost = fetch_artifact(&store, &digest, &cancel, std::time::Duration::ZERO).await.unwrap_err();
        assert_eq!(lost.kind, FailureKind::Lost, "{lost:?}");
        cancel.cancel();
        let stopped = fetch_artifact(&store, &digest, &cancel, patience).await.unwrap_err();
        assert_eq!(stopped.kind, FailureKind::Cancelled, "{stopped:?}");
    }
}
