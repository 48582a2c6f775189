//! The RabbitMQ engine (`amqp://`), over AMQP 0-9-1 with `lapin`.
//!
//! One connection per broker. Publishes share one channel in confirm mode and
//! wait for the broker's confirm of every message; each subscription has its
//! own channel, so that closing it (when the subscription is dropped) makes
//! RabbitMQ requeue exactly what that subscription held. Declarations use a
//! short-lived channel each, since a refused declaration closes its channel.
//!
//! Work queues are durable quorum queues: they count deliveries
//! (`x-delivery-count`) and dead-letter a message given back too often
//! through the default exchange to `NAME.dead`. Quorum queues dead-letter a
//! message when its count of earlier deliveries exceeds `x-delivery-limit`,
//! hence a limit one below [`QueueSpec::delivery_limit`]. Dead-lettering is
//! `at-least-once` (which needs `x-overflow: reject-publish`): a message
//! leaves the work queue only once `NAME.dead` has confirmed it, so a dead
//! letter is never lost to a broker failure at that moment.

use crate::{
    Acker, Broker, Delivery, EVENTS_EXCHANGE, Error, QueueSpec, Result, Settle, Subscription, dead_letter_queue,
    events_queue,
};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer, ExchangeKind};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long to wait for RabbitMQ to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP `reply-success`, for closing a channel normally.
const REPLY_SUCCESS: u16 = 200;
/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

pub(crate) struct RabbitBroker {
    conn: Connection,
    /// The confirm-mode channel publishes share; replaced once it has closed.
    publisher: Mutex<Option<Channel>>,
}

impl RabbitBroker {
    pub(crate) async fn connect(url: &str) -> Result<Self> {
        let shown = stratus_core::url::redact(url);
        let properties = ConnectionProperties::default().with_connection_name("stratus".into());
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(Error::Connect(format!("{shown}: {}", without_password(e.to_string(), url)))),
            Err(_) => {
                return Err(Error::Connect(format!("{shown}: no answer within {} s", CONNECT_TIMEOUT.as_secs())));
            }
        };
        let broker = RabbitBroker { conn, publisher: Mutex::new(None) };
        let channel = broker.publisher().await?;
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare(EVENTS_EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .map_err(|e| broker.fail(e))?;
        tracing::debug!(url = %shown, "connected to RabbitMQ");
        Ok(broker)
    }

    /// Our error for a failed operation: [`Error::Closed`] once the connection
    /// is gone, whatever lapin reports then.
    fn fail(&self, e: lapin::Error) -> Error {
        if self.conn.status().connected() { Error::Broker(e.to_string()) } else { Error::Closed }
    }

    /// The shared publishing channel, opened (again) if need be.
    async fn publisher(&self) -> Result<Channel> {
        let mut slot = self.publisher.lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let channel = self.conn.create_channel().await.map_err(|e| self.fail(e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| self.fail(e))?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// A fresh channel, for declarations or a subscription.
    async fn channel(&self) -> Result<Channel> {
        self.conn.create_channel().await.map_err(|e| self.fail(e))
    }
}

/// Closes a channel that has done its job; a failure leaves nothing to undo.
async fn close(channel: Channel) {
    if let Err(e) = channel.close(REPLY_SUCCESS, "OK".into()).await {
        tracing::debug!(error = %e, "closing a RabbitMQ channel");
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

/// The arguments of a quorum queue, plus `extra`.
fn quorum_queue(extra: &[(&'static str, AMQPValue)]) -> FieldTable {
    let mut arguments = BTreeMap::new();
    arguments.insert(ShortString::from("x-queue-type"), AMQPValue::LongString("quorum".into()));
    for (key, value) in extra {
        arguments.insert(ShortString::from(*key), value.clone());
    }
    FieldTable::from(arguments)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(PERSISTENT)
}

/// Whether RabbitMQ refused an operation because its queue does not exist.
fn is_not_found(e: &lapin::Error) -> bool {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND),
        _ => false,
    }
}

/// `message` with the password of `url` cut out, should lapin ever repeat it.
fn without_password(message: String, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|password| !password.is_empty());
    match password {
        Some(password) => message.replace(password, "***"),
        None => message,
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn declare(&self, spec: &QueueSpec) -> Result<()> {
        let dead = dead_letter_queue(&spec.name);
        let limit = i32::try_from(spec.delivery_limit.saturating_sub(1)).unwrap_or(i32::MAX);
        let arguments = quorum_queue(&[
            ("x-delivery-limit", AMQPValue::LongInt(limit)),
            ("x-dead-letter-exchange", AMQPValue::LongString("".into())),
            ("x-dead-letter-routing-key", AMQPValue::LongString(dead.as_str().into())),
            ("x-dead-letter-strategy", AMQPValue::LongString("at-least-once".into())),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        let channel = self.channel().await?;
        channel.queue_declare(dead.as_str().into(), durable(), quorum_queue(&[])).await.map_err(|e| self.fail(e))?;
        channel.queue_declare(spec.name.as_str().into(), durable(), arguments).await.map_err(|e| self.fail(e))?;
        close(channel).await;
        Ok(())
    }

    async fn publish(&self, queue: &str, bodies: Vec<Bytes>) -> Result<()> {
        if bodies.is_empty() {
            return Ok(());
        }
        let channel = self.publisher().await?;
        // Mandatory: a message no queue takes comes back instead of vanishing.
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let mut confirms = Vec::with_capacity(bodies.len());
        for body in &bodies {
            let confirm = channel
                .basic_publish("".into(), queue.into(), options, body, persistent())
                .await
                .map_err(|e| self.fail(e))?;
            confirms.push(confirm);
        }
        // Wait for every confirm, even after a failure, so none is left pending.
        let mut outcome = Ok(());
        for confirm in confirms {
            let result = match confirm.await {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(_returned))) => Err(Error::UnknownQueue(queue.to_string())),
                Ok(Confirmation::Nack(_)) => {
                    Err(Error::Broker(format!("RabbitMQ did not store a message published to queue '{queue}'")))
                }
                Ok(Confirmation::NotRequested) => Err(Error::Broker("publisher confirms are off".into())),
                Err(e) => Err(self.fail(e)),
            };
            if outcome.is_ok() {
                outcome = result;
            }
        }
        outcome
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        let channel = self.channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(|e| self.fail(e))?;
        let consumer = channel
            .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| if is_not_found(&e) { Error::UnknownQueue(queue.to_string()) } else { self.fail(e) })?;
        Ok(Box::new(RabbitSubscription { channel, consumer }))
    }

    async fn publish_event(&self, topic: &str, body: Bytes) -> Result<()> {
        let channel = self.publisher().await?;
        let confirm = channel
            .basic_publish(EVENTS_EXCHANGE.into(), topic.into(), BasicPublishOptions::default(), &body, persistent())
            .await
            .map_err(|e| self.fail(e))?;
        match confirm.await.map_err(|e| self.fail(e))? {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) => Err(Error::Broker(format!("RabbitMQ did not store event '{topic}'"))),
            Confirmation::NotRequested => Err(Error::Broker("publisher confirms are off".into())),
        }
    }

    async fn subscribe(&self, group: &str, pattern: &str, prefetch: u16) -> Result<Box<dyn Subscription>> {
        let queue = events_queue(group);
        let channel = self.channel().await?;
        channel.queue_declare(queue.as_str().into(), durable(), quorum_queue(&[])).await.map_err(|e| self.fail(e))?;
        channel
            .queue_bind(
                queue.as_str().into(),
                EVENTS_EXCHANGE.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.fail(e))?;
        close(channel).await;
        self.consume(&queue, prefetch).await
    }
}

struct RabbitSubscription {
    channel: Channel,
    consumer: Consumer,
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self) -> Option<Result<Delivery>> {
        let delivery = self.consumer.next().await?;
        Some(match delivery {
            Ok(d) => {
                let count = delivery_count(&d.properties);
                Ok(Delivery::new(Bytes::from(d.data), count, Box::new(RabbitAcker(d.acker))))
            }
            Err(e) => Err(Error::Broker(e.to_string())),
        })
    }

    async fn cancel(&mut self) -> Result<()> {
        // lapin ends the consumer's stream after what was already delivered.
        self.channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(|e| Error::Broker(e.to_string()))
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // Closing the channel makes RabbitMQ requeue what this subscription
        // holds unsettled. Without a runtime to close it on, lapin still closes
        // it once the last handle is gone, only later.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close(self.channel.clone()));
        }
    }
}

