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

use crate::remote::HttpSource;
use crate::{Leased, TaskSource};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_broker::Delivery;
use stratus_core::wire::{WireBroker, WireDispatch};
use stratus_core::{Completion, Id, Task};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct BrokerSource {
    http: Arc<HttpSource>,
    tasks: tokio::sync::Mutex<mpsc::UnboundedReceiver<Leased>>,
    slots: usize,
    stop: CancellationToken,
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

impl BrokerSource {
    /// Starts consuming `broker`'s queue. The returned handle finishes once
    /// `http` is dropped and every message whose tasks were all reported has
    /// been acknowledged.
    pub fn start(http: Arc<HttpSource>, broker: WireBroker, slots: usize) -> (Arc<Self>, JoinHandle<()>) {
        let (task_tx, task_rx) = mpsc::unbounded_channel();
        let (reported_tx, reported_rx) = mpsc::unbounded_channel();
        http.on_reported(reported_tx);
        let held = Arc::new(Mutex::new(Held::default()));
        let stop = http.stopping().clone();
        let prefetch = u16::try_from(slots * 2 + 1).unwrap_or(u16::MAX);
        tokio::spawn(consume_loop(broker, prefetch, held.clone(), task_tx, stop.clone()));
        let acks = tokio::spawn(ack_loop(held, reported_rx));
        (Arc::new(BrokerSource { http, tasks: tokio::sync::Mutex::new(task_rx), slots, stop }), acks)
    }
}

async fn consume_loop(
    broker: WireBroker,
    prefetch: u16,
    held: Arc<Mutex<Held>>,
    tasks: mpsc::UnboundedSender<Leased>,
    stop: CancellationToken,
) {
    let shown = stratus_core::url::redact(&broker.url);
    let mut seq = 0u64;
    let mut delay = Duration::from_millis(100);
    loop {
        let connect = async {
            let b = stratus_broker::open(&broker.url).await?;
            let s = b.consume(&broker.queue, prefetch).await?;
            Ok::<_, stratus_broker::Error>((b, s))
        };
        let connected = tokio::select! {
            r = connect => r,
            _ = stop.cancelled() => return,
        };
        let (_broker, mut subscription) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, broker = %shown, "cannot consume the work queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        // What an earlier connection held went back to the queue with it.
        *held.lock().unwrap() = Held::default();
        loop {
            let next = tokio::select! {
                d = subscription.next() => d,
                _ = stop.cancelled() => {
                    // Stop taking messages, but keep the connection: the
                    // ones taken are acknowledged as their tasks finish.
                    std::future::pending::<()>().await;
                    return;
                }
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the work queue subscription failed; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("the work queue subscription closed; reconnecting");
                    break;
                }
            };
            let message = match serde_json::from_slice::<WireDispatch>(&delivery.body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable dispatch message: dead-lettered");
                    let _ = delivery.dead_letter().await;
                    continue;
                }
            };
            if message.tasks.is_empty() {
                let _ = delivery.ack().await;
                continue;
            }
            seq += 1;
            {
                let mut h = held.lock().unwrap();
                for t in &message.tasks {
                    h.by_attempt.entry((t.invocation, t.attempt)).or_default().push(seq);
                }
                h.messages.insert(seq, (message.tasks.len(), delivery));
            }
            for t in message.tasks {
                let _ = tasks.send(Leased { task: Task::from(t), cancel: CancellationToken::new() });
            }
        }
    }
}

/// Acknowledges each message once the server has made all its results durable.
async fn ack_loop(held: Arc<Mutex<Held>>, mut reported: mpsc::UnboundedReceiver<Vec<(Id, u32)>>) {
    while let Some(batch) = reported.recv().await {
        let mut done = Vec::new();
        {
            let mut h = held.lock().unwrap();
            for key in batch {
                let Some(seqs) = h.by_attempt.get_mut(&key) else { continue };
                let seq = seqs.remove(0);
                if seqs.is_empty() {
                    h.by_attempt.remove(&key);
                }
                if let Some((left, _)) = h.messages.get_mut(&seq) {
                    *left -= 1;
                    if *left == 0 {
                        done.extend(h.messages.remove(&seq).map(|(_, d)| d));
                    }
                }
            }
        }
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
        let mut rx = self.tasks.lock().await;
        // A fair share of what is buffered, so one slot does not take a
        // whole message while the others idle.
        let share = max.min(rx.len().div_ceil(self.slots)).max(1);
        let mut out = Vec::with_capacity(share);
        if !self.stop.is_cancelled() {
            tokio::select! {
                _ = rx.recv_many(&mut out, share) => {}
                _ = self.stop.cancelled() => {}
            }
        }
        // Once stopping, run what was taken from the queue and no more.
        while out.len() < share {
            match rx.try_recv() {
                Ok(l) => out.push(l),
                Err(_) => break,
            }
        }
        if out.is_empty() {
            return None;
        }
        for l in &out {
            self.http.track(l.task.invocation, l.cancel.clone());
        }
        Some(out)
    }

    async fn complete(&self, completion: Completion) {
        self.http.complete(completion).await;
    }
}
