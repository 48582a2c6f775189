//! Callers waiting for something to finish (an invocation, a job), by id.
//!
//! A [`Watch`] is registered before the caller reads the store, so a finish
//! in between is not missed, and it takes itself out of the map when it is
//! dropped, on every path: answered, timed out, an error in between, or the
//! caller gone. The map holds only waits that are in progress.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use stratus_core::Id;
use tokio::sync::oneshot;

pub struct Waiters<T> {
    map: Mutex<HashMap<Id, Vec<oneshot::Sender<T>>>>,
}

impl<T: Clone> Waiters<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Waiters { map: Mutex::new(HashMap::new()) })
    }

    /// A wait for `id`, resolved by the next [`Waiters::finish`] of it.
    pub fn watch(self: &Arc<Self>, id: Id) -> Watch<T> {
        let (tx, rx) = oneshot::channel();
        self.map.lock().unwrap().entry(id).or_default().push(tx);
        Watch { id, rx: Some(rx), waiters: self.clone() }
    }

    /// Hands `value` to every wait for `id`.
    pub fn finish(&self, id: Id, value: T) {
        let Some(list) = self.map.lock().unwrap().remove(&id) else { return };
        for tx in list {
            let _ = tx.send(value.clone());
        }
    }

    /// Ends every wait for `id` without a value.
    pub fn cancel(&self, id: Id) {
        self.map.lock().unwrap().remove(&id);
    }

    /// Waits in progress (for the metrics).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().values().map(Vec::len).sum()
    }

    fn forget(&self, id: Id) {
        let mut map = self.map.lock().unwrap();
        if let Some(list) = map.get_mut(&id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                map.remove(&id);
            }
        }
    }
}

/// One caller's wait; resolves to the value, or to an error when the waits
/// for its id were dropped without one (e.g. the invocation was forgotten).
pub struct Watch<T: Clone> {
    id: Id,
    rx: Option<oneshot::Receiver<T>>,
    waiters: Arc<Waiters<T>>,
}

impl<T: Clone> Future for Watch<T> {
    type Output = Result<T, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.rx.as_mut() {
            Some(rx) => Pin::new(rx).poll(cx),
            None => Poll::Pending,
        }
    }
}

impl<T: Clone> Drop for Watch<T> {
    fn drop(&mut self) {
        // Closed first, so `forget` sees this sender as gone.
        drop(self.rx.take());
        self.waiters.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_core::new_id;

    #[tokio::test]
    async fn a_wait_leaves_the_map_on_every_path() {
        let w: Arc<Waiters<u32>> = Waiters::new();
        let (a, b) = (new_id(), new_id());
        let answered = w.watch(a);
        let dropped = w.watch(b);
        let also_a = w.watch(a);
        assert_eq!(w.len(), 3);
        drop(dropped);
        assert_eq!(w.len(), 2, "a wait dropped unanswered takes itself out");
        w.finish(a, 7);
        assert_eq!(answered.await.unwrap(), 7);
        assert_eq!(also_a.await.unwrap(), 7, "one finish answers every wait for the id");
        assert_eq!(w.len(), 0);
        w.finish(b, 1);
        assert_eq!(w.len(), 0);
    }
}
