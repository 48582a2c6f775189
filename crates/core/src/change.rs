//! Change sets: what one commit of the state store writes, as data.
//!
//! Every change to invocations, attempts and jobs reaches the store as one
//! [`ChangeSet`] through `StateStore::commit`, which writes it in one
//! transaction on every engine. The decisions that produce change sets
//! ([`crate::machine`], [`crate::job`]) are pure; so are the rules here that
//! every engine applies the same way — what an attempt's end writes
//! ([`EndOutcome::row`]), how it moves its job's counters, and how failures
//! and partitions are serialised — so they are written once. The engines
//! only bind these values to their statements.

use crate::clock::Millis;
use crate::events::{Event, EventChange};
use crate::trust::{AuditEntry, TrustChange};
use crate::{Failure, FailureKind, Function, FunctionSpec, Id, Invocation, InvocationState, Job, JobState, Partition};

/// A new invocation with its input.
#[derive(Debug, Clone)]
pub struct NewInvocation {
    pub invocation: Invocation,
    pub input: Vec<u8>,
    pub partition: Option<Partition>,
}

/// The start of an attempt, as leased by a worker. Applies only to a queued
/// invocation; a second start of one invocation in the same change set does
/// not apply (it is no longer queued).
#[derive(Debug, Clone)]
pub struct AttemptStart {
    pub id: Id,
    pub attempt: u32,
    pub worker: String,
    pub started_at: Millis,
}

/// The worker name attempts dispatched through a broker start under: any
/// worker may take their message, so their ends are not checked against
/// the worker that started them.
pub const BROKER_WORKER: &str = "broker";

/// What to record when an attempt ends. Applies only while the invocation
/// is on that attempt (running it, or still queued for it when its start
/// was never written) and not finished: a duplicate or a late report
/// changes nothing — the exactly-once guard every engine enforces. A
/// running attempt ends only by the worker it started on (or any, when it
/// started on [`BROKER_WORKER`]): a worker cannot report another's.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    pub id: Id,
    pub attempt: u32,
    pub worker: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub outcome: EndOutcome,
}

#[derive(Debug, Clone)]
pub enum EndOutcome {
    /// The invocation is finished in `state`.
    Finish { state: InvocationState, output: Option<Vec<u8>>, error: Option<Failure>, logs: Vec<u8> },
    /// The attempt failed and the invocation goes back to the queue.
    Requeue { not_before: Millis, error: Failure, logs: Vec<u8> },
}

/// How an applied end moves the counters of the job its task belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCount {
    /// A retry: the task is not done.
    None,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobCount {
    /// `(succeeded, failed, cancelled)` to add.
    pub fn deltas(self) -> (i64, i64, i64) {
        match self {
            JobCount::None => (0, 0, 0),
            JobCount::Succeeded => (1, 0, 0),
            JobCount::Failed => (0, 1, 0),
            JobCount::Cancelled => (0, 0, 1),
        }
    }
}

/// What an applied end writes, whatever the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct EndRow<'a> {
    /// The invocation's new state (`queued` for a retry).
    pub state: InvocationState,
    pub output: Option<&'a [u8]>,
    /// The failure, serialised ([`failure_json`]).
    pub error: Option<String>,
    pub logs: &'a [u8],
    /// For a retry: not to start before this.
    pub not_before: Option<Millis>,
    /// Set only when the invocation finishes.
    pub finished_at: Option<Millis>,
    /// The state recorded on the attempt's own row.
    pub attempt_state: InvocationState,
    /// For a task of a job.
    pub count: JobCount,
}

impl AttemptEnd {
    /// The values an engine writes for this end when its guard lets it apply.
    pub fn row(&self) -> EndRow<'_> {
        match &self.outcome {
            EndOutcome::Finish { state, output, error, logs } => EndRow {
                state: *state,
                output: output.as_deref(),
                error: error.as_ref().map(failure_json),
                logs,
                not_before: None,
                finished_at: Some(self.finished_at),
                attempt_state: *state,
                count: match state {
                    InvocationState::Succeeded => JobCount::Succeeded,
                    InvocationState::Cancelled => JobCount::Cancelled,
                    _ => JobCount::Failed,
                },
            },
            EndOutcome::Requeue { not_before, error, logs } => EndRow {
                state: InvocationState::Queued,
                output: None,
                error: Some(failure_json(error)),
                logs,
                not_before: Some(*not_before),
                finished_at: None,
                attempt_state: if error.kind == FailureKind::Timeout {
                    InvocationState::TimedOut
                } else {
                    InvocationState::Failed
                },
                count: JobCount::None,
            },
        }
    }
}

/// Fields set with a job's state.
#[derive(Debug, Clone, Default)]
pub struct JobUpdate {
    pub finished_at: Option<Millis>,
    pub error: Option<String>,
    pub reduce_invocation: Option<Id>,
    /// A reducer invocation to insert with the move, only if it applies.
    pub insert: Option<NewInvocation>,
}

