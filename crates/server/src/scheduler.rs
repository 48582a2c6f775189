//! The scheduler: the in-process queue, durable in the state store.
//!
//! An invocation is first written to the store (that is the moment it is
//! accepted), then put on the in-memory queue. Slots take tasks from the
//! queue; completions go through one writer task that records them in
//! batches (one transaction for many completions), decides retries with the
//! pure [`stratus_core::machine`], and only then wakes whoever waits for the
//! result. After a restart the queue is rebuilt from the store, and attempts
//! that were running when the process died are run again.

use crate::metrics::Metrics;
use async_trait::async_trait;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::machine::{self, Backoff, Decision};
use stratus_core::{Clock, Completion, Function, Id, Invocation, InvocationState, Task, new_id};
use stratus_store::{AttemptEnd, AttemptStart, EndOutcome, NewInvocation, StateStore};
use stratus_worker::TaskSource;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long an attempt's start is held before it is written on its own.
const START_HOLD: Duration = Duration::from_millis(20);

/// A finished invocation, handed to waiters.
#[derive(Debug, Clone)]
pub struct Finished {
    pub invocation: Invocation,
    pub output: Option<Vec<u8>>,
    pub logs: Vec<u8>,
}

struct Entry {
    invocation: Invocation,
    task: Task,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Entry>,
    /// Retries waiting for their backoff, by due time.
    delayed: BinaryHeap<Reverse<(Millis, u64)>>,
    delayed_entries: HashMap<u64, Entry>,
    seq: u64,
    closed: bool,
}

enum Write {
    Start(AttemptStart),
    End(Completion),
    Flush(oneshot::Sender<()>),
}