/// Which delivery of its message this is. Quorum queues put the number of
/// earlier deliveries in `x-delivery-count`, absent on the first.
fn delivery_count(properties: &BasicProperties) -> u32 {
    let earlier = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().iter().find(|(key, _)| key.as_str() == "x-delivery-count"))
        .and_then(|(_, value)| non_negative(value))
        .unwrap_or(0);
    u32::try_from(earlier).unwrap_or(u32::MAX).saturating_add(1)
}

fn non_negative(value: &AMQPValue) -> Option<u64> {
    match *value {
        AMQPValue::ShortShortUInt(n) => Some(n.into()),
        AMQPValue::ShortUInt(n) => Some(n.into()),
        AMQPValue::LongUInt(n) => Some(n.into()),
        AMQPValue::ShortShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

struct RabbitAcker(lapin::Acker);

impl Acker for RabbitAcker {
    fn settle(self: Box<Self>, how: Settle) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            let acker = self.0;
            let sent = match how {
                Settle::Ack => acker.ack(BasicAckOptions::default()).await,
                Settle::Requeue => acker.reject(BasicRejectOptions { requeue: true }).await,
                // Rejected without requeue, a message goes to the queue's
                // dead-letter exchange and routing key.
                Settle::DeadLetter => acker.reject(BasicRejectOptions { requeue: false }).await,
            };
            match sent {
                Ok(true) => Ok(()),
                // The channel has closed: RabbitMQ has requeued the message.
                Ok(false) => Err(Error::Closed),
                Err(e) => Err(Error::Broker(e.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_count_comes_from_the_quorum_queue_header() {
        assert_eq!(delivery_count(&BasicProperties::default()), 1);
        for earlier in [AMQPValue::LongLongInt(2), AMQPValue::LongInt(2), AMQPValue::ShortShortUInt(2)] {
            let headers = BTreeMap::from([(ShortString::from("x-delivery-count"), earlier)]);
            let properties = BasicProperties::default().with_headers(FieldTable::from(headers));
            assert_eq!(delivery_count(&properties), 3);
        }
        let unrelated = BTreeMap::from([(ShortString::from("x-death"), AMQPValue::LongInt(7))]);
        assert_eq!(delivery_count(&BasicProperties::default().with_headers(FieldTable::from(unrelated))), 1);
    }

    #[test]
    fn passwords_are_cut_out_of_messages() {
        let url = "amqp://u:hunter2@h:5672/%2f";
        assert_eq!(without_password("failed for hunter2 at h".into(), url), "failed for *** at h");
        assert_eq!(without_password("refused".into(), "amqp://h:5672/%2f"), "refused");
        assert_eq!(without_password("refused".into(), "amqp://u@h"), "refused");
    }
}
