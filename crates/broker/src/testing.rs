//! Helpers for tests and benchmarks that use a real RabbitMQ.

/// Deletes the RabbitMQ work queue `queue` and its dead-letter queue, from a
/// blocking context (a test's or a benchmark's drop). Best effort: a
/// broker that cannot be reached, or a queue already gone, is not an error.
pub fn delete_queue_blocking(url: &str, queue: &str) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    rt.block_on(async {
        let Ok(conn) = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await else { return };
        if let Ok(channel) = conn.create_channel().await {
            for q in [queue.to_string(), crate::dead_letter_queue(queue)] {
                let _ = channel.queue_delete(q.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
            }
        }
        let _ = conn.close(200, "OK".into()).await;
    });
}
