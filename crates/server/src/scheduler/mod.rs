//! The scheduler: the queue of work, durable in the state store, and the
//! registry of the workers that lease from it.
//!
//! Its parts, one idea each: [`queue`] (lanes, the paging window, delayed
//! retries: a plain struct), [`paging`] (the task that fills the window from
//! the store), [`writer`] (every store write, as change sets, with the holds
//! as a plain struct), [`jobs`], [`workers`] (the registry and its
//! watchdog), [`here`] (sync invocations run on their caller's task),
//! [`dispatch`] (the broker) and [`waiters`]. This file holds the in-flight
//! registry and what ties the parts together: submitting, taking and
//! starting work. The decisions themselves are pure functions in
//! `stratus-core` ([`stratus_core::machine`], [`stratus_core::job`]).
//!
//! An invocation is accepted once it is written to the store. An async one
//! is written first, then queued in memory; a sync one (a caller waits) is
//! queued at once and written with its end, or after a short hold if it runs
//! longer, and its caller is answered only after that write. Memory holds a bounded window of each
//! lane (direct invocations, and the map tasks of jobs); the rest stays in the
//! store and is paged in, in id order, as the window drains. Everything up to
//! a lane's cursor that is queued in the store is in memory, so nothing is
//! dispatched twice and nothing is skipped.
//!
//! Completions go through one writer task that records them in batches (one
//! transaction for many), decides retries with [`stratus_core::machine`] and
//! job progress with [`stratus_core::job`], and only then wakes whoever waits.
//! After a restart the lanes are paged in again from the store, and attempts
//! that were running when the process died run again.

use crate::metrics::Metrics;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use stratus_core::api::LimitHolder;
use stratus_core::clock::Millis;
use stratus_core::machine::Backoff;
use stratus_core::{Clock, Completion, Function, Id, Invocation, Task};
use stratus_store::{AttemptStart, ChangeSet, Lane, NewInvocation, StateStore};
use stratus_worker::{Leased, TaskSource};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod dispatch;
mod here;
mod jobs;
mod lane;
mod paging;
mod queue;
mod tags;
mod waiters;
mod workers;
mod writer;
pub use dispatch::DispatchConfig;
pub use here::{Here, LentSlot};
pub use jobs::TaskSpec;
use queue::{Entry, Queue};
use stratus_core::machine::Ending;
use waiters::Waiters;
pub use waiters::Watch;
pub use workers::WorkerInfo;
use workers::Workers;
use writer::Write;

/// How long an attempt's start is held before it is written on its own.
const START_HOLD: Duration = Duration::from_millis(20);
/// The same for attempts dispatched through the broker. Until it is
/// written, such an attempt shows as queued; should the server restart
/// meanwhile, it is dispatched again under the same attempt number, and the
/// store keeps whichever result comes first.
const BROKER_START_HOLD: Duration = Duration::from_secs(1);

/// What the scheduler's calls fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] stratus_store::Error),
    /// The node is stopping: the scheduler takes no more work.
    #[error("the scheduler has stopped")]
    Stopped,
}

