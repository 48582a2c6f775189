//! The event processor: the leader's one task that runs every stored event
//! through the triggers, exactly once.
//!
//! Events are stored by the commits that cause them (a published event, a
//! finished invocation, a job's end, ...). The processor follows them by
//! number from its cursor; for each batch it updates the triggers'
//! contexts (in memory, by [`Triggers::apply`]), builds the actions, and
//! commits the contexts, the actions (invocations queued, events emitted,
//! firings recorded) and the cursor's move in one transaction. The cursor
//! move is guarded: a commit whose cursor is not where this processor left
//! it (another server processed the batch meanwhile) is refused whole. So
//! each (event, trigger) has one action, whatever crashes: until the
//! commit, nothing of the batch is kept and it is processed again; after
//! it, the cursor is past it. Changes to triggers go through the same task
//! (between batches), so the triggers it holds are always those stored.

use crate::scheduler::Scheduler;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use stratus_blob::{Key, ObjectStore};
use stratus_core::change::NewInvocation;
use stratus_core::events::{
    self, Action, Context, Event, EventChange, Fire, Firing, Input, MAX_DEPTH, Trigger, Triggers, builtin,
};
use stratus_core::schedule::{self, Overlap};
use stratus_core::{Clock, Function, Id, Invocation, Job, Partition};
use stratus_store::{ChangeSet, EventQuery, StateStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How many events one commit of the processor takes at most.
const BATCH: u32 = 1000;

/// How often events older than their retention are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(600);

/// What the API asks of the processor, served between batches.
enum Ask {
    /// A change to triggers (and schedules).
    Change(EventChange),
    /// Fires a schedule's nominal times from `from` to `to` now.
    Backfill { project: String, name: String, from: i64, to: i64 },
}

struct Request {
    ask: Ask,
    /// Whether the change applied (1 or 0), or how many fires a backfill stored.
    reply: oneshot::Sender<Result<u64, stratus_store::Error>>,
}

/// The most nominal times one backfill fires.
pub const MAX_BACKFILL: usize = 10_000;

/// The handle the API holds: trigger changes, and the stream's progress.
pub struct EventProcessor {
    requests: mpsc::UnboundedSender<Request>,
    /// The highest event number processed; readers that follow the stream
    /// wait on it.
    processed: watch::Sender<u64>,
    /// Readers following the stream now: while there are any, every commit
    /// of events wakes the processor, as an enabled trigger does.
    followers: std::sync::atomic::AtomicUsize,
    nudge: tokio::sync::Notify,
}

/// A reader following the stream; see [`EventProcessor::follow`].
pub struct Following(Arc<EventProcessor>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.followers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl EventProcessor {
    /// Starts the processor on `background`'s tracker until `stop`.
    pub fn start(
        store: Arc<dyn StateStore>,
        objects: Arc<dyn ObjectStore>,
        scheduler: Arc<Scheduler>,
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = Arc::new(EventProcessor {
            requests: tx,
            processed: watch::Sender::new(0),
            followers: Default::default(),
            nudge: Default::default(),
        });
        let run = Run { store, objects, scheduler, clock, handle: this.clone(), functions: HashMap::new() };
        tracker.spawn(run.run(rx, stop));
        this
    }

    /// Applies a change to triggers (create, delete, enable, disable) once
    /// the batch under way is committed; whether it applied.
    pub async fn change(&self, change: EventChange) -> Result<bool, stratus_store::Error> {
        Ok(self.ask(Ask::Change(change)).await? > 0)
    }

    /// Fires the nominal times of schedule `name` from `from` to `to`
    /// (at most [`MAX_BACKFILL`]); how many were not fired before.
    pub async fn backfill(&self, project: &str, name: &str, from: i64, to: i64) -> Result<u64, stratus_store::Error> {
        self.ask(Ask::Backfill { project: project.into(), name: name.into(), from, to }).await
    }

    async fn ask(&self, ask: Ask) -> Result<u64, stratus_store::Error> {
        let (reply, rx) = oneshot::channel();
        let stopped = || stratus_store::Error::db("the event processor stopped");
        self.requests.send(Request { ask, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Waits until events after `seq` may be readable (numbered), or
    /// `timeout` passes.
    pub async fn wait_after(&self, seq: u64, timeout: Duration) {
        let mut rx = self.processed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&n| n > seq)).await;
    }

    /// Marks a reader following the stream until the guard is dropped: the
    /// processor then numbers events as soon as they are committed.
    pub fn follow(self: &Arc<Self>) -> Following {
        self.followers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.nudge.notify_one();
        Following(self.clone())
    }

    /// The highest event number processed so far.
    pub fn processed(&self) -> u64 {
        *self.processed.borrow()
    }
}

struct Run {
    store: Arc<dyn StateStore>,
    objects: Arc<dyn ObjectStore>,
    scheduler: Arc<Scheduler>,
    clock: Arc<dyn Clock>,
    handle: Arc<EventProcessor>,
    /// Functions resolved for actions, by name, for the batch under way.
    functions: HashMap<(String, String), Option<Arc<Function>>>,
}

/// The processor's memory: the triggers and their contexts, and its cursor.
///
/// The cursor is stored with every batch that changes anything, and at
/// most [`CURSOR_EVERY`] after a batch that changed nothing (most events
/// match no trigger, and a write per event would cost every invocation
/// its share of the one writer). After a crash the batches since the
/// stored cursor are processed again; those that changed nothing change
/// nothing again, since the triggers and contexts they met are those
/// stored (a change to triggers stores the cursor with it).
struct Memory {
    triggers: Triggers,
    /// Every event up to this one is processed.
    cursor: u64,
    /// The cursor as stored.
    stored: u64,
    stored_at: std::time::Instant,
}

/// How long a cursor moved over events that changed nothing may stay unstored.
const CURSOR_EVERY: Duration = Duration::from_secs(1);

impl Run {
    async fn load(&self) -> Memory {
        loop {
            match self.store.triggers().await {
                Ok(s) => {
                    let mut triggers = Triggers::default();
                    for t in s.triggers {
                        triggers.triggers.insert((t.project.clone(), t.name.clone()), t);
                    }
                    triggers.contexts = s.contexts.into_iter().collect();
                    let at = std::time::Instant::now();
                    return Memory { triggers, cursor: s.cursor, stored: s.cursor, stored_at: at };
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the triggers; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>, stop: CancellationToken) {
        let mut commits = self.store.event_commits();
        let mut mem = self.load().await;
        let mut expired = std::time::Instant::now();
        loop {
            if expired.elapsed() >= EXPIRE_EVERY {
                expired = std::time::Instant::now();
                let before = self.clock.now_ms() - events::DEFAULT_RETENTION_MS;
                let changes = ChangeSet { reactions: vec![EventChange::Expire { before }], ..Default::default() };
                if let Err(e) = self.store.commit(changes).await {
                    tracing::warn!(error = %e, "cannot drop expired events; will try again");
                }
            }
            while let Ok(r) = requests.try_recv() {
                self.serve(&mut mem, r).await;
            }
            let done = match self.batch(&mut mem).await {
                Ok(more) => self.tick(&mut mem).await.map(|wake| (more, wake)),
                Err(e) => Err(e),
            };
            let wake = match done {
                Ok((true, _)) => continue,
                Ok((false, wake)) => wake,
                Err(e) => {
                    tracing::error!(error = %e, "processing events failed; reloading the triggers and retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.cancelled() => return,
                    }
                    mem = self.load().await;
                    continue;
                }
            };
            // Until the next schedule is due, a second at most.
            let nap = wake
                .map(|at| Duration::from_millis((at - self.clock.now_ms()).clamp(0, 1000) as u64))
                .unwrap_or(Duration::from_secs(1));
            // Without an enabled trigger or a follower no event needs
            // handling soon: commits do not wake this task (sparing every
            // invocation the wake-up); it looks again at its next request,
            // nudge or nap.
            let following = self.handle.followers.load(std::sync::atomic::Ordering::Relaxed) > 0;
            let listening = following || mem.triggers.triggers.values().any(|t| t.enabled);
            tokio::select! {
                _ = commits.changed(), if listening => {}
                _ = self.handle.nudge.notified() => {}
                r = requests.recv() => match r {
                    Some(r) => self.serve(&mut mem, r).await,
                    None => return,
                },
                // A schedule's time; or events committed by another
                // server (a standby's ingest, or its last commits).
                _ = tokio::time::sleep(nap) => {}
                _ = stop.cancelled() => {
                    let _ = self.store_cursor(&mut mem, true).await;
                    return;
                }
            }
        }
    }

    /// One request, committed, then made in memory.
    async fn serve(&self, mem: &mut Memory, r: Request) {
        let result = match r.ask {
            Ask::Change(change) => self.change(mem, change).await.map(u64::from),
            Ask::Backfill { project, name, from, to } => self.backfill(mem, &project, &name, from, to).await,
        };
        let _ = r.reply.send(result);
    }

    async fn change(&self, mem: &mut Memory, change: EventChange) -> Result<bool, stratus_store::Error> {
        // The cursor first: the triggers change after the events before it.
        let mut reactions = vec![change.clone()];
        if mem.cursor > mem.stored {
            reactions.insert(0, EventChange::Cursor { from: mem.stored, to: mem.cursor });
        }
        let moves = reactions.len() - 1;
        let report = self.store.commit(ChangeSet { reactions, ..Default::default() }).await?;
        mem.stored = mem.cursor;
        let applied = report.reactions.get(moves).copied().unwrap_or(false);
        if !applied {
            return Ok(false);
        }
        let t = &mut mem.triggers;
        match change {
            EventChange::Create(trigger) => {
                // Its `from_seq` is the store's: read it back.
                let stored = self
                    .store
                    .triggers()
                    .await?
                    .triggers
                    .into_iter()
                    .find(|x| x.project == trigger.project && x.name == trigger.name);
                let trigger = stored.unwrap_or(*trigger);
                let key = (trigger.project.clone(), trigger.name.clone());
                t.contexts.retain(|(p, n, _), _| !(*p == key.0 && *n == key.1));
                t.triggers.insert(key.clone(), trigger);
                self.restart_schedule(mem, key).await?;
            }
            EventChange::Delete { project, name } => {
                t.contexts.retain(|(p, n, _), _| !(*p == project && *n == name));
                t.triggers.remove(&(project, name));
            }
            EventChange::SetEnabled { project, name, enabled } => {
                let key = (project, name);
                if let Some(x) = t.triggers.get_mut(&key) {
                    x.enabled = enabled;
                }
                if enabled {
                    self.restart_schedule(mem, key).await?;
                }
            }
            _ => {}
        }
        Ok(true)
    }

    /// A schedule created or resumed counts from now: its next nominal
    /// time is the first after now (a pause leaves no missed fires).
    async fn restart_schedule(&self, mem: &mut Memory, key: (String, String)) -> Result<(), stratus_store::Error> {
        let Some(t) = mem.triggers.triggers.get(&key) else { return Ok(()) };
        let Some(spec) = &t.spec.schedule else { return Ok(()) };
        let Ok(clock) = spec.compile(t.created_at) else { return Ok(()) };
        let ckey = (key.0, key.1, String::new());
        let (last, buffered) = match mem.triggers.contexts.get(&ckey) {
            Some(Context::Schedule { last, buffered, .. }) => (*last, *buffered),
            _ => (None, None),
        };
        let context = Context::Schedule { next_at: clock.next_after(self.clock.now_ms()), last, buffered };
        let change = EventChange::Context { key: ckey.clone(), context: Some(context.clone()) };
        self.store.commit(ChangeSet { reactions: vec![change], ..Default::default() }).await?;
        mem.triggers.contexts.insert(ckey, context);
        Ok(())
    }

    async fn backfill(
        &self,
        mem: &Memory,
        project: &str,
        name: &str,
        from: i64,
        to: i64,
    ) -> Result<u64, stratus_store::Error> {
        let t = mem.triggers.triggers.get(&(project.to_string(), name.to_string()));
        let Some((t, spec)) = t.and_then(|t| Some((t, t.spec.schedule.as_ref()?))) else { return Ok(0) };
        let Ok(clock) = spec.compile(t.created_at) else { return Ok(0) };
        let now = self.clock.now_ms();
        let mut events = Vec::new();
        let mut n = clock.next_after(from - 1);
        while let Some(at) = n.filter(|at| *at <= to && events.len() < MAX_BACKFILL) {
            events.push(builtin::schedule_fired(project, name, at, now, true));
            n = clock.next_after(at);
        }
        let report = self.store.commit(ChangeSet { events, ..Default::default() }).await?;
        Ok(report.events.iter().filter(|s| **s).count() as u64)
    }

    /// Commits the fires (and missed stretches) of every enabled schedule
    /// that is due; when the next one is due.
    async fn tick(&self, mem: &mut Memory) -> Result<Option<i64>, stratus_store::Error> {
        let now = self.clock.now_ms();
        let mut changes = ChangeSet::default();
        let mut updates = Vec::new();
        let mut wake: Option<i64> = None;
        for t in mem.triggers.triggers.values().filter(|t| t.enabled) {
            let Some(spec) = &t.spec.schedule else { continue };
            let Ok(clock) = spec.compile(t.created_at) else { continue };
            let key = (t.project.clone(), t.name.clone(), String::new());
            let (next_at, last, buffered) = match mem.triggers.contexts.get(&key) {
                Some(Context::Schedule { next_at, last, buffered }) => (*next_at, *last, *buffered),
                _ => (clock.next_after(now), None, None),
            };
            let Some(next_at) = next_at else { continue };
            let d = schedule::due(&clock, next_at, now, spec.catchup_ms);
            for nominal in &d.fires {
                changes.events.push(builtin::schedule_fired(&t.project, &t.name, *nominal, now, false));
            }
            if let Some(missed) = d.missed {
                let why = "not fired within the catch-up window (the server was not running)";
                changes.events.push(builtin::schedule_missed(&t.project, &t.name, missed, why, now));
            }
            if d.next != Some(next_at) || !mem.triggers.contexts.contains_key(&key) {
                let context = Context::Schedule { next_at: d.next, last, buffered };
                changes.reactions.push(EventChange::Context { key: key.clone(), context: Some(context.clone()) });
                updates.push((key, context));
            }
            wake = wake.into_iter().chain(d.next).min();
        }
        if !changes.is_empty() {
            self.store.commit(changes).await?;
            mem.triggers.contexts.extend(updates);
        }
        Ok(wake)
    }

    /// Processes the events after the cursor, one batch; whether there may
    /// be more.
    async fn batch(&mut self, mem: &mut Memory) -> Result<bool, stratus_store::Error> {
        let numbered = self.store.sequence_events().await?;
        if numbered <= mem.cursor {
            self.store_cursor(mem, false).await?;
            self.handle.processed.send_replace(mem.cursor);
            return Ok(false);
        }
        // With no trigger enabled, no event can do anything.
        if !mem.triggers.triggers.values().any(|t| t.enabled) {
            mem.cursor = numbered;
            self.store_cursor(mem, false).await?;
            self.handle.processed.send_replace(numbered);
            return Ok(false);
        }
        let q = EventQuery { after: mem.cursor, limit: BATCH, ..Default::default() };
        let mut events = self.store.events(&q).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            // Numbered, but dropped since (retention).
            mem.cursor = numbered;
            self.handle.processed.send_replace(numbered);
            return Ok(false);
        };
        let now = self.clock.now_ms();
        let mut changes = ChangeSet::default();
        let firings = self.outputs(&mut events, &mut changes, now).await?;
        let outcome = mem.triggers.apply(&events);
        changes.reactions = outcome.changes;
        self.functions.clear();
        let mut functions = HashMap::new();
        for fire in &outcome.fires {
            self.act(mem, fire, now, &mut changes, &mut functions).await?;
        }
        for fire in released(mem, &events, &firings, now) {
            self.act(mem, &fire, now, &mut changes, &mut functions).await?;
        }
        let more = events.len() as u32 == BATCH;
        if changes.is_empty() {
            mem.cursor = last;
            self.store_cursor(mem, false).await?;
            self.handle.processed.send_replace(last);
            return Ok(more);
        }
        changes.reactions.push(EventChange::Cursor { from: mem.stored, to: last });
        self.scheduler.commit_invocations(changes, &functions).await?;
        (mem.cursor, mem.stored, mem.stored_at) = (last, last, std::time::Instant::now());
        self.handle.processed.send_replace(last);
        Ok(more)
    }

    /// Stores the cursor if it moved and, unless `now`, the last store is
    /// [`CURSOR_EVERY`] old.
    async fn store_cursor(&self, mem: &mut Memory, now: bool) -> Result<(), stratus_store::Error> {
        if mem.cursor <= mem.stored || (!now && mem.stored_at.elapsed() < CURSOR_EVERY) {
            return Ok(());
        }
        let change = EventChange::Cursor { from: mem.stored, to: mem.cursor };
        self.store.commit(ChangeSet { reactions: vec![change], ..Default::default() }).await?;
        (mem.stored, mem.stored_at) = (mem.cursor, std::time::Instant::now());
        Ok(())
    }

    /// The invocations among `events` that trigger actions started: their
    /// events take the action's causation depth, and an invocation that
    /// succeeded with an `--output` has its output stored as the object it
    /// names (again, identically, if this batch is processed again).
    async fn outputs(
        &self,
        events: &mut [Event],
        changes: &mut ChangeSet,
        now: i64,
    ) -> Result<HashMap<Id, Firing>, stratus_store::Error> {
        let ids: Vec<Id> = events
            .iter()
            .filter(|e| e.source == builtin::INVOCATIONS)
            .filter_map(|e| e.id.parse::<Id>().ok())
            .collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let firings: HashMap<Id, Firing> =
            self.store.firings_of(&ids).await?.into_iter().filter_map(|f| Some((f.invocation?, f))).collect();
        for e in events.iter_mut().filter(|e| e.source == builtin::INVOCATIONS) {
            let Some(f) = e.id.parse::<Id>().ok().and_then(|id| firings.get(&id)) else {
                continue;
            };
            e.depth = f.depth;
            let (Some(output), "stratus.invocation.succeeded") = (&f.output, e.ty.as_str()) else { continue };
            let id = f.invocation.expect("keyed by its invocation");
            let payloads = self.store.get_payloads(&e.project, id).await?;
            let bytes = payloads.and_then(|p| p.output).unwrap_or_default();
            let size = bytes.len() as u64;
            let stored = async {
                let key = Key::new(output.clone())?;
                self.objects.put(&Key::user(&e.project, &key), bytes.into()).await
            };
            match stored.await {
                Ok(()) => {
                    let mut created = builtin::object(&e.project, output, true, Some(size), now);
                    created.id = format!("output-{id}");
                    created.depth = f.depth;
                    changes.events.push(created);
                }
                Err(err) => {
                    let why = format!("cannot store the output at '{output}': {err}");
                    changes.events.push(builtin::trigger_failed(&e.project, &f.trigger, e, &why, now));
                }
            }
        }
        Ok(firings)
    }

    async fn function(&mut self, project: &str, name: &str) -> Result<Option<Arc<Function>>, stratus_store::Error> {
        let key = (project.to_string(), name.to_string());
        if let Some(f) = self.functions.get(&key) {
            return Ok(f.clone());
        }
        let f = self.store.get_function(project, name, None).await?.map(Arc::new);
        self.functions.insert(key, f.clone());
        Ok(f)
    }

    /// The action of one fire, added to `changes` (or, if it cannot run,
    /// its `stratus.trigger.failed` event).
    async fn act(
        &mut self,
        mem: &mut Memory,
        fire: &Fire,
        now: i64,
        changes: &mut ChangeSet,
        functions: &mut HashMap<Id, Arc<Function>>,
    ) -> Result<(), stratus_store::Error> {
        let cause = fire.events.last().expect("a fire has an event");
        let depth = fire.events.iter().map(|e| e.depth).max().unwrap_or(0);
        let fail = |why: String| builtin::trigger_failed(&fire.project, &fire.trigger, cause, &why, now);
        if depth >= MAX_DEPTH {
            let why = format!("the event's causation depth is {depth}: a trigger loop? Actions stop at {MAX_DEPTH}");
            changes.events.push(fail(why));
            return Ok(());
        }
        let key = (fire.project.clone(), fire.trigger.clone(), String::new());
        let schedule = mem.triggers.triggers.get(&(key.0.clone(), key.1.clone())).and_then(|t| t.spec.schedule.clone());
        if let (Some(spec), Action::Invoke { .. }) = (&schedule, &fire.action)
            && !self.may_run(mem, &key, spec.overlap, cause, now, changes).await?
        {
            return Ok(());
        }
        let mut firing = Firing {
            project: fire.project.clone(),
            trigger: fire.trigger.clone(),
            seq: cause.seq,
            at: now,
            invocation: None,
            output: None,
            depth: depth + 1,
        };
        match &fire.action {
            Action::Emit { ty } => changes.events.push(events::emitted(&fire.trigger, ty, fire, now)),
            Action::Map { function, items } => {
                let Some(f) = self.function(&fire.project, function).await? else {
                    changes.events.push(fail(format!("function '{function}' not found")));
                    return Ok(());
                };
                let inputs = match events::map_items(cause, items.as_deref()) {
                    Ok(inputs) => inputs,
                    Err(why) => {
                        changes.events.push(fail(why));
                        return Ok(());
                    }
                };
                let trust = self.store.trust().await?;
                let quota =
                    trust.projects.iter().find(|p| p.name == fire.project).map(|p| p.quotas.max_tasks_per_job());
                if let Some(max) = quota.filter(|max| inputs.len() as u64 > *max) {
                    let n = inputs.len();
                    changes.events.push(fail(format!("{n} tasks is over the project's max_tasks_per_job of {max}")));
                    return Ok(());
                }
                let job = Job::running(&f, None, inputs.len() as u64, now);
                for (index, input) in inputs.into_iter().enumerate() {
                    let invocation = Invocation::queued(&f, now, Some(job.id), Some(index as u64));
                    changes.new.push(NewInvocation { invocation, input, partition: None });
                }
                changes.new_jobs.push(job);
            }
            Action::Invoke { function, input, output } => {
                let Some(f) = self.function(&fire.project, function).await? else {
                    changes.events.push(fail(format!("function '{function}' not found")));
                    return Ok(());
                };
                let (input_bytes, partition) = match input {
                    Input::Event => (events::action_input(&fire.events), None),
                    Input::Object => match self.partition(cause).await {
                        Ok(p) => (Vec::new(), Some(p)),
                        Err(why) => {
                            changes.events.push(fail(why));
                            return Ok(());
                        }
                    },
                };
                let invocation = Invocation::queued(&f, now, None, None);
                firing.invocation = Some(invocation.id);
                if schedule.is_some() {
                    let (next_at, buffered) = match mem.triggers.contexts.get(&key) {
                        Some(Context::Schedule { next_at, buffered, .. }) => (*next_at, *buffered),
                        _ => (None, None),
                    };
                    let context = Context::Schedule { next_at, last: Some(invocation.id), buffered };
                    changes.reactions.push(EventChange::Context { key: key.clone(), context: Some(context.clone()) });
                    mem.triggers.contexts.insert(key.clone(), context);
                }
                firing.output = output.as_ref().zip(cause.subject.as_ref()).map(|(o, s)| events::output_key(o, s));
                functions.insert(invocation.id, f);
                changes.new.push(NewInvocation { invocation, input: input_bytes, partition });
            }
        }
        changes.reactions.push(EventChange::Fired(firing));
        Ok(())
    }

    /// Whether a schedule's fire may start its action now, by its overlap
    /// policy and the run it started last (a backfill always may). If not,
    /// the fire is buffered or counted as missed.
    async fn may_run(
        &self,
        mem: &mut Memory,
        key: &(String, String, String),
        overlap: Overlap,
        cause: &Event,
        now: i64,
        changes: &mut ChangeSet,
    ) -> Result<bool, stratus_store::Error> {
        let data = cause.data_json().unwrap_or_default();
        let Some(nominal) = data["nominal_ms"].as_i64() else { return Ok(true) };
        if data["backfill"] == true || overlap == Overlap::AllowAll {
            return Ok(true);
        }
        let Some(Context::Schedule { next_at, last: Some(last), buffered }) = mem.triggers.contexts.get(key).cloned()
        else {
            return Ok(true);
        };
        let running = match self.store.get_invocation(&key.0, last).await? {
            Some(inv) => !inv.state.is_terminal(),
            None => false,
        };
        if !running {
            return Ok(true);
        }
        if overlap == Overlap::BufferOne && buffered.is_none() {
            let context = Context::Schedule { next_at, last: Some(last), buffered: Some(nominal) };
            changes.reactions.push(EventChange::Context { key: key.clone(), context: Some(context.clone()) });
            mem.triggers.contexts.insert(key.clone(), context);
        } else {
            let why = format!("the run it started last ({last}) is still going (overlap: {overlap:?})");
            changes.events.push(builtin::schedule_missed(&key.0, &key.1, (nominal, nominal, 1), &why, now));
        }
        Ok(false)
    }

    /// The whole object an object event names, as a map task's partition.
    async fn partition(&self, e: &Event) -> Result<Partition, String> {
        let object = e.subject.clone().ok_or("the event has no subject (BUCKET/KEY)")?;
        let key = Key::new(object.clone()).map_err(|err| format!("'{object}' is not an object: {err}"))?;
        let meta = self
            .objects
            .head(&Key::user(&e.project, &key))
            .await
            .map_err(|err| format!("cannot read '{object}': {err}"))?
            .ok_or_else(|| format!("object '{object}' not found"))?;
        Ok(Partition { object, start: 0, end: meta.size, size: meta.size, lines: false })
    }
}

/// A trigger as created by the API: validated, enabled, numbered by the store.
pub fn new_trigger(project: &str, name: &str, spec: events::TriggerSpec, now: i64) -> Trigger {
    Trigger { project: project.into(), name: name.into(), spec, enabled: true, created_at: now, from_seq: 0 }
}

/// The buffered fires (`buffer_one`) whose schedule's last run ends among
/// `events`: each runs now, caused by that end; its buffer is emptied.
fn released(mem: &mut Memory, events: &[Event], firings: &HashMap<Id, Firing>, now: i64) -> Vec<Fire> {
    let mut out = Vec::new();
    for e in events.iter().filter(|e| e.source == builtin::INVOCATIONS) {
        let Some(f) = e.id.parse::<Id>().ok().and_then(|id| firings.get(&id)) else { continue };
        let key = (f.project.clone(), f.trigger.clone(), String::new());
        let Some(Context::Schedule { next_at, last, buffered: Some(nominal) }) =
            mem.triggers.contexts.get(&key).cloned()
        else {
            continue;
        };
        let Some(t) = mem.triggers.triggers.get(&(key.0.clone(), key.1.clone())) else { continue };
        if last != f.invocation || !t.enabled {
            continue;
        }
        let mut fired = builtin::schedule_fired(&key.0, &key.1, nominal, now, false);
        fired.seq = e.seq;
        out.push(Fire {
            project: key.0.clone(),
            trigger: key.1.clone(),
            action: t.spec.action.clone(),
            events: vec![fired],
            group: String::new(),
        });
        mem.triggers.contexts.insert(key, Context::Schedule { next_at, last, buffered: None });
    }
    out
}

/// The topic a deployment ingests events from, on the broker's topic
/// exchange: `ingest.` and its work queue's name (so two deployments on one
/// broker keep their events apart).
pub fn ingest_topic(queue: &str) -> String {
    format!("ingest.{queue}")
}

/// The durable group this deployment's servers share on [`ingest_topic`].
pub async fn subscribe_ingest(
    broker: &dyn stratus_broker::Broker,
    queue: &str,
) -> Result<Box<dyn stratus_broker::Subscription>, stratus_broker::Error> {
    broker.subscribe(&format!("{queue}.ingest"), &ingest_topic(queue), 64).await
}

/// The extension attribute that names an ingested event's project
/// (`default` when absent).
pub const PROJECT_ATTRIBUTE: &str = "stratusproject";

/// The events of one broker message: CloudEvents in structured JSON, one
/// object or an array, each in the project its `stratusproject` names.
pub fn ingested(body: &[u8], now: i64) -> Result<Vec<Event>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let items = match v {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    items
        .iter()
        .map(|item| {
            let project = item.get(PROJECT_ATTRIBUTE).and_then(|p| p.as_str()).unwrap_or(stratus_core::DEFAULT_PROJECT);
            stratus_core::validate_name("stratusproject", project).map_err(|e| e.to_string())?;
            Event::from_json(project, item, now).map_err(|e| e.to_string())
        })
        .collect()
}

/// Stores the events published to [`ingest_topic`] until `stop`: each
/// message is acknowledged only after its events are committed, so a
/// message the broker delivers again (the server died before its ack) is
/// stored again as duplicates, which change nothing. Every server of a
/// deployment ingests (a standby commits to the shared store; the leader's
/// processor numbers and matches the events). A message that is not events
/// is dropped, with a warning.
///
/// `first` is the subscription [`subscribe_ingest`] made before the server
/// said it listens, so that no event published after that is missed.
pub async fn ingest(
    broker: Arc<dyn stratus_broker::Broker>,
    queue: String,
    first: Box<dyn stratus_broker::Subscription>,
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = || *stop.borrow();
    let mut first = Some(first);
    while !stopped() {
        let mut sub = match first.take() {
            Some(sub) => sub,
            None => match subscribe_ingest(&*broker, &queue).await {
                Ok(sub) => sub,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to ingested events; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        while let Some(delivery) = sub.next().await {
            let Ok(d) = delivery else { break };
            let events = match ingested(&d.body, clock.now_ms()) {
                Ok(events) => events,
                Err(why) => {
                    tracing::warn!(%why, "dropping a message on the ingest topic that is not CloudEvents");
                    let _ = d.dead_letter().await;
                    continue;
                }
            };
            match store.commit(ChangeSet { events, ..Default::default() }).await {
                Ok(_) => {
                    let _ = d.ack().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store ingested events; they go back to the broker");
                    let _ = d.requeue().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            if stopped() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
