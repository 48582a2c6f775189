//! The worker registry: who leases work, when each was last heard from,
//! and the watchdog that declares silent workers lost
//! ([`stratus_core::machine::worker_liveness`]) and ends their attempts so
//! they run again elsewhere.

use super::{Ending, Scheduler, Write, dispatch};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::machine::{self, Liveness};
use stratus_core::{Id, new_id};
use tokio_util::sync::CancellationToken;

/// A lost worker leaves the registry this many lease timeouts after its
/// last heartbeat.
const FORGET_LOST_AFTER: u32 = 10;

/// A worker as the registry knows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub slots: usize,
    pub local: bool,
    pub registered_at: Millis,
    pub last_heartbeat: Millis,
    pub state: &'static str,
    pub running: usize,
}

/// The registry itself, by worker id: a plain map with the rules of
/// liveness; the scheduler holds it under a mutex.
#[derive(Default)]
pub(super) struct Workers(HashMap<String, WorkerInfo>);

impl Workers {
    fn alive(&self, id: &str) -> bool {
        self.0.get(id).is_some_and(|w| w.state == "alive")
    }

    /// Whether `id` is a remote worker alive.
    pub(super) fn is_remote(&self, id: &str) -> bool {
        self.0.get(id).is_some_and(|w| !w.local && w.state == "alive")
    }

    /// Slots of the remote workers alive.
    pub(super) fn remote_slots(&self) -> usize {
        self.0.values().filter(|w| !w.local && w.state == "alive").map(|w| w.slots).sum()
    }

    /// Applies liveness at `now`: forgets workers lost long ago and marks
    /// silent ones lost, returning those newly lost.
    pub(super) fn sweep(&mut self, now: Millis, lease: Duration) -> Vec<String> {
        let lease_ms = lease.as_millis() as i64;
        let forget_ms = (lease * FORGET_LOST_AFTER).as_millis() as i64;
        let mut lost = Vec::new();
        self.0.retain(|id, w| {
            match machine::worker_liveness(w.local, w.state == "lost", w.last_heartbeat, now, lease_ms, forget_ms) {
                Liveness::Forget => return false,
                Liveness::Lost if w.state == "alive" => {
                    w.state = "lost";
                    lost.push(id.clone());
                }
                _ => {}
            }
            true
        });
        lost
    }
}

impl Scheduler {
    /// Registers a worker; returns its id.
    pub fn register_worker(&self, name: &str, host: &str, slots: usize, local: bool) -> String {
        let now = self.clock.now_ms();
        let id = if local { name.to_string() } else { format!("{name}-{}", &new_id().to_string()[24..]) };
        let info = WorkerInfo {
            id: id.clone(),
            host: host.to_string(),
            slots,
            local,
            registered_at: now,
            last_heartbeat: now,
            state: "alive",
            running: 0,
        };
        self.workers.lock().unwrap().0.insert(id.clone(), info);
        self.room.notify_one();
        tracing::info!(worker = %id, host, slots, "worker registered");
        id
    }

    /// Records a heartbeat; returns the ids of its tasks to cancel, or `None`
    /// if the worker is unknown or was declared lost (it must register again).
    pub fn heartbeat(&self, worker: &str) -> Option<Vec<Id>> {
        let mut workers = self.workers.lock().unwrap();
        let w = workers.0.get_mut(worker)?;
        if w.state != "alive" {
            return None;
        }
        w.last_heartbeat = self.clock.now_ms();
        drop(workers);
        // Through a broker any worker may hold any dispatched attempt; each
        // cancels those it runs.
        let brokered = self.brokered.load(Relaxed);
        let inflight = self.inflight.lock().unwrap();
        Some(
            inflight
                .iter()
                .filter(|(_, f)| {
                    (f.worker == worker || (brokered && f.worker == dispatch::BROKER)) && f.cancel.is_cancelled()
                })
                .map(|(id, _)| *id)
                .collect(),
        )
    }

    /// Forgets a worker that stopped cleanly: `Ok(false)` if it was unknown.
    /// A worker with attempts still in flight is refused with their number:
    /// once forgotten, the watchdog would not run them again.
    pub fn deregister_worker(&self, worker: &str) -> Result<bool, usize> {
        let inflight = self.inflight.lock().unwrap().values().filter(|f| f.worker == worker).count();
        if inflight > 0 {
            return Err(inflight);
        }
        let removed = self.workers.lock().unwrap().0.remove(worker).is_some();
        if removed {
            tracing::info!(%worker, "worker stopped and deregistered");
        }
        Ok(removed)
    }

    pub fn is_alive(&self, worker: &str) -> bool {
        self.workers.lock().unwrap().alive(worker)
    }

    pub fn workers(&self) -> Vec<WorkerInfo> {
        let mut running: HashMap<String, usize> = HashMap::new();
        for f in self.inflight.lock().unwrap().values() {
            *running.entry(f.worker.clone()).or_default() += 1;
        }
        let now = self.clock.now_ms();
        let mut list: Vec<WorkerInfo> = self
            .workers
            .lock()
            .unwrap()
            .0
            .values()
            .cloned()
            .map(|mut w| {
                w.running = running.get(&w.id).copied().unwrap_or(0);
                if w.local {
                    w.last_heartbeat = now;
                }
                w
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Declares workers that missed their heartbeats lost, and ends their
    /// attempts (as lost) so they run again; until `stop`.
    pub(super) async fn watchdog_loop(self: Arc<Self>, stop: CancellationToken) {
        let period = (self.lease_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.cancelled() => return,
            }
            let now = self.clock.now_ms();
            let lost = self.workers.lock().unwrap().sweep(now, self.lease_timeout);
            for worker in lost {
                let orphans: Vec<(Id, u32, Millis)> = self
                    .inflight
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, f)| f.worker == worker)
                    .map(|(id, f)| (*id, f.entry.task.attempt, f.started_at))
                    .collect();
                tracing::warn!(%worker, attempts = orphans.len(), "worker lost: no heartbeat; its attempts run again elsewhere");
                for (id, attempt, started_at) in orphans {
                    let end = machine::lost_attempt(id, attempt, &worker, started_at, now);
                    let _ = self.writes.send(Write::End(end, Ending::Reported));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, local: bool, last_heartbeat: Millis) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            host: "h".into(),
            slots: 1,
            local,
            registered_at: 0,
            last_heartbeat,
            state: "alive",
            running: 0,
        }
    }

    #[test]
    fn a_silent_worker_is_lost_once_then_forgotten() {
        let mut w = Workers::default();
        for info in [worker("quiet", false, 0), worker("chatty", false, 900), worker("here", true, 0)] {
            w.0.insert(info.id.clone(), info);
        }
        let lease = Duration::from_millis(500);
        assert_eq!(w.sweep(1000, lease), ["quiet"]);
        assert!(!w.alive("quiet") && w.alive("chatty") && w.alive("here"));
        assert!(w.sweep(1000, lease).is_empty(), "reported lost once");
        w.sweep(5001, lease);
        assert!(!w.0.contains_key("quiet"), "forgotten ten leases after its last heartbeat");
        assert!(w.0.contains_key("chatty"), "lost, not yet forgotten");
        assert!(w.alive("here"), "the local worker is never lost");
    }
}