/// The background tasks of a node: spawned on `tasks`, they end when
/// `stop` is cancelled (the writer after writing everything it holds).
/// The node owns both, and waits for the tasks when it stops.
#[derive(Clone, Default)]
pub struct Background {
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

/// A finished invocation, handed to waiters.
#[derive(Debug, Clone)]
pub struct Finished {
    pub invocation: Invocation,
    pub output: Option<Vec<u8>>,
    pub logs: Vec<u8>,
}

struct Inflight {
    entry: Entry,
    worker: String,
    started_at: Millis,
    cancel: CancellationToken,
    /// Its concurrency slots were given back when its end was reported.
    released: bool,
}

pub struct Scheduler {
    me: Weak<Scheduler>,
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    backoff: Backoff,
    queue: Mutex<Queue>,
    notify: Notify,
    refill: Notify,
    /// Serialises inserting and queueing per lane, so cursors only move forward.
    direct_lock: tokio::sync::Mutex<()>,
    tasks_lock: tokio::sync::Mutex<()>,
    inflight: Mutex<HashMap<Id, Inflight>>,
    /// Signs the tokens attempts of process functions get; see [`Self::attempt_token`].
    attempt_key: std::sync::OnceLock<Arc<stratus_core::trust::AttemptKey>>,
    waiters: Arc<Waiters<Arc<Finished>>>,
    job_waiters: Arc<Waiters<()>>,
    workers: Mutex<Workers>,
    functions: Mutex<HashMap<(String, String, u32), Arc<Function>>>,
    writes: mpsc::UnboundedSender<Write>,
    lease_timeout: Duration,
    /// Attempts handed to the broker and not yet ended ([`dispatch`]).
    outstanding: AtomicUsize,
    /// Wakes the dispatcher when `outstanding` falls or workers register.
    room: Notify,
    /// Remote workers get their tasks from a broker, not by leasing.
    brokered: AtomicBool,
    /// Some project has (or had) a `max_running` quota: every attempt's end
    /// then looks for slots to give back.
    projects_limited: AtomicBool,
    /// Run time seen per function version, for packing dispatch messages.
    run_times: Mutex<dispatch::RunTimes>,
    pub metrics: Arc<Metrics>,
    /// The local worker, for sync invocations run on their caller's task.
    local: std::sync::OnceLock<here::Local>,
    /// Slots lent to remote workers, by worker: one per attempt of theirs
    /// waiting through the API for calls of its own ([`Self::lend_slot`]).
    loans: Mutex<HashMap<String, u32>>,
    /// Wakes the leases of workers whose loans changed.
    loans_changed: Notify,
    /// Those runs, waited for when the node stops.
    here: TaskTracker,
    /// Where its own tasks run, and what stops them.
    background: Background,
}

impl Scheduler {
    /// Builds the scheduler, restores what a previous run left, and starts
    /// its tasks on `background`, which the node owns.
    pub async fn start(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        lease_timeout: Duration,
        background: Background,
    ) -> Result<Arc<Self>, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let s = Arc::new_cyclic(|me| Scheduler {
            me: me.clone(),
            store,
            clock,
            backoff: Backoff::default(),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            refill: Notify::new(),
            direct_lock: Default::default(),
            tasks_lock: Default::default(),
            inflight: Mutex::new(HashMap::new()),
            attempt_key: Default::default(),
            waiters: Waiters::new(),
            job_waiters: Waiters::new(),
            workers: Mutex::new(Workers::default()),
            functions: Mutex::new(HashMap::new()),
            writes: tx,
            lease_timeout,
            outstanding: AtomicUsize::new(0),
            room: Notify::new(),
            brokered: AtomicBool::new(false),
            projects_limited: AtomicBool::new(false),
            run_times: Mutex::new(dispatch::RunTimes::default()),
            metrics,
            local: Default::default(),
            loans: Mutex::new(HashMap::new()),
            loans_changed: Notify::new(),
            here: Default::default(),
            background: background.clone(),
        });
        for (project, limit) in s.store.limits(None).await? {
            s.queue.lock().unwrap().tags.set_limit(&(project, limit.tag), Some(limit.slots));
        }
        for p in s.store.trust().await?.projects {
            if let Some(n) = p.quotas.max_running {
                s.set_project_limit(&p.name, Some(n));
            }
        }
        let rerun = s.store.requeue_running().await?;
        if rerun > 0 {
            tracing::info!(rerun, "attempts that were running at the last stop will run again");
        }
        {
            let mut q = s.queue.lock().unwrap();
            q.direct.discover = true;
            q.tasks.discover = true;
        }
        let Background { stop, tasks } = background;
        tasks.spawn(s.clone().write_loop(rx, stop.clone()));
        tasks.spawn(s.clone().refill_loop(stop.clone()));
        tasks.spawn(s.clone().watchdog_loop(stop));
        s.refill.notify_one();
        s.recover_jobs().await?;
        Ok(s)
    }

    fn arc(&self) -> Arc<Scheduler> {
        self.me.upgrade().expect("scheduler alive")
    }

