//! The suite every broker engine passes: the in-process engine, and RabbitMQ
//! at `$STRATUS_TEST_AMQP` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! The RabbitMQ tests fail, never skip, when RabbitMQ cannot be reached.
//!
//! Every test uses queue and group names of its own, so the tests can share
//! one RabbitMQ, and deletes its RabbitMQ queues when it passes.

use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stratus_broker::{Broker, Delivery, Error, QueueSpec, Subscription, dead_letter_queue, open};

/// How long a test waits for something that must happen before failing.
const PATIENCE: Duration = Duration::from_secs(10);

/// An opened broker, and what to clean up after the test.
struct Fixture {
    broker: Arc<dyn Broker>,
    /// The RabbitMQ URL; `None` for the in-process engine, which leaves
    /// nothing behind.
    amqp: Option<String>,
    /// RabbitMQ queues the test created.
    created: Mutex<Vec<String>>,
}

async fn memory() -> Fixture {
    Fixture { broker: open("memory://").await.unwrap(), amqp: None, created: Mutex::default() }
}

async fn rabbitmq() -> Fixture {
    let url = std::env::var("STRATUS_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let broker = open(&url)
        .await
        .unwrap_or_else(|e| panic!("these tests need RabbitMQ (set STRATUS_TEST_AMQP to reach it): {e}"));
    Fixture { broker, amqp: Some(url), created: Mutex::default() }
}

/// A name no other test (or earlier run) uses.
fn unique(what: &str) -> String {
    format!("t-{what}-{}", stratus_core::new_id().as_uuid().simple())
}

impl Fixture {
    /// Declares a work queue of this test.
    async fn queue(&self, what: &str, delivery_limit: u32) -> String {
        let name = unique(what);
        self.broker.declare(&QueueSpec::new(&name, delivery_limit)).await.unwrap();
        self.created.lock().unwrap().extend([name.clone(), dead_letter_queue(&name)]);
        name
    }

    /// A subscription group of this test.
    fn group(&self, what: &str) -> String {
        let name = unique(what);
        self.created.lock().unwrap().push(format!("stratus.events.{name}"));
        name
    }

    /// Deletes the RabbitMQ queues the test created.
    async fn finish(self) {
        let Fixture { broker, amqp, created } = self;
        drop(broker);
        let Some(url) = amqp else { return };
        let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        for queue in created.into_inner().unwrap() {
            channel
                .queue_delete(queue.as_str().into(), lapin::options::QueueDeleteOptions::default())
                .await
                .unwrap_or_else(|e| panic!("deleting queue {queue}: {e}"));
        }
        conn.close(200, "OK".into()).await.unwrap();
    }
}

/// Awaits `f`, failing the test if it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

async fn recv(sub: &mut Box<dyn Subscription>) -> Delivery {
    within("a delivery", sub.next()).await.expect("the subscription ended").expect("the delivery failed")
}

fn bodies(texts: &[&str]) -> Vec<Bytes> {
    texts.iter().map(|t| Bytes::copy_from_slice(t.as_bytes())).collect()
}

fn text(d: &Delivery) -> String {
    String::from_utf8(d.body.to_vec()).unwrap()
}

/// The error of a call that must fail.
fn refused<T>(result: Result<T, Error>) -> Error {
    match result {
        Ok(_) => panic!("accepted, but should have been refused"),
        Err(e) => e,
    }
}

async fn in_order_and_acked(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("order", 3).await;
    let names: Vec<String> = (0..100).map(|i| format!("m{i:03}")).collect();
    let batch =
        |range: std::ops::Range<usize>| -> Vec<Bytes> { names[range].iter().map(|n| Bytes::from(n.clone())).collect() };
    b.publish(&q, batch(0..60)).await.unwrap();
    b.publish(&q, Vec::new()).await.unwrap();
    b.publish(&q, batch(60..100)).await.unwrap();
    let mut sub = b.consume(&q, 10).await.unwrap();
    for name in &names {
        let d = recv(&mut sub).await;
        assert_eq!((text(&d), d.delivery_count), (name.clone(), 1));
        d.ack().await.unwrap();
    }
    drop(sub);
    // What was acked is gone: a new subscription sees only what comes next.
    // (RabbitMQ may hand "last" to the closing subscription first, so its
    // delivery count is not checked.)
    let mut sub = b.consume(&q, 10).await.unwrap();
    b.publish(&q, bodies(&["last"])).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(text(&d), "last");
    d.ack().await.unwrap();
    drop(sub);
    f.finish().await;
}

async fn prefetch_bounds_unsettled(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("prefetch", 3).await;
    b.publish(&q, bodies(&["a", "b", "c"])).await.unwrap();
    let mut sub = b.consume(&q, 2).await.unwrap();
    let a = recv(&mut sub).await;
    let bee = recv(&mut sub).await;
    assert_eq!((text(&a).as_str(), text(&bee).as_str()), ("a", "b"));
    // The one place that asserts an absence by waiting: with two unsettled
    // and prefetch 2, "c" must not come.
    let third = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(third.is_err(), "a third delivery with prefetch 2: {third:?}");
    a.ack().await.unwrap();
    let c = recv(&mut sub).await;
    assert_eq!(text(&c), "c");
    bee.ack().await.unwrap();
    c.ack().await.unwrap();
    drop(sub);
    f.finish().await;
}

async fn redelivered_after_a_subscription_ends(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("redeliver", 5).await;
    b.publish(&q, bodies(&["one", "two"])).await.unwrap();
    let mut first = b.consume(&q, 10).await.unwrap();
    let one = recv(&mut first).await;
    let two = recv(&mut first).await;
    assert_eq!((text(&one).as_str(), one.delivery_count), ("one", 1));
    assert_eq!((text(&two).as_str(), two.delivery_count), ("two", 1));
    two.ack().await.unwrap();
    drop(first);
    let mut second = b.consume(&q, 10).await.unwrap();
    let again = recv(&mut second).await;
    assert_eq!((text(&again).as_str(), again.delivery_count), ("one", 2));
    let err = refused(one.ack().await);
    assert!(matches!(err, Error::Closed | Error::Broker(_)), "{err}");
    // A requeue counts as a delivery too.
    again.requeue().await.unwrap();
    let third = recv(&mut second).await;
    assert_eq!((text(&third).as_str(), third.delivery_count), ("one", 3));
    third.ack().await.unwrap();
    drop(second);
    f.finish().await;
}

async fn dead_letters_past_the_limit(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("limit", 2).await;
    b.publish(&q, bodies(&["x", "y"])).await.unwrap();
    // Prefetch 1, so that a requeued message is the next one delivered.
    let mut sub = b.consume(&q, 1).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("x", 1));
    d.requeue().await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("x", 2));
    d.requeue().await.unwrap(); // its second and last delivery: dead-lettered
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("y", 1));
    d.dead_letter().await.unwrap(); // at once
    b.publish(&q, bodies(&["z"])).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("z", 1));
    d.requeue().await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("z", 2));
    drop(sub); // unsettled at its last delivery: dead-lettered
    drop(d);

    // A limit of 1: the first message given back is dead-lettered.
    let once = f.queue("limit-one", 1).await;
    b.publish(&once, bodies(&["w"])).await.unwrap();
    let mut sub = b.consume(&once, 1).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.delivery_count), ("w", 1));
    d.requeue().await.unwrap();
    drop(sub);

    for (queue, expected) in [(&q, vec!["x", "y", "z"]), (&once, vec!["w"])] {
        let mut dead = b.consume(&dead_letter_queue(queue), 10).await.unwrap();
        let mut got = BTreeSet::new();
        for _ in 0..expected.len() {
            let d = recv(&mut dead).await;
            got.insert(text(&d));
            d.ack().await.unwrap();
        }
        let want: BTreeSet<String> = expected.into_iter().map(String::from).collect();
        assert_eq!(got, want, "dead letters of {queue}");
    }
    f.finish().await;
}

