//! The writer: every change the scheduler makes to the store goes through
//! it, as one [`ChangeSet`] per batch.
//!
//! It records new invocations that a caller waits for, and attempt starts
//! and ends, in batches, each with one [`StateStore::commit`]. A start is
//! held back for [`START_HOLD`] ([`BROKER_START_HOLD`] when dispatched
//! through the broker, whose round trip is longer): most short attempts end
//! within it, and then their start needs no write of its own (the end
//! records both). Such an insert is held for [`START_HOLD`] too, and
//! written with its invocation's end when that comes first. An insert is
//! sent before its start, so it is due first. The holds are a plain struct
//! ([`Holds`]); the task around them only receives, waits and commits.
//! Invocations run on their caller's task ([`super::here`]) write through
//! [`Scheduler::write_records`] too, on that task, sparing the hand-offs.
//!
//! [`StateStore::commit`]: stratus_store::StateStore::commit

use super::{BROKER_START_HOLD, Ending, Error, Finished, START_HOLD, Scheduler, dispatch, retry_forever};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use stratus_core::machine::{self, Decision};
use stratus_core::{Completion, Id};
use stratus_store::{AttemptStart, ChangeSet, NewInvocation};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(super) enum Write {
    /// A new invocation a caller waits for; held like a start.
    Insert(NewInvocation),
    Start(AttemptStart),
    End(Completion, Ending),
    /// Answers once everything sent before it is written, held starts and inserts included.
    Flush(oneshot::Sender<()>),
    /// Answers once every end sent before it is written (held starts stay held).
    Barrier(oneshot::Sender<()>),
}

/// The attempts a batch ends, with the workers that report each end.
pub(super) type Ended<'a> = HashMap<(Id, u32), Vec<&'a str>>;

/// Held inserts and starts, by due time.
#[derive(Default)]
pub(super) struct Holds {
    /// Leased starts, and brokered ones (held longer).
    starts: [VecDeque<(Instant, AttemptStart)>; 2],
    inserts: VecDeque<(Instant, NewInvocation)>,
}

impl Holds {
    pub(super) fn hold_insert(&mut self, now: Instant, n: NewInvocation) {
        self.inserts.push_back((now + START_HOLD, n));
    }

    pub(super) fn hold_start(&mut self, now: Instant, s: AttemptStart) {
        if s.worker == dispatch::BROKER {
            self.starts[1].push_back((now + BROKER_START_HOLD, s));
        } else {
            self.starts[0].push_back((now + START_HOLD, s));
        }
    }

    /// When the next hold is over.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.starts.iter().filter_map(|h| h.front().map(|(t, _)| *t)).chain(self.inserts.front().map(|(t, _)| *t)).min()
    }

    /// What to write with a batch of `ended` attempts at `now`: the inserts
    /// of those invocations, and every insert and start whose hold is over
    /// — all of them with `flush`. The start of an ended attempt is dropped
    /// when the worker it started on reports the end (the end records it);
    /// when another worker does, the start is written now, before that
    /// end, so that the store's guard refuses it.
    pub(super) fn release(
        &mut self,
        now: Instant,
        ended: &Ended<'_>,
        flush: bool,
    ) -> (Vec<NewInvocation>, Vec<AttemptStart>) {
        let mut inserts = Vec::new();
        let mut starts = Vec::new();
        if !ended.is_empty() {
            for h in &mut self.starts {
                let mut kept = VecDeque::with_capacity(h.len());
                for (t, s) in h.drain(..) {
                    match ended.get(&(s.id, s.attempt)) {
                        None => kept.push_back((t, s)),
                        Some(by) if s.worker == dispatch::BROKER || by.contains(&s.worker.as_str()) => {}
                        Some(_) => starts.push(s),
                    }
                }
                *h = kept;
            }
            if !self.inserts.is_empty() {
                let ended: HashSet<Id> = ended.keys().map(|(id, _)| *id).collect();
                let (pulled, kept): (VecDeque<_>, VecDeque<_>) =
                    self.inserts.drain(..).partition(|(_, n)| ended.contains(&n.invocation.id));
                self.inserts = kept;
                inserts.extend(pulled.into_iter().map(|(_, n)| n));
            }
        }
        while self.inserts.front().is_some_and(|(t, _)| flush || *t <= now) {
            inserts.push(self.inserts.pop_front().expect("front exists").1);
        }
        for h in &mut self.starts {
            while h.front().is_some_and(|(t, _)| flush || *t <= now) {
                starts.push(h.pop_front().expect("front exists").1);
            }
        }
        (inserts, starts)
    }
}

