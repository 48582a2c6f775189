//! Helpers for tests and benchmarks that use a real RabbitMQ.

/// Deletes the RabbitMQ work queue `queue` and its dead-letter queue, from a
/// blocking context (a test's or a benchmark's drop). Best effort: a
/// broker that cannot be reached, or a queue already gone, is not an error.
pub fn delete_queue_blocking(url: &str, queue: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await else { return };
        if let Ok(channel) = conn.create_channel().await {
            // With the group a server ingests the deployment's events on.
            let ingest = crate::events_queue(&format!("{queue}.ingest"));
            for q in [queue.to_string(), crate::dead_letter_queue(queue), ingest] {
                let _ = channel.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
            }
        }
        let _ = conn.close(200, "OK".into()).await;
    });
}

/// Publishes `body` on the events exchange under `topic`, from a runtime of
/// its own (for blocking tests); panics if the broker does not take it.
pub fn publish_event_blocking(url: &str, topic: &str, body: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(async {
        let broker = crate::open(url).await.expect("the broker is reachable");
        broker.publish_event(topic, bytes::Bytes::copy_from_slice(body)).await.expect("the broker takes the event");
    });
}