    async fn function(
        &self,
        project: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<Arc<Function>>, stratus_store::Error> {
        let key = (project.to_string(), name.to_string(), version);
        if let Some(f) = self.functions.lock().unwrap().get(&key) {
            return Ok(Some(f.clone()));
        }
        let Some(f) = self.store.get_function(project, name, Some(version)).await? else { return Ok(None) };
        let f = Arc::new(f);
        self.functions.lock().unwrap().insert(key, f.clone());
        Ok(Some(f))
    }

    fn push_ready(&self, lane: Lane, entries: Vec<Entry>) {
        self.queue.lock().unwrap().push_ready(lane, entries);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    fn push_delayed(&self, entry: Entry, not_before: Millis) {
        self.queue.lock().unwrap().push_delayed(entry, not_before);
        self.notify.notify_one();
    }

    /// Queues entries just inserted (under the lane's lock): in memory if the
    /// window has room and nothing waits in the store before them.
    fn enqueue_new(&self, lane: Lane, entries: Vec<Entry>) {
        if self.fits(lane, &entries) {
            self.push_ready(lane, entries);
        } else {
            self.mark_backlog(lane, entries.iter().map(|e| e.invocation.project.as_str()));
        }
    }

    /// Whether new entries can all go straight into the lane's window.
    fn fits(&self, lane: Lane, entries: &[Entry]) -> bool {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for e in entries {
            match counts.iter_mut().find(|(p, _)| *p == e.invocation.project) {
                Some(c) => c.1 += 1,
                None => counts.push((&e.invocation.project, 1)),
            }
        }
        let mut q = self.queue.lock().unwrap();
        counts.iter().all(|(p, n)| q.fits(lane, p, *n))
    }

    /// Leaves committed rows of `projects` to the store, to be paged in.
    fn mark_backlog<'a>(&self, lane: Lane, projects: impl IntoIterator<Item = &'a str>) {
        {
            let mut q = self.queue.lock().unwrap();
            for p in projects {
                q.lane(lane).mark_backlog(p);
            }
        }
        self.refill.notify_one();
    }

    /// Takes back direct invocations whose insert failed after they were
    /// queued: out of the lane, cancelled if running, waiters dropped.
    fn abandon(&self, ids: &HashSet<Id>) {
        self.queue.lock().unwrap().direct.retain(|e| !ids.contains(&e.invocation.id));
        let mut inflight = self.inflight.lock().unwrap();
        for id in ids {
            if let Some(f) = self.remove_inflight(&mut inflight, id) {
                f.cancel.cancel();
            }
        }
        drop(inflight);
        for id in ids {
            self.waiters.cancel(*id);
        }
    }

    /// Takes an attempt out of the in-flight map, keeping count of those the
    /// broker holds.
    fn remove_inflight(&self, inflight: &mut HashMap<Id, Inflight>, id: &Id) -> Option<Inflight> {
        let f = inflight.remove(id)?;
        self.forget_outstanding(&f);
        if !f.released {
            self.release_tags(&f.entry);
        }
        Some(f)
    }

    /// Gives back the concurrency slots an attempt held, waking a taker if
    /// that let a waiting entry back on its lane. (Lock order: the
    /// in-flight map, then the queue.)
    fn release_tags(&self, entry: &Entry) {
        let tagged = !entry.task.function.spec.tags.is_empty() || !entry.invocation.tags.is_empty();
        if !tagged && !self.projects_limited.load(Relaxed) {
            return;
        }
        let mut q = self.queue.lock().unwrap();
        if !q.tags.carries(entry) {
            return;
        }
        if q.release(entry) {
            drop(q);
            // As many entries as slots were freed: one taker each.
            self.notify.notify_one();
        }
    }

    /// Gives back the concurrency slots of an attempt whose end was just
    /// reported by the worker that holds it: its process has ended, so it
    /// runs no more, and the next attempt of its tags need not wait for the
    /// end's commit. (Its in-flight record goes when the end is applied,
    /// which then gives back nothing more; an end that does not match the
    /// attempt in flight gives back nothing.)
    fn release_reported(&self, c: &Completion) {
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(f) = inflight.get_mut(&c.invocation)
            && f.entry.task.attempt == c.attempt
            && (f.worker == c.worker || f.worker == dispatch::BROKER)
            && !f.released
        {
            f.released = true;
            self.release_tags(&f.entry);
        }
    }

    /// Sets (`Some`) or removes the limit of a project's tag, as committed;
    /// waiting entries that now have room go back to their lanes.
    pub fn set_limit(&self, project: &str, tag: &str, slots: Option<u32>) {
        let key = (project.to_string(), tag.to_string());
        let mut q = self.queue.lock().unwrap();
        q.tags.set_limit(&key, slots);
        self.unpark(q, key);
    }

    /// Moves the entries waiting for `key` that now have room back to their
    /// lanes, and wakes the takers if any moved.
    fn unpark(&self, mut q: std::sync::MutexGuard<'_, Queue>, key: tags::Key) {
        if q.unpark(&[key]) {
            drop(q);
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
    }

    /// Sets (`Some`) or removes a project's `max_running` quota, as
    /// committed: its attempts in flight hold its slots from now on, and
    /// waiting entries that now have room go back to their lanes.
    pub fn set_project_limit(&self, project: &str, slots: Option<u32>) {
        let inflight = self.inflight.lock().unwrap();
        let running: Vec<Id> = inflight
            .values()
            .filter(|f| f.entry.task.function.project == project)
            .map(|f| f.entry.invocation.id)
            .collect();
        let mut q = self.queue.lock().unwrap();
        drop(inflight);
        if slots.is_some() {
            self.projects_limited.store(true, Relaxed);
        }
        q.tags.set_project_limit(project, slots, running);
        self.unpark(q, tags::project_key(project));
    }

    /// The attempts of a project running now.
    pub fn project_running(&self, project: &str) -> u64 {
        self.inflight.lock().unwrap().values().filter(|f| f.entry.task.function.project == project).count() as u64
    }

    /// Releases every slot of a project's tag: the attempts that hold them
    /// run on, no longer counted.
    pub fn reset_limit(&self, project: &str, tag: &str) {
        let key = (project.to_string(), tag.to_string());
        let mut q = self.queue.lock().unwrap();
        q.tags.reset(&key);
        self.unpark(q, key);
    }

    /// The attempts that hold a slot of a project's tag, and how many
    /// entries wait for one with the first `max` of them.
    pub fn limit_status(&self, project: &str, tag: &str, max: usize) -> (Vec<LimitHolder>, usize, Vec<Id>) {
        let key = (project.to_string(), tag.to_string());
        let (ids, (waiting, waiters)) = {
            let q = self.queue.lock().unwrap();
            (q.tags.holders(&key), q.tags.waiters(&key, max))
        };
        let inflight = self.inflight.lock().unwrap();
        let mut holders: Vec<LimitHolder> = ids
            .into_iter()
            .filter_map(|id| inflight.get(&id))
            .map(|f| LimitHolder {
                invocation: f.entry.invocation.id,
                attempt: f.entry.task.attempt,
                function: f.entry.invocation.function.clone(),
                worker: f.worker.clone(),
                started_at: f.started_at,
            })
            .collect();
        holders.sort_by_key(|h| (h.started_at, h.invocation));
        (holders, waiting, waiters)
    }

    fn forget_outstanding(&self, f: &Inflight) {
        if f.worker == dispatch::BROKER && self.outstanding.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
        {
            self.room.notify_one();
        }
    }

    /// Accepts invocations of `function`. Without `wait`, they are durable
    /// in the store before this returns. With `wait`, it also returns a
    /// receiver for each result, which is sent once the result is durable.
    ///
    /// With `wait`, the entries are queued at once and their insert goes to
    /// the writer, which holds it as it holds attempt starts: an invocation
    /// that ends within the hold is written with its end (one commit on
    /// SQLite); one that runs longer is written when the hold is over. The
    /// caller is answered only after that commit, so a crash before it
    /// loses nothing anyone was told of (the caller's request fails).
    ///
    /// Without `wait`, when the store orders its writes (SQLite's one
    /// writer), the entries are queued as soon as their insert is ordered,
    /// so a slot starts them while the insert commits: their end is written
    /// after the insert by construction, and nothing is acknowledged before
    /// the commit. Should the commit fail, they are taken back
    /// ([`Self::abandon`]). Entries that do not fit in memory are left to be
    /// paged in, once committed.
    pub async fn submit(
        &self,
        function: Arc<Function>,
        inputs: Vec<Vec<u8>>,
        tags: &[String],
        wait: bool,
    ) -> Result<Vec<(Id, Option<Watch<Arc<Finished>>>)>, Error> {
        let guard = self.direct_lock.lock().await;
        let now = self.clock.now_ms();
        let mut new = Vec::with_capacity(inputs.len());
        let mut entries = Vec::with_capacity(inputs.len());
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let invocation = Invocation::queued(&function, now, None, None).with_tags(tags);
            let id = invocation.id;
            let task = Task {
                invocation: id,
                attempt: 1,
                function: function.clone(),
                input,
                partition: None,
                job: None,
                token: None,
            };
            new.push(NewInvocation { invocation: invocation.clone(), input: task.input.clone(), partition: None });
            entries.push(Entry { invocation, task });
        }
        let n = entries.len() as u64;
        if wait && self.fits(Lane::Direct, &entries) {
            for e in &entries {
                out.push((e.invocation.id, Some(self.watch(e.invocation.id))));
            }
            // Sent before the entries can start, so before their starts.
            for row in new {
                if self.writes.send(Write::Insert(row)).is_err() {
                    self.abandon(&entries.iter().map(|e| e.invocation.id).collect());
                    return Err(Error::Stopped);
                }
            }
            self.push_ready(Lane::Direct, entries);
            drop(guard);
            self.metrics.invocations_submitted.fetch_add(n, Relaxed);
            return Ok(out);
        }
        let committed = self.store.insert_invocations_ordered(new).await?;
        for e in &entries {
            out.push((e.invocation.id, wait.then(|| self.watch(e.invocation.id))));
        }
        if self.fits(Lane::Direct, &entries) {
            let ids: HashSet<Id> = entries.iter().map(|e| e.invocation.id).collect();
            self.push_ready(Lane::Direct, entries);
            drop(guard);
            if let Err(e) = committed.await {
                self.abandon(&ids);
                return Err(e.into());
            }
        } else {
            // Paging reads the store: the rows must be there first, and no
            // later submit may pass them meanwhile (hence under the lock).
            let result = committed.await;
            if result.is_err() {
                self.abandon(&out.iter().map(|(id, _)| *id).collect());
            }
            result?;
            self.mark_backlog(Lane::Direct, [function.project.as_str()]);
            drop(guard);
        }
        self.metrics.invocations_submitted.fetch_add(n, Relaxed);
        Ok(out)
    }

    /// Commits `changes` and queues the direct invocations it inserts, of
    /// the functions in `functions` (by id), and the jobs it creates: the
    /// event processor's actions, which it commits with its cursor. Under
    /// the direct lane's lock, so no submit passes them.
    pub async fn commit_invocations(
        &self,
        changes: ChangeSet,
        functions: &HashMap<Id, Arc<Function>>,
    ) -> Result<stratus_store::CommitReport, stratus_store::Error> {
        let _guard = self.direct_lock.lock().await;
        let entries: Vec<Entry> = changes
            .new
            .iter()
            .filter_map(|n| {
                let function = functions.get(&n.invocation.id)?.clone();
                let task = Task {
                    invocation: n.invocation.id,
                    attempt: 1,
                    function,
                    input: n.input.clone(),
                    partition: n.partition.clone(),
                    job: None,
                    token: None,
                };
                Some(Entry { invocation: n.invocation.clone(), task })
            })
            .collect();
        let jobs = changes.new_jobs.iter().map(|j| j.total).sum::<u64>();
        let job_projects: Vec<String> = changes.new_jobs.iter().map(|j| j.project.clone()).collect();
        let report = self.store.commit(changes).await?;
        if !entries.is_empty() {
            self.metrics.invocations_submitted.fetch_add(entries.len() as u64, Relaxed);
            self.enqueue_new(Lane::Direct, entries);
        }
        if jobs > 0 {
            // The jobs' tasks are paged in, as those of any job.
            self.metrics.invocations_submitted.fetch_add(jobs, Relaxed);
            self.mark_backlog(Lane::Tasks, job_projects.iter().map(String::as_str));
        }
        Ok(report)
    }

    /// A wait that gets the invocation's result when it finishes here.
    /// Register before reading the store, so no finish is missed; dropping
    /// it ends the wait.
    pub fn watch(&self, id: Id) -> Watch<Arc<Finished>> {
        self.waiters.watch(id)
    }

    /// A wait that resolves when the job ends (here).
    pub fn watch_job(&self, id: Id) -> Watch<()> {
        self.job_waiters.watch(id)
    }

    /// Callers waiting for an invocation or a job, for the metrics.
    pub fn waiting(&self) -> usize {
        self.waiters.len() + self.job_waiters.len()
    }

    fn job_ended(&self, id: Id) {
        self.job_waiters.finish(id, ());
    }

    /// Stops handing out tasks; slots finish what they run and return.
    pub fn close(&self) {
        self.queue.lock().unwrap().closed = true;
        self.here.close();
        self.notify.notify_waiters();
    }

    /// Wakes a local slot that may be waiting for the permit just given
    /// back, if there is work for it (an idle slot is woken by new work).
    fn wake_for_permit(&self) {
        let work = self.queue.lock().unwrap().has_work();
        if work {
            self.notify.notify_one();
        }
    }

    pub fn depth(&self) -> (usize, usize) {
        let queued = self.queue.lock().unwrap().len();
        (queued, self.inflight.lock().unwrap().len())
    }

    /// Takes up to `max` runnable entries ([`Queue::take`]), or says how
    /// long to wait for one; `Ok(None)` once closed. Also returns how many
    /// were runnable.
    fn take(&self, max: usize, greedy: bool) -> Result<Option<(Vec<Entry>, usize)>, Option<Duration>> {
        let mut q = self.queue.lock().unwrap();
        if q.closed {
            return Ok(None);
        }
        let taken = q.take(self.clock.now_ms(), max, greedy);
        let wake_refill = q.wants_refill();
        drop(q);
        if wake_refill {
            self.refill.notify_one();
        }
        let taken = taken?;
        if taken.more {
            self.notify.notify_one();
        }
        Ok(Some((taken.entries, taken.available)))
    }

    /// Whether attempt `attempt` of invocation `id` runs now.
    pub fn attempt_running(&self, id: Id, attempt: u32) -> bool {
        self.inflight.lock().unwrap().get(&id).is_some_and(|f| f.entry.task.attempt == attempt)
    }

    /// The function of attempt `attempt` of invocation `id`, while it runs
    /// on `worker` (or on any worker, for an attempt dispatched through the
    /// broker): what a worker may read the settings of.
    pub fn attempt_function(&self, id: Id, attempt: u32, worker: &str) -> Option<Arc<stratus_core::Function>> {
        let inflight = self.inflight.lock().unwrap();
        let f = inflight.get(&id)?;
        (f.entry.task.attempt == attempt && (f.worker == worker || f.worker == dispatch::BROKER))
            .then(|| f.entry.task.function.clone())
    }

    /// From now on, attempts of process functions get a token signed with
    /// `key`, which the API accepts for their project until their deadline.
    pub fn sign_attempts_with(&self, key: Arc<stratus_core::trust::AttemptKey>) {
        let _ = self.attempt_key.set(key);
    }

    /// The token of an attempt starting now, for a process function (wasm
    /// guests have no network to use one): valid until its timeout, and a
    /// minute for its last report.
    pub(super) fn attempt_token(&self, task: &Task, now: Millis) -> Option<String> {
        let key = self.attempt_key.get()?;
        let f = &task.function;
        matches!(f.spec.runtime, stratus_core::Runtime::Process { .. }).then(|| {
            let deadline = now + f.spec.limits.timeout_ms as i64 + 60_000;
            key.mint(&f.project, task.invocation, task.attempt, deadline)
        })
    }

    /// The token of an attempt handed to the broker, for any runtime (a
    /// wasm guest never sees it): its claim, and for a process function its
    /// token too.
    fn attempt_claim(&self, task: &Task, now: Millis) -> Option<String> {
        let key = self.attempt_key.get()?;
        let deadline = now + task.function.spec.limits.timeout_ms as i64 + 60_000;
        Some(key.mint(&task.function.project, task.invocation, task.attempt, deadline))
    }

    /// Whether an end a worker reports may apply: only for an attempt in
    /// flight here (its holder is then checked by the store's guarded
    /// update; a worker that registered again meanwhile reports under its
    /// new id), and for one dispatched through the broker only with the
    /// attempt's claim. The end of an attempt not in flight (queued, never
    /// leased; or one of before a restart, which runs again) applies to
    /// nothing: a worker token that knows an id cannot end what no worker
    /// holds.
    pub(super) fn report_holds(&self, c: &Completion) -> bool {
        let inflight = self.inflight.lock().unwrap();
        match inflight.get(&c.invocation) {
            Some(f) if f.entry.task.attempt != c.attempt => false,
            Some(f) if f.worker == dispatch::BROKER => match self.attempt_key.get() {
                Some(key) => c.claim.as_deref().is_some_and(|t| key.claims(t, c.invocation, c.attempt)),
                None => true,
            },
            Some(_) => true,
            None => false,
        }
    }

    /// Starts attempts of `entries` on `worker`: in flight, and their starts
    /// on their way to the store. An attempt handed to the broker carries a
    /// token whatever its runtime: the claim its end must show.
    fn start_attempts(&self, worker: &str, entries: Vec<Entry>) -> Vec<Leased> {
        let now = self.clock.now_ms();
        let mut out = Vec::with_capacity(entries.len());
        let mut inflight = self.inflight.lock().unwrap();
        for entry in entries {
            let mut task = entry.task.clone();
            task.token = match worker == dispatch::BROKER {
                true => self.attempt_claim(&task, now),
                false => self.attempt_token(&task, now),
            };
            let cancel = CancellationToken::new();
            let _ = self.writes.send(Write::Start(AttemptStart {
                id: task.invocation,
                attempt: task.attempt,
                worker: worker.to_string(),
                started_at: now,
            }));
            let replaced = inflight.insert(
                task.invocation,
                Inflight {
                    entry,
                    worker: worker.to_string(),
                    started_at: now,
                    cancel: cancel.clone(),
                    released: false,
                },
            );
            if let Some(old) = replaced {
                self.forget_outstanding(&old);
            }
            out.push(Leased { task, cancel });
        }
        self.metrics.attempts_started.fetch_add(out.len() as u64, Relaxed);
        out
    }

    /// Leases up to `max` tasks to `worker`, waiting up to `wait` for one.
    /// Tasks for remote `worker`, waiting up to `wait` for some, and the
    /// slots lent to it now. A change of its loans ends the wait at once,
    /// so that it starts or stops the slots they stand for.
    pub async fn lease(&self, worker: &str, max: usize, wait: Duration) -> (Vec<Leased>, u32) {
        let lent = self.lent_to(worker);
        let changed = async {
            loop {
                let notified = self.loans_changed.notified();
                if self.lent_to(worker) != lent {
                    return;
                }
                notified.await;
            }
        };
        // `take_for` takes nothing until it returns: dropping it is safe.
        let tasks = tokio::select! {
            r = tokio::time::timeout(wait, self.take_for(worker, max, None)) => match r {
                Ok(Some(tasks)) => tasks,
                _ => Vec::new(),
            },
            _ = changed => Vec::new(),
        };
        (tasks, self.lent_to(worker))
    }

    /// Slots lent to remote `worker` now.
    pub fn lent_to(&self, worker: &str) -> u32 {
        self.loans.lock().unwrap().get(worker).copied().unwrap_or(0)
    }
}

/// Retries a store write until it succeeds: a completion that is not
/// recorded must not be acknowledged, and dropping it would lose a result.
async fn retry_forever<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, stratus_store::Error>>,
{
    let mut delay = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::error!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[async_trait]
impl TaskSource for Scheduler {
    async fn next(&self, worker: &str, max: usize) -> Option<Vec<Leased>> {
        let permits = self.local_for(worker).map(|l| &*l.permits);
        self.take_for(worker, max, permits).await
    }

    async fn complete(&self, completion: Completion) {
        self.release_reported(&completion);
        let _ = self.writes.send(Write::End(completion, Ending::Reported));
    }

    fn slot_free(&self, worker: &str) {
        if let Some(local) = self.local_for(worker) {
            local.permits.add_permits(1);
            self.wake_for_permit();
        }
    }
}

impl Scheduler {
    /// The local worker, if `worker` is its name.
    fn local_for(&self, worker: &str) -> Option<&here::Local> {
        self.local.get().filter(|l| l.executor.name == worker)
    }

    /// Waits for work for a slot of `worker` and starts it there. A local
    /// slot (`permits`) takes work only with a permit, which it keeps until
    /// `slot_free`: an invocation run on its caller's task may hold another
    /// ([`here`]).
    async fn take_for(
        &self,
        worker: &str,
        max: usize,
        permits: Option<&tokio::sync::Semaphore>,
    ) -> Option<Vec<Leased>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking at the queue, so neither a push nor
            // `close` between the look and the wait is missed.
            notified.as_mut().enable();
            let permit = match permits.map(|p| p.try_acquire()) {
                Some(Err(_)) if self.queue.lock().unwrap().closed => return None,
                Some(Err(_)) => {
                    notified.await;
                    continue;
                }
                Some(Ok(p)) => Some(p),
                None => None,
            };
            let taken = self.take(max, false);
            if let (Ok(Some(_)), Some(p)) = (&taken, permit) {
                p.forget();
            }
            match taken {
                Ok(Some((entries, _))) => return Some(self.start_attempts(worker, entries)),
                Ok(None) => return None,
                Err(None) => notified.await,
                Err(Some(due)) => {
                    let _ = tokio::time::timeout(due, notified).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_core::{Failure, FailureKind, FunctionSpec, InvocationState, Limits, Runtime, SystemClock, new_id};

    /// A scheduler on a new SQLite store that holds `rows` when it starts.
    async fn scheduler(rows: &[NewInvocation]) -> (tempfile::TempDir, Arc<dyn StateStore>, Arc<Scheduler>, Background) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store: Arc<dyn StateStore> = Arc::new(stratus_store::SqliteStore::open(&url).await.unwrap());
        store.insert_invocations(rows).await.unwrap();
        let background = Background::default();
        let scheduler = Scheduler::start(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            Duration::from_secs(30),
            background.clone(),
        )
        .await
        .unwrap();
        // A new scheduler pages the store in before it queues new work in
        // memory (a sync submit meanwhile goes through the store, and this
        // test's function is not in it): finish that first paging here, not
        // whenever the refill task comes to it.
        scheduler.refill_lane(Lane::Direct).await.unwrap();
        (dir, store, scheduler, background)
    }

    fn function() -> Arc<Function> {
        let spec = FunctionSpec {
            runtime: Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Limits { timeout_ms: 1000, memory_mb: 64, ..Limits::default() },
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        };
        Arc::new(Function { project: "p".into(), name: "f".into(), version: 1, spec, created_at: 0 })
    }

    fn succeeded(task: &Task, output: &[u8]) -> Completion {
        Completion {
            invocation: task.invocation,
            attempt: task.attempt,
            worker: "w".into(),
            started_at: 1,
            finished_at: 2,
            result: Ok(output.to_vec()),
            logs: Vec::new(),
            claim: None,
        }
    }

    /// A caller that waits is answered with a result that is in the store,
    /// whose insert was held and written with its end.
    #[tokio::test]
    async fn a_waited_invocation_is_answered_once_it_is_stored_with_its_end() {
        let (_dir, store, scheduler, _tasks) = scheduler(&[]).await;
        let mut submitted = scheduler.submit(function(), vec![b"in".to_vec()], &[], true).await.unwrap();
        let (id, rx) = submitted.pop().unwrap();
        let leased = scheduler.next("w", 1).await.unwrap();
        assert_eq!(leased[0].task.invocation, id);
        assert_eq!(leased[0].task.input, b"in");
        scheduler.complete(succeeded(&leased[0].task, b"out")).await;
        let finished = rx.unwrap().await.unwrap();
        assert_eq!(
            (finished.invocation.state, finished.output.as_deref()),
            (InvocationState::Succeeded, Some(&b"out"[..]))
        );
        let stored = store.get_invocation("p", id).await.unwrap().expect("stored before the answer");
        assert_eq!((stored.state, stored.attempts), (InvocationState::Succeeded, 1));
        assert_eq!(store.get_payloads("p", id).await.unwrap().unwrap().output.as_deref(), Some(&b"out"[..]));
        assert_eq!(store.list_attempts(id).await.unwrap().len(), 1);
    }

    /// One that runs past the hold is written on its own meanwhile (so a
    /// restart runs it again), then ends as usual.
    #[tokio::test]
    async fn a_waited_invocation_that_runs_past_the_hold_is_stored_while_it_runs() {
        let (_dir, store, scheduler, _tasks) = scheduler(&[]).await;
        let mut submitted = scheduler.submit(function(), vec![Vec::new()], &[], true).await.unwrap();
        let (id, rx) = submitted.pop().unwrap();
        let leased = scheduler.next("w", 1).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let running = loop {
            match store.get_invocation("p", id).await.unwrap() {
                Some(inv) if inv.state == InvocationState::Running => break inv,
                _ => {
                    assert!(tokio::time::Instant::now() < deadline, "never written while it ran");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        assert_eq!((running.attempts, running.worker.as_deref()), (1, Some("w")));
        scheduler.complete(succeeded(&leased[0].task, b"late")).await;
        assert_eq!(rx.unwrap().await.unwrap().invocation.state, InvocationState::Succeeded);
        assert_eq!(store.get_invocation("p", id).await.unwrap().unwrap().state, InvocationState::Succeeded);
    }

    /// An end reported for a queued invocation no worker leased (a forged
    /// one, or a late one from before a restart, whose attempt runs again)
    /// changes nothing, and is counted stale.
    #[tokio::test]
    async fn an_end_of_an_attempt_no_worker_holds_changes_nothing() {
        let id = new_id();
        let invocation = Invocation {
            id,
            project: "p".into(),
            function: "f".into(),
            version: 1,
            state: InvocationState::Queued,
            attempts: 0,
            max_attempts: 3,
            job_id: None,
            task_index: None,
            queued_at: 0,
            started_at: None,
            finished_at: None,
            worker: None,
            error: None,
            tags: Vec::new(),
        };
        let row = NewInvocation { invocation, input: Vec::new(), partition: None };
        let (_dir, store, scheduler, _tasks) = scheduler(&[row]).await;
        let failure = Failure::new(FailureKind::Exit, "exit status 1");
        scheduler
            .complete_durably(vec![Completion {
                invocation: id,
                attempt: 1,
                worker: "w".into(),
                started_at: 1,
                finished_at: 2,
                result: Err(failure),
                logs: Vec::new(),
                claim: None,
            }])
            .await
            .unwrap();
        let after = store.get_invocation("p", id).await.unwrap().unwrap();
        assert_eq!((after.state, after.attempts), (InvocationState::Queued, 0), "no worker held it: ignored");
        assert_eq!(scheduler.metrics.stale_completions.load(Relaxed), 1);
    }

    /// A stopping node's writer writes what it holds (here a waited
    /// invocation's insert, held for its end) before it ends.
    #[tokio::test]
    async fn the_writer_writes_what_it_holds_when_stopped() {
        let (_dir, store, scheduler, background) = scheduler(&[]).await;
        let mut submitted = scheduler.submit(function(), vec![Vec::new()], &[], true).await.unwrap();
        let (id, _rx) = submitted.pop().unwrap();
        background.stop.cancel();
        background.tasks.close();
        background.tasks.wait().await;
        let stored = store.get_invocation("p", id).await.unwrap().expect("written on the way out");
        assert_eq!(stored.state, InvocationState::Queued);
        // Ends reported after that are refused, not taken as durable: the
        // worker reports them again, to the next leader.
        let late = Completion {
            invocation: id,
            attempt: 1,
            worker: "w".into(),
            started_at: 1,
            finished_at: 2,
            result: Ok(Vec::new()),
            logs: Vec::new(),
            claim: None,
        };
        assert!(matches!(scheduler.complete_durably(vec![late]).await, Err(Error::Stopped)));
        assert_eq!(store.get_invocation("p", id).await.unwrap().unwrap().state, InvocationState::Queued);
    }
}