pub struct Scheduler {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    queue: Mutex<Queue>,
    notify: Notify,
    inflight: Mutex<HashMap<Id, Entry>>,
    waiters: Mutex<HashMap<Id, Vec<oneshot::Sender<Arc<Finished>>>>>,
    writes: mpsc::UnboundedSender<Write>,
    pub metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Builds the scheduler, rebuilds the queue from the store, and starts
    /// the writer task (returned, so the node owns it).
    pub async fn start(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Self>, JoinHandle<()>), stratus_store::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Arc::new(Scheduler {
            store,
            clock,
            backoff: Backoff::default(),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            inflight: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            writes: tx,
            metrics,
        });
        s.recover().await?;
        let writer = tokio::spawn(s.clone().write_loop(rx));
        Ok((s, writer))
    }

    async fn recover(&self) -> Result<(), stratus_store::Error> {
        let rerun = self.store.requeue_running().await?;
        let mut functions: HashMap<(String, String, u32), Arc<Function>> = HashMap::new();
        let mut after = None;
        let mut n = 0u64;
        loop {
            let page = self.store.queued(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.invocation.id);
            for p in page {
                let inv = p.invocation;
                let key = (inv.project.clone(), inv.function.clone(), inv.version);
                let f = match functions.get(&key) {
                    Some(f) => f.clone(),
                    None => match self
                        .store
                        .get_function(&inv.project, &inv.function, Some(inv.version))
                        .await?
                    {
                        Some(f) => {
                            let f = Arc::new(f);
                            functions.insert(key, f.clone());
                            f
                        }
                        None => {
                            tracing::error!(id = %inv.id, function = %inv.function, "queued invocation of an unknown function version; left queued");
                            continue;
                        }
                    },
                };
                let task = Task {
                    invocation: inv.id,
                    attempt: inv.attempts + 1,
                    function: f,
                    input: p.input,
                    extra_env: Vec::new(),
                };
                self.push(
                    Entry {
                        invocation: inv,
                        task,
                    },
                    p.not_before,
                );
                n += 1;
            }
        }
        if n > 0 {
            tracing::info!(
                queued = n,
                rerun,
                "recovered queued invocations from the state store"
            );
        }
        Ok(())
    }

    fn push(&self, entry: Entry, not_before: Millis) {
        let mut q = self.queue.lock().unwrap();
        if not_before > self.clock.now_ms() {
            q.seq += 1;
            let seq = q.seq;
            q.delayed.push(Reverse((not_before, seq)));
            q.delayed_entries.insert(seq, entry);
        } else {
            q.ready.push_back(entry);
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Accepts invocations of `function`: durable in the store before this
    /// returns, then queued. With `wait`, also returns a receiver for each
    /// result.
    pub async fn submit(
        &self,
        function: Arc<Function>,
        inputs: Vec<Vec<u8>>,
        wait: bool,
    ) -> Result<Vec<(Id, Option<oneshot::Receiver<Arc<Finished>>>)>, stratus_store::Error> {
        let now = self.clock.now_ms();
        let new: Vec<NewInvocation> = inputs
            .into_iter()
            .map(|input| NewInvocation {
                invocation: Invocation {
                    id: new_id(),
                    project: function.project.clone(),
                    function: function.name.clone(),
                    version: function.version,
                    state: InvocationState::Queued,
                    attempts: 0,
                    max_attempts: function.spec.retries + 1,
                    job_id: None,
                    task_index: None,
                    queued_at: now,
                    started_at: None,
                    finished_at: None,
                    worker: None,
                    error: None,
                },
                input,
            })
            .collect();
        self.store.insert_invocations(&new).await?;
        self.metrics
            .invocations_submitted
            .fetch_add(new.len() as u64, Relaxed);
        let mut out = Vec::with_capacity(new.len());
        for n in new {
            let id = n.invocation.id;
            let rx = wait.then(|| self.watch(id));
            let task = Task {
                invocation: id,
                attempt: 1,
                function: function.clone(),
                input: n.input,
                extra_env: Vec::new(),
            };
            self.push(
                Entry {
                    invocation: n.invocation,
                    task,
                },
                now,
            );
            out.push((id, rx));
        }
        Ok(out)
    }

    /// A receiver that gets the invocation's result when it finishes here.
    /// Register before reading the store, so no finish is missed.
    pub fn watch(&self, id: Id) -> oneshot::Receiver<Arc<Finished>> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().entry(id).or_default().push(tx);
        rx
    }

    pub fn forget_watch(&self, id: Id) {
        let mut w = self.waiters.lock().unwrap();
        if let Some(list) = w.get_mut(&id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                w.remove(&id);
            }
        }
    }

    /// Stops handing out tasks; slots finish what they run and return.
    pub fn close(&self) {
        self.queue.lock().unwrap().closed = true;
        self.notify.notify_waiters();
    }

    pub fn depth(&self) -> (usize, usize) {
        let q = self.queue.lock().unwrap();
        let queued = q.ready.len() + q.delayed_entries.len();
        drop(q);
        (queued, self.inflight.lock().unwrap().len())
    }

    /// Takes the next runnable entry, or says how long to wait for one.
    fn take(&self) -> Result<Option<Entry>, Option<Duration>> {
        let mut q = self.queue.lock().unwrap();
        if q.closed {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        while let Some(Reverse((due, seq))) = q.delayed.peek().copied() {
            if due > now {
                break;
            }
            q.delayed.pop();
            if let Some(e) = q.delayed_entries.remove(&seq) {
                q.ready.push_back(e);
            }
        }
        match q.ready.pop_front() {
            Some(e) => Ok(Some(e)),
            None => Err(q
                .delayed
                .peek()
                .map(|Reverse((due, _))| Duration::from_millis((due - now).max(1) as u64))),
        }
    }

    /// The writer: records attempt starts and ends in batches. A start is
    /// held back for [`START_HOLD`]: most short attempts end within it, and
    /// then their start needs no write of its own (the end records both).
    async fn write_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Write>) {
        let mut batch = Vec::with_capacity(1024);
        let mut held: VecDeque<(tokio::time::Instant, AttemptStart)> = VecDeque::new();
        loop {
            let received = match held.front() {
                Some((t, _)) => {
                    tokio::select! {
                        n = rx.recv_many(&mut batch, 1024) => n,
                        _ = tokio::time::sleep_until(*t + START_HOLD) => usize::MAX,
                    }
                }
                None => rx.recv_many(&mut batch, 1024).await,
            };
            if received == 0 {
                return;
            }
            let now = tokio::time::Instant::now();
            let mut ends = Vec::new();
            let mut flushes = Vec::new();
            for w in batch.drain(..) {
                match w {
                    Write::Start(s) => held.push_back((now, s)),
                    Write::End(c) => ends.push(c),
                    Write::Flush(tx) => flushes.push(tx),
                }
            }
            if !ends.is_empty() {
                let ended: std::collections::HashSet<(Id, u32)> =
                    ends.iter().map(|c| (c.invocation, c.attempt)).collect();
                held.retain(|(_, s)| !ended.contains(&(s.id, s.attempt)));
            }
            let mut due = Vec::new();
            while let Some((t, _)) = held.front() {
                if !flushes.is_empty() || *t + START_HOLD <= now {
                    due.push(held.pop_front().expect("front exists").1);
                } else {
                    break;
                }
            }
            self.write_records(due, ends).await;
            for tx in flushes {
                let _ = tx.send(());
            }
        }
    }

    /// Returns once everything reported so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn write_records(&self, mut starts: Vec<AttemptStart>, ends: Vec<Completion>) {
        // A start whose end is in the same batch needs no write of its own.
        if !ends.is_empty() && !starts.is_empty() {
            let ended: std::collections::HashSet<(Id, u32)> =
                ends.iter().map(|c| (c.invocation, c.attempt)).collect();
            starts.retain(|s| !ended.contains(&(s.id, s.attempt)));
        }
        if !starts.is_empty() {
            retry_forever("record attempt starts", || {
                self.store.start_attempts(&starts)
            })
            .await;
        }
        if ends.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let mut records = Vec::with_capacity(ends.len());
        let mut decisions = Vec::with_capacity(ends.len());
        {
            let inflight = self.inflight.lock().unwrap();
            for c in &ends {
                let max_attempts = inflight
                    .get(&c.invocation)
                    .map(|e| e.invocation.max_attempts)
                    .unwrap_or(1);
                let decision = machine::on_attempt_end(
                    &c.result.as_ref().map(|_| ()),
                    c.attempt,
                    max_attempts,
                    now,
                    self.backoff,
                );
                let outcome = match (&decision, &c.result) {
                    (Decision::Finish(state), Ok(out)) => EndOutcome::Finish {
                        state: *state,
                        output: Some(out.clone()),
                        error: None,
                        logs: c.logs.clone(),
                    },
                    (Decision::Finish(state), Err(f)) => EndOutcome::Finish {
                        state: *state,
                        output: None,
                        error: Some(f.clone()),
                        logs: c.logs.clone(),
                    },
                    (Decision::Retry { not_before }, Err(f)) => EndOutcome::Requeue {
                        not_before: *not_before,
                        error: f.clone(),
                        logs: c.logs.clone(),
                    },
                    (Decision::Retry { .. }, Ok(_)) => unreachable!("success never retries"),
                };
                records.push(AttemptEnd {
                    id: c.invocation,
                    attempt: c.attempt,
                    worker: c.worker.clone(),
                    started_at: c.started_at,
                    finished_at: c.finished_at,
                    outcome,
                });
                decisions.push(decision);
            }
        }
        let applied =
            retry_forever("record attempt ends", || self.store.end_attempts(&records)).await;
        for ((c, decision), applied) in ends.into_iter().zip(decisions).zip(applied) {
            let entry = self.inflight.lock().unwrap().remove(&c.invocation);
            if !applied {
                self.metrics.stale_completions.fetch_add(1, Relaxed);
                continue;
            }
            let Some(mut entry) = entry else { continue };
            match decision {
                Decision::Finish(state) => {
                    self.metrics.finished(state);
                    let inv = &mut entry.invocation;
                    inv.state = state;
                    inv.attempts = c.attempt;
                    inv.started_at = Some(c.started_at);
                    inv.finished_at = Some(c.finished_at);
                    inv.worker = Some(c.worker.clone());
                    let (output, error) = match c.result {
                        Ok(out) => (Some(out), None),
                        Err(f) => (None, Some(f)),
                    };
                    inv.error = error;
                    let finished = Arc::new(Finished {
                        invocation: entry.invocation,
                        output,
                        logs: c.logs,
                    });
                    if let Some(list) = self.waiters.lock().unwrap().remove(&c.invocation) {
                        for tx in list {
                            let _ = tx.send(finished.clone());
                        }
                    }
                }
                Decision::Retry { not_before } => {
                    self.metrics.attempts_retried.fetch_add(1, Relaxed);
                    entry.invocation.attempts = c.attempt;
                    entry.task.attempt = c.attempt + 1;
                    self.push(entry, not_before);
                }
            }
        }
    }
}

/// Retries a store write until it succeeds: a completion that is not
/// recorded must not be acknowledged, and dropping it would lose a result.
async fn retry_forever<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, stratus_store::Error>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[async_trait]
impl TaskSource for Scheduler {
    async fn next(&self, worker: &str) -> Option<Task> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking at the queue, so neither a push nor
            // `close` between the look and the wait is missed.
            notified.as_mut().enable();
            match self.take() {
                Ok(Some(entry)) => {
                    let task = entry.task.clone();
                    self.metrics.attempts_started.fetch_add(1, Relaxed);
                    let _ = self.writes.send(Write::Start(AttemptStart {
                        id: task.invocation,
                        attempt: task.attempt,
                        worker: worker.to_string(),
                        started_at: self.clock.now_ms(),
                    }));
                    self.inflight.lock().unwrap().insert(task.invocation, entry);
                    // Another slot may be waiting while more work is ready.
                    if !self.queue.lock().unwrap().ready.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(task);
                }
                Ok(None) => return None,
                Err(None) => notified.await,
                Err(Some(due)) => {
                    let _ = tokio::time::timeout(due, notified).await;
                }
            }
        }
    }

    async fn complete(&self, completion: Completion) {
        let _ = self.writes.send(Write::End(completion));
    }
}
