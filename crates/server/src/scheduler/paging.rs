//! Paging: the task that reads queued rows from the store into the queue's
//! window, each project's behind its cursor ([`super::queue`]).

use super::Scheduler;
use super::queue::Entry;
use std::sync::Arc;
use std::time::Duration;
use stratus_core::Task;
use stratus_store::Lane;
use tokio_util::sync::CancellationToken;

impl Scheduler {
    /// Pages lanes in whenever the queue asks for it, until `stop`.
    pub(super) async fn refill_loop(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.refill.notified() => {}
                _ = stop.cancelled() => return,
            }
            for lane in [Lane::Direct, Lane::Tasks] {
                if let Err(e) = self.refill_lane(lane).await {
                    tracing::error!(error = %e, "paging queued work from the store failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.refill.notify_one();
                }
            }
        }
    }

    /// Reads pages of `lane` until every project's line in it is over half
    /// full or the store has no more of it, under the lane's lock so cursors
    /// only move forward (and no commit passes a page).
    pub(super) async fn refill_lane(&self, lane: Lane) -> Result<(), stratus_store::Error> {
        let _guard = match lane {
            Lane::Direct => self.direct_lock.lock().await,
            Lane::Tasks => self.tasks_lock.lock().await,
        };
        if self.queue.lock().unwrap().begin_discovery(lane) {
            let projects = self.store.queued_projects(lane).await?;
            self.queue.lock().unwrap().lane(lane).discovered(projects);
        }
        loop {
            let Some((project, cursor, room)) = self.queue.lock().unwrap().next_page(lane) else { return Ok(()) };
            let page = self.store.queued_in(Some(lane), Some(&project), cursor, room as u32).await?;
            let full = page.len() == room;
            let now = self.clock.now_ms();
            let mut ready = Vec::with_capacity(page.len());
            let mut last = None;
            for p in page {
                let inv = p.invocation;
                last = Some(inv.id);
                let Some(f) = self.function(&inv.project, &inv.function, inv.version).await? else {
                    tracing::error!(id = %inv.id, function = %inv.function, "queued invocation of an unknown function version; left queued");
                    continue;
                };
                let task = Task {
                    invocation: inv.id,
                    attempt: inv.attempts + 1,
                    function: f,
                    input: p.input,
                    partition: p.partition,
                    job: inv.job_id,
                    token: None,
                };
                let entry = Entry { invocation: inv, task };
                if p.not_before > now {
                    self.push_delayed(entry, p.not_before);
                } else {
                    ready.push(entry);
                }
            }
            self.queue.lock().unwrap().absorb_page(lane, &project, last, full, ready);
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }
}
