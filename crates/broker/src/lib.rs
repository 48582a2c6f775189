//! Dispatch and event messaging between Stratus servers and workers.
//!
//! [`Broker`] is the trait the rest of Stratus uses; [`open`] picks the engine
//! from a URL: `memory://` (in-process: `stratus up`, tests) or
//! `amqp://USER:PASS@HOST:PORT/VHOST` (RabbitMQ 3.10 or later; `%2f` is the
//! default vhost `/`). Both engines pass the same conformance suite
//! (`tests/conformance.rs`), so what holds for one holds for the other.
//!
//! # Work queues
//!
//! A work queue is declared, idempotently, from a [`QueueSpec`]: a name and a
//! delivery limit. [`Broker::publish`] returns only once the broker holds every
//! message of the batch (publisher confirms on RabbitMQ), so whatever the
//! caller records after it returns is backed by stored messages.
//! [`Broker::consume`] opens a [`Subscription`]: one consumer sees messages in
//! the order they were published, every message goes to one subscription at a
//! time, and a subscription holds at most `prefetch` unsettled deliveries.
//! Each [`Delivery`] is settled once:
//!
//! - [`Delivery::ack`]: done, the message is gone;
//! - [`Delivery::requeue`]: back to the queue, ahead of messages never
//!   delivered, for another attempt;
//! - [`Delivery::dead_letter`]: straight to the dead-letter queue.
//!
//! A delivery left unsettled when its subscription ends (dropped, or its
//! connection lost) goes back to the queue as if requeued. Every hand-out
//! counts: [`Delivery::delivery_count`] is 1 the first time, 2 the second, and
//! so on. A message that has been delivered `delivery_limit` times and comes
//! back once more goes to the dead-letter queue `NAME.dead`
//! ([`dead_letter_queue`]) instead, where it waits to be consumed like any
//! other message: nothing is dropped silently.
//!
//! # Events
//!
//! [`Broker::publish_event`] publishes on a topic of dot-separated words
//! (`invocation.finished`). [`Broker::subscribe`] receives the events whose
//! topic matches a pattern (`*` is one word, `#` zero or more) on a named,
//! durable group: every group with a matching pattern gets each event once,
//! the subscriptions of one group share its events like a consumer group, and
//! events published while a group has no subscription wait for one. Events
//! settle like work messages; event groups have no delivery limit.
//!
//! # How the scheduler uses it
//!
//! A server batches runnable tasks into dispatch messages, several tasks per
//! message, and publishes them to the work queue of their pool; it counts the
//! tasks as dispatched once `publish` has returned. A worker consumes with a
//! prefetch bounded by its free slots, runs the tasks, sends their results to
//! the server, and acks the message only once the server has made the results
//! durable. A worker that dies mid-way never acks, so its messages go to
//! another worker with a higher delivery count; a message a worker cannot use
//! at all is dead-lettered at once. The server consumes `NAME.dead` and ends
//! the tasks of every dead-lettered message `failed`. Delivery is at least
//! once: a worker that crashes between the server's answer and its ack sees
//! its message run again elsewhere, so the server must accept results for a
//! task that has already finished.
//!
//! # Engines
//!
//! The in-process engine keeps its queues in memory, behind one mutex; they
//! are lost with the process. The RabbitMQ engine uses one connection per
//! [`Broker`], durable quorum queues (`x-delivery-limit`, and at-least-once
//! dead-lettering to `NAME.dead` through the default exchange), persistent
//! messages, a
//! confirm-mode channel shared by publishers, and a channel per subscription;
//! events go through the durable topic exchange [`EVENTS_EXCHANGE`] to a
//! quorum queue `stratus.events.GROUP` per group.

mod memory;
mod names;
mod rabbitmq;
pub mod testing;
mod topic;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::fmt;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported broker URL '{0}': use memory:// or amqp://USER:PASS@HOST:PORT/VHOST")]
    UnsupportedUrl(String),
    #[error("invalid {kind} '{name}': {reason}")]
    InvalidName { kind: &'static str, name: String, reason: &'static str },
    #[error("cannot connect to the message broker at {0}")]
    Connect(String),
    #[error("message broker error: {0}")]
    Broker(String),
    #[error("unknown queue '{0}': it must be declared first")]
    UnknownQueue(String),
    #[error("the broker connection or the subscription is closed")]
    Closed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The topic exchange events are published on (RabbitMQ).
pub const EVENTS_EXCHANGE: &str = "stratus.events";

const DEAD_LETTER_SUFFIX: &str = ".dead";
const EVENTS_QUEUE_PREFIX: &str = "stratus.events.";

/// The dead-letter queue of work queue `queue`: `queue.dead`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}{DEAD_LETTER_SUFFIX}")
}

/// The queue that holds the events of subscription group `group`.
fn events_queue(group: &str) -> String {
    format!("{EVENTS_QUEUE_PREFIX}{group}")
}

/// A work queue to declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// `[a-z0-9][a-z0-9._-]{0,100}`, not ending in `.dead` and not starting
    /// with `stratus.events.` (both reserved).
    pub name: String,
    /// Deliveries a message may have; one given back after that many goes to
    /// the dead-letter queue. At least 1.
    pub delivery_limit: u32,
}