/// A guarded move of a job: applies only while the job is in one of `from`.
#[derive(Debug, Clone)]
pub struct JobMove {
    pub id: Id,
    pub from: Vec<JobState>,
    pub to: JobState,
    pub update: JobUpdate,
}

/// A change to a function's versions.
#[derive(Debug, Clone)]
pub enum FunctionChange {
    /// A new version: the highest this name ever had + 1 (versions of a
    /// deleted function are never reused).
    Put { project: String, name: String, spec: FunctionSpec, at: Millis },
    /// Every live version marked deleted (old versions stay readable for
    /// the invocations that run them).
    Delete { project: String, name: String, at: Millis },
}

/// What a [`FunctionChange`] did.
// One per deploy or delete, read once: not worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum FunctionOutcome {
    /// The version stored.
    Put(Function),
    /// Whether there was a live function to delete.
    Deleted(bool),
}

/// A job cancelled: its queued tasks end `cancelled` (running ones are the
/// scheduler's to stop), its counters move, and it ends `cancelled` if it
/// was running or reducing.
#[derive(Debug, Clone, Copy)]
pub struct JobCancel {
    pub id: Id,
    pub at: Millis,
}

/// Finished invocations' input, output and logs dropped (the rows stay,
/// marked purged), to bound the store's size: a project's invocations
/// finished before `finished_before`, or only one function's. Tasks of a
/// job still running or reducing keep theirs (a reducer reads them).
/// With `made_since`, only invocations made (queued) since then are looked
/// at: a sweep that ran before need not read the rows it emptied again.
#[derive(Debug, Clone)]
pub struct Purge {
    pub project: String,
    pub function: Option<String>,
    pub finished_before: Millis,
    pub made_since: Option<Millis>,
    pub at: Millis,
}

impl Purge {
    /// The ids to look at: `[from, to)`. An invocation finished before
    /// `finished_before` was made before it, and ids are ordered by time.
    pub fn id_range(&self) -> (crate::Id, crate::Id) {
        (crate::Id::first_at(self.made_since.unwrap_or(0)), crate::Id::first_at(self.finished_before))
    }
}

/// One commit: function versions, then new jobs and invocations, attempt starts,
/// attempt ends, job moves, job cancellations, changes to projects and
/// tokens, audit entries, purges, events and changes to triggers, in that
/// order, in one transaction. A new invocation whose id is stored already
/// is skipped, so a commit that failed can be made again; ends, moves and
/// cancellations are guarded, so making them again changes nothing that
/// applied; an event whose `(project, source, id)` is stored is ignored.
///
/// The engines add the built-in events ([`crate::events::builtin`]) of what
/// applied: a direct invocation's end, a job's end (by a move or a
/// cancellation), a function's new version.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    pub functions: Vec<FunctionChange>,
    /// Jobs created whole, with their tasks in `new` (a trigger's `--map`);
    /// a job whose id is stored already is skipped. Large jobs stream in
    /// through `StateStore::create_job` instead.
    pub new_jobs: Vec<Job>,
    pub new: Vec<NewInvocation>,
    pub starts: Vec<AttemptStart>,
    pub ends: Vec<AttemptEnd>,
    pub jobs: Vec<JobMove>,
    pub cancels: Vec<JobCancel>,
    /// Changes to projects and tokens, after the rest.
    pub trust: Vec<TrustChange>,
    /// What the audit trail records of this commit, written with it.
    pub audit: Vec<AuditEntry>,
    /// Payloads dropped.
    pub purges: Vec<Purge>,
    /// Events published (their `seq` is assigned by the store).
    pub events: Vec<Event>,
    /// Changes to triggers, their contexts, the event processor's cursor
    /// (which, if it is not where the change says, refuses the whole
    /// commit) and firings; last.
    pub reactions: Vec<EventChange>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }

    pub fn insert(new: Vec<NewInvocation>) -> Self {
        ChangeSet { new, ..Default::default() }
    }

    pub fn start(starts: Vec<AttemptStart>) -> Self {
        ChangeSet { starts, ..Default::default() }
    }

    pub fn end(ends: Vec<AttemptEnd>) -> Self {
        ChangeSet { ends, ..Default::default() }
    }

    pub fn move_job(m: JobMove) -> Self {
        ChangeSet { jobs: vec![m], ..Default::default() }
    }

    /// Rows in all, for engines that size their fast paths by it.
    pub fn rows(&self) -> usize {
        self.functions.len()
            + self.new_jobs.len()
            + self.new.len()
            + self.starts.len()
            + self.ends.len()
            + self.jobs.len()
            + self.cancels.len()
            + self.trust.len()
            + self.audit.len()
            + self.purges.len()
            + self.events.len()
            + self.reactions.len()
    }

    pub fn function(change: FunctionChange) -> Self {
        ChangeSet { functions: vec![change], ..Default::default() }
    }

    pub fn cancel(id: Id, at: Millis) -> Self {
        ChangeSet { cancels: vec![JobCancel { id, at }], ..Default::default() }
    }

    /// The starts that can apply: the first of each invocation.
    pub fn first_starts(&self) -> Vec<&AttemptStart> {
        let mut seen = std::collections::HashSet::with_capacity(self.starts.len());
        self.starts.iter().filter(|s| seen.insert(s.id)).collect()
    }
}

