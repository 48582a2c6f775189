//! Sync invocations run on their caller's task.
//!
//! A sync invocation queued for a slot crosses three tasks: the HTTP
//! handler queues it and wakes a slot, the slot runs it and hands its end to
//! the writer, and the writer commits and wakes the handler. When a local
//! slot is free and nothing waits before it, [`Scheduler::run_here`] does all
//! of that on the handler's own task instead, holding one of the local
//! slots' permits while the function runs. Its writes are those of the
//! queued path, made by the writer's own [`Scheduler::write_records`] on
//! this task: the row with its end in one commit when the attempt ends
//! within [`START_HOLD`], the row with its start when the hold is over
//! (joined with the run, which goes on meanwhile).
//!
//! The handler may be dropped (its client went away) or give up waiting
//! ([`crate::api::MAX_WAIT`]): the run then goes on on a task of its own,
//! and ends as it would have. A stopping node waits for these attempts, and
//! the writes of their ends, as it waits for its slots.

use super::{Ending, Entry, Finished, Inflight, START_HOLD, Scheduler};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use stratus_core::{Function, Id, Invocation, Task};
use stratus_store::{AttemptStart, NewInvocation};
use stratus_worker::{Executor, Leased, TaskSource};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

/// The local worker, as sync invocations run on their caller's task see it.
pub(super) struct Local {
    pub(super) executor: Arc<Executor>,
    /// One per local slot. A slot takes one with the work it takes from the
    /// queue and gives it back when it is free again; an invocation run on
    /// its caller's task holds one while it runs. So no more than `slots`
    /// functions run at once here.
    pub(super) permits: Arc<Semaphore>,
}

/// The run of one such invocation, to its result.
type Run = Pin<Box<dyn Future<Output = Option<Arc<Finished>>> + Send>>;

/// A sync invocation running on its caller's task: awaiting it gives its
/// result (`None` if the scheduler stopped first). Dropped before that, it
/// goes on on a task of its own.
pub struct Here {
    pub id: Id,
    run: Option<Run>,
    stored: Option<oneshot::Receiver<()>>,
}

impl Future for Here {
    type Output = Option<Arc<Finished>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(run) = self.run.as_mut() else { return Poll::Ready(None) };
        let out = std::task::ready!(run.as_mut().poll(cx));
        self.run = None;
        Poll::Ready(out)
    }
}

impl Here {
    /// Returns once the invocation's row is in the store, so its id may be
    /// handed out: for a run that outlives its caller's wait.
    pub async fn stored(&mut self) {
        let Some(mut rx) = self.stored.take() else { return };
        let ended = match self.run.as_mut() {
            // Polled alongside, so the run (and its write) go on meanwhile.
            Some(run) => tokio::select! {
                _ = &mut rx => false,
                _ = run.as_mut() => true,
            },
            None => {
                let _ = rx.await;
                false
            }
        };
        if ended {
            self.run = None;
        }
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        if let Some(run) = self.run.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(run);
        }
    }
}

impl Scheduler {
    /// Lets sync invocations run on their caller's task on `executor`, the
    /// local worker, in place of one of its `slots` slots.
    pub fn run_here_on(&self, executor: Arc<Executor>, slots: usize) {
        let _ = self.local.set(Local { executor, permits: Arc::new(Semaphore::new(slots)) });
    }

    /// Starts a sync invocation of `function` on the caller's task, if a
    /// local slot is free, no direct invocation or due retry waits, and
    /// neither the function has concurrency tags nor its project a
    /// `max_running` quota (their slots are the queue's);
    /// otherwise it gives the input back, and the caller submits it.
    pub fn run_here(&self, function: Arc<Function>, input: Vec<u8>) -> Result<Here, Vec<u8>> {
        let Some(local) = self.local.get() else { return Err(input) };
        let now = self.clock.now_ms();
        {
            // Looked at before taking a permit, so a permit taken is never
            // given back unused (a slot may have missed it meanwhile).
            let q = self.queue.lock().unwrap();
            let retry_due = q.retry_due(now);
            let limited = q.tags.project_limited(&function.project);
            if q.closed || !q.direct.idle() || retry_due || limited {
                return Err(input);
            }
        }
        if !function.spec.tags.is_empty() {
            // Its slots are taken from the queue.
            return Err(input);
        }
        let Ok(permit) = local.permits.clone().try_acquire_owned() else { return Err(input) };
        let invocation = Invocation::queued(&function, now, None, None);
        let id = invocation.id;
        let task = Task { invocation: id, attempt: 1, function, input, partition: None, job: None, token: None };
        let row = NewInvocation { invocation: invocation.clone(), input: task.input.clone(), partition: None };
        let worker = local.executor.name.clone();
        let start = AttemptStart { id, attempt: 1, worker: worker.clone(), started_at: now };
        let cancel = CancellationToken::new();
        let mut handed = task.clone();
        handed.token = self.attempt_token(&task, now);
        let leased = Leased { task: handed, cancel: cancel.clone() };
        let finished = self.watch(id);
        self.inflight.lock().unwrap().insert(
            id,
            Inflight { entry: Entry { invocation, task }, worker, started_at: now, cancel, released: false },
        );
        self.metrics.invocations_submitted.fetch_add(1, Relaxed);
        self.metrics.attempts_started.fetch_add(1, Relaxed);

        let me = self.arc();
        let executor = local.executor.clone();
        let (stored_tx, stored_rx) = oneshot::channel();
        let mut stored_tx = Some(stored_tx);
        // Tracked until its end is written; a retry is the queue's from then on.
        let attempt_and_writes = async move {
            let attempt = async {
                let c = executor.execute(leased).await;
                drop(permit);
                me.wake_for_permit();
                c
            };
            tokio::pin!(attempt);
            match tokio::time::timeout(START_HOLD, &mut attempt).await {
                Ok(c) => me.write_records(vec![row], vec![], vec![(c, Ending::Reported)]).await,
                Err(_) => {
                    let write = async {
                        me.write_records(vec![row], vec![start], vec![]).await;
                        if let Some(tx) = stored_tx.take() {
                            let _ = tx.send(());
                        }
                    };
                    let ((), c) = tokio::join!(write, attempt);
                    me.write_records(vec![], vec![], vec![(c, Ending::Reported)]).await;
                }
            }
            if let Some(tx) = stored_tx.take() {
                let _ = tx.send(());
            }
        };
        let attempt_and_writes = self.here.track_future(attempt_and_writes);
        let run = async move {
            attempt_and_writes.await;
            finished.await.ok()
        };
        Ok(Here { id, run: Some(Box::pin(run)), stored: Some(stored_rx) })
    }

