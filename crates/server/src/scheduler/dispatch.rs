//! Dispatch through a message broker (`--broker amqp://…`).
//!
//! Without a broker, remote workers lease tasks from the server over HTTP.
//! With one, the dispatcher takes runnable entries from the same queue the
//! local slots use, starts their attempts on the pseudo-worker [`BROKER`],
//! and publishes them, several tasks per message, to the work queue; it keeps
//! at most a bounded number of attempts out at once, so a big map stays in
//! the store and not in the broker. Workers consume the queue, run the tasks,
//! report the results over HTTP (answered once they are durable) and only
//! then acknowledge the message. A worker that dies holding a message has it
//! redelivered to another; one that keeps coming back past the delivery
//! limit is dead-lettered, and the dead-letter consumer here ends its tasks
//! `failed`.

use super::{Ending, Scheduler};
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use stratus_broker::{Broker, QueueSpec, dead_letter_queue};
use stratus_core::wire::{WireDispatch, WireTask};
use stratus_core::{Completion, Failure, FailureKind, Function, Task};

/// A function version: (project, name, version).
type RunKey = (String, String, u32);

fn run_key(f: &Function) -> RunKey {
    (f.project.clone(), f.name.clone(), f.version)
}

/// How long the attempts of each function version run, as seen in their
/// ends: a mean over the first ones, then a moving average (so a function
/// that starts to hang is seen within a few ends). The first end of a
/// version on each worker is left out: it paid for fetching and compiling
/// the code, and a compile of a quarter second would otherwise have the
/// next thousands of microsecond tasks sent one per message.
#[derive(Default)]
pub(crate) struct RunTimes {
    seen: HashMap<RunKey, (f64, u32)>,
    warm: HashSet<(RunKey, String)>,
}

impl RunTimes {
    /// Returns true when this is the first run time seen of the version.
    fn observe(&mut self, key: RunKey, worker: &str, ms: f64) -> bool {
        // Workers register under new ids and versions come and go: past
        // these sizes, start learning afresh rather than grow.
        if self.warm.len() >= 100_000 || self.seen.len() >= 10_000 {
            *self = RunTimes::default();
        }
        if self.warm.insert((key.clone(), worker.to_string())) {
            return false;
        }
        let (mean, n) = self.seen.entry(key).or_insert((0.0, 0));
        *n = n.saturating_add(1);
        let weight = (1.0 / f64::from(*n)).max(0.2);
        *mean += weight * (ms - *mean);
        *n == 1
    }

    fn expected(&self, key: &RunKey) -> Option<f64> {
        self.seen.get(key).map(|(mean, _)| *mean)
    }
}

/// The worker name attempts dispatched through the broker run under until
/// they end (the end records the worker that ran them).
pub(crate) const BROKER: &str = stratus_core::change::BROKER_WORKER;
/// Tasks per dispatch message, at most. Every message costs a publisher
/// confirm, a delivery and an ack: for tasks of microseconds that is most
/// of the work (100k no-op tasks: 32 per message 6k tasks/s, 256 per message
/// 10k here).
const PER_MESSAGE: usize = 256;
/// The expected run time of the tasks in one message, at most (unless it
/// holds a single task): tasks of microseconds share a message, so its cost
/// is spread; tasks of a second or more go one per message, so they spread
/// over the workers rather than queue behind each other in one. A worker
/// acknowledges a message once all its tasks have ended, and RabbitMQ closes
/// the channel of a consumer that holds one longer than its
/// `consumer_timeout` (30 minutes by default). A function that starts to
/// hang is seen at its first timeout, after which its tasks go one per
/// message; but the messages already out then (or those of a function whose
/// slow inputs are rare) may hold tens of tasks that run to their timeouts,
/// and outlive it: RabbitMQ delivers them again, which counts toward the
/// delivery limit (docs/configuration.md tells users to raise it).
const MESSAGE_RUN_MS: f64 = 500.0;
/// The size of a message's inputs, at most (unless it holds a single
/// task), well under RabbitMQ's `max_message_size` (16 MiB since 4.0).
const MESSAGE_BYTES: usize = 8 << 20;
/// Attempts kept out per remote slot, and bounds on the total. While the
/// next task is of a version never seen to end, only [`FIRST_OUT_PER_SLOT`]
/// per slot: tasks of unseen versions go one per message, and a full window
/// of those would be thousands of messages.
const OUT_PER_SLOT: usize = 1024;
const FIRST_OUT_PER_SLOT: usize = 2;
const OUT_MIN: usize = 256;
const OUT_MAX: usize = 8192;