async fn competing_subscriptions_get_each_message_once(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("compete", 3).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let mut sub = b.consume(&q, 20).await.unwrap();
        let tx = tx.clone();
        workers.push(tokio::spawn(async move {
            while let Some(d) = sub.next().await {
                let d = d.unwrap();
                let body = d.body.clone();
                d.ack().await.unwrap();
                if tx.send(body).is_err() {
                    break;
                }
            }
        }));
    }
    let all: BTreeSet<Bytes> = (0..1000).map(|i| Bytes::from(format!("job-{i}"))).collect();
    b.publish(&q, all.iter().cloned().collect()).await.unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..all.len() {
        let body = within("a message", rx.recv()).await.expect("the workers stopped");
        assert!(seen.insert(body.clone()), "delivered twice: {body:?}");
    }
    assert_eq!(seen, all);
    for worker in workers {
        worker.abort();
    }
    f.finish().await;
}

async fn events_reach_matching_groups_only(f: Fixture) {
    let b = f.broker.clone();
    let groups = [("exact", "task.done"), ("star", "task.*"), ("hash", "task.#"), ("other", "job.*")];
    let mut subs = Vec::new();
    for (what, pattern) in groups {
        subs.push(b.subscribe(&f.group(what), pattern, 10).await.unwrap());
    }
    let topics =
        ["task.done", "task.failed.hard", "job.done", "task", "unrelated.x", "job.done.late", "task.done", "job.end"];
    for (n, topic) in topics.iter().enumerate() {
        b.publish_event(topic, Bytes::from(format!("{n}:{topic}"))).await.unwrap();
    }
    // The last event each group gets comes after every other: anything it
    // should not have had would show up before it.
    let expected: [&[&str]; 4] = [
        &["0:task.done", "6:task.done"],
        &["0:task.done", "6:task.done"],
        &["0:task.done", "1:task.failed.hard", "3:task", "6:task.done"],
        &["2:job.done", "7:job.end"],
    ];
    for ((sub, want), (what, _)) in subs.iter_mut().zip(expected).zip(groups) {
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let d = recv(sub).await;
            got.push(text(&d));
            assert_eq!(d.delivery_count, 1);
            d.ack().await.unwrap();
        }
        assert_eq!(got, want, "group {what}");
    }
    drop(subs);
    f.finish().await;
}

