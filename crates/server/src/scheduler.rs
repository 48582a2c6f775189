//! The scheduler: the queue of work, durable in the state store, and the
//! registry of the workers that lease from it.
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
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::job::{self, JobDecision};
use stratus_core::machine::{self, Backoff, Decision};
use stratus_core::{
    Clock, Completion, Failure, FailureKind, Function, Id, Invocation, InvocationState, Job, JobState, Partition, Task,
    new_id,
};
use stratus_store::{AttemptEnd, AttemptStart, EndOutcome, JobRows, JobUpdate, Lane, NewInvocation, StateStore};
use stratus_worker::{Leased, TaskSource};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod dispatch;
mod here;
mod waiters;
pub use dispatch::DispatchConfig;
pub use here::Here;
use waiters::Waiters;
pub use waiters::Watch;

/// How long an attempt's start is held before it is written on its own.
const START_HOLD: Duration = Duration::from_millis(20);
/// The same for attempts dispatched through the broker. Until it is
/// written, such an attempt shows as queued; should the server restart
/// meanwhile, it is dispatched again under the same attempt number, and the
/// store keeps whichever result comes first.
const BROKER_START_HOLD: Duration = Duration::from_secs(1);
/// Entries of one lane kept in memory.
const WINDOW: usize = 8192;
/// A lost worker leaves the registry this many lease timeouts after its
/// last heartbeat.
const FORGET_LOST_AFTER: u32 = 10;

/// A finished invocation, handed to waiters.
#[derive(Debug, Clone)]
pub struct Finished {
    pub invocation: Invocation,
    pub output: Option<Vec<u8>>,
    pub logs: Vec<u8>,
}

struct Entry {
    invocation: Invocation,
    task: Task,
}

struct Inflight {
    entry: Entry,
    worker: String,
    started_at: Millis,
    cancel: CancellationToken,
}

#[derive(Default)]
struct LaneQueue {
    ready: VecDeque<Entry>,
    /// Highest id paged in (or pushed); see the module doc.
    cursor: Option<Id>,
    /// The store may hold queued entries beyond the cursor.
    backlog: bool,
    refilling: bool,
}

#[derive(Default)]
struct Queue {
    direct: LaneQueue,
    tasks: LaneQueue,
    /// Retries waiting for their backoff, by due time.
    delayed: BinaryHeap<Reverse<(Millis, u64)>>,
    delayed_entries: HashMap<u64, Entry>,
    seq: u64,
    closed: bool,
}

impl Queue {
    fn lane(&mut self, lane: Lane) -> &mut LaneQueue {
        match lane {
            Lane::Direct => &mut self.direct,
            Lane::Tasks => &mut self.tasks,
        }
    }
}

enum Write {
    /// A new invocation a caller waits for; held like a start.
    Insert(NewInvocation),
    Start(AttemptStart),
    End(Completion, Ending),
    /// Answers once everything sent before it is written, held starts and inserts included.
    Flush(oneshot::Sender<()>),
    /// Answers once every end sent before it is written (held starts stay held).
    Barrier(oneshot::Sender<()>),
}

/// How an attempt came to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Reported by whoever ran it (or by the watchdog, for a lost worker).
    Reported,
    /// Its dispatch message kept coming back from workers and was
    /// dead-lettered: the invocation fails, whatever its retries.
    DeadLettered,
}

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
    waiters: Arc<Waiters<Arc<Finished>>>,
    job_waiters: Arc<Waiters<()>>,
    workers: Mutex<HashMap<String, WorkerInfo>>,
    functions: Mutex<HashMap<(String, String, u32), Arc<Function>>>,
    writes: mpsc::UnboundedSender<Write>,
    lease_timeout: Duration,
    /// Attempts handed to the broker and not yet ended ([`dispatch`]).
    outstanding: AtomicUsize,
    /// Wakes the dispatcher when `outstanding` falls or workers register.
    room: Notify,
    /// Remote workers get their tasks from a broker, not by leasing.
    brokered: AtomicBool,
    /// Run time seen per function version, for packing dispatch messages.
    run_times: Mutex<dispatch::RunTimes>,
    pub metrics: Arc<Metrics>,
    /// The local worker, for sync invocations run on their caller's task.
    local: std::sync::OnceLock<here::Local>,
    /// Those runs, waited for when the node stops.
    here: tokio_util::task::TaskTracker,
}