/// What a commit did.
#[derive(Debug, Clone, Default)]
pub struct CommitReport {
    /// Per end, in order: applied, or ignored as a duplicate / late report.
    pub applied: Vec<bool>,
    /// The jobs whose counters the ends moved, as they are after the commit.
    pub jobs: Vec<Job>,
    /// Per job move, in order: whether it applied.
    pub moved: Vec<bool>,
    /// Per function change, in order.
    pub functions: Vec<FunctionOutcome>,
    /// Per cancellation, in order: how many queued tasks it cancelled.
    pub cancelled: Vec<u64>,
    /// Per change to projects and tokens, in order: whether it applied.
    pub trust: Vec<bool>,
    /// Per purge, in order: how many invocations it emptied.
    pub purged: Vec<u64>,
    /// Per event published, in order: stored, or ignored as a duplicate.
    pub events: Vec<bool>,
    /// Per change to triggers, in order: whether it applied.
    pub reactions: Vec<bool>,
    /// Events stored in all, built-in ones included.
    pub stored_events: u64,
    /// The highest number of the events stored, on an engine that numbers
    /// them as it stores them (else 0).
    pub last_seq: u64,
}

/// The error a cancelled task records.
pub fn cancelled_task() -> Failure {
    Failure::new(FailureKind::Cancelled, "the job was cancelled")
}

/// A failure as the engines store it.
pub fn failure_json(f: &Failure) -> String {
    serde_json::to_string(f).expect("failure serialises")
}

/// A call's concurrency tags as the engines store them: none is NULL.
pub fn tags_text(tags: &[String]) -> Option<String> {
    (!tags.is_empty()).then(|| crate::names::join_tags(tags))
}

/// A partition as the engines store it.
pub fn partition_json(p: Option<&Partition>) -> Option<String> {
    p.map(|p| serde_json::to_string(p).expect("partition serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(outcome: EndOutcome) -> AttemptEnd {
        AttemptEnd { id: crate::new_id(), attempt: 2, worker: "w".into(), started_at: 5, finished_at: 9, outcome }
    }

    #[test]
    fn a_finish_writes_its_state_on_both_rows_and_counts_once() {
        let ok = end(EndOutcome::Finish {
            state: InvocationState::Succeeded,
            output: Some(b"o".to_vec()),
            error: None,
            logs: b"l".to_vec(),
        });
        let row = ok.row();
        assert_eq!(
            (row.state, row.attempt_state, row.count),
            (InvocationState::Succeeded, InvocationState::Succeeded, JobCount::Succeeded)
        );
        assert_eq!((row.output, row.error, row.finished_at, row.not_before), (Some(&b"o"[..]), None, Some(9), None));
        for (state, count) in [
            (InvocationState::Failed, JobCount::Failed),
            (InvocationState::TimedOut, JobCount::Failed),
            (InvocationState::Cancelled, JobCount::Cancelled),
        ] {
            let e = end(EndOutcome::Finish { state, output: None, error: None, logs: vec![] });
            assert_eq!(e.row().count, count, "{state:?}");
        }
    }

    #[test]
    fn a_retry_requeues_without_counting_and_keeps_the_attempts_failure() {
        let timeout = end(EndOutcome::Requeue {
            not_before: 50,
            error: Failure::new(FailureKind::Timeout, "slow"),
            logs: vec![],
        });
        let row = timeout.row();
        assert_eq!(
            (row.state, row.attempt_state, row.count),
            (InvocationState::Queued, InvocationState::TimedOut, JobCount::None)
        );
        assert_eq!((row.not_before, row.finished_at), (Some(50), None));
        assert!(row.error.unwrap().contains("slow"));
        let exit =
            end(EndOutcome::Requeue { not_before: 1, error: Failure::new(FailureKind::Exit, "x"), logs: vec![] });
        assert_eq!(exit.row().attempt_state, InvocationState::Failed);
    }

    #[test]
    fn only_the_first_start_of_an_invocation_can_apply() {
        let id = crate::new_id();
        let s = |attempt| AttemptStart { id, attempt, worker: "w".into(), started_at: 1 };
        let set = ChangeSet::start(vec![s(1), s(7)]);
        assert_eq!(set.first_starts().iter().map(|s| s.attempt).collect::<Vec<_>>(), [1]);
        assert_eq!(set.rows(), 2);
        assert!(!set.is_empty() && ChangeSet::default().is_empty());
    }
}
