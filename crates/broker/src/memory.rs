//! The in-process engine (`memory://`): every queue in one map behind one
//! mutex, with a [`Notify`] per queue for the subscriptions waiting on it.
//!
//! It keeps the semantics of RabbitMQ quorum queues wherever Stratus relies
//! on them (the conformance suite holds both engines to the same behaviour),
//! so `stratus up` and the tests run the paths a cluster runs. Messages are
//! lost with the process.

use crate::{Acker, Broker, Delivery, Error, QueueSpec, Result, Settle, Subscription, dead_letter_queue, events_queue};
use async_trait::async_trait;
use bytes::Bytes;
use futures::future::{self, BoxFuture};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; should something, the state
        // is still whole (each change is a push or a pop), so carry on.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// The queue of each event group, and the patterns it was subscribed with.
    bindings: HashMap<String, HashSet<String>>,
    /// What each open subscription holds unsettled, by subscription id.
    subscriptions: HashMap<u64, Held>,
    /// Source of subscription ids and delivery tags.
    last_id: u64,
}

struct Queue {
    /// Messages given back (requeued, or left unsettled by a subscription
    /// that ended), served before `ready` as RabbitMQ quorum queues do.
    returned: VecDeque<Message>,
    ready: VecDeque<Message>,
    /// Deliveries after which a message given back is dead-lettered; `None`
    /// for queues without a limit (dead-letter queues, event groups).
    delivery_limit: Option<u32>,
    dead_letter: Option<String>,
    /// Woken on every change a waiting subscription may be after: a message
    /// to take, or a settled delivery freeing room under its prefetch.
    changed: Arc<Notify>,
}

impl Queue {
    fn new(delivery_limit: Option<u32>, dead_letter: Option<String>) -> Self {
        Queue {
            returned: VecDeque::new(),
            ready: VecDeque::new(),
            delivery_limit,
            dead_letter,
            changed: Arc::new(Notify::new()),
        }
    }
}

struct Message {
    body: Bytes,
    /// Deliveries so far.
    deliveries: u32,
}

impl Message {
    fn new(body: Bytes) -> Self {
        Message { body, deliveries: 0 }
    }
}

/// The deliveries a subscription has not settled, by delivery tag (in
/// delivery order).
struct Held {
    queue: String,
    messages: BTreeMap<u64, Message>,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn declare(&mut self, spec: &QueueSpec) -> Result<()> {
        if let Some(existing) = self.queues.get(&spec.name) {
            if existing.delivery_limit == Some(spec.delivery_limit) {
                return Ok(());
            }
            return Err(Error::Broker(format!(
                "queue '{}' already exists with another delivery limit than {}",
                spec.name, spec.delivery_limit
            )));
        }
        let dead = dead_letter_queue(&spec.name);
        self.queues.entry(dead.clone()).or_insert_with(|| Queue::new(None, None));
        self.queues.insert(spec.name.clone(), Queue::new(Some(spec.delivery_limit), Some(dead)));
        Ok(())
    }

    fn publish(&mut self, queue: &str, bodies: Vec<Bytes>) -> Result<()> {
        let q = self.queues.get_mut(queue).ok_or_else(|| Error::UnknownQueue(queue.to_string()))?;
        q.ready.extend(bodies.into_iter().map(Message::new));
        q.changed.notify_waiters();
        Ok(())
    }

    fn publish_event(&mut self, topic: &str, body: &Bytes) {
        for (queue, patterns) in &self.bindings {
            if patterns.iter().any(|pattern| crate::topic::matches(pattern, topic))
                && let Some(q) = self.queues.get_mut(queue)
            {
                q.ready.push_back(Message::new(body.clone()));
                q.changed.notify_waiters();
            }
        }
    }

    /// Creates the queue of `group` if need be and binds `pattern` to it.
    fn bind(&mut self, group: &str, pattern: &str) -> String {
        let queue = events_queue(group);
        self.queues.entry(queue.clone()).or_insert_with(|| Queue::new(None, None));
        self.bindings.entry(queue.clone()).or_default().insert(pattern.to_string());
        queue
    }

    fn open_subscription(&mut self, queue: &str) -> Result<(u64, Arc<Notify>)> {
        let changed = self.queues.get(queue).ok_or_else(|| Error::UnknownQueue(queue.to_string()))?.changed.clone();
        let id = self.next_id();
        self.subscriptions.insert(id, Held { queue: queue.to_string(), messages: BTreeMap::new() });
        Ok((id, changed))
    }