    /// Returns once every attempt run on its caller's task has ended and
    /// its end is written (after [`Scheduler::close`]); a retry is the
    /// queue's, and like the queue's is run again after a restart.
    pub async fn ran_here(&self) {
        self.here.wait().await;
    }
}

/// A slot lent while a function waits for calls of its own; given back
/// when dropped.
pub enum LentSlot {
    /// A local slot's loan: a slot of the node runs while it lasts.
    Local(CancellationToken),
    /// A remote worker's: it runs one more slot while its leases say so.
    Remote(Arc<Scheduler>, String),
}

impl Drop for LentSlot {
    fn drop(&mut self) {
        match self {
            LentSlot::Local(stop) => stop.cancel(),
            LentSlot::Remote(s, worker) => {
                {
                    let mut loans = s.loans.lock().unwrap();
                    if let Some(n) = loans.get_mut(worker.as_str()) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            loans.remove(worker.as_str());
                        }
                    }
                }
                s.loans_changed.notify_waiters();
            }
        }
    }
}

impl Scheduler {
    /// While the attempt of invocation `waiting` waits through the API for
    /// calls of its own, its slot is lent: one more slot runs meanwhile, so
    /// functions that wait for their children cannot hold every slot and
    /// starve those children. On a local slot, the node runs it; on a
    /// remote worker that leases over HTTP, the worker does, told by its
    /// leases (`lent`). `None` when the attempt is not in flight, or was
    /// dispatched through the broker. The slot is given back when the
    /// guard drops: at once if it is idle, else when its task ends.
    pub fn lend_slot(&self, waiting: Id) -> Option<LentSlot> {
        let worker = self.inflight.lock().unwrap().get(&waiting).map(|f| f.worker.clone())?;
        let local = self.local.get();
        if local.is_none_or(|l| l.executor.name != worker) {
            if worker == super::dispatch::BROKER || !self.workers.lock().unwrap().is_remote(&worker) {
                return None;
            }
            *self.loans.lock().unwrap().entry(worker.clone()).or_default() += 1;
            self.loans_changed.notify_waiters();
            return Some(LentSlot::Remote(self.arc(), worker));
        }
        let local = local?;
        let stop = CancellationToken::new();
        local.permits.add_permits(1);
        self.wake_for_permit();
        let (me, executor, permits) = (self.arc(), local.executor.clone(), local.permits.clone());
        self.here.spawn(me.lent_slot(executor, permits, stop.clone()));
        Some(LentSlot::Local(stop))
    }

    /// The lent slot: takes and runs tasks as a local slot does, one at a
    /// time, until the loan ends; then keeps the permit it holds (or takes
    /// one when idle), which gives the loan back.
    async fn lent_slot(self: Arc<Self>, executor: Arc<Executor>, permits: Arc<Semaphore>, stop: CancellationToken) {
        loop {
            // Only ever cancelled while waiting for work: nothing taken yet.
            let next = tokio::select! {
                tasks = self.take_for(&executor.name, 1, Some(&permits)) => tasks,
                _ = stop.cancelled() => break,
            };
            let Some(tasks) = next else { return };
            for leased in tasks {
                let c = executor.execute(leased).await;
                self.complete(c).await;
            }
            if stop.is_cancelled() {
                return;
            }
            self.slot_free(&executor.name);
        }
        if let Ok(p) = permits.acquire().await {
            p.forget();
        }
    }
}
