//! The state store: functions, invocations and their attempts.
//!
//! [`StateStore`] is the trait the scheduler and the API use; it speaks only
//! in `stratus-core` types. Each engine implements it — SQLite, the embedded
//! default, and PostgreSQL, for several servers sharing one database — and
//! every implementation passes the same conformance suite in `tests/`.
//!
//! Completions are idempotent: an attempt's end is recorded only while the
//! invocation is still on that attempt and not finished, so a duplicate or a
//! late report changes nothing.

mod events;
mod postgres;
mod sqlite;
mod trust;

pub use events::EventQuery;

use async_trait::async_trait;
use std::sync::Arc;
use stratus_core::clock::Millis;
pub use stratus_core::events::{Context, ContextKey, Event, EventChange, Firing, Trigger};
pub use stratus_core::trust::{AuditEntry, Project, Token, TrustChange};
use stratus_core::{
    Attempt, Failure, Function, FunctionSpec, Id, Invocation, InvocationState, Job, JobState, Partition,
};

/// What [`StateStore::end_attempts`] and [`StateStore::record`] report.
pub type EndReport = CommitReport;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine failed a statement or lost its connection. `transient`
    /// says the same call may succeed if made again (a deadlock, a
    /// serialisation failure, a connection that broke); the source is kept.
    #[error("database error: {message}")]
    Db {
        message: String,
        transient: bool,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("database migration {version} failed: {message}")]
    Migrate { version: u32, message: String },
    #[error("the database schema is version {found}, newer than this binary knows ({known}); upgrade stratus")]
    TooNew { found: u32, known: u32 },
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("unsupported state store URL '{0}': use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    UnsupportedUrl(String),
    #[error("invalid state store URL '{url}': {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("job creation aborted: {0}")]
    Aborted(String),
    /// A guard that refuses the whole commit did not hold; nothing was written.
    #[error("commit refused: {0}")]
    Refused(String),
}

impl Error {
    /// A database error with no source, not worth retrying as such.
    pub fn db(message: impl Into<String>) -> Self {
        Error::Db { message: message.into(), transient: false, source: None }
    }

    /// Whether making the same call again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Db { transient: true, .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use stratus_core::change::{
    AttemptEnd, AttemptStart, ChangeSet, CommitReport, EndOutcome, FunctionChange, FunctionOutcome, JobCancel, JobMove,
    JobUpdate, NewInvocation, Purge,
};

/// What [`StateStore::trust`] reads.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub projects: Vec<Project>,
    pub tokens: Vec<Token>,
}

/// The triggers, their contexts and the event processor's cursor, as
/// [`StateStore::triggers`] reads them.
#[derive(Debug, Clone, Default)]
pub struct TriggerState {
    pub triggers: Vec<Trigger>,
    pub contexts: Vec<(ContextKey, Context)>,
    pub cursor: u64,
}

/// What the producer of a job's tasks sends to [`StateStore::create_job`].
#[derive(Debug)]
pub enum JobRows {
    Rows(Vec<NewInvocation>),
    /// Roll back: nothing of the job is kept.
    Abort(String),
    /// Every row was sent: commit.
    Commit,
}

/// The result of one task of a job.
#[derive(Debug, Clone)]
pub struct TaskResult {
    pub index: u64,
    pub invocation: Id,
    pub state: InvocationState,
    pub output: Option<Vec<u8>>,
    pub error: Option<Failure>,
}

/// An invocation waiting to be run, as read back for dispatch.
#[derive(Debug, Clone)]
pub struct PendingInvocation {
    pub invocation: Invocation,
    pub input: Vec<u8>,
    pub partition: Option<Partition>,
    pub not_before: Millis,
}

/// Output and logs of an invocation.
#[derive(Debug, Clone, Default)]
pub struct Payloads {
    pub output: Option<Vec<u8>>,
    pub logs: Option<Vec<u8>>,
    /// When they were dropped (see [`stratus_core::change::Purge`]).
    pub purged_at: Option<Millis>,
}

