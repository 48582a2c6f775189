//! A worker in its own process: leases tasks from a server over HTTP,
//! heartbeats, and reports completions in batches.

use crate::{Leased, TaskSource};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use stratus_blob::{ByteStream, Key, ObjectMeta, ObjectStore};
use stratus_client::{Client, Error as ClientError, WireCompletion};
use stratus_core::wire::WireBroker;
use stratus_core::{Completion, Id, Task};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Told which attempts' (invocation, attempt) results are durable.
type Reported = mpsc::UnboundedSender<Vec<(Id, u32)>>;

pub struct HttpSource {
    client: Client,
    name: String,
    host: String,
    slots: usize,
    id: Arc<Mutex<String>>,
    heartbeat: Duration,
    tokens: Mutex<HashMap<Id, CancellationToken>>,
    /// What the last heartbeat said to cancel: through a broker, a task may
    /// arrive after the heartbeat that named it.
    cancelled: Mutex<HashSet<Id>>,
    completions: mpsc::UnboundedSender<Completion>,
    stop: CancellationToken,
    objects: Option<String>,
    broker: Option<WireBroker>,
    /// Told which attempts' results the server has made durable.
    reported: Arc<OnceLock<Reported>>,
    /// Whether the last heartbeat reached the server.
    reachable: tokio::sync::watch::Sender<bool>,
    /// The slots the server lends this worker, as its leases say.
    lent: tokio::sync::watch::Sender<u32>,
}

/// Delivers completions; holds no [`HttpSource`], so it ends once the source
/// is gone and every completion sent before has been delivered.
struct Reporter {
    client: Client,
    id: Arc<Mutex<String>>,
    reported: Arc<OnceLock<Reported>>,
}

fn gone(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 410, .. })
}