impl Scheduler {
    /// The writer task: receives writes, holds inserts and starts, commits
    /// each batch. On `stop` it writes everything it holds and has
    /// received, and ends.
    pub(super) async fn write_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Write>, stop: CancellationToken) {
        let mut batch = Vec::with_capacity(1024);
        let mut holds = Holds::default();
        loop {
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, 1024) => n,
                _ = async {
                    match holds.next_due() {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => usize::MAX,
                _ = stop.cancelled() => {
                    rx.close();
                    while let Some(w) = rx.recv().await {
                        batch.push(w);
                    }
                    batch.push(Write::Flush(oneshot::channel().0));
                    self.write_batch(&mut batch, &mut holds).await;
                    return;
                }
            };
            if received == 0 {
                return;
            }
            self.write_batch(&mut batch, &mut holds).await;
        }
    }

    /// Commits one batch of writes with what is due of `holds`.
    async fn write_batch(&self, batch: &mut Vec<Write>, holds: &mut Holds) {
        let now = Instant::now();
        let mut ends = Vec::new();
        let mut flushes = Vec::new();
        let mut barriers = Vec::new();
        for w in batch.drain(..) {
            match w {
                Write::Insert(n) => holds.hold_insert(now, n),
                Write::Start(s) => holds.hold_start(now, s),
                Write::End(c, how) => ends.push((c, how)),
                Write::Flush(tx) => flushes.push(tx),
                Write::Barrier(tx) => barriers.push(tx),
            }
        }
        let mut ended = Ended::new();
        for (c, _) in &ends {
            ended.entry((c.invocation, c.attempt)).or_default().push(c.worker.as_str());
        }
        let (inserts, starts) = holds.release(now, &ended, !flushes.is_empty());
        drop(ended);
        self.write_records(inserts, starts, ends).await;
        for tx in flushes.into_iter().chain(barriers) {
            let _ = tx.send(());
        }
    }

    /// Returns once everything reported so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records attempt ends and returns once they are durable; fails with
    /// [`Error::Stopped`] when the writer has ended, so that the reporter
    /// (a worker, which acknowledges its dispatch message on the answer)
    /// reports them again, to the next leader.
    pub async fn complete_durably(&self, completions: Vec<Completion>) -> Result<(), Error> {
        let (completions, forged): (Vec<Completion>, Vec<Completion>) =
            completions.into_iter().partition(|c| self.report_holds(c));
        for c in &forged {
            self.metrics.stale_completions.fetch_add(1, Relaxed);
            tracing::warn!(invocation = %c.invocation, attempt = c.attempt, worker = %c.worker,
                "an end of an attempt this worker does not hold was ignored");
        }
        for c in &completions {
            self.release_reported(c);
        }
        self.ended(completions.into_iter().map(|c| (c, Ending::Reported))).await
    }

    /// Sends ends to the writer and waits until they are written.
    pub(super) async fn ended(&self, ends: impl IntoIterator<Item = (Completion, Ending)>) -> Result<(), Error> {
        for (c, how) in ends {
            self.writes.send(Write::End(c, how)).map_err(|_| Error::Stopped)?;
        }
        let (tx, rx) = oneshot::channel();
        self.writes.send(Write::Barrier(tx)).map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Commits new invocations, attempt starts and attempt ends as one
    /// change set, each end decided by [`machine::end_attempt`], retrying
    /// until the store takes it; then acts on what applied: waiters woken,
    /// retries queued, jobs moved on.
    pub(super) async fn write_records(
        &self,
        new: Vec<NewInvocation>,
        starts: Vec<AttemptStart>,
        ends: Vec<(Completion, Ending)>,
    ) {
        if ends.is_empty() {
            if !new.is_empty() || !starts.is_empty() {
                let changes = ChangeSet { new, starts, ..Default::default() };
                retry_forever("record invocations and attempt starts", || self.store.commit(changes.clone())).await;
            }
            return;
        }
        let now = self.clock.now_ms();
        // A failure may be retried: how often, the store says for
        // invocations not in memory here (reported after a restart, say).
        let unknown: Vec<Id> = {
            let inflight = self.inflight.lock().unwrap();
            ends.iter()
                .filter(|(c, how)| {
                    c.result.is_err() && matches!(how, Ending::Reported) && !inflight.contains_key(&c.invocation)
                })
                .map(|(c, _)| c.invocation)
                .collect()
        };
        let stored: HashMap<Id, u32> = if unknown.is_empty() {
            HashMap::new()
        } else {
            retry_forever("read attempt limits", || self.store.max_attempts(&unknown)).await.into_iter().collect()
        };
        let mut decisions = Vec::with_capacity(ends.len());
        let mut records = Vec::with_capacity(ends.len());
        {
            let inflight = self.inflight.lock().unwrap();
            for (c, how) in &ends {
                let max_attempts = inflight
                    .get(&c.invocation)
                    .map(|f| f.entry.invocation.max_attempts)
                    .or_else(|| stored.get(&c.invocation).copied())
                    .unwrap_or(1);
                let (decision, end) = machine::end_attempt(c, *how, max_attempts, now, self.backoff);
                decisions.push(decision);
                records.push(end);
            }
        }
        let changes = ChangeSet { new, starts, ends: records, ..Default::default() };
        let report = retry_forever("record attempts", || self.store.commit(changes.clone())).await;
        for (((c, _), decision), applied) in ends.into_iter().zip(decisions).zip(report.applied) {
            if !applied {
                self.metrics.stale_completions.fetch_add(1, Relaxed);
                // The attempt is over all the same (its job was cancelled
                // while its start was held, say): nothing else will end it.
                // Not when another worker reported it: the holder still runs it.
                let mut inflight = self.inflight.lock().unwrap();
                if inflight.get(&c.invocation).is_some_and(|f| {
                    f.entry.task.attempt == c.attempt && (f.worker == c.worker || f.worker == dispatch::BROKER)
                }) {
                    self.remove_inflight(&mut inflight, &c.invocation);
                }
                continue;
            }
            let removed = self.remove_inflight(&mut self.inflight.lock().unwrap(), &c.invocation);
            let Some(f) = removed else { continue };
            if self.brokered.load(Relaxed) {
                self.observe_run(&f.entry.task.function, &c.worker, c.finished_at.saturating_sub(c.started_at));
            }
            let mut entry = f.entry;
            match decision {
                Decision::Finish(state) => {
                    let inv = &entry.invocation;
                    self.metrics.finished(&inv.project, &inv.function, state, c.finished_at - c.started_at);
                    let inv = &mut entry.invocation;
                    inv.state = state;
                    inv.attempts = c.attempt;
                    inv.started_at = Some(c.started_at);
                    inv.finished_at = Some(c.finished_at);
                    inv.worker = Some(c.worker.clone());
                    let (output, error) = match c.result {
                        Ok(out) => (Some(out), None),
                        Err(f) => (None, Some(f)),
                    };
                    inv.error = error;
                    let is_reducer = inv.job_id.is_some() && inv.task_index.is_none();
                    let finished = Arc::new(Finished { invocation: entry.invocation, output, logs: c.logs });
                    self.waiters.finish(c.invocation, finished.clone());
                    if is_reducer {
                        let job_id = finished.invocation.job_id.expect("reducer has a job");
                        if let Ok(Some(job)) = self.store.get_job(&finished.invocation.project, job_id).await {
                            self.finish_reduce(&job, &finished.invocation).await;
                        }
                    }
                }
                Decision::Retry { not_before } => {
                    self.metrics.attempts_retried.fetch_add(1, Relaxed);
                    entry.invocation.attempts = c.attempt;
                    entry.task.attempt = c.attempt + 1;
                    self.push_delayed(entry, not_before);
                }
            }
        }
        for job in report.jobs {
            self.on_job_progress(job).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use stratus_core::{Invocation, new_id};

    fn start(id: Id, worker: &str) -> AttemptStart {
        AttemptStart { id, attempt: 1, worker: worker.into(), started_at: 0 }
    }

    fn insert(id: Id) -> NewInvocation {
        let spec = stratus_core::FunctionSpec {
            runtime: stratus_core::Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Default::default(),
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        };
        let f = stratus_core::Function { project: "p".into(), name: "f".into(), version: 1, spec, created_at: 0 };
        let mut invocation = Invocation::queued(&f, 0, None, None);
        invocation.id = id;
        NewInvocation { invocation, input: Vec::new(), partition: None }
    }

    #[test]
    fn a_start_is_held_and_written_only_when_its_hold_is_over() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        let (a, b) = (new_id(), new_id());
        h.hold_start(t0, start(a, "w"));
        h.hold_start(t0, start(b, dispatch::BROKER));
        assert_eq!(h.next_due(), Some(t0 + START_HOLD));
        let (i, s) = h.release(t0 + START_HOLD / 2, &Ended::new(), false);
        assert!(i.is_empty() && s.is_empty(), "nothing due yet");
        let (_, s) = h.release(t0 + START_HOLD, &Ended::new(), false);
        assert_eq!(s.iter().map(|s| s.id).collect::<Vec<_>>(), [a]);
        assert_eq!(h.next_due(), Some(t0 + BROKER_START_HOLD), "a brokered start is held longer");
        let (_, s) = h.release(t0 + START_HOLD, &Ended::new(), true);
        assert_eq!(s.len(), 1, "a flush writes everything held");
        assert!(h.next_due().is_none(), "nothing held");
    }

    #[test]
    fn an_end_within_the_hold_takes_its_insert_along_and_drops_its_start() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        let (a, b) = (new_id(), new_id());
        for id in [a, b] {
            h.hold_insert(t0, insert(id));
            h.hold_start(t0, start(id, "w"));
        }
        let ended = Ended::from([((a, 1), vec!["w"])]);
        let (i, s) = h.release(t0 + Duration::from_millis(1), &ended, false);
        assert_eq!(i.iter().map(|n| n.invocation.id).collect::<Vec<_>>(), [a], "written with its end");
        assert!(s.is_empty(), "the end records its start");
        let (i, s) = h.release(t0 + START_HOLD, &Ended::new(), false);
        assert_eq!((i.len(), s.len()), (1, 1), "the other one is written when its hold is over");
        assert!(h.next_due().is_none(), "nothing held");
    }

    #[test]
    fn an_end_another_worker_reports_has_the_start_written_before_it() {
        let t0 = Instant::now();
        let mut h = Holds::default();
        let (a, b) = (new_id(), new_id());
        h.hold_start(t0, start(a, "w"));
        h.hold_start(t0, start(b, dispatch::BROKER));
        let ended = Ended::from([((a, 1), vec!["intruder"]), ((b, 1), vec!["any"])]);
        let (_, s) = h.release(t0 + Duration::from_millis(1), &ended, false);
        assert_eq!(s.iter().map(|s| (s.id, s.worker.as_str())).collect::<Vec<_>>(), [(a, "w")], "w's start is kept");
        assert!(h.next_due().is_none(), "a brokered start ends by whichever worker took it");
    }
}