async fn a_group_shares_its_events(f: Fixture) {
    let b = f.broker.clone();
    let group = f.group("shared");
    let mut one = b.subscribe(&group, "batch.#", 5).await.unwrap();
    let mut two = b.subscribe(&group, "batch.#", 5).await.unwrap();
    let all: BTreeSet<Bytes> = (0..20).map(|i| Bytes::from(format!("event-{i}"))).collect();
    for body in &all {
        b.publish_event("batch.item", body.clone()).await.unwrap();
    }
    let mut seen = BTreeSet::new();
    while seen.len() < all.len() {
        let next = async {
            tokio::select! {
                d = one.next() => d,
                d = two.next() => d,
            }
        };
        let d = within("an event", next).await.expect("a subscription ended").expect("the delivery failed");
        assert!(seen.insert(d.body.clone()), "one group got an event twice: {:?}", d.body);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, all);
    drop((one, two));
    f.finish().await;
}

async fn declare_is_idempotent_and_queues_must_exist(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("idempotent", 3).await;
    b.declare(&QueueSpec::new(&q, 3)).await.unwrap();
    let err = refused(b.declare(&QueueSpec::new(&q, 4)).await);
    assert!(matches!(err, Error::Broker(_)), "{err}");
    let missing = unique("missing");
    let err = refused(b.publish(&missing, bodies(&["x"])).await);
    assert!(matches!(&err, Error::UnknownQueue(name) if *name == missing), "{err}");
    let err = refused(b.consume(&missing, 1).await);
    assert!(matches!(&err, Error::UnknownQueue(name) if *name == missing), "{err}");
    // Events nobody subscribed to are fine, and dropped.
    b.publish_event("nobody.listens", Bytes::from_static(b"x")).await.unwrap();
    // The broker still works after refusing those.
    b.publish(&q, bodies(&["ok"])).await.unwrap();
    let mut sub = b.consume(&q, 1).await.unwrap();
    let d = recv(&mut sub).await;
    assert_eq!(text(&d), "ok");
    d.ack().await.unwrap();
    drop(sub);
    f.finish().await;
}

async fn bad_names_are_refused(f: Fixture) {
    let b = f.broker.clone();
    let too_long = "a".repeat(102);
    for name in ["", "Upper", "-dash", ".dot", "sp ace", "a/b", too_long.as_str(), "work.dead", "stratus.events.g"] {
        let err = refused(b.declare(&QueueSpec::new(name, 3)).await);
        assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {err}");
    }
    let err = refused(b.declare(&QueueSpec::new(unique("zero"), 0)).await);
    assert!(matches!(err, Error::InvalidName { .. }) && err.to_string().contains("at least 1"), "{err}");
    let err = refused(b.publish("Upper", bodies(&["x"])).await);
    assert!(err.to_string().contains("'Upper'"), "{err}");
    assert!(matches!(refused(b.consume("", 1).await), Error::InvalidName { .. }));
    for (group, pattern) in [("Group", "a.b"), ("g", ""), ("g", "a..b"), ("g", "a.b*"), ("g", "a b")] {
        let err = refused(b.subscribe(group, pattern, 1).await);
        assert!(matches!(err, Error::InvalidName { .. }), "{group:?} {pattern:?}: {err}");
    }
    for topic in ["", "a.*", "a.#", "a..b", ".a", "a b"] {
        let err = refused(b.publish_event(topic, Bytes::from_static(b"x")).await);
        assert!(matches!(err, Error::InvalidName { .. }), "{topic:?}: {err}");
    }
    f.finish().await;
}