/// The schema version a store found when it was opened, and the version it
/// upgraded it to (equal when nothing was pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    pub found: u32,
    pub now: u32,
}

#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// What opening the store did to its schema.
    fn schema(&self) -> SchemaVersion;

    /// Stores a new version of a function (version = previous highest + 1).
    async fn put_function(&self, project: &str, name: &str, spec: &FunctionSpec, now: Millis) -> Result<Function> {
        let change = FunctionChange::Put { project: project.into(), name: name.into(), spec: spec.clone(), at: now };
        match self.commit(ChangeSet::function(change)).await?.functions.pop() {
            Some(FunctionOutcome::Put(f)) => Ok(f),
            other => Err(Error::Corrupt(format!("a function's put reported {other:?}"))),
        }
    }
    /// The latest live version, or the given version even if deleted since
    /// (invocations keep running the version they were created for).
    async fn get_function(&self, project: &str, name: &str, version: Option<u32>) -> Result<Option<Function>>;
    /// The latest version of each live function, by name.
    async fn list_functions(&self, project: &str) -> Result<Vec<Function>>;
    /// Marks every version deleted; false if there was no live function.
    async fn delete_function(&self, project: &str, name: &str, now: Millis) -> Result<bool> {
        let change = FunctionChange::Delete { project: project.into(), name: name.into(), at: now };
        Ok(matches!(
            self.commit(ChangeSet::function(change)).await?.functions.pop(),
            Some(FunctionOutcome::Deleted(true))
        ))
    }
    /// Writes (and commits) one small row, to tell whether the store takes
    /// writes at all (`/healthz`).
    async fn check_writable(&self, now: Millis) -> Result<()>;

    /// Writes a change set in one transaction: its function versions, new
    /// invocations, attempt starts, attempt ends (with the counters of the
    /// jobs they belong to), job moves and job cancellations, each guarded
    /// as [`stratus_core::change`] says. Every change to functions,
    /// invocations, attempts and jobs goes through here or
    /// [`Self::commit_ordered`] — but a job's creation, whose rows stream
    /// in ([`Self::create_job`]), and the recovery at start
    /// ([`Self::requeue_running`]); the methods that write (`put_function`,
    /// `insert_invocations`, `record`, `cancel_job`, ...) are shorthands for
    /// change sets, and engines do not override them.
    async fn commit(&self, changes: ChangeSet) -> Result<CommitReport>;
    /// As [`Self::commit`], returning as soon as the transaction is ordered
    /// before every write made through this store after it, with a future
    /// that resolves once it is committed. A caller may then start the work
    /// while the commit is under way, and must not acknowledge it before
    /// the future says it is durable. Engines that cannot order their writes
    /// (several connections) commit first.
    async fn commit_ordered(&self, changes: ChangeSet) -> Result<Committed> {
        self.commit(changes).await?;
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    /// Inserts invocations in one transaction.
    async fn insert_invocations(&self, new: &[NewInvocation]) -> Result<()> {
        self.commit(ChangeSet::insert(new.to_vec())).await.map(drop)
    }
    /// Inserts invocations through [`Self::commit_ordered`].
    async fn insert_invocations_ordered(&self, new: Vec<NewInvocation>) -> Result<Committed> {
        self.commit_ordered(ChangeSet::insert(new)).await
    }
    async fn get_invocation(&self, project: &str, id: Id) -> Result<Option<Invocation>>;

    /// The live projects and the tokens not revoked (expired ones too), for
    /// the leading server to hold in memory: requests are checked there,
    /// without a query each.
    async fn trust(&self) -> Result<Trust>;
    /// Audit entries at or after `since`, oldest first, at most `limit`; of
    /// one project, or of all.
    async fn audit(&self, project: Option<&str>, since: Millis, limit: u32) -> Result<Vec<AuditEntry>>;
    /// A project's variables, by name.
    async fn variables(&self, project: &str) -> Result<Vec<stratus_core::settings::Variable>>;
    /// Secrets, sealed, with their projects: of one project, or of all.
    async fn secrets(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::StoredSecret)>>;
    /// When a project's finished invocations keep more than `budget` bytes
    /// of payloads: the time before which to empty them (the newest that
    /// fit are kept), or `None` when they fit.
    async fn payload_cutoff(&self, project: &str, budget: u64) -> Result<Option<Millis>>;
    /// The artifacts (sha256 digests) that live functions use, or that a
    /// queued or running invocation's function version uses: what must not
    /// be collected.
    async fn artifacts_in_use(&self) -> Result<std::collections::HashSet<String>>;
    /// Concurrency limits with their projects: of one project, or of all.
    async fn limits(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::TagLimit)>>;
    /// Python environments: of `project`, or of every project, by project and name.
    async fn pyenvs(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::pyenv::PyEnv)>>;
    async fn get_payloads(&self, project: &str, id: Id) -> Result<Option<Payloads>>;
    /// The first `max` bytes of an invocation's input and its whole length
    /// (a preview: inputs can be large), or none when it does not exist.
    async fn input_preview(&self, project: &str, id: Id, max: u32) -> Result<Option<(Vec<u8>, u64)>>;
    async fn list_attempts(&self, id: Id) -> Result<Vec<Attempt>>;
    /// How many attempts each of these invocations may make, for those that
    /// exist, in any project (for ends reported to a server that does not
    /// hold the invocation in memory, after a restart say).
    async fn max_attempts(&self, ids: &[Id]) -> Result<Vec<(Id, u32)>>;
    /// Newest first, at most `limit`, older than `before` when given.
    async fn list_invocations(
        &self,
        project: &str,
        function: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> Result<Vec<Invocation>>;

    /// Events numbered after `q.after`, oldest first. Only events with a
    /// number are read: on an engine that numbers them after their commit
    /// ([`Self::sequence_events`]), the others are not yet in the stream.
    async fn events(&self, q: &EventQuery) -> Result<Vec<Event>>;
    /// Numbers the events committed since the last call, in commit order,
    /// and returns the highest number given so far. Engines that number
    /// events as they insert them (SQLite, one writer) only return it.
    async fn sequence_events(&self) -> Result<u64>;
    /// Changes each time a commit through this store stores events; the
    /// server's event processor waits on it. Its value is the engine's
    /// (SQLite: the highest event number committed; PostgreSQL: a count).
    /// Read the events with [`Self::events`].
    fn event_commits(&self) -> tokio::sync::watch::Receiver<u64>;
    /// Every trigger, every context and the event processor's cursor.
    async fn triggers(&self) -> Result<TriggerState>;
    /// The newest firings of a trigger, at most `limit`.
    async fn firings(&self, project: &str, trigger: &str, limit: u32) -> Result<Vec<Firing>>;
    /// The firings that started these invocations.
    async fn firings_of(&self, invocations: &[Id]) -> Result<Vec<Firing>>;

    /// Records attempts as started; each applies only to a queued invocation.
    async fn start_attempts(&self, starts: &[AttemptStart]) -> Result<()> {
        self.commit(ChangeSet::start(starts.to_vec())).await.map(drop)
    }
    /// Records attempt ends in one transaction, with the counters of the jobs
    /// they belong to; says which ends applied (not duplicates or late).
    async fn end_attempts(&self, ends: &[AttemptEnd]) -> Result<EndReport> {
        self.commit(ChangeSet::end(ends.to_vec())).await
    }
    /// New invocations, attempt starts and attempt ends in one commit.
    async fn record(&self, new: &[NewInvocation], starts: &[AttemptStart], ends: &[AttemptEnd]) -> Result<EndReport> {
        let changes =
            ChangeSet { new: new.to_vec(), starts: starts.to_vec(), ends: ends.to_vec(), ..Default::default() };
        self.commit(changes).await
    }

    /// Leadership among servers sharing this store: one server at a time
    /// drives the queue. Makes `seat` the leader when no server holds the
    /// lease, when its holder has not renewed it for `lease` (by the
    /// store's clock), when `seat` holds it already (a renewal), or, with
    /// `restarted`, when an earlier start of the same server holds it.
    /// Returns `None` when `seat` leads, else who does. An engine that only
    /// one server can use (SQLite) always answers `None`.
    async fn lead(&self, seat: &Seat, lease: std::time::Duration, restarted: bool) -> Result<Option<Seat>> {
        let _ = (seat, lease, restarted);
        Ok(None)
    }
    /// Gives the lease up (at a clean stop), so another server takes over at once.
    async fn resign(&self, seat: &Seat) -> Result<()> {
        let _ = seat;
        Ok(())
    }

    /// After a restart: running invocations go back to the queue. Returns how many.
    async fn requeue_running(&self) -> Result<u64>;
    /// Queued invocations in id order, after `after`, at most `limit`; of
    /// one lane when `lane` is given, of one project when `project` is.
    async fn queued(&self, after: Option<Id>, limit: u32) -> Result<Vec<PendingInvocation>> {
        self.queued_in(None, None, after, limit).await
    }
    async fn queued_in(
        &self,
        lane: Option<Lane>,
        project: Option<&str>,
        after: Option<Id>,
        limit: u32,
    ) -> Result<Vec<PendingInvocation>>;
    /// The projects that have queued invocations in `lane`.
    async fn queued_projects(&self, lane: Lane) -> Result<Vec<String>>;
    /// Jobs that are running or reducing.
    async fn active_jobs(&self) -> Result<Vec<Job>>;
    /// Number of invocations per state.
    async fn count_by_state(&self) -> Result<Vec<(InvocationState, u64)>>;

    /// Creates a job and its tasks in one transaction, from rows streamed by
    /// the caller; `total` is counted from the rows. Nothing is kept unless
    /// [`JobRows::Commit`] arrives.
    async fn create_job(&self, job: &Job, rows: tokio::sync::mpsc::Receiver<JobRows>) -> Result<Job>;
    async fn get_job(&self, project: &str, id: Id) -> Result<Option<Job>>;
    async fn list_jobs(&self, project: &str, before: Option<Id>, limit: u32) -> Result<Vec<Job>>;
    /// Moves a job from one of `from` to `to`; false if it was in none of them.
    async fn set_job_state(&self, id: Id, from: &[JobState], to: JobState, update: JobUpdate) -> Result<bool> {
        let changes = ChangeSet::move_job(JobMove { id, from: from.to_vec(), to, update });
        Ok(self.commit(changes).await?.moved.first().copied().unwrap_or(false))
    }
    /// When each of a job's map tasks was queued, started and finished, in
    /// input order, from index `from`.
    async fn job_timings(&self, job: Id, from: u64, limit: u32) -> Result<Vec<stratus_core::api::TaskTiming>>;
    /// Results of a job's map tasks in input order, from index `from`.
    async fn job_results(&self, job: Id, from: u64, limit: u32) -> Result<Vec<TaskResult>>;
    /// Cancels a job's queued tasks (and the job); returns how many tasks.
    async fn cancel_job(&self, id: Id, now: Millis) -> Result<u64> {
        Ok(self.commit(ChangeSet::cancel(id, now)).await?.cancelled.pop().unwrap_or(0))
    }
}

/// A server among several on one store: which server (an id kept with its
/// data), its URL as the others reach it, and which start of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub server: Id,
    pub url: String,
    pub incarnation: Id,
}

/// Resolves once an ordered write is committed; see
/// [`StateStore::insert_invocations_ordered`].
pub type Committed = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// The two queues the scheduler pages separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Invocations made one by one, and reducers.
    Direct,
    /// Map tasks of jobs.
    Tasks,
}

/// Opens the state store named by `url`: `sqlite://PATH` (see
/// [`SqliteStore::open`]) or `postgres://USER@HOST/DATABASE` (also
/// `postgresql://`; see [`PostgresStore`] for its parameters).
pub async fn open(url: &str) -> Result<Arc<dyn StateStore>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?))
    } else {
        Err(Error::UnsupportedUrl(stratus_core::url::redact(url)))
    }
}