impl HttpSource {
    /// One lease: its tasks (none when none came, or after an error, which
    /// it waits a moment after), or `None` once the worker stops. Each
    /// answer also says how many slots are lent to the worker.
    async fn lease_once(&self, max: usize) -> Option<Vec<Leased>> {
        if self.stop.is_cancelled() {
            return None;
        }
        let id = self.id();
        let leased = tokio::select! {
            r = self.client.lease_lent(&id, max, Duration::from_secs(10)) => r,
            _ = self.stop.cancelled() => return None,
        };
        match leased {
            Ok((tasks, lent)) => {
                self.lent.send_if_modified(|n| std::mem::replace(n, lent) != lent);
                Some(self.take(tasks))
            }
            Err(e) if gone(&e) => {
                self.reregister().await;
                Some(Vec::new())
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => Some(Vec::new()),
                    _ = self.stop.cancelled() => None,
                }
            }
        }
    }

    /// Leased tasks, each with the token that cancels it.
    fn take(&self, tasks: Vec<stratus_core::wire::WireTask>) -> Vec<Leased> {
        let mut tokens = self.tokens.lock().unwrap();
        tasks
            .into_iter()
            .map(|w| {
                let task: Task = w.into();
                let cancel = CancellationToken::new();
                tokens.insert(task.invocation, cancel.clone());
                Leased { task, cancel }
            })
            .collect()
    }

    /// Registers with the server and starts the heartbeat and reporting
    /// tasks. The worker stops taking tasks when `stop` is cancelled; the
    /// returned handle finishes once every completion has been delivered.
    pub async fn connect(
        client: Client,
        name: &str,
        host: &str,
        slots: usize,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), ClientError> {
        let reg = client.register_worker(name, host, slots).await?;
        let objects_shown = reg.objects.as_deref().map_or("through the server".into(), stratus_core::url::redact);
        let tasks_shown = reg.broker.as_ref().map_or("leased from the server".into(), |b| {
            format!("from queue {} on {}", b.queue, stratus_core::url::redact(&b.url))
        });
        tracing::info!(worker = %reg.id, server = client.base_url(), objects = %objects_shown, tasks = %tasks_shown, "registered");
        let (tx, rx) = mpsc::unbounded_channel();
        let id = Arc::new(Mutex::new(reg.id));
        let reported = Arc::new(OnceLock::new());
        let reporter = Reporter { client: client.clone(), id: id.clone(), reported: reported.clone() };
        let me = Arc::new(HttpSource {
            client,
            name: name.to_string(),
            host: host.to_string(),
            slots,
            id,
            heartbeat: Duration::from_millis(reg.heartbeat_ms.max(50)),
            tokens: Mutex::new(HashMap::new()),
            cancelled: Mutex::new(HashSet::new()),
            completions: tx,
            stop,
            objects: reg.objects,
            broker: reg.broker,
            reported,
            reachable: tokio::sync::watch::Sender::new(true),
            lent: tokio::sync::watch::Sender::new(0),
        });
        tokio::spawn(me.clone().heartbeat_loop());
        let reporter = tokio::spawn(reporter.run(rx));
        Ok((me, reporter))
    }

    /// The object store URL the server handed out at registration, when the
    /// worker should reach the store itself; `None`: go through the server.
    pub fn objects_url(&self) -> Option<&str> {
        self.objects.as_deref()
    }

    /// The broker to take tasks from, when the server dispatches through one.
    pub fn broker(&self) -> Option<&WireBroker> {
        self.broker.as_ref()
    }

    /// Has `tx` told of each batch of attempts whose results the server has
    /// made durable. Set once.
    pub(crate) fn on_reported(&self, tx: Reported) {
        let _ = self.reported.set(tx);
    }

    /// Makes `cancel` fire when the server asks for the attempt's
    /// cancellation (at once if it already has).
    pub(crate) fn track(&self, id: Id, cancel: CancellationToken) {
        if self.cancelled.lock().unwrap().contains(&id) {
            cancel.cancel();
        }
        self.tokens.lock().unwrap().insert(id, cancel);
    }

    /// Whether the server answers heartbeats: a worker cut off from it
    /// (its server died, say) stops taking work it could not report.
    pub(crate) fn reachable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    fn set_reachable(&self, yes: bool) {
        self.reachable.send_if_modified(|r| std::mem::replace(r, yes) != yes);
    }

    pub fn stopping(&self) -> &CancellationToken {
        &self.stop
    }

    pub fn id(&self) -> String {
        self.id.lock().unwrap().clone()
    }

    async fn reregister(&self) {
        loop {
            match self.client.register_worker(&self.name, &self.host, self.slots).await {
                Ok(reg) => {
                    tracing::warn!(worker = %reg.id, "the server had declared this worker lost; registered again");
                    *self.id.lock().unwrap() = reg.id;
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        // Consecutive heartbeats that failed: one may be a blip; two in a
        // row mean the server is gone (or stands by for one that is).
        let mut failed = 0u32;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.heartbeat) => {}
                _ = self.stop.cancelled() => return,
            }
            match self.client.heartbeat_lent(&self.id()).await {
                Ok((cancel, lent)) => {
                    self.lent.send_if_modified(|n| std::mem::replace(n, lent) != lent);
                    let tokens = self.tokens.lock().unwrap();
                    for id in &cancel {
                        if let Some(t) = tokens.get(id) {
                            t.cancel();
                        }
                    }
                    *self.cancelled.lock().unwrap() = cancel.into_iter().collect();
                    failed = 0;
                    self.set_reachable(true);
                }
                Err(e) if gone(&e) => {
                    self.reregister().await;
                    failed = 0;
                    self.set_reachable(true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    failed += 1;
                    if failed >= 2 {
                        self.set_reachable(false);
                    }
                }
            }
        }
    }
}

impl Reporter {
    fn id(&self) -> String {
        self.id.lock().unwrap().clone()
    }