/// How the scheduler reaches the broker.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// `amqp://…`, with credentials.
    pub url: String,
    /// The work queue (its dead letters go to `QUEUE.dead`).
    pub queue: String,
    /// Deliveries of a message before it is dead-lettered.
    pub delivery_limit: u32,
}

/// A broker connection: the one the node opened, then one opened again
/// from the URL after it fails.
struct Link {
    config: DispatchConfig,
    broker: Option<Arc<dyn Broker>>,
}

impl Link {
    async fn get(&mut self) -> stratus_broker::Result<Arc<dyn Broker>> {
        if let Some(b) = &self.broker {
            return Ok(b.clone());
        }
        self.broker = Some(stratus_broker::open(&self.config.url).await?);
        self.declare().await
    }

    /// Declares the work queue (and its dead letters) on the connection.
    async fn declare(&mut self) -> stratus_broker::Result<Arc<dyn Broker>> {
        let b = self.broker.clone().expect("declared on an open connection");
        if let Err(e) = b.declare(&QueueSpec::new(&self.config.queue, self.config.delivery_limit)).await {
            self.broker = None;
            return Err(e);
        }
        Ok(b)
    }
}

impl Scheduler {
    /// Declares the work queue on `broker` (opened by the node from
    /// `config.url`) and starts the dispatcher and the dead-letter consumer
    /// on the node's background tasks. Fails if the broker refuses now;
    /// later failures are retried, on a connection opened again from the URL.
    pub async fn start_dispatch(
        self: &Arc<Self>,
        config: DispatchConfig,
        broker: Arc<dyn Broker>,
    ) -> Result<(), stratus_broker::Error> {
        let mut link = Link { config: config.clone(), broker: Some(broker.clone()) };
        link.declare().await?;
        self.brokered.store(true, Relaxed);
        let dead = Link { config, broker: Some(broker) };
        let super::Background { stop, tasks } = &self.background;
        tasks.spawn(stop.clone().run_until_cancelled_owned(self.clone().dispatch_loop(link)));
        tasks.spawn(stop.clone().run_until_cancelled_owned(self.clone().dead_letter_loop(dead)));
        Ok(())
    }

    /// Records how long an attempt of `f` ran on `worker`.
    pub(super) fn observe_run(&self, f: &Function, worker: &str, ms: i64) {
        if self.run_times.lock().unwrap().observe(run_key(f), worker, ms.max(0) as f64) {
            // A dispatcher waiting for room may now send a full window.
            self.room.notify_one();
        }
    }

    /// Whether the next task to go out is of a version never seen to end.
    fn next_unseen(&self) -> bool {
        let key = {
            let q = self.queue.lock().unwrap();
            let Some(e) = q.direct.front().or_else(|| q.tasks.front()) else { return false };
            run_key(&e.task.function)
        };
        self.run_times.lock().unwrap().expected(&key).is_none()
    }

    /// How long a task is expected to run: as seen so far, else its timeout.
    fn expected_run(&self, f: &Function) -> f64 {
        self.run_times.lock().unwrap().expected(&run_key(f)).unwrap_or(f.spec.limits.timeout_ms as f64)
    }

    /// Entries ready to run now, in memory.
    fn runnable(&self) -> usize {
        let q = self.queue.lock().unwrap();
        q.direct.len() + q.tasks.len()
    }

    /// Slots of the remote workers alive now.
    fn remote_slots(&self) -> usize {
        self.workers.lock().unwrap().remote_slots()
    }