/// A consumer handing work back: after `cancel`, what was on its way still
/// arrives, and what it never took goes to the next consumer uncounted.
async fn cancel_hands_back_uncounted(f: Fixture) {
    let b = f.broker.clone();
    let q = f.queue("cancel", 5).await;
    b.publish(&q, bodies(&["a", "b", "c", "d"])).await.unwrap();
    let mut sub = b.consume(&q, 2).await.unwrap();
    let a = recv(&mut sub).await;
    assert_eq!(text(&a), "a");
    sub.cancel().await.unwrap();
    let mut taken = vec![a];
    while let Some(d) = within("the end of a cancelled subscription", sub.next()).await {
        taken.push(d.unwrap());
    }
    let n = taken.len();
    assert!(n <= 2, "prefetch 2, {n} delivered");
    let texts: Vec<String> = taken.iter().map(text).collect();
    assert_eq!(texts, ["a", "b"][..n], "in order");
    for d in taken {
        d.ack().await.unwrap();
    }
    let mut next = b.consume(&q, 10).await.unwrap();
    for expected in &["a", "b", "c", "d"][n..] {
        let d = recv(&mut next).await;
        assert_eq!((text(&d).as_str(), d.delivery_count), (*expected, 1), "a message never taken is not redelivered");
        d.ack().await.unwrap();
    }
    drop(next);
    drop(sub);
    f.finish().await;
}

macro_rules! conformance {
    ($engine:ident) => {
        mod $engine {
            conformance!(@tests $engine:
                in_order_and_acked,
                prefetch_bounds_unsettled,
                redelivered_after_a_subscription_ends,
                dead_letters_past_the_limit,
                competing_subscriptions_get_each_message_once,
                events_reach_matching_groups_only,
                a_group_shares_its_events,
                declare_is_idempotent_and_queues_must_exist,
                bad_names_are_refused,
                cancel_hands_back_uncounted
            );
        }
    };
    (@tests $engine:ident: $($test:ident),*) => {
        $(
            #[tokio::test]
            async fn $test() {
                super::$test(super::$engine().await).await
            }
        )*
    };
}

conformance!(memory);
conformance!(rabbitmq);

/// A worker whose connection goes away (its process killed) has its
/// unsettled messages redelivered to the others, counted.
#[tokio::test]
async fn rabbitmq_redelivers_what_a_lost_connection_held() {
    let f = rabbitmq().await;
    let q = f.queue("lost-connection", 5).await;
    f.broker.publish(&q, bodies(&["held", "also held"])).await.unwrap();
    let url = f.amqp.clone().unwrap();
    let worker = open(&url).await.unwrap();
    let mut sub = worker.consume(&q, 10).await.unwrap();
    let held = [recv(&mut sub).await, recv(&mut sub).await];
    assert_eq!(held.iter().map(|d| d.delivery_count).collect::<Vec<_>>(), [1, 1]);
    // The whole connection goes: subscription, deliveries, broker.
    drop((held, sub, worker));
    let mut other = f.broker.consume(&q, 10).await.unwrap();
    for expected in ["held", "also held"] {
        let d = recv(&mut other).await;
        assert_eq!((text(&d).as_str(), d.delivery_count), (expected, 2));
        d.ack().await.unwrap();
    }
    drop(other);
    f.finish().await;
}

#[tokio::test]
async fn bad_urls_are_refused_without_showing_secrets() {
    for (url, says) in [
        ("redis://u:hunter2@127.0.0.1:6379", "unsupported broker URL"),
        ("memory://elsewhere", "unsupported broker URL"),
        ("amqps://u:hunter2@127.0.0.1:1/%2f", "unsupported broker URL"),
        ("amqp://u:hunter2@127.0.0.1:1/%2f", "cannot connect to the message broker at amqp://u:***@127.0.0.1:1/%2f"),
    ] {
        let err = refused(open(url).await).to_string();
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
}
