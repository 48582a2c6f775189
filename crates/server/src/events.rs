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
    self, Action, Event, EventChange, Fire, Firing, Input, MAX_DEPTH, Trigger, Triggers, builtin,
};
use stratus_core::{Clock, Function, Id, Invocation, Partition};
use stratus_store::{ChangeSet, EventQuery, StateStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// How many events one commit of the processor takes at most.
const BATCH: u32 = 1000;

/// How often events older than their retention are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(600);

/// A change to triggers, made by the processor between batches.
struct Request {
    change: EventChange,
    reply: oneshot::Sender<Result<bool, stratus_store::Error>>,
}

/// The handle the API holds: trigger changes, and the stream's progress.
pub struct EventProcessor {
    requests: mpsc::UnboundedSender<Request>,
    /// The highest event number processed; readers that follow the stream
    /// wait on it.
    processed: watch::Sender<u64>,
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
        let this = Arc::new(EventProcessor { requests: tx, processed: watch::Sender::new(0) });
        let run = Run { store, objects, scheduler, clock, handle: this.clone(), functions: HashMap::new() };
        tracker.spawn(run.run(rx, stop));
        this
    }

    /// Applies a change to triggers (create, delete, enable, disable) once
    /// the batch under way is committed; whether it applied.
    pub async fn change(&self, change: EventChange) -> Result<bool, stratus_store::Error> {
        let (reply, rx) = oneshot::channel();
        let stopped = || stratus_store::Error::db("the event processor stopped");
        self.requests.send(Request { change, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Waits until events after `seq` may be readable (numbered), or
    /// `timeout` passes.
    pub async fn wait_after(&self, seq: u64, timeout: Duration) {
        let mut rx = self.processed.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|&n| n > seq)).await;
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
struct Memory {
    triggers: Triggers,
    cursor: u64,
}

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
                    return Memory { triggers, cursor: s.cursor };
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
            match self.batch(&mut mem).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "processing events failed; reloading the triggers and retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.cancelled() => return,
                    }
                    mem = self.load().await;
                    continue;
                }
            }
            tokio::select! {
                _ = commits.changed() => {}
                r = requests.recv() => match r {
                    Some(r) => self.serve(&mut mem, r).await,
                    None => return,
                },
                // Events committed by another server (there is none while
                // this one leads, but a standby's last commits may land).
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// One change to triggers, committed, then made in memory.
    async fn serve(&self, mem: &mut Memory, r: Request) {
        let changes = ChangeSet { reactions: vec![r.change.clone()], ..Default::default() };
        let result = self.store.commit(changes).await.map(|report| report.reactions.first().copied().unwrap_or(false));
        if let Ok(true) = result {
            let t = &mut mem.triggers;
            match r.change {
                EventChange::Create(trigger) => {
                    // Its `from_seq` is the store's: read it back.
                    let stored = self.store.triggers().await.ok().and_then(|s| {
                        s.triggers.into_iter().find(|x| x.project == trigger.project && x.name == trigger.name)
                    });
                    let trigger = stored.unwrap_or(trigger);
                    t.contexts.retain(|(p, n, _), _| !(*p == trigger.project && *n == trigger.name));
                    t.triggers.insert((trigger.project.clone(), trigger.name.clone()), trigger);
                }
                EventChange::Delete { project, name } => {
                    t.contexts.retain(|(p, n, _), _| !(*p == project && *n == name));
                    t.triggers.remove(&(project, name));
                }
                EventChange::SetEnabled { project, name, enabled } => {
                    if let Some(x) = t.triggers.get_mut(&(project, name)) {
                        x.enabled = enabled;
                    }
                }
                _ => {}
            }
        }
        let _ = r.reply.send(result);
    }

    /// Processes the events after the cursor, one batch; whether there may
    /// be more.
    async fn batch(&mut self, mem: &mut Memory) -> Result<bool, stratus_store::Error> {
        let numbered = self.store.sequence_events().await?;
        if numbered <= mem.cursor {
            self.handle.processed.send_replace(mem.cursor);
            return Ok(false);
        }
        let q = EventQuery { after: mem.cursor, limit: BATCH, ..Default::default() };
        let mut events = self.store.events(&q).await?;
        let Some(last) = events.last().map(|e| e.seq) else {
            self.handle.processed.send_replace(numbered);
            return Ok(false);
        };
        let now = self.clock.now_ms();
        let mut changes = ChangeSet::default();
        self.outputs(&mut events, &mut changes, now).await?;
        let outcome = mem.triggers.apply(&events);
        changes.reactions = outcome.changes;
        self.functions.clear();
        let mut functions = HashMap::new();
        for fire in &outcome.fires {
            self.act(fire, now, &mut changes, &mut functions).await?;
        }
        changes.reactions.push(EventChange::Cursor { from: mem.cursor, to: last });
        match self.scheduler.commit_invocations(changes, &functions).await {
            Ok(_) => {
                mem.cursor = last;
                self.handle.processed.send_replace(last);
                Ok(events.len() as u32 == BATCH)
            }
            Err(e) => Err(e),
        }
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
    ) -> Result<(), stratus_store::Error> {
        let ids: Vec<Id> = events
            .iter()
            .filter(|e| e.source == builtin::INVOCATIONS)
            .filter_map(|e| e.id.parse::<Id>().ok())
            .collect();
        if ids.is_empty() {
            return Ok(());
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
        Ok(())
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
                firing.output = output.as_ref().zip(cause.subject.as_ref()).map(|(o, s)| events::output_key(o, s));
                functions.insert(invocation.id, f);
                changes.new.push(NewInvocation { invocation, input: input_bytes, partition });
            }
        }
        changes.reactions.push(EventChange::Fired(firing));
        Ok(())
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