    /// The next message for subscription `id`, as (tag, body, delivery
    /// count), unless the queue is empty or the subscription already holds
    /// `prefetch` (0: no bound).
    fn take(&mut self, id: u64, prefetch: u16) -> Option<(u64, Bytes, u32)> {
        let held = self.subscriptions.get_mut(&id)?;
        if prefetch != 0 && held.messages.len() >= usize::from(prefetch) {
            return None;
        }
        let queue = self.queues.get_mut(&held.queue)?;
        let mut message = queue.returned.pop_front().or_else(|| queue.ready.pop_front())?;
        message.deliveries += 1;
        let (body, count) = (message.body.clone(), message.deliveries);
        self.last_id += 1;
        let tag = self.last_id;
        held.messages.insert(tag, message);
        Some((tag, body, count))
    }

    fn settle(&mut self, id: u64, tag: u64, how: Settle) -> Result<()> {
        // A subscription that has ended gave its deliveries back already.
        let held = self.subscriptions.get_mut(&id).ok_or(Error::Closed)?;
        let message = held.messages.remove(&tag).ok_or(Error::Closed)?;
        let queue = held.queue.clone();
        match how {
            Settle::Ack => {}
            Settle::Requeue => self.give_back(&queue, message),
            Settle::DeadLetter => self.dead_letter(&queue, message),
        }
        // The subscription has room under its prefetch again.
        if let Some(q) = self.queues.get(&queue) {
            q.changed.notify_waiters();
        }
        Ok(())
    }

    fn close_subscription(&mut self, id: u64) {
        let Some(held) = self.subscriptions.remove(&id) else { return };
        for message in held.messages.into_values() {
            self.give_back(&held.queue, message);
        }
    }

    /// Puts a message whose delivery did not succeed back in `queue`, or in
    /// its dead-letter queue once it has had `delivery_limit` deliveries.
    fn give_back(&mut self, queue: &str, message: Message) {
        let Some(q) = self.queues.get_mut(queue) else { return };
        if q.delivery_limit.is_some_and(|limit| message.deliveries >= limit) {
            self.dead_letter(queue, message);
        } else {
            q.returned.push_back(message);
            q.changed.notify_waiters();
        }
    }

    /// Moves a message to the dead-letter queue of `queue`. A queue without
    /// one drops it, as RabbitMQ does.
    fn dead_letter(&mut self, queue: &str, message: Message) {
        let Some(dead) = self.queues.get(queue).and_then(|q| q.dead_letter.clone()) else {
            tracing::debug!(queue = %queue, "dropped a dead-lettered message: its queue has no dead-letter queue");
            return;
        };
        if let Some(q) = self.queues.get_mut(&dead) {
            q.ready.push_back(Message::new(message.body));
            q.changed.notify_waiters();
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<()> {
        self.shared.lock().declare(spec)
    }

    async fn publish(&self, queue: &str, bodies: Vec<Bytes>) -> Result<()> {
        self.shared.lock().publish(queue, bodies)
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        let (id, changed) = self.shared.lock().open_subscription(queue)?;
        Ok(Box::new(MemorySubscription { shared: self.shared.clone(), id, prefetch, changed, cancelled: false }))
    }

    async fn publish_event(&self, topic: &str, body: Bytes) -> Result<()> {
        self.shared.lock().publish_event(topic, &body);
        Ok(())
    }

    async fn subscribe(&self, group: &str, pattern: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        let queue = self.shared.lock().bind(group, pattern);
        self.consume(&queue, prefetch).await
    }
}

struct MemorySubscription {
    shared: Arc<Shared>,
    id: u64,
    prefetch: u16,
    changed: Arc<Notify>,
    cancelled: bool,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            // Nothing is on its way: deliveries are taken here.
            if self.cancelled {
                return None;
            }
            // Registered before looking, so a change made in between still
            // wakes us.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            let taken = self.shared.lock().take(self.id, self.prefetch);
            if let Some((tag, body, count)) = taken {
                let acker = MemoryAcker { shared: self.shared.clone(), subscription: self.id, tag };
                return Some(Ok(Delivery::new(body, count, Box::new(acker))));
            }
            changed.await;
        }
    }

    async fn cancel(&mut self) -> Result<()> {
        self.cancelled = true;
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.shared.lock().close_subscription(self.id);
    }
}

struct MemoryAcker {
    shared: Arc<Shared>,
    subscription: u64,
    tag: u64,
}

impl Acker for MemoryAcker {
    fn settle(self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<()>> {
        let settled = self.shared.lock().settle(self.subscription, self.tag, how);
        Box::pin(future::ready(settled))
    }
}