impl QueueSpec {
    pub fn new(name: impl Into<String>, delivery_limit: u32) -> Self {
        QueueSpec { name: name.into(), delivery_limit }
    }
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares (idempotently) a durable work queue and its dead-letter queue
    /// `NAME.dead`. Declaring it again with another delivery limit fails.
    async fn declare(&self, spec: &QueueSpec) -> Result<()>;
    /// Publishes messages to a work queue (or a dead-letter queue); returns
    /// only once the broker has stored every one. Fails with
    /// [`Error::UnknownQueue`] if the queue was never declared.
    async fn publish(&self, queue: &str, bodies: Vec<Bytes>) -> Result<()>;
    /// Consumes a work queue (or a dead-letter queue) with at most `prefetch`
    /// unsettled deliveries in the subscription; 0 means no bound.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Subscription>>;
    /// Publishes an event under `topic` (dot-separated words of letters,
    /// digits, `_` and `-`). An event no group matches is dropped.
    async fn publish_event(&self, topic: &str, body: Bytes) -> Result<()>;
    /// A subscription to the events whose topic matches `pattern` (`*` one
    /// word, `#` zero or more), on the durable group `group` (named like a
    /// queue): subscriptions of one group share its events. A group receives
    /// what any of the patterns it was ever subscribed with matches.
    async fn subscribe(&self, group: &str, pattern: &str, prefetch: u16) -> Result<Box<dyn Subscription>>;
}

#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` once the subscription or its connection has
    /// closed. Cancel-safe: a call dropped before it returns loses nothing.
    async fn next(&mut self) -> Option<Result<Delivery>>;
    /// Asks for no more deliveries. Those already on their way still come
    /// from [`next`](Subscription::next), which then returns `None`; what the
    /// subscription holds stays settleable. For handing work back without it
    /// counting as a delivery.
    async fn cancel(&mut self) -> Result<()>;
}

/// A message handed to a subscription. Settle it with exactly one of
/// [`ack`](Delivery::ack), [`requeue`](Delivery::requeue) or
/// [`dead_letter`](Delivery::dead_letter); one merely dropped stays
/// unsettled until its subscription ends, then goes back to the queue.
pub struct Delivery {
    pub body: Bytes,
    /// 1 on first delivery, 2 on the first redelivery, ...
    pub delivery_count: u32,
    acker: Box<dyn Acker>,
}

impl Delivery {
    pub(crate) fn new(body: Bytes, delivery_count: u32, acker: Box<dyn Acker>) -> Self {
        Delivery { body, delivery_count, acker }
    }

    /// Done with the message: it leaves the queue. Fails with
    /// [`Error::Closed`] if the subscription has ended, in which case the
    /// message has gone back to the queue.
    pub async fn ack(self) -> Result<()> {
        self.acker.settle(Settle::Ack).await
    }

    /// Back to the queue, for another delivery (this one counts as a
    /// delivery, towards the limit).
    pub async fn requeue(self) -> Result<()> {
        self.acker.settle(Settle::Requeue).await
    }

    /// Straight to the dead-letter queue, whatever the delivery count. In a
    /// queue without one (a dead-letter queue itself, or an event group) the
    /// message is dropped.
    pub async fn dead_letter(self) -> Result<()> {
        self.acker.settle(Settle::DeadLetter).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("body", &self.body)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    Requeue,
    DeadLetter,
}

/// The engine side of a [`Delivery`]: settles it with the queue it came from.
pub(crate) trait Acker: Send {
    fn settle(self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<()>>;
}

/// Opens the broker named by `url`: `memory://` (or `memory`) for a fresh
/// in-process broker, or `amqp://USER:PASS@HOST:PORT/VHOST` for RabbitMQ.
/// Errors show the URL without its password.
pub async fn open(url: &str) -> Result<Arc<dyn Broker>> {
    if url == "memory://" || url == "memory" {
        Ok(Arc::new(Checked(memory::MemoryBroker::default())))
    } else if url.starts_with("amqp://") {
        Ok(Arc::new(Checked(rabbitmq::RabbitBroker::connect(url).await?)))
    } else {
        Err(Error::UnsupportedUrl(stratus_core::url::redact(url)))
    }
}

/// Validates every argument before an engine sees it, so that both engines
/// refuse the same names with the same errors.
struct Checked<B>(B);

#[async_trait]
impl<B: Broker> Broker for Checked<B> {
    async fn declare(&self, spec: &QueueSpec) -> Result<()> {
        names::declared_queue(&spec.name)?;
        if spec.delivery_limit == 0 {
            return Err(Error::InvalidName {
                kind: "delivery limit of queue",
                name: spec.name.clone(),
                reason: "must be at least 1",
            });
        }
        self.0.declare(spec).await
    }

    async fn publish(&self, queue: &str, bodies: Vec<Bytes>) -> Result<()> {
        names::queue(queue)?;
        self.0.publish(queue, bodies).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        names::queue(queue)?;
        self.0.consume(queue, prefetch).await
    }

    async fn publish_event(&self, topic: &str, body: Bytes) -> Result<()> {
        names::topic(topic)?;
        self.0.publish_event(topic, body).await
    }

    async fn subscribe(&self, group: &str, pattern: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        names::group(group)?;
        names::pattern(pattern)?;
        self.0.subscribe(group, pattern, prefetch).await
    }
}
