//! A worker that takes its tasks from the broker's work queue, for servers
//! that dispatch through one (`stratus server --broker amqp://…`).
//!
//! It consumes dispatch messages with a prefetch of two messages per slot
//! and one more (so a slot has work while the results of the last message
//! are being recorded), hands their tasks to the slots, reports results to the server
//! through [`HttpSource`] (which answers once they are durable), and only
//! then acknowledges a message — once every task in it has been reported. A
//! worker that dies never acknowledges, so its messages go to another worker.
//! Heartbeats, cancellation and registration stay with [`HttpSource`].
//!
//! A worker asked to stop finishes the tasks its slots run and hands the
//! others back: it cancels its consumer and publishes the tasks no slot took
//! again before acknowledging their messages, so a rolling restart does not
//! count against the delivery limit. A worker whose heartbeats stop reaching
//! the server (it died, or stands by for one that did) does the same until
//! they reach it again, rather than take messages whose results it could not
//! report.

use crate::remote::HttpSource;
use crate::{Leased, TaskSource};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_broker::{Broker, Delivery, Subscription};
use stratus_core::wire::{WireBroker, WireDispatch, WireTask};
use stratus_core::{Completion, Id, Runtime, Task};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A task waiting for a slot: which connection and message it came in.
struct Queued {
    generation: u64,
    message: u64,
    leased: Leased,
}

/// Tasks delivered and not taken by a slot yet.
struct Buffered {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// Taken from `rx` but left for the next slot.
    peeked: Option<Queued>,
}

impl Buffered {
    fn try_next(&mut self) -> Option<Queued> {
        self.peeked.take().or_else(|| self.rx.try_recv().ok())
    }
}

type Buffer = Arc<tokio::sync::Mutex<Buffered>>;

/// Tasks a slot may take several of at once: wasm ones with their input at
/// hand, which take microseconds and would otherwise pay a hand-off each.
/// Others go one per slot, so a stopping worker has only one running per
/// slot and hands the rest back.
fn batchable(task: &Task) -> bool {
    task.partition.is_none() && task.function.spec.runtime == Runtime::Wasm
}

pub struct BrokerSource {
    http: Arc<HttpSource>,
    tasks: Buffer,
    /// The connection whose messages are held; tasks of earlier ones went
    /// back to the queue with their connection.
    generation: Arc<AtomicU64>,
    slots: usize,
    stop: CancellationToken,
    /// See [`Consumer::draining`].
    draining: tokio::sync::watch::Receiver<bool>,
}

/// Messages whose tasks are not all reported yet.
#[derive(Default)]
struct Held {
    /// By local sequence number: tasks left to report, and the delivery.
    messages: HashMap<u64, (usize, Delivery)>,
    /// The messages each attempt is in: a server that restarted may have
    /// dispatched the same attempt twice.
    by_attempt: HashMap<(Id, u32), Vec<u64>>,
}

impl Held {
    /// Counts one task of message `seq` as done (reported or handed back);
    /// returns the delivery once none is left.
    fn done(&mut self, key: (Id, u32), seq: Option<u64>) -> Option<Delivery> {
        let seqs = self.by_attempt.get_mut(&key)?;
        let at = match seq {
            Some(s) => seqs.iter().position(|x| *x == s)?,
            None => 0,
        };
        let seq = seqs.remove(at);
        if seqs.is_empty() {
            self.by_attempt.remove(&key);
        }
        let (left, _) = self.messages.get_mut(&seq)?;
        *left -= 1;
        if *left == 0 { self.messages.remove(&seq).map(|(_, d)| d) } else { None }
    }
}

/// What the consumer shares with the rest of the source.
struct Consumer {
    broker: WireBroker,
    prefetch: u16,
    held: Arc<Mutex<Held>>,
    tasks: mpsc::UnboundedSender<Queued>,
    buffer: Buffer,
    generation: Arc<AtomicU64>,
    stop: CancellationToken,
    seq: u64,
    /// Told (or dropped) once the work not started has been handed back.
    handed_back: Option<oneshot::Sender<()>>,
    /// Whether the server answers heartbeats.
    reachable: tokio::sync::watch::Receiver<bool>,
    /// Set while the consumer takes the tasks no slot took out of the
    /// buffer: a slot waiting for one lets go of it meanwhile.
    draining: tokio::sync::watch::Sender<bool>,
    /// Subscriptions given up while the server could not be reached: kept
    /// open until the connection closes, so the messages they hold for
    /// tasks still running are not delivered again, and can be acknowledged.
    retired: Vec<Box<dyn Subscription>>,
}

/// How [`Consumer::pause`] ended.
enum Paused {
    Resumed(Box<dyn Subscription>),
    Stopping,
    Failed,
}