fn lane_of(inv: &Invocation) -> Lane {
    if inv.task_index.is_some() { Lane::Tasks } else { Lane::Direct }
}

impl Scheduler {
    /// Builds the scheduler, restores what a previous run left, and starts
    /// its tasks (returned, so the node owns them).
    pub async fn start(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        lease_timeout: Duration,
    ) -> Result<(Arc<Self>, Vec<JoinHandle<()>>), stratus_store::Error> {
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
            waiters: Waiters::new(),
            job_waiters: Waiters::new(),
            workers: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            writes: tx,
            lease_timeout,
            outstanding: AtomicUsize::new(0),
            room: Notify::new(),
            brokered: AtomicBool::new(false),
            run_times: Mutex::new(dispatch::RunTimes::default()),
            metrics,
            local: Default::default(),
            here: Default::default(),
        });
        let rerun = s.store.requeue_running().await?;
        if rerun > 0 {
            tracing::info!(rerun, "attempts that were running at the last stop will run again");
        }
        {
            let mut q = s.queue.lock().unwrap();
            q.direct.backlog = true;
            q.tasks.backlog = true;
        }
        let tasks = vec![
            tokio::spawn(s.clone().write_loop(rx)),
            tokio::spawn(s.clone().refill_loop()),
            tokio::spawn(s.clone().watchdog_loop()),
        ];
        s.refill.notify_one();
        s.recover_jobs().await?;
        Ok((s, tasks))
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

    // ---- queueing ----------------------------------------------------------

    fn push_ready(&self, lane: Lane, entries: Vec<Entry>) {
        let mut q = self.queue.lock().unwrap();
        let l = q.lane(lane);
        for e in entries {
            l.cursor = Some(e.invocation.id);
            l.ready.push_back(e);
        }
        drop(q);
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    fn push_delayed(&self, entry: Entry, not_before: Millis) {
        let mut q = self.queue.lock().unwrap();
        q.seq += 1;
        let seq = q.seq;
        q.delayed.push(Reverse((not_before, seq)));
        q.delayed_entries.insert(seq, entry);
        drop(q);
        self.notify.notify_one();
    }

    /// Queues entries just inserted (under the lane's lock): in memory if the
    /// window has room and nothing waits in the store before them.
    fn enqueue_new(&self, lane: Lane, entries: Vec<Entry>) {
        if self.fits(lane, entries.len()) {
            self.push_ready(lane, entries);
        } else {
            self.mark_backlog(lane);
        }
    }

    /// Whether `n` new entries can go straight into the lane's window.
    fn fits(&self, lane: Lane, n: usize) -> bool {
        let mut q = self.queue.lock().unwrap();
        let l = q.lane(lane);
        !l.backlog && l.ready.len() + n <= WINDOW
    }

    /// Leaves committed rows to the store, to be paged in.
    fn mark_backlog(&self, lane: Lane) {
        self.queue.lock().unwrap().lane(lane).backlog = true;
        self.refill.notify_one();
    }

    /// Takes back direct invocations whose insert failed after they were
    /// queued: out of the lane, cancelled if running, waiters dropped.
    fn abandon(&self, ids: &HashSet<Id>) {
        self.queue.lock().unwrap().direct.ready.retain(|e| !ids.contains(&e.invocation.id));
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
        Some(f)
    }

    fn forget_outstanding(&self, f: &Inflight) {
        if f.worker == dispatch::BROKER && self.outstanding.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok()
        {
            self.room.notify_one();
        }
    }

    async fn refill_loop(self: Arc<Self>) {
        loop {
            self.refill.notified().await;
            for lane in [Lane::Direct, Lane::Tasks] {
                if let Err(e) = self.refill_lane(lane).await {
                    tracing::error!(error = %e, "paging queued work from the store failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    self.refill.notify_one();
                }
            }
        }
    }

    async fn refill_lane(&self, lane: Lane) -> Result<(), stratus_store::Error> {
        let _guard = match lane {
            Lane::Direct => self.direct_lock.lock().await,
            Lane::Tasks => self.tasks_lock.lock().await,
        };
        loop {
            let (cursor, room) = {
                let mut q = self.queue.lock().unwrap();
                let l = q.lane(lane);
                if !l.backlog || l.ready.len() > WINDOW / 2 {
                    l.refilling = false;
                    return Ok(());
                }
                l.refilling = true;
                (l.cursor, WINDOW - l.ready.len())
            };
            let page = self.store.queued_in(Some(lane), cursor, room as u32).await?;
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
                };
                let entry = Entry { invocation: inv, task };
                if p.not_before > now {
                    self.push_delayed(entry, p.not_before);
                } else {
                    ready.push(entry);
                }
            }
            {
                let mut q = self.queue.lock().unwrap();
                let l = q.lane(lane);
                if let Some(last) = last {
                    l.cursor = Some(last);
                }
                if !full {
                    l.backlog = false;
                }
                for e in ready {
                    l.ready.push_back(e);
                }
            }
            self.notify.notify_waiters();
            self.notify.notify_one();
            if !full {
                let mut q = self.queue.lock().unwrap();
                q.lane(lane).refilling = false;
                return Ok(());
            }
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
        wait: bool,
    ) -> Result<Vec<(Id, Option<Watch<Arc<Finished>>>)>, stratus_store::Error> {
        let guard = self.direct_lock.lock().await;
        let now = self.clock.now_ms();
        let mut new = Vec::with_capacity(inputs.len());
        let mut entries = Vec::with_capacity(inputs.len());
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let invocation = new_invocation(&function, now, None, None);
            let id = invocation.id;
            let task =
                Task { invocation: id, attempt: 1, function: function.clone(), input, partition: None, job: None };
            new.push(NewInvocation { invocation: invocation.clone(), input: task.input.clone(), partition: None });
            entries.push(Entry { invocation, task });
        }
        let n = entries.len() as u64;
        if wait && self.fits(Lane::Direct, entries.len()) {
            for e in &entries {
                out.push((e.invocation.id, Some(self.watch(e.invocation.id))));
            }
            // Sent before the entries can start, so before their starts.
            for row in new {
                if self.writes.send(Write::Insert(row)).is_err() {
                    self.abandon(&entries.iter().map(|e| e.invocation.id).collect());
                    return Err(stratus_store::Error::Db("the scheduler has stopped".into()));
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
        if self.fits(Lane::Direct, entries.len()) {
            let ids: HashSet<Id> = entries.iter().map(|e| e.invocation.id).collect();
            self.push_ready(Lane::Direct, entries);
            drop(guard);
            if let Err(e) = committed.await {
                self.abandon(&ids);
                return Err(e);
            }
        } else {
            // Paging reads the store: the rows must be there first, and no
            // later submit may pass them meanwhile (hence under the lock).
            let result = committed.await;
            if result.is_err() {
                self.abandon(&out.iter().map(|(id, _)| *id).collect());
            }
            result?;
            self.mark_backlog(Lane::Direct);
            drop(guard);
        }
        self.metrics.invocations_submitted.fetch_add(n, Relaxed);
        Ok(out)
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
        let q = self.queue.lock().unwrap();
        let work = !q.direct.ready.is_empty() || !q.tasks.ready.is_empty() || !q.delayed.is_empty();
        drop(q);
        if work {
            self.notify.notify_one();
        }
    }

    pub fn depth(&self) -> (usize, usize) {
        let q = self.queue.lock().unwrap();
        let queued = q.direct.ready.len() + q.tasks.ready.len() + q.delayed_entries.len();
        drop(q);
        (queued, self.inflight.lock().unwrap().len())
    }

    /// Takes up to `max` runnable entries, or says how long to wait for one.
    /// A slot (`greedy` false) takes several only when there is plenty; the
    /// dispatcher takes what it asks for. Also returns how many were runnable.
    fn take(&self, max: usize, greedy: bool) -> Result<Option<(Vec<Entry>, usize)>, Option<Duration>> {
        let mut q = self.queue.lock().unwrap();
        if q.closed {
            return Ok(None);
        }
        let now = self.clock.now_ms();
        while let Some(Reverse((due, seq))) = q.delayed.peek().copied() {
            if due > now {
                break;
            }
            q.delayed.pop();
            if let Some(e) = q.delayed_entries.remove(&seq) {
                let lane = lane_of(&e.invocation);
                q.lane(lane).ready.push_front(e);
            }
        }
        // Take several only when there is plenty, so no slot sits idle while
        // another holds a batch of long tasks.
        let available = q.direct.ready.len() + q.tasks.ready.len();
        let max = if greedy {
            max
        } else if available >= 256 {
            max.min(available / 64)
        } else {
            1
        };
        let mut out = Vec::new();
        // Direct invocations first: an interactive call does not wait behind a big map.
        while out.len() < max {
            match q.direct.ready.pop_front().or_else(|| q.tasks.ready.pop_front()) {
                Some(e) => out.push(e),
                None => break,
            }
        }
        let mut wake_refill = false;
        for lane in [Lane::Direct, Lane::Tasks] {
            let l = q.lane(lane);
            if l.backlog && !l.refilling && l.ready.len() <= WINDOW / 2 {
                l.refilling = true;
                wake_refill = true;
            }
        }
        let more = !q.direct.ready.is_empty() || !q.tasks.ready.is_empty();
        let next_due = q.delayed.peek().map(|Reverse((due, _))| Duration::from_millis((due - now).max(1) as u64));
        drop(q);
        if wake_refill {
            self.refill.notify_one();
        }
        if out.is_empty() {
            return Err(next_due);
        }
        if more {
            self.notify.notify_one();
        }
        Ok(Some((out, available)))
    }

    // ---- jobs ------------------------------------------------------------

    /// Creates a job from task rows streamed into the returned sender by the
    /// caller (each row: input bytes or a partition). The job is durable, and
    /// queued, when the returned future resolves.
    pub async fn create_job(
        &self,
        function: Arc<Function>,
        reduce: Option<Arc<Function>>,
        mut rows: mpsc::Receiver<Result<TaskSpec, String>>,
    ) -> Result<Job, stratus_store::Error> {
        let _guard = self.tasks_lock.lock().await;
        let now = self.clock.now_ms();
        let job = Job {
            id: new_id(),
            project: function.project.clone(),
            function: function.name.clone(),
            version: function.version,
            reduce_function: reduce.as_ref().map(|r| r.name.clone()),
            reduce_version: reduce.as_ref().map(|r| r.version),
            state: JobState::Running,
            total: 0,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            created_at: now,
            finished_at: None,
            reduce_invocation: None,
            error: None,
        };
        let (tx, rx) = mpsc::channel(4);
        let job_id = job.id;
        let f = function.clone();
        let feeder = tokio::spawn(async move {
            let mut index = 0u64;
            let mut batch = Vec::with_capacity(1024);
            loop {
                let next = rows.recv().await;
                let end = match next {
                    Some(Ok(spec)) => {
                        let mut inv = new_invocation(&f, now, Some(job_id), Some(index));
                        inv.id = new_id();
                        index += 1;
                        let (input, partition) = match spec {
                            TaskSpec::Input(b) => (b, None),
                            TaskSpec::Partition(p) => (Vec::new(), Some(p)),
                        };
                        batch.push(NewInvocation { invocation: inv, input, partition });
                        None
                    }
                    Some(Err(why)) => Some(JobRows::Abort(why)),
                    None => Some(JobRows::Commit),
                };
                if (batch.len() >= 1024 || (end.is_some() && !batch.is_empty()))
                    && tx.send(JobRows::Rows(std::mem::take(&mut batch))).await.is_err()
                {
                    return;
                }
                if let Some(end) = end {
                    let _ = tx.send(end).await;
                    return;
                }
            }
        });
        let created = self.store.create_job(&job, rx).await;
        feeder.abort();
        let job = created?;
        self.metrics.invocations_submitted.fetch_add(job.total, Relaxed);
        {
            let mut q = self.queue.lock().unwrap();
            q.tasks.backlog = true;
        }
        self.refill.notify_one();
        if job.total == 0 {
            self.on_job_progress(job.clone()).await;
        }
        Ok(job)
    }

    /// Cancels a job: queued tasks never start, running ones are killed.
    pub async fn cancel_job(&self, job: &Job) -> Result<u64, stratus_store::Error> {
        let _guard = self.tasks_lock.lock().await;
        let n = self.store.cancel_job(job.id, self.clock.now_ms()).await?;
        {
            let mut q = self.queue.lock().unwrap();
            q.tasks.ready.retain(|e| e.task.job != Some(job.id));
            q.direct.ready.retain(|e| e.task.job != Some(job.id));
            q.delayed_entries.retain(|_, e| e.task.job != Some(job.id));
        }
        for f in self.inflight.lock().unwrap().values() {
            if f.entry.task.job == Some(job.id) {
                f.cancel.cancel();
            }
        }
        self.job_ended(job.id);
        Ok(n)
    }

    async fn recover_jobs(&self) -> Result<(), stratus_store::Error> {
        for job in self.store.active_jobs().await? {
            match job.state {
                JobState::Running => self.on_job_progress(job).await,
                JobState::Reducing => {
                    let Some(rid) = job.reduce_invocation else { continue };
                    if let Some(inv) = self.store.get_invocation(&job.project, rid).await?
                        && inv.state.is_terminal()
                    {
                        self.finish_reduce(&job, &inv).await;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn on_job_progress(&self, job: Job) {
        match job::on_progress(&job) {
            JobDecision::Wait => {}
            JobDecision::Finish(state, error) => {
                let update = JobUpdate { finished_at: Some(self.clock.now_ms()), error, ..Default::default() };
                match self.store.set_job_state(job.id, &[JobState::Running], state, update).await {
                    Ok(_) => self.job_ended(job.id),
                    Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record the end of a job"),
                }
            }
            JobDecision::StartReduce => {
                // Reading every output may take a while: not on the writer.
                let me = self.arc();
                tokio::spawn(async move {
                    if let Err(e) = me.start_reduce(&job).await {
                        tracing::error!(job = %job.id, error = %e, "cannot start the reducer");
                        let update = JobUpdate {
                            finished_at: Some(me.clock.now_ms()),
                            error: Some(format!("cannot start the reducer: {e}")),
                            ..Default::default()
                        };
                        let _ = me.store.set_job_state(job.id, &[JobState::Running], JobState::Failed, update).await;
                        me.job_ended(job.id);
                    }
                });
            }
        }
    }

    async fn start_reduce(&self, job: &Job) -> Result<(), stratus_store::Error> {
        let (Some(name), Some(version)) = (&job.reduce_function, job.reduce_version) else { return Ok(()) };
        let Some(reducer) = self.function(&job.project, name, version).await? else {
            return Err(stratus_store::Error::Aborted(format!("reducer '{name}' version {version} is gone")));
        };
        let mut input = Vec::new();
        let mut from = 0;
        loop {
            let page = self.store.job_results(job.id, from, 5000).await?;
            let Some(last) = page.last() else { break };
            from = last.index + 1;
            for r in page {
                input.extend_from_slice(r.output.as_deref().unwrap_or_default());
                input.push(b'\n');
            }
        }
        let _guard = self.direct_lock.lock().await;
        let inv = new_invocation(&reducer, self.clock.now_ms(), Some(job.id), None);
        let row = NewInvocation { invocation: inv.clone(), input: input.clone(), partition: None };
        let update = JobUpdate { reduce_invocation: Some(inv.id), insert: Some(row), ..Default::default() };
        if self.store.set_job_state(job.id, &[JobState::Running], JobState::Reducing, update).await? {
            let task =
                Task { invocation: inv.id, attempt: 1, function: reducer, input, partition: None, job: Some(job.id) };
            self.enqueue_new(Lane::Direct, vec![Entry { invocation: inv, task }]);
        }
        Ok(())
    }

    async fn finish_reduce(&self, job: &Job, reducer: &Invocation) {
        let (state, error) = match reducer.state {
            InvocationState::Succeeded => (JobState::Succeeded, None),
            InvocationState::Cancelled => (JobState::Cancelled, None),
            s => (
                JobState::Failed,
                Some(format!("the reducer {s}: {}", reducer.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""))),
            ),
        };
        let update = JobUpdate { finished_at: Some(self.clock.now_ms()), error, ..Default::default() };
        match self.store.set_job_state(job.id, &[JobState::Reducing], state, update).await {
            Ok(_) => self.job_ended(job.id),
            Err(e) => tracing::error!(job = %job.id, error = %e, "cannot record the end of a job"),
        }
    }

    // ---- workers ---------------------------------------------------------

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
        self.workers.lock().unwrap().insert(id.clone(), info);
        self.room.notify_one();
        tracing::info!(worker = %id, host, slots, "worker registered");
        id
    }

    /// Records a heartbeat; returns the ids of its tasks to cancel, or `None`
    /// if the worker is unknown or was declared lost (it must register again).
    pub fn heartbeat(&self, worker: &str) -> Option<Vec<Id>> {
        let mut workers = self.workers.lock().unwrap();
        let w = workers.get_mut(worker)?;
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
        let removed = self.workers.lock().unwrap().remove(worker).is_some();
        if removed {
            tracing::info!(%worker, "worker stopped and deregistered");
        }
        Ok(removed)
    }

    /// Attempts of a job running now.
    pub fn job_running(&self, job: Id) -> usize {
        self.inflight.lock().unwrap().values().filter(|f| f.entry.task.job == Some(job)).count()
    }

    pub fn is_alive(&self, worker: &str) -> bool {
        self.workers.lock().unwrap().get(worker).is_some_and(|w| w.state == "alive")
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

    /// Declares workers that missed their heartbeats lost, and puts their
    /// attempts back in the queue.
    async fn watchdog_loop(self: Arc<Self>) {
        let period = (self.lease_timeout / 4).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(period).await;
            let now = self.clock.now_ms();
            let lost: Vec<String> = {
                let mut workers = self.workers.lock().unwrap();
                // A lost worker is listed for a while, then forgotten, so
                // the registry follows live workers, not history.
                let forget_after = (self.lease_timeout * FORGET_LOST_AFTER).as_millis() as i64;
                workers.retain(|_, w| w.state != "lost" || now - w.last_heartbeat <= forget_after);
                workers
                    .values_mut()
                    .filter(|w| {
                        !w.local && w.state == "alive" && now - w.last_heartbeat > self.lease_timeout.as_millis() as i64
                    })
                    .map(|w| {
                        w.state = "lost";
                        w.id.clone()
                    })
                    .collect()
            };
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
                    let _ = self.writes.send(Write::End(
                        Completion {
                            invocation: id,
                            attempt,
                            worker: worker.clone(),
                            started_at,
                            finished_at: now,
                            result: Err(Failure::new(FailureKind::Lost, format!("worker {worker} was lost"))),
                            logs: Vec::new(),
                        },
                        Ending::Reported,
                    ));
                }
            }
        }
    }

    /// Starts attempts of `entries` on `worker`: in flight, and their starts
    /// on their way to the store.
    fn start_attempts(&self, worker: &str, entries: Vec<Entry>) -> Vec<Leased> {
        let now = self.clock.now_ms();
        let mut out = Vec::with_capacity(entries.len());
        let mut inflight = self.inflight.lock().unwrap();
        for entry in entries {
            let task = entry.task.clone();
            let cancel = CancellationToken::new();
            let _ = self.writes.send(Write::Start(AttemptStart {
                id: task.invocation,
                attempt: task.attempt,
                worker: worker.to_string(),
                started_at: now,
            }));
            let replaced = inflight.insert(
                task.invocation,
                Inflight { entry, worker: worker.to_string(), started_at: now, cancel: cancel.clone() },
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
    pub async fn lease(&self, worker: &str, max: usize, wait: Duration) -> Vec<Leased> {
        match tokio::time::timeout(wait, self.take_for(worker, max, None)).await {
            Ok(Some(tasks)) => tasks,
            _ => Vec::new(),
        }
    }

    // ---- the writer --------------------------------------------------------

    /// The writer: records new invocations that a caller waits for, and
    /// attempt starts and ends, in batches, each with one `StateStore::record`. A
    /// start is held back for [`START_HOLD`] ([`BROKER_START_HOLD`] when
    /// dispatched through the broker, whose round trip is longer): most
    /// short attempts end within it, and then their start needs no write of
    /// its own (the end records both). Such an insert is held for
    /// [`START_HOLD`] too, and written with its invocation's end when that
    /// comes first. An insert is sent before its start, so it is due first.
    async fn write_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Write>) {
        let mut batch = Vec::with_capacity(1024);
        // Held starts by due time: leased ones, and brokered ones.
        let mut held: [VecDeque<(tokio::time::Instant, AttemptStart)>; 2] = Default::default();
        let mut held_inserts: VecDeque<(tokio::time::Instant, NewInvocation)> = VecDeque::new();
        loop {
            let next_due = held
                .iter()
                .filter_map(|h| h.front().map(|(t, _)| *t))
                .chain(held_inserts.front().map(|(t, _)| *t))
                .min();
            let received = match next_due {
                Some(t) => {
                    tokio::select! {
                        n = rx.recv_many(&mut batch, 1024) => n,
                        _ = tokio::time::sleep_until(t) => usize::MAX,
                    }
                }
                None => rx.recv_many(&mut batch, 1024).await,
            };
            if received == 0 {
                return;
            }
            let now = tokio::time::Instant::now();
            let mut ends = Vec::new();
            let mut flushes = Vec::new();
            let mut barriers = Vec::new();
            for w in batch.drain(..) {
                match w {
                    Write::Insert(n) => held_inserts.push_back((now + START_HOLD, n)),
                    Write::Start(s) if s.worker == dispatch::BROKER => held[1].push_back((now + BROKER_START_HOLD, s)),
                    Write::Start(s) => held[0].push_back((now + START_HOLD, s)),
                    Write::End(c, how) => ends.push((c, how)),
                    Write::Flush(tx) => flushes.push(tx),
                    Write::Barrier(tx) => barriers.push(tx),
                }
            }
            let mut inserts = Vec::new();
            if !ends.is_empty() {
                let ended: HashSet<(Id, u32)> = ends.iter().map(|(c, _)| (c.invocation, c.attempt)).collect();
                for h in &mut held {
                    h.retain(|(_, s)| !ended.contains(&(s.id, s.attempt)));
                }
                if !held_inserts.is_empty() {
                    let ended: HashSet<Id> = ended.into_iter().map(|(id, _)| id).collect();
                    let (pulled, kept): (VecDeque<_>, VecDeque<_>) =
                        held_inserts.drain(..).partition(|(_, n)| ended.contains(&n.invocation.id));
                    held_inserts = kept;
                    inserts.extend(pulled.into_iter().map(|(_, n)| n));
                }
            }
            while let Some((t, _)) = held_inserts.front() {
                if !flushes.is_empty() || *t <= now {
                    inserts.push(held_inserts.pop_front().expect("front exists").1);
                } else {
                    break;
                }
            }
            let mut due = Vec::new();
            for h in &mut held {
                while let Some((t, _)) = h.front() {
                    if !flushes.is_empty() || *t <= now {
                        due.push(h.pop_front().expect("front exists").1);
                    } else {
                        break;
                    }
                }
            }
            self.write_records(inserts, due, ends).await;
            for tx in flushes.into_iter().chain(barriers) {
                let _ = tx.send(());
            }
        }
    }

    /// Returns once everything reported so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records attempt ends and returns once they are durable.
    pub async fn complete_durably(&self, completions: Vec<Completion>) {
        for c in completions {
            let _ = self.writes.send(Write::End(c, Ending::Reported));
        }
        let (tx, rx) = oneshot::channel();
        if self.writes.send(Write::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    async fn write_records(&self, new: Vec<NewInvocation>, starts: Vec<AttemptStart>, ends: Vec<(Completion, Ending)>) {
        if ends.is_empty() {
            if !new.is_empty() || !starts.is_empty() {
                retry_forever("record invocations and attempt starts", || self.store.record(&new, &starts, &[])).await;
            }
            return;
        }
        let now = self.clock.now_ms();
        let mut records = Vec::with_capacity(ends.len());
        let mut decisions = Vec::with_capacity(ends.len());
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
        {
            let inflight = self.inflight.lock().unwrap();
            for (c, how) in &ends {
                let max_attempts = inflight
                    .get(&c.invocation)
                    .map(|f| f.entry.invocation.max_attempts)
                    .or_else(|| stored.get(&c.invocation).copied())
                    .unwrap_or(1);
                let decision = match how {
                    Ending::DeadLettered => Decision::Finish(InvocationState::Failed),
                    Ending::Reported => machine::on_attempt_end(
                        &c.result.as_ref().map(|_| ()),
                        c.attempt,
                        max_attempts,
                        now,
                        self.backoff,
                    ),
                };
                let logs = c.logs.clone();
                let outcome = match (&decision, &c.result) {
                    (Decision::Finish(state), Ok(out)) => {
                        EndOutcome::Finish { state: *state, output: Some(out.clone()), error: None, logs }
                    }
                    (Decision::Finish(state), Err(f)) => {
                        EndOutcome::Finish { state: *state, output: None, error: Some(f.clone()), logs }
                    }
                    (Decision::Retry { not_before }, Err(f)) => {
                        EndOutcome::Requeue { not_before: *not_before, error: f.clone(), logs }
                    }
                    (Decision::Retry { .. }, Ok(_)) => unreachable!("success never retries"),
                };
                records.push(AttemptEnd {
                    id: c.invocation,
                    attempt: c.attempt,
                    worker: c.worker.clone(),
                    started_at: c.started_at,
                    finished_at: c.finished_at,
                    outcome,
                });
                decisions.push(decision);
            }
        }
        let report = retry_forever("record attempts", || self.store.record(&new, &starts, &records)).await;
        for (((c, _), decision), applied) in ends.into_iter().zip(decisions).zip(report.applied) {
            if !applied {
                self.metrics.stale_completions.fetch_add(1, Relaxed);
                // The attempt is over all the same (its job was cancelled
                // while its start was held, say): nothing else will end it.
                let mut inflight = self.inflight.lock().unwrap();
                if inflight.get(&c.invocation).is_some_and(|f| f.entry.task.attempt == c.attempt) {
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

/// One task of a job, as its creator describes it.
#[derive(Debug, Clone)]
pub enum TaskSpec {
    Input(Vec<u8>),
    Partition(Partition),
}

fn new_invocation(f: &Function, now: Millis, job: Option<Id>, index: Option<u64>) -> Invocation {
    Invocation {
        id: new_id(),
        project: f.project.clone(),
        function: f.name.clone(),
        version: f.version,
        state: InvocationState::Queued,
        attempts: 0,
        max_attempts: f.spec.retries + 1,
        job_id: job,
        task_index: index,
        queued_at: now,
        started_at: None,
        finished_at: None,
        worker: None,
        error: None,
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
    use stratus_core::{FunctionSpec, Limits, Runtime, SystemClock};

    /// A scheduler on a new SQLite store that holds `rows` when it starts.
    async fn scheduler(
        rows: &[NewInvocation],
    ) -> (tempfile::TempDir, Arc<dyn StateStore>, Arc<Scheduler>, Vec<JoinHandle<()>>) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store: Arc<dyn StateStore> = Arc::new(stratus_store::SqliteStore::open(&url).await.unwrap());
        store.insert_invocations(rows).await.unwrap();
        let (scheduler, tasks) = Scheduler::start(
            store.clone(),
            Arc::new(SystemClock),
            Arc::new(Metrics::default()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        // A new scheduler pages the store in before it queues new work in
        // memory (a sync submit meanwhile goes through the store, and this
        // test's function is not in it): finish that first paging here, not
        // whenever the refill task comes to it.
        scheduler.refill_lane(Lane::Direct).await.unwrap();
        (dir, store, scheduler, tasks)
    }

    fn function() -> Arc<Function> {
        let spec = FunctionSpec {
            runtime: Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Limits { timeout_ms: 1000, memory_mb: 64, ..Limits::default() },
            retries: 0,
            network: false,
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
        }
    }

    /// A caller that waits is answered with a result that is in the store,
    /// whose insert was held and written with its end.
    #[tokio::test]
    async fn a_waited_invocation_is_answered_once_it_is_stored_with_its_end() {
        let (_dir, store, scheduler, _tasks) = scheduler(&[]).await;
        let mut submitted = scheduler.submit(function(), vec![b"in".to_vec()], true).await.unwrap();
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
        let mut submitted = scheduler.submit(function(), vec![Vec::new()], true).await.unwrap();
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

    /// A server that restarted while a remote worker ran an attempt whose
    /// start it had not written yet gets the failure of an invocation it does
    /// not hold in memory: its retries still count.
    #[tokio::test]
    async fn a_failure_reported_after_a_restart_is_retried() {
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
            }])
            .await;
        let after = store.get_invocation("p", id).await.unwrap().unwrap();
        assert_eq!((after.state, after.attempts), (InvocationState::Queued, 1), "two attempts are left");
    }
}