    async fn dispatch_loop(self: Arc<Self>, mut link: Link) {
        loop {
            let room_changed = self.room.notified();
            tokio::pin!(room_changed);
            room_changed.as_mut().enable();

            let slots = self.remote_slots();
            let limit = match slots {
                0 => 0,
                _ if self.next_unseen() => slots * FIRST_OUT_PER_SLOT,
                _ => (slots * OUT_PER_SLOT).clamp(OUT_MIN, OUT_MAX),
            };
            let out = self.outstanding.load(Relaxed);
            let room = limit.saturating_sub(out);
            // Refill in steps of a quarter, so messages stay full, unless
            // everything runnable fits now.
            if room == 0 || (out > 0 && room < limit / 4 && room < self.runnable()) {
                room_changed.await;
                continue;
            }
            // Only now listen for queued work: a dispatcher parked above
            // must not hold a wake-up meant for a local slot.
            let queued = self.notify.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            match self.take(room, true) {
                Ok(Some((entries, available))) => {
                    // Small messages when there is little to do, so it
                    // spreads over the workers; big ones for big maps.
                    let per = (available / (slots * 4)).clamp(1, PER_MESSAGE);
                    self.outstanding.fetch_add(entries.len(), Relaxed);
                    let leased = self.start_attempts(BROKER, entries);
                    let bodies = messages(leased.iter().map(|l| (&l.task, self.expected_run(&l.task.function))), per);
                    self.metrics.dispatch_messages.fetch_add(bodies.len() as u64, Relaxed);
                    if !self.publish(&mut link, bodies).await {
                        return;
                    }
                }
                Ok(None) => return,
                Err(None) => {
                    tokio::select! {
                        _ = queued => {}
                        _ = room_changed => {}
                    }
                }
                Err(Some(due)) => {
                    let _ = tokio::time::timeout(due, queued).await;
                }
            }
        }
    }