impl BrokerSource {
    /// Starts consuming `broker`'s queue. The returned handle finishes once
    /// `http` is dropped, every message whose tasks were all reported has
    /// been acknowledged, and (after a stop) the tasks no slot took have been
    /// handed back.
    pub fn start(http: Arc<HttpSource>, broker: WireBroker, slots: usize) -> (Arc<Self>, JoinHandle<()>) {
        let (task_tx, task_rx) = mpsc::unbounded_channel();
        let (reported_tx, reported_rx) = mpsc::unbounded_channel();
        http.on_reported(reported_tx);
        let held = Arc::new(Mutex::new(Held::default()));
        let stop = http.stopping().clone();
        let buffer: Buffer = Arc::new(tokio::sync::Mutex::new(Buffered { rx: task_rx, peeked: None }));
        let generation = Arc::new(AtomicU64::new(0));
        let (handed_back_tx, handed_back) = oneshot::channel();
        let (draining, draining_rx) = tokio::sync::watch::channel(false);
        let consumer = Consumer {
            broker,
            prefetch: u16::try_from(slots * 2 + 1).unwrap_or(u16::MAX),
            held: held.clone(),
            tasks: task_tx,
            buffer: buffer.clone(),
            generation: generation.clone(),
            stop: stop.clone(),
            seq: 0,
            handed_back: Some(handed_back_tx),
            reachable: http.reachable(),
            draining,
            retired: Vec::new(),
        };
        tokio::spawn(consumer.run());
        let acks = tokio::spawn(async move {
            ack_loop(held, reported_rx).await;
            let _ = handed_back.await;
        });
        let source = BrokerSource { http, tasks: buffer, generation, slots, stop, draining: draining_rx };
        (Arc::new(source), acks)
    }
}

impl Consumer {
    async fn run(mut self) {
        let shown = stratus_core::url::redact(&self.broker.url);
        let mut delay = Duration::from_millis(100);
        loop {
            let connect = async {
                let b = stratus_broker::open(&self.broker.url).await?;
                let s = b.consume(&self.broker.queue, self.prefetch).await?;
                Ok::<_, stratus_broker::Error>((b, s))
            };
            let connected = tokio::select! {
                r = connect => r,
                _ = self.stop.cancelled() => return,
            };
            let (broker, mut subscription) = match connected {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, broker = %shown, "cannot consume the work queue; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(100);
            // What an earlier connection held went back to the queue with
            // it: forget its messages, and have the slots skip its tasks.
            *self.held.lock().unwrap() = Held::default();
            self.retired.clear();
            let generation = self.generation.fetch_add(1, Relaxed) + 1;
            loop {
                if !*self.reachable.borrow_and_update() && !self.stop.is_cancelled() {
                    match self.pause(&*broker, &mut subscription, generation).await {
                        Paused::Resumed(s) => self.retired.push(std::mem::replace(&mut subscription, s)),
                        Paused::Stopping => return self.stopped().await,
                        Paused::Failed => break,
                    }
                }
                let next = tokio::select! {
                    biased;
                    _ = self.stop.cancelled() => {
                        self.hand_back(&*broker, &mut subscription, generation).await;
                        return self.stopped().await;
                    }
                    // Looked at again at the top of the loop.
                    Ok(()) = self.reachable.changed() => continue,
                    d = subscription.next() => d,
                };
                match next {
                    Some(Ok(d)) => self.accept(d, generation).await,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "the work queue subscription failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("the work queue subscription closed; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// After a stop, once the tasks not started are handed back: keeps the
    /// connection, whose messages of the tasks still running are
    /// acknowledged as they end, until the process exits.
    async fn stopped(&mut self) {
        if let Some(tx) = self.handed_back.take() {
            let _ = tx.send(());
        }
        std::future::pending::<()>().await;
    }

    /// While the server cannot be reached: takes no more messages and hands
    /// back what no slot took; once it answers again, consumes anew on the
    /// same connection.
    async fn pause(
        &mut self,
        broker: &dyn Broker,
        subscription: &mut Box<dyn Subscription>,
        generation: u64,
    ) -> Paused {
        tracing::warn!("the server cannot be reached: taking no more tasks until it can");
        self.hand_back(broker, subscription, generation).await;
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => return Paused::Stopping,
            r = self.reachable.wait_for(|r| *r) => if r.is_err() { return Paused::Stopping },
        };
        tracing::info!("the server answers again: taking tasks");
        match broker.consume(&self.broker.queue, self.prefetch).await {
            Ok(s) => Paused::Resumed(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume the work queue again; reconnecting");
                Paused::Failed
            }
        }
    }

    /// Holds a delivered message and queues its tasks for the slots.
    async fn accept(&mut self, delivery: Delivery, generation: u64) {
        let message = match serde_json::from_slice::<WireDispatch>(&delivery.body) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "unreadable dispatch message: dead-lettered");
                let _ = delivery.dead_letter().await;
                return;
            }
        };
        if message.tasks.is_empty() {
            let _ = delivery.ack().await;
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        {
            let mut h = self.held.lock().unwrap();
            for t in &message.tasks {
                h.by_attempt.entry((t.invocation, t.attempt)).or_default().push(seq);
            }
            h.messages.insert(seq, (message.tasks.len(), delivery));
        }
        for t in message.tasks {
            let leased = Leased { task: Task::from(t), cancel: CancellationToken::new() };
            let _ = self.tasks.send(Queued { generation, message: seq, leased });
        }
    }

    /// On stop: takes no more messages, and publishes the tasks no slot has
    /// taken again, acknowledging each message once none of its tasks is
    /// left here.
    async fn hand_back(&mut self, broker: &dyn Broker, subscription: &mut Box<dyn Subscription>, generation: u64) {
        if let Err(e) = subscription.cancel().await {
            tracing::warn!(error = %e, "cannot cancel the work queue consumer; its messages return when it closes");
            return;
        }
        // Deliveries already on their way still arrive.
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), subscription.next()).await {
            self.accept(d, generation).await;
        }
        let mut untaken: Vec<Queued> = Vec::new();
        self.draining.send_replace(true);
        {
            let mut buffered = self.buffer.lock().await;
            while let Some(q) = buffered.try_next() {
                if q.generation == generation {
                    untaken.push(q);
                }
            }
        }
        self.draining.send_replace(false);
        if !untaken.is_empty() {
            // One message per message they came in: the server sized those.
            let mut by_message: BTreeMap<u64, Vec<WireTask>> = BTreeMap::new();
            for q in &untaken {
                by_message.entry(q.message).or_default().push(WireTask::from(&q.leased.task));
            }
            let bodies: Vec<Bytes> = by_message
                .into_values()
                .map(|tasks| Bytes::from(serde_json::to_vec(&WireDispatch { tasks }).expect("tasks serialise")))
                .collect();
            match broker.publish(&self.broker.queue, bodies).await {
                Ok(()) => {
                    let done: Vec<Delivery> = {
                        let mut h = self.held.lock().unwrap();
                        untaken
                            .iter()
                            .filter_map(|q| h.done((q.leased.task.invocation, q.leased.task.attempt), Some(q.message)))
                            .collect()
                    };
                    for d in done {
                        let _ = d.ack().await;
                    }
                    tracing::info!(tasks = untaken.len(), "handed the tasks not started back to the work queue");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand tasks back; their messages return when this worker exits")
                }
            }
        }
    }
}