    /// Sends completions in batches; a batch that cannot be delivered is
    /// retried until it is (the server's guard makes repeats harmless).
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Completion>) {
        let mut batch = Vec::new();
        while rx.recv_many(&mut batch, 256).await > 0 {
            let wire: Vec<WireCompletion> = batch.iter().map(WireCompletion::from_completion).collect();
            let mut delay = Duration::from_millis(100);
            loop {
                match self.client.complete(&self.id(), &wire).await {
                    Ok(()) => {
                        if let Some(tx) = self.reported.get() {
                            let _ = tx.send(batch.iter().map(|c| (c.invocation, c.attempt)).collect());
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot report completions; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            batch.clear();
        }
    }
}

#[async_trait]
impl TaskSource for HttpSource {
    async fn next(&self, _worker: &str, max: usize) -> Option<Vec<Leased>> {
        loop {
            let tasks = self.lease_once(max).await?;
            if !tasks.is_empty() {
                return Some(tasks);
            }
        }
    }

    async fn complete(&self, completion: Completion) {
        self.tokens.lock().unwrap().remove(&completion.invocation);
        let _ = self.completions.send(completion);
    }

    fn loans(&self) -> Option<tokio::sync::watch::Receiver<u32>> {
        Some(self.lent.subscribe())
    }

    async fn next_lent(&self, _worker: &str, max: usize) -> Option<Vec<Leased>> {
        self.lease_once(max).await
    }
}

/// The server's object API as a read-only [`ObjectStore`], for workers that
/// reach objects through the server.
pub struct RemoteObjects(pub Client);

fn remote_err(e: ClientError) -> stratus_blob::Error {
    match e {
        ClientError::Api { status: 404, message, .. } => stratus_blob::Error::NotFound(message),
        other => stratus_blob::Error::Backend(other.to_string()),
    }
}

#[async_trait]
impl crate::SettingsSource for HttpSource {
    /// Asked of the server for this attempt: it answers only while the
    /// attempt runs on this worker. A server that cannot answer now (one
    /// failing over, say) makes the attempt lost, not failed.
    async fn settings(&self, task: &Task) -> Result<crate::AttemptSettings, stratus_core::Failure> {
        use stratus_core::{Failure, FailureKind};
        let id = self.id();
        match self.client.attempt_settings(&id, task.invocation, task.attempt).await {
            Ok(got) => Ok(got.env.into()),
            Err(ClientError::Api { status, message, .. }) if (400..500).contains(&status) => {
                Err(Failure::new(FailureKind::Internal, message))
            }
            Err(e) => Err(Failure::new(FailureKind::Lost, format!("cannot read the attempt's settings: {e}"))),
        }
    }
}

/// Maps an internal key to its API path: `_stratus/artifacts/D` or `p/default/bucket/key`.
enum Remote<'a> {
    Artifact(&'a str),
    /// A project's object: (project, bucket/key).
    Object(&'a str, &'a str),
}

fn remote(key: &Key) -> stratus_blob::Result<Remote<'_>> {
    let k = key.as_str();
    if let Some(d) = k.strip_prefix("_stratus/artifacts/") {
        return Ok(Remote::Artifact(d));
    }
    if let Some(rest) = k.strip_prefix("p/")
        && let Some((project, object)) = rest.split_once('/')
    {
        return Ok(Remote::Object(project, object));
    }
    Err(stratus_blob::Error::Backend(format!("{k} is not readable through the server")))
}

#[async_trait]
impl ObjectStore for RemoteObjects {
    async fn put(&self, key: &Key, _data: Bytes) -> stratus_blob::Result<()> {
        Err(stratus_blob::Error::Backend(format!("{key}: workers do not write objects through the server")))
    }
    async fn put_stream(&self, key: &Key, _data: ByteStream) -> stratus_blob::Result<u64> {
        Err(stratus_blob::Error::Backend(format!("{key}: workers do not write objects through the server")))
    }
    async fn get(&self, key: &Key) -> stratus_blob::Result<Bytes> {
        match remote(key)? {
            Remote::Artifact(d) => self.0.artifact(d).await.map_err(remote_err),
            Remote::Object(p, o) => {
                let res = self.0.object_range(p, o, None).await.map_err(remote_err)?;
                res.bytes().await.map_err(|e| stratus_blob::Error::Backend(e.to_string()))
            }
        }
    }
    async fn get_stream(&self, key: &Key, range: Option<Range<u64>>) -> stratus_blob::Result<(ObjectMeta, ByteStream)> {
        let Remote::Object(p, o) = remote(key)? else {
            let b = self.get(key).await?;
            let meta = ObjectMeta { key: key.to_string(), size: b.len() as u64, last_modified: 0 };
            return Ok((meta, futures::stream::once(async move { Ok(b) }).boxed()));
        };
        let range = range.filter(|r| r.start < r.end);
        let res = self.0.object_range(p, o, range).await.map_err(remote_err)?;
        let size = res.content_length().unwrap_or(0);
        let meta = ObjectMeta { key: key.to_string(), size, last_modified: 0 };
        let stream = res.bytes_stream().map(|r| r.map_err(std::io::Error::other)).boxed();
        Ok((meta, stream))
    }
    async fn head(&self, key: &Key) -> stratus_blob::Result<Option<ObjectMeta>> {
        match self.get_stream(key, None).await {
            Ok((m, _)) => Ok(Some(m)),
            Err(stratus_blob::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn list(&self, _prefix: Option<&Key>) -> stratus_blob::Result<Vec<ObjectMeta>> {
        Err(stratus_blob::Error::Backend("workers do not list objects".into()))
    }
    async fn delete(&self, key: &Key) -> stratus_blob::Result<bool> {
        Err(stratus_blob::Error::Backend(format!("{key}: workers do not delete objects")))
    }
}