    /// Publishes until the broker has stored the messages; false if the
    /// scheduler closed meanwhile (the attempts then run again after the
    /// next start, as running ones do).
    async fn publish(&self, link: &mut Link, bodies: Vec<Bytes>) -> bool {
        let mut delay = Duration::from_millis(100);
        loop {
            let result = match link.get().await {
                Ok(b) => b.publish(&link.config.queue, bodies.clone()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return true,
                Err(e) => {
                    link.broker = None;
                    tracing::error!(error = %e, "cannot publish dispatch messages; retrying");
                    if self.queue.lock().unwrap().closed {
                        return false;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Ends the tasks of dead-lettered messages `failed`.
    async fn dead_letter_loop(self: Arc<Self>, mut link: Link) {
        let queue = dead_letter_queue(&link.config.queue);
        let limit = link.config.delivery_limit;
        loop {
            let subscription = match link.get().await {
                Ok(b) => b.consume(&queue, 16).await,
                Err(e) => Err(e),
            };
            let mut subscription = match subscription {
                Ok(s) => s,
                Err(e) => {
                    link.broker = None;
                    tracing::warn!(error = %e, queue, "cannot consume dead-lettered dispatch messages; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(delivery) = subscription.next().await {
                let Ok(delivery) = delivery else { break };
                match serde_json::from_slice::<WireDispatch>(&delivery.body) {
                    Ok(message) => {
                        if self.dead_lettered(message, limit).await.is_err() {
                            // The writer has stopped: left unacknowledged,
                            // the message goes to the next leader.
                            return;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, queue, "dropping an unreadable dead-lettered message"),
                }
                let _ = delivery.ack().await;
            }
            link.broker = None;
        }
    }

    /// Records the tasks of a dead-lettered message as failed; returns once
    /// that is durable, or fails when the writer has stopped. Those that
    /// ended meanwhile are left as they are.
    async fn dead_lettered(&self, message: WireDispatch, limit: u32) -> Result<(), super::Error> {
        let now = self.clock.now_ms();
        let n = message.tasks.len();
        let why = format!(
            "its dispatch message was delivered {} without a result: \
             every worker that took it died or lost its connection",
            times(limit)
        );
        let ends: Vec<(Completion, Ending)> = {
            let inflight = self.inflight.lock().unwrap();
            message
                .tasks
                .into_iter()
                .map(|t| {
                    let started_at = inflight.get(&t.invocation).map(|f| f.started_at).unwrap_or(now);
                    let completion = Completion {
                        invocation: t.invocation,
                        attempt: t.attempt,
                        worker: BROKER.to_string(),
                        started_at,
                        finished_at: now,
                        result: Err(Failure::new(FailureKind::Lost, why.clone())),
                        logs: Vec::new(),
                        claim: None,
                    };
                    (completion, Ending::DeadLettered)
                })
                .collect()
        };
        self.metrics.dead_lettered.fetch_add(n as u64, Relaxed);
        tracing::warn!(tasks = n, "a dispatch message was dead-lettered; its tasks fail");
        self.ended(ends).await
    }
}

/// Packs tasks, each with its expected run time, into dispatch message
/// bodies of at most `per` tasks within [`MESSAGE_RUN_MS`] and
/// [`MESSAGE_BYTES`], in order.
fn messages<'a>(tasks: impl Iterator<Item = (&'a Task, f64)>, per: usize) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    let mut chunk: Vec<WireTask> = Vec::with_capacity(per);
    let (mut run, mut bytes) = (0.0, 0);
    let mut flush = |chunk: &mut Vec<WireTask>| {
        let tasks = std::mem::take(chunk);
        bodies.push(Bytes::from(serde_json::to_vec(&WireDispatch { tasks }).expect("tasks serialise")));
    };
    for (task, expected) in tasks {
        // Inputs travel in base64.
        let size = task.input.len() / 3 * 4 + 512;
        if !chunk.is_empty() && (chunk.len() >= per || run + expected > MESSAGE_RUN_MS || bytes + size > MESSAGE_BYTES)
        {
            flush(&mut chunk);
            (run, bytes) = (0.0, 0);
        }
        run += expected;
        bytes += size;
        chunk.push(WireTask::from(task));
    }
    if !chunk.is_empty() {
        flush(&mut chunk);
    }
    bodies
}

fn times(n: u32) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_core::{Function, FunctionSpec, Limits, Runtime, new_id};

    fn task(timeout_ms: u64) -> Task {
        let spec = FunctionSpec {
            runtime: Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Limits { timeout_ms, memory_mb: 64, ..Limits::default() },
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        };
        let function = Function { project: "p".into(), name: "f".into(), version: 1, spec, created_at: 0 };
        Task {
            invocation: new_id(),
            attempt: 1,
            function: Arc::new(function),
            input: Vec::new(),
            partition: None,
            job: None,
            token: None,
        }
    }

    fn sizes(bodies: &[Bytes]) -> Vec<usize> {
        bodies.iter().map(|b| serde_json::from_slice::<WireDispatch>(b).unwrap().tasks.len()).collect()
    }

    #[test]
    fn quick_tasks_share_messages_of_at_most_per() {
        let tasks: Vec<Task> = (0..70).map(|_| task(60_000)).collect();
        assert_eq!(sizes(&messages(tasks.iter().map(|t| (t, 0.2)), 32)), [32, 32, 6]);
        // Seen to run 100 ms: five fit the half-second budget.
        assert_eq!(sizes(&messages(tasks.iter().take(12).map(|t| (t, 100.0)), 32)), [5, 5, 2]);
    }

    #[test]
    fn run_times_leave_out_each_workers_first_end_and_follow_a_function_that_starts_to_hang() {
        let key: RunKey = ("p".into(), "f".into(), 1);
        let mut times = RunTimes::default();
        times.observe(key.clone(), "w1", 250.0);
        assert_eq!(times.expected(&key), None, "a first end on a worker compiled the code");
        times.observe(key.clone(), "w2", 250.0);
        times.observe(key.clone(), "w1", 1.0);
        times.observe(key.clone(), "w2", 3.0);
        assert_eq!(times.expected(&key), Some(2.0));
        times.observe(key.clone(), "w1", 60_000.0);
        assert!(times.expected(&key).unwrap() > MESSAGE_RUN_MS, "one timeout sends the next tasks one per message");
        assert_eq!(times.expected(&("p".into(), "f".into(), 2)), None, "per version");
    }

    #[test]
    fn big_inputs_split_messages_by_size() {
        let tasks: Vec<Task> = (0..5).map(|_| Task { input: vec![7; 2 << 20], ..task(1_000) }).collect();
        assert_eq!(sizes(&messages(tasks.iter().map(|t| (t, 0.1)), 256)), [2, 2, 1]);
    }

    #[test]
    fn slow_tasks_go_one_per_message() {
        // Seen to run 300 ms: one fits the half-second budget, not two.
        let tasks: Vec<Task> = (0..3).map(|_| task(60_000)).collect();
        assert_eq!(sizes(&messages(tasks.iter().map(|t| (t, 300.0)), 32)), [1, 1, 1]);
        // Never seen: expected to run to their timeout.
        let tasks = [task(3_600_000), task(1_000), task(1_000)];
        let with_timeouts = tasks.iter().map(|t| (t, t.function.spec.limits.timeout_ms as f64));
        assert_eq!(sizes(&messages(with_timeouts, 32)), [1, 1, 1]);
    }
}