/// Acknowledges each message once the server has made all its results durable.
async fn ack_loop(held: Arc<Mutex<Held>>, mut reported: mpsc::UnboundedReceiver<Vec<(Id, u32)>>) {
    while let Some(batch) = reported.recv().await {
        let done: Vec<Delivery> = {
            let mut h = held.lock().unwrap();
            batch.into_iter().filter_map(|key| h.done(key, None)).collect()
        };
        for delivery in done {
            if let Err(e) = delivery.ack().await {
                tracing::warn!(error = %e, "cannot acknowledge a dispatch message; it will be delivered again");
            }
        }
    }
}

#[async_trait]
impl TaskSource for BrokerSource {
    async fn next(&self, _worker: &str, max: usize) -> Option<Vec<Leased>> {
        loop {
            if self.stop.is_cancelled() {
                // What no slot took is handed back to the queue.
                return None;
            }
            let mut draining = self.draining.clone();
            let _ = draining.wait_for(|d| !*d).await;
            let mut b = self.tasks.lock().await;
            let first = match b.peeked.take() {
                Some(q) => q,
                None => tokio::select! {
                    q = b.rx.recv() => q?,
                    _ = self.stop.cancelled() => continue,
                    // The consumer takes the buffer back: let go of it.
                    Ok(_) = draining.wait_for(|d| *d) => continue,
                },
            };
            let current = self.generation.load(Relaxed);
            if first.generation != current {
                continue;
            }
            let mut out = vec![first.leased];
            if batchable(&out[0].task) {
                // A fair share of what is buffered, so one slot does not
                // take a whole message while the others idle.
                let share = max.min((b.rx.len() + 1).div_ceil(self.slots));
                while out.len() < share {
                    match b.try_next() {
                        Some(q) if q.generation != current => {}
                        Some(q) if batchable(&q.leased.task) => out.push(q.leased),
                        Some(q) => {
                            b.peeked = Some(q);
                            break;
                        }
                        None => break,
                    }
                }
            }
            drop(b);
            for l in &out {
                self.http.track(l.task.invocation, l.cancel.clone());
            }
            return Some(out);
        }
    }

    async fn complete(&self, completion: Completion) {
        self.http.complete(completion).await;
    }
}
