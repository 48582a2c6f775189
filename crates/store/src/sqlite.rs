//! SQLite engine (the embedded default): WAL journal, one writer thread that
//! runs writes on the write connection, and reader threads with their own
//! connections.
//!
//! Each trait call is one hop to a database thread, whatever the number of
//! rows: a batch of 1,000 completions is one closure running prepared
//! statements in one transaction, not 1,000 round trips. The exception is
//! the scheduler's small batches of attempt starts and ends
//! ([`StateStore::record`]): when the writer thread is idle, the caller
//! commits them itself (see `SqliteStore::idle_writer`).

use crate::{
    AttemptEnd, AttemptStart, EndOutcome, EndReport, Error, JobRows, JobUpdate, Lane, NewInvocation, Payloads,
    PendingInvocation, Result, SchemaVersion, StateStore, TaskResult,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use stratus_core::clock::Millis;
use stratus_core::{
    Attempt, Failure, FailureKind, Function, FunctionSpec, Id, Invocation, InvocationState, Job, JobState, Partition,
};

/// Numbered migrations; `PRAGMA user_version` records the last applied.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_jobs.sql")),
    (3, include_str!("../migrations/sqlite/0003_health.sql")),
];

type DbJob = Box<dyn FnOnce(&mut Connection) + Send>;

pub struct SqliteStore {
    writer: mpsc::Sender<DbJob>,
    readers: mpsc::Sender<DbJob>,
    schema: SchemaVersion,
    /// The write connection: the writer thread locks it for each job it
    /// runs; see [`SqliteStore::idle_writer`] for the other user.
    write_conn: Arc<Mutex<Connection>>,
    /// Jobs sent to the writer thread and not yet run.
    queued: Arc<AtomicUsize>,
    /// Whether a commit can run on the caller's thread: it writes the log
    /// without syncing it (`synchronous=normal` or `off`).
    commit_inline: bool,
    /// When the next commit may checkpoint, it is left to the writer thread.
    checkpoints: Arc<Checkpoints>,
}

/// The most rows, and payload bytes, a commit run on the caller's thread
/// may write: a few tens of microseconds of work, never a batch under load.
const INLINE_ROWS: usize = 16;
const INLINE_BYTES: usize = 256 << 10;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Db(e.to_string())
    }
}

fn open_conn(path: &PathBuf, synchronous: &str, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<SchemaVersion> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(Error::TooNew { found: current, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| Error::Migrate { version: *version, message: e.to_string() })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied state store migration");
    }
    Ok(SchemaVersion { found: current, now: known.max(current) })
}

fn spawn_thread(name: &str, mut conn: Connection, rx: Arc<Mutex<mpsc::Receiver<DbJob>>>) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let job = match rx.lock().unwrap().recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                job(&mut conn);
            }
        })
        .map_err(|e| Error::Db(e.to_string()))?;
    Ok(())
}

/// The writer thread: runs the write jobs, in the order they were sent.
fn spawn_writer(conn: Arc<Mutex<Connection>>, rx: mpsc::Receiver<DbJob>, queued: Arc<AtomicUsize>) -> Result<()> {
    std::thread::Builder::new()
        .name("stratus-sqlite-w".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut conn.lock().unwrap_or_else(|p| p.into_inner()));
                queued.fetch_sub(1, AcqRel);
            }
        })
        .map_err(|e| Error::Db(e.to_string()))?;
    Ok(())
}

/// WAL pages after which the log is copied back into the database, as
/// SQLite's own automatic checkpoint does.
const CHECKPOINT_PAGES: i32 = 1000;

const IDLE: u8 = 0;
const ASKED: u8 = 1;
const DONE: u8 = 2;

/// What the writer's commit hook and the checkpointer thread share.
struct Checkpoints {
    /// IDLE, ASKED (the thread is copying the log back) or DONE (the next
    /// commit finishes the checkpoint).
    state: AtomicU8,
    /// The log's length in pages after the last commit.
    pages: AtomicI32,
}

impl Checkpoints {
    /// Whether the next commit may checkpoint (and so sync both files).
    fn due(&self) -> bool {
        self.state.load(Acquire) == DONE || self.pages.load(Relaxed) >= 3 * CHECKPOINT_PAGES
    }
}

/// Moves most of the writer's checkpoint work to a thread of its own.
/// SQLite runs a checkpoint on the committing connection once the log
/// passes [`CHECKPOINT_PAGES`]: copying a thousand pages back and syncing
/// both files stalled the writer for milliseconds, every few hundred
/// commits, and with it every caller waiting for a commit; about half of a
/// small commit's cost on average. Here the writer's commit hook (which
/// replaces the automatic checkpoint) asks the checkpointer thread, which
/// copies the log back with passive checkpoints (they never block the
/// writer or the readers). Once it is done, the writer's next commit makes
/// one more passive checkpoint of what came in meanwhile, a few pages: the
/// log can start over only after a checkpoint that left nothing behind,
/// which the other thread cannot count on while commits keep coming. Past
/// four times the mark (a reader held on to an old snapshot, say) the
/// writer checkpoints after every commit, as SQLite would. The thread ends
/// with the writer's connection (its hook owns the sender); it opens its
/// own at the first request (an idle server has no use for it).
fn spawn_checkpointer(writer: &mut Connection, path: PathBuf, synchronous: String) -> Result<Arc<Checkpoints>> {
    let shared = Arc::new(Checkpoints { state: AtomicU8::new(IDLE), pages: AtomicI32::new(0) });
    let state = shared.clone();
    let (ask, asked) = mpsc::sync_channel::<()>(1);
    let hook = shared.clone();
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
        hook.pages.store(pages, Relaxed);
        let hook_state = &hook.state;
        if pages < CHECKPOINT_PAGES {
            return Ok(());
        }
        let finish = pages >= 4 * CHECKPOINT_PAGES || hook_state.compare_exchange(DONE, IDLE, AcqRel, Relaxed).is_ok();
        if finish {
            match wal.checkpoint() {
                // The checkpointer is at it: the next commit tries again.
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
                Ok(()) => {}
            }
        } else if hook_state.compare_exchange(IDLE, ASKED, AcqRel, Relaxed).is_ok() {
            let _ = ask.try_send(());
        }
        Ok(())
    }))?;
    std::thread::Builder::new()
        .name("stratus-sqlite-c".into())
        .spawn(move || {
            let mut checkpointer = None;
            let mut warned = false;
            while asked.recv().is_ok() {
                if checkpointer.is_none() {
                    match open_conn(&path, &synchronous, false) {
                        Ok(c) => checkpointer = Some(c),
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(error = %e, "cannot open the SQLite checkpointer; the writer will checkpoint");
                        }
                        Err(_) => {}
                    }
                }
                if let Some(checkpointer) = &checkpointer {
                    // Each pass copies what was committed during the one before.
                    for _ in 0..4 {
                        let pass = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                        });
                        match pass {
                            Ok((log, copied)) if log > copied + i64::from(CHECKPOINT_PAGES / 10) => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "SQLite checkpoint failed; the writer will make one");
                                break;
                            }
                        }
                    }
                }
                // The writer finishes (or, without a connection here, does it all).
                state.state.store(DONE, Release);
            }
        })
        .map_err(|e| Error::Db(e.to_string()))?;
    Ok(shared)
}

impl SqliteStore {
    /// Opens (creating if needed) `sqlite://PATH[?synchronous=normal|full]` and
    /// applies pending migrations.
    ///
    /// The default, WAL with `synchronous=normal`, makes every commit durable
    /// against a crash of the process (kill -9); `synchronous=full` also
    /// against a crash of the machine, at about 10× the cost per commit.
    pub async fn open(url: &str) -> Result<Self> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .ok_or_else(|| Error::UnsupportedUrl(url.to_string()))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() {
            return Err(Error::UnsupportedUrl(url.to_string()));
        }
        let mut sync = "normal".to_string();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("synchronous", v)) if ["off", "normal", "full", "extra"].contains(&v) => sync = v.to_string(),
                _ => return Err(Error::UnsupportedUrl(url.to_string())),
            }
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Db(format!("{}: {e}", dir.display())))?;
        }
        let (p, s) = (path.clone(), sync.clone());
        let (mut writer_conn, schema) = tokio::task::spawn_blocking(move || -> Result<(Connection, SchemaVersion)> {
            let mut c = open_conn(&p, &s, false)?;
            let schema = migrate(&mut c)?;
            Ok((c, schema))
        })
        .await
        .map_err(|e| Error::Db(e.to_string()))??;
        let checkpoints = spawn_checkpointer(&mut writer_conn, path.clone(), sync.clone())?;
        let (wtx, wrx) = mpsc::channel::<DbJob>();
        let write_conn = Arc::new(Mutex::new(writer_conn));
        let queued = Arc::new(AtomicUsize::new(0));
        spawn_writer(write_conn.clone(), wrx, queued.clone())?;
        let (rtx, rrx) = mpsc::channel::<DbJob>();
        let rrx = Arc::new(Mutex::new(rrx));
        for i in 0..2 {
            spawn_thread(&format!("stratus-sqlite-r{i}"), open_conn(&path, &sync, true)?, rrx.clone())?;
        }
        let commit_inline = sync == "normal" || sync == "off";
        Ok(SqliteStore { writer: wtx, readers: rtx, schema, write_conn, queued, commit_inline, checkpoints })
    }

    /// The write connection, for a small write to run on the caller's
    /// thread, when nothing is queued for the writer thread (so the write
    /// overtakes none) and the thread is not running a job. That spares the
    /// two hand-offs between threads that a queued job costs (the writer
    /// thread woken, then the caller; on this 2-core VM the woken thread
    /// often preempted the caller mid-way): 50–100 µs off a sync invocation
    /// (docs/benchmarks.md). A write that is large, or that would sync the
    /// disk (`synchronous=full`, or a commit that may have to finish a
    /// checkpoint), is always queued, so the caller (a runtime worker) is
    /// held for tens of microseconds at most.
    fn idle_writer(
        &self,
        new: &[NewInvocation],
        starts: &[AttemptStart],
        ends: &[AttemptEnd],
    ) -> Option<MutexGuard<'_, Connection>> {
        let rows = new.len() + starts.len() + ends.len();
        let bytes = new.iter().map(|n| n.input.len()).sum::<usize>()
            + ends
                .iter()
                .map(|e| match &e.outcome {
                    EndOutcome::Finish { output, logs, .. } => output.as_ref().map_or(0, Vec::len) + logs.len(),
                    EndOutcome::Requeue { logs, .. } => logs.len(),
                })
                .sum::<usize>();
        if !self.commit_inline
            || rows > INLINE_ROWS
            || bytes > INLINE_BYTES
            || self.queued.load(Acquire) > 0
            || self.checkpoints.due()
        {
            return None;
        }
        self.write_conn.try_lock().ok()
    }

    async fn call<R: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        self.queue(write, f)?.await
    }

    /// Hands `f` to a database thread; the returned future gives its result.
    /// Writes run one after another on the one writer thread, in the order
    /// they were queued.
    fn queue<R: Send + 'static>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<impl Future<Output = Result<R>> + Send + 'static> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: DbJob = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        if write {
            self.queued.fetch_add(1, AcqRel);
        }
        let chan = if write { &self.writer } else { &self.readers };
        chan.send(job).map_err(|_| Error::Db("database thread stopped".into()))?;
        Ok(async move { rx.await.map_err(|_| Error::Db("database thread stopped".into()))? })
    }
}

fn id_bytes(id: Id) -> [u8; 16] {
    id.to_bytes()
}

fn id_from(bytes: Vec<u8>) -> rusqlite::Result<Id> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "id is not 16 bytes".into())
    })?;
    Ok(Id::from_bytes(arr))
}

fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> rusqlite::Error + '_ {
    move |e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{what}: {e}").into())
}

fn failure_json(f: &Failure) -> String {
    serde_json::to_string(f).expect("Failure serialises")
}

fn failure_from(s: Option<String>) -> rusqlite::Result<Option<Failure>> {
    s.map(|s| serde_json::from_str(&s).map_err(corrupt("error record"))).transpose()
}

fn state_from(s: String) -> rusqlite::Result<InvocationState> {
    s.parse().map_err(corrupt("state"))
}

fn function_from(row: &Row) -> rusqlite::Result<Function> {
    let spec: String = row.get("spec")?;
    let spec: FunctionSpec = serde_json::from_str(&spec).map_err(corrupt("function spec"))?;
    Ok(Function {
        project: row.get("project")?,
        name: row.get("name")?,
        version: row.get("version")?,
        spec,
        created_at: row.get("created_at")?,
    })
}

const INVOCATION_COLUMNS: &str = "id, project, function, version, state, attempts, max_attempts, job_id, task_index, \
     queued_at, started_at, finished_at, worker, error";

fn invocation_from(row: &Row) -> rusqlite::Result<Invocation> {
    let job: Option<Vec<u8>> = row.get("job_id")?;
    Ok(Invocation {
        id: id_from(row.get("id")?)?,
        project: row.get("project")?,
        function: row.get("function")?,
        version: row.get("version")?,
        state: state_from(row.get("state")?)?,
        attempts: row.get("attempts")?,
        max_attempts: row.get("max_attempts")?,
        job_id: job.map(id_from).transpose()?,
        task_index: row.get::<_, Option<i64>>("task_index")?.map(|i| i as u64),
        queued_at: row.get("queued_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        worker: row.get("worker")?,
        error: failure_from(row.get("error")?)?,
    })
}

macro_rules! insert_invocation {
    ($verb:literal) => {
        concat!(
            $verb,
            " INTO invocations (id, project, function, version, state, attempts, max_attempts, job_id, \
             task_index, queued_at, not_before, input, partition) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12)"
        )
    };
}
const INSERT_INVOCATION: &str = insert_invocation!("INSERT");
/// [`INSERT_INVOCATION`] that skips an id stored already.
const INSERT_INVOCATION_ONCE: &str = insert_invocation!("INSERT OR IGNORE");

fn insert_rows(tx: &rusqlite::Transaction, rows: &[NewInvocation]) -> rusqlite::Result<()> {
    insert_rows_with(tx, INSERT_INVOCATION, rows)
}

fn insert_rows_with<'a>(
    tx: &rusqlite::Transaction,
    sql: &str,
    rows: impl IntoIterator<Item = &'a NewInvocation>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(sql)?;
    for n in rows {
        let i = &n.invocation;
        let partition = n.partition.as_ref().map(|p| serde_json::to_string(p).expect("partition serialises"));
        st.execute(params![
            id_bytes(i.id),
            i.project,
            i.function,
            i.version,
            i.state.as_str(),
            i.attempts,
            i.max_attempts,
            i.job_id.map(id_bytes),
            i.task_index.map(|x| x as i64),
            i.queued_at,
            n.input,
            partition,
        ])?;
    }
    Ok(())
}

fn partition_from(s: Option<String>) -> rusqlite::Result<Option<Partition>> {
    s.map(|s| serde_json::from_str(&s).map_err(corrupt("partition"))).transpose()
}

const JOB_COLUMNS: &str = "id, project, function, version, reduce_function, reduce_version, state, total, succeeded, \
     failed, cancelled, created_at, finished_at, reduce_invocation, error";

fn job_from(r: &Row) -> rusqlite::Result<Job> {
    let state: String = r.get("state")?;
    let reduce_inv: Option<Vec<u8>> = r.get("reduce_invocation")?;
    Ok(Job {
        id: id_from(r.get("id")?)?,
        project: r.get("project")?,
        function: r.get("function")?,
        version: r.get("version")?,
        reduce_function: r.get("reduce_function")?,
        reduce_version: r.get("reduce_version")?,
        state: state.parse().map_err(corrupt("job state"))?,
        total: r.get::<_, i64>("total")? as u64,
        succeeded: r.get::<_, i64>("succeeded")? as u64,
        failed: r.get::<_, i64>("failed")? as u64,
        cancelled: r.get::<_, i64>("cancelled")? as u64,
        created_at: r.get("created_at")?,
        finished_at: r.get("finished_at")?,
        reduce_invocation: reduce_inv.map(id_from).transpose()?,
        error: r.get("error")?,
    })
}

fn read_job(c: &Connection, id: [u8; 16]) -> rusqlite::Result<Option<Job>> {
    c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![id], job_from)
        .optional()
}

fn start_rows<'a>(
    tx: &rusqlite::Transaction,
    starts: impl IntoIterator<Item = &'a AttemptStart>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE invocations SET state = 'running', attempts = ?1, started_at = ?2, worker = ?3 \
         WHERE id = ?4 AND state = 'queued'",
    )?;
    for s in starts {
        st.execute(params![s.attempt, s.started_at, s.worker, id_bytes(s.id)])?;
    }
    Ok(())
}

const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts \
     (invocation_id, attempt, worker, started_at, finished_at, state, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Writes each new invocation that one of `ends` finishes (a sync
/// invocation that ran to its end while its row was held back) as one row
/// in its final state, with its attempt: the row goes in once, instead of
/// inserted queued and then updated by the guarded end (which also added,
/// then removed, an entry of a partial index). Only where that is what the
/// usual path would write: a queued row outside any job, the end's attempt
/// after those it made, no start of another attempt in the batch. Returns,
/// for each of `ends`, whether it was so written; the others (rows stored
/// already, retries, tasks of jobs, whose counters `end_rows` keeps) take
/// the usual path.
fn insert_finished(
    tx: &rusqlite::Transaction,
    new: &[NewInvocation],
    starts: &[AttemptStart],
    ends: &[AttemptEnd],
) -> Result<Vec<bool>> {
    let mut written = vec![false; ends.len()];
    if ends.is_empty() || new.is_empty() {
        return Ok(written);
    }
    let mut first_end: HashMap<Id, usize> = HashMap::with_capacity(ends.len());
    for (k, e) in ends.iter().enumerate() {
        first_end.entry(e.id).or_insert(k);
    }
    let started: HashMap<Id, u32> = starts.iter().map(|s| (s.id, s.attempt)).collect();
    for n in new {
        let i = &n.invocation;
        let Some(&k) = first_end.get(&i.id) else { continue };
        let e = &ends[k];
        let EndOutcome::Finish { state, output, error, logs } = &e.outcome else { continue };
        if i.state != InvocationState::Queued
            || i.job_id.is_some()
            || i.task_index.is_some()
            || i.attempts >= e.attempt
            || started.get(&i.id).is_some_and(|&a| a != e.attempt)
        {
            continue;
        }
        let error = error.as_ref().map(failure_json);
        let partition = n.partition.as_ref().map(|p| serde_json::to_string(p).expect("partition serialises"));
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO invocations (id, project, function, version, state, attempts, max_attempts, \
                 queued_at, not_before, input, partition, output, error, logs, worker, started_at, finished_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?
            .execute(params![
                id_bytes(i.id),
                i.project,
                i.function,
                i.version,
                state.as_str(),
                e.attempt,
                i.max_attempts,
                i.queued_at,
                n.input,
                partition,
                output,
                error,
                logs,
                e.worker,
                e.started_at,
                e.finished_at,
            ])?;
        if inserted == 1 {
            tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
                id_bytes(i.id),
                e.attempt,
                e.worker,
                e.started_at,
                e.finished_at,
                state.as_str(),
                error
            ])?;
            written[k] = true;
        }
    }
    Ok(written)
}

/// The body of [`StateStore::record`], in one transaction.
fn record_rows(
    c: &mut Connection,
    new: &[NewInvocation],
    starts: &[AttemptStart],
    ends: &[AttemptEnd],
) -> Result<EndReport> {
    let tx = c.transaction()?;
    let finished = insert_finished(&tx, new, starts, ends)?;
    let ids: HashSet<Id> = ends.iter().zip(&finished).filter(|(_, f)| **f).map(|(e, _)| e.id).collect();
    insert_rows_with(&tx, INSERT_INVOCATION_ONCE, new.iter().filter(|n| !ids.contains(&n.invocation.id)))?;
    start_rows(&tx, starts.iter().filter(|s| !ids.contains(&s.id)))?;
    let mut report = end_rows(&tx, ends.iter().zip(&finished).filter(|(_, f)| !**f).map(|(e, _)| e))?;
    tx.commit()?;
    if !ids.is_empty() {
        let mut others = report.applied.into_iter();
        report.applied = finished.iter().map(|&f| f || others.next().unwrap_or(false)).collect();
    }
    Ok(report)
}

/// Applies attempt ends within `tx`; see [`StateStore::end_attempts`].
fn end_rows<'a>(tx: &rusqlite::Transaction, ends: impl IntoIterator<Item = &'a AttemptEnd>) -> Result<EndReport> {
    let mut applied = Vec::new();
    // Per job: (succeeded, failed, cancelled) added by this batch.
    let mut touched: Vec<([u8; 16], (i64, i64, i64))> = Vec::new();
    {
        // The guard: still on this attempt (or queued for it, when the
        // start was never recorded) and not finished.
        let mut update = tx.prepare_cached(
            "UPDATE invocations SET state = ?1, attempts = ?2, output = ?3, error = ?4, logs = ?5, worker = ?6, \
             started_at = ?7, finished_at = ?8, not_before = COALESCE(?9, not_before) \
             WHERE id = ?10 AND ((state = 'running' AND attempts = ?2) OR (state = 'queued' AND attempts < ?2)) \
             RETURNING job_id, task_index",
        )?;
        let mut attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
        for e in ends {
            let id = id_bytes(e.id);
            let (state, output, error, logs, not_before) = match &e.outcome {
                EndOutcome::Finish { state, output, error, logs } => {
                    (*state, output.as_deref(), error.as_ref(), logs, None)
                }
                EndOutcome::Requeue { not_before, error, logs } => {
                    (InvocationState::Queued, None, Some(error), logs, Some(*not_before))
                }
            };
            let err_json = error.map(failure_json);
            let finished_at = not_before.is_none().then_some(e.finished_at);
            let row: Option<(Option<Vec<u8>>, Option<i64>)> = update
                .query_row(
                    params![
                        state.as_str(),
                        e.attempt,
                        output,
                        err_json,
                        logs,
                        e.worker,
                        e.started_at,
                        finished_at,
                        not_before,
                        id
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((job, index)) = row else {
                applied.push(false);
                continue;
            };
            let attempt_state = match &e.outcome {
                EndOutcome::Finish { state, .. } => *state,
                EndOutcome::Requeue { error, .. } if error.kind == FailureKind::Timeout => InvocationState::TimedOut,
                EndOutcome::Requeue { .. } => InvocationState::Failed,
            };
            attempt.execute(params![
                id,
                e.attempt,
                e.worker,
                e.started_at,
                e.finished_at,
                attempt_state.as_str(),
                err_json
            ])?;
            if let (Some(job), Some(_), EndOutcome::Finish { state, .. }) = (job, index, &e.outcome) {
                let (ok, failed, cancelled) = match state {
                    InvocationState::Succeeded => (1, 0, 0),
                    InvocationState::Cancelled => (0, 0, 1),
                    _ => (0, 1, 0),
                };
                let job: [u8; 16] = job.try_into().map_err(|_| corrupt("job id")("length"))?;
                match touched.iter_mut().find(|(j, _)| *j == job) {
                    Some((_, c)) => {
                        c.0 += ok;
                        c.1 += failed;
                        c.2 += cancelled;
                    }
                    None => touched.push((job, (ok, failed, cancelled))),
                }
            }
            applied.push(true);
        }
    }
    {
        let mut count = tx.prepare_cached(
            "UPDATE jobs SET succeeded = succeeded + ?1, failed = failed + ?2, cancelled = cancelled + ?3 WHERE id = ?4",
        )?;
        for (job, (ok, failed, cancelled)) in &touched {
            count.execute(params![ok, failed, cancelled, job])?;
        }
    }
    let jobs = touched
        .into_iter()
        .map(|(j, _)| read_job(tx, j))
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(EndReport { applied, jobs })
}

#[async_trait]
impl StateStore for SqliteStore {
    fn schema(&self) -> SchemaVersion {
        self.schema
    }

    async fn put_function(&self, project: &str, name: &str, spec: &FunctionSpec, now: Millis) -> Result<Function> {
        let spec_json = serde_json::to_string(spec).expect("spec serialises");
        let (project, name, spec) = (project.to_string(), name.to_string(), spec.clone());
        self.call(true, move |c| {
            let tx = c.transaction()?;
            let max: Option<u32> = tx.query_row(
                "SELECT MAX(version) FROM functions WHERE project = ?1 AND name = ?2",
                params![project, name],
                |r| r.get(0),
            )?;
            let version = max.unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO functions (project, name, version, spec, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![project, name, version, spec_json, now],
            )?;
            tx.commit()?;
            Ok(Function { project, name, version, spec, created_at: now })
        })
        .await
    }

    async fn get_function(&self, project: &str, name: &str, version: Option<u32>) -> Result<Option<Function>> {
        let (project, name) = (project.to_string(), name.to_string());
        self.call(false, move |c| {
            let f = match version {
                Some(v) => c
                    .prepare_cached("SELECT * FROM functions WHERE project = ?1 AND name = ?2 AND version = ?3")?
                    .query_row(params![project, name, v], function_from)
                    .optional()?,
                None => c
                    .prepare_cached("SELECT * FROM functions WHERE project = ?1 AND name = ?2 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1")?
                    .query_row(params![project, name], function_from)
                    .optional()?,
            };
            Ok(f)
        })
        .await
    }

    async fn list_functions(&self, project: &str) -> Result<Vec<Function>> {
        let project = project.to_string();
        self.call(false, move |c| {
            let mut st = c.prepare_cached(
                "SELECT f.* FROM functions f WHERE f.project = ?1 AND f.deleted_at IS NULL AND f.version = \
                 (SELECT MAX(version) FROM functions g WHERE g.project = f.project AND g.name = f.name) ORDER BY f.name",
            )?;
            let rows = st.query_map(params![project], function_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn check_writable(&self, now: Millis) -> Result<()> {
        self.call(true, move |c| {
            c.execute(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET checked_at = ?1",
                params![now],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_function(&self, project: &str, name: &str, now: Millis) -> Result<bool> {
        let (project, name) = (project.to_string(), name.to_string());
        self.call(true, move |c| {
            let n = c.execute(
                "UPDATE functions SET deleted_at = ?1 WHERE project = ?2 AND name = ?3 AND deleted_at IS NULL",
                params![now, project, name],
            )?;
            Ok(n > 0)
        })
        .await
    }

    async fn insert_invocations(&self, new: &[NewInvocation]) -> Result<()> {
        self.insert_invocations_ordered(new.to_vec()).await?.await
    }

    async fn insert_invocations_ordered(&self, new: Vec<NewInvocation>) -> Result<crate::Committed> {
        let committed = self.queue(true, move |c| {
            let tx = c.transaction()?;
            insert_rows(&tx, &new)?;
            tx.commit()?;
            Ok(())
        })?;
        Ok(Box::pin(committed))
    }

    async fn get_invocation(&self, project: &str, id: Id) -> Result<Option<Invocation>> {
        let project = project.to_string();
        self.call(false, move |c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = ?1 AND project = ?2"
            ))?
            .query_row(params![id_bytes(id), project], invocation_from)
            .optional()?)
        })
        .await
    }

    async fn get_payloads(&self, project: &str, id: Id) -> Result<Option<Payloads>> {
        let project = project.to_string();
        self.call(false, move |c| {
            Ok(c.prepare_cached("SELECT output, logs FROM invocations WHERE id = ?1 AND project = ?2")?
                .query_row(params![id_bytes(id), project], |r| Ok(Payloads { output: r.get(0)?, logs: r.get(1)? }))
                .optional()?)
        })
        .await
    }

    async fn max_attempts(&self, ids: &[Id]) -> Result<Vec<(Id, u32)>> {
        let ids = ids.to_vec();
        self.call(false, move |c| {
            let mut st = c.prepare_cached("SELECT max_attempts FROM invocations WHERE id = ?1")?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(n) = st.query_row(params![id_bytes(id)], |r| r.get::<_, u32>(0)).optional()? {
                    out.push((id, n));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn list_attempts(&self, id: Id) -> Result<Vec<Attempt>> {
        self.call(false, move |c| {
            let mut st = c.prepare_cached("SELECT * FROM attempts WHERE invocation_id = ?1 ORDER BY attempt")?;
            let rows = st.query_map(params![id_bytes(id)], |r| {
                Ok(Attempt {
                    attempt: r.get("attempt")?,
                    worker: r.get("worker")?,
                    started_at: r.get("started_at")?,
                    finished_at: r.get("finished_at")?,
                    state: state_from(r.get("state")?)?,
                    error: failure_from(r.get("error")?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn list_invocations(
        &self,
        project: &str,
        function: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> Result<Vec<Invocation>> {
        let (project, function) = (project.to_string(), function.map(str::to_string));
        self.call(false, move |c| {
            let before = before.map(|b| id_bytes(b).to_vec()).unwrap_or_else(|| vec![0xff; 17]);
            let mut st = c.prepare_cached(&format!(
                "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE project = ?1 AND id < ?2 AND (?3 IS NULL OR function = ?3) \
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = st.query_map(params![project, before, function, limit], invocation_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn start_attempts(&self, starts: &[AttemptStart]) -> Result<()> {
        self.record(&[], starts, &[]).await.map(drop)
    }

    async fn end_attempts(&self, ends: &[AttemptEnd]) -> Result<EndReport> {
        self.record(&[], &[], ends).await
    }

    async fn record(&self, new: &[NewInvocation], starts: &[AttemptStart], ends: &[AttemptEnd]) -> Result<EndReport> {
        if let Some(mut c) = self.idle_writer(new, starts, ends) {
            return record_rows(&mut c, new, starts, ends);
        }
        let (new, starts, ends) = (new.to_vec(), starts.to_vec(), ends.to_vec());
        self.call(true, move |c| record_rows(c, &new, &starts, &ends)).await
    }

    async fn requeue_running(&self) -> Result<u64> {
        self.call(
            true,
            |c| Ok(c.execute("UPDATE invocations SET state = 'queued' WHERE state = 'running'", [])? as u64),
        )
        .await
    }

    async fn queued_in(&self, lane: Option<Lane>, after: Option<Id>, limit: u32) -> Result<Vec<PendingInvocation>> {
        self.call(true, move |c| {
            let after = after.map(|a| id_bytes(a).to_vec()).unwrap_or_default();
            let lane = match lane {
                None => "",
                Some(Lane::Direct) => "AND task_index IS NULL",
                Some(Lane::Tasks) => "AND task_index IS NOT NULL",
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT {INVOCATION_COLUMNS}, input, partition, not_before FROM invocations \
                 WHERE state = 'queued' {lane} AND id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, limit], |r| {
                Ok(PendingInvocation {
                    invocation: invocation_from(r)?,
                    input: r.get("input")?,
                    partition: partition_from(r.get("partition")?)?,
                    not_before: r.get("not_before")?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn active_jobs(&self) -> Result<Vec<Job>> {
        self.call(false, |c| {
            let mut st =
                c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('running', 'reducing')"))?;
            let rows = st.query_map([], job_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn count_by_state(&self) -> Result<Vec<(InvocationState, u64)>> {
        self.call(false, |c| {
            let mut st = c.prepare_cached("SELECT state, COUNT(*) FROM invocations GROUP BY state")?;
            let rows = st.query_map([], |r| Ok((state_from(r.get(0)?)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn create_job(&self, job: &Job, mut rows: tokio::sync::mpsc::Receiver<JobRows>) -> Result<Job> {
        let mut job = job.clone();
        self.call(true, move |c| {
            let tx = c.transaction()?;
            let mut total = 0u64;
            loop {
                match rows.blocking_recv() {
                    Some(JobRows::Rows(batch)) => {
                        total += batch.len() as u64;
                        insert_rows(&tx, &batch)?;
                    }
                    Some(JobRows::Commit) => break,
                    Some(JobRows::Abort(why)) => return Err(Error::Aborted(why)),
                    None => return Err(Error::Aborted("the request ended before the job was complete".into())),
                }
            }
            job.total = total;
            tx.execute(
                "INSERT INTO jobs (id, project, function, version, reduce_function, reduce_version, state, total, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![id_bytes(job.id), job.project, job.function, job.version, job.reduce_function, job.reduce_version, job.state.as_str(), total as i64, job.created_at],
            )?;
            tx.commit()?;
            Ok(job)
        })
        .await
    }

    async fn get_job(&self, project: &str, id: Id) -> Result<Option<Job>> {
        let project = project.to_string();
        self.call(false, move |c| Ok(read_job(c, id_bytes(id))?.filter(|j| j.project == project))).await
    }

    async fn list_jobs(&self, project: &str, before: Option<Id>, limit: u32) -> Result<Vec<Job>> {
        let project = project.to_string();
        self.call(false, move |c| {
            let before = before.map(|b| id_bytes(b).to_vec()).unwrap_or_else(|| vec![0xff; 17]);
            let mut st = c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE project = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![project, before, limit], job_from)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn set_job_state(&self, id: Id, from: &[JobState], to: JobState, update: JobUpdate) -> Result<bool> {
        let from: Vec<&'static str> = from.iter().map(|s| s.as_str()).collect();
        self.call(true, move |c| {
            let tx = c.transaction()?;
            let Some(job) = read_job(&tx, id_bytes(id))? else { return Ok(false) };
            if !from.contains(&job.state.as_str()) {
                return Ok(false);
            }
            if let Some(row) = &update.insert {
                insert_rows(&tx, std::slice::from_ref(row))?;
            }
            tx.execute(
                "UPDATE jobs SET state = ?1, finished_at = COALESCE(?2, finished_at), error = COALESCE(?3, error), \
                 reduce_invocation = COALESCE(?4, reduce_invocation) WHERE id = ?5",
                params![
                    to.as_str(),
                    update.finished_at,
                    update.error,
                    update.reduce_invocation.map(id_bytes),
                    id_bytes(id)
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn job_results(&self, job: Id, from: u64, limit: u32) -> Result<Vec<TaskResult>> {
        self.call(false, move |c| {
            let mut st = c.prepare_cached(
                "SELECT task_index, id, state, output, error FROM invocations WHERE job_id = ?1 AND task_index >= ?2 \
                 ORDER BY task_index LIMIT ?3",
            )?;
            let rows = st.query_map(params![id_bytes(job), from as i64, limit], |r| {
                Ok(TaskResult {
                    index: r.get::<_, i64>(0)? as u64,
                    invocation: id_from(r.get(1)?)?,
                    state: state_from(r.get(2)?)?,
                    output: r.get(3)?,
                    error: failure_from(r.get(4)?)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn cancel_job(&self, id: Id, now: Millis) -> Result<u64> {
        self.call(true, move |c| {
            let tx = c.transaction()?;
            let err = failure_json(&Failure::new(FailureKind::Cancelled, "the job was cancelled"));
            let n = tx.execute(
                "UPDATE invocations SET state = 'cancelled', finished_at = ?1, error = ?2 WHERE job_id = ?3 AND state = 'queued'",
                params![now, err, id_bytes(id)],
            )?;
            tx.execute(
                "UPDATE jobs SET cancelled = cancelled + ?1, state = CASE WHEN state IN ('running', 'reducing') THEN 'cancelled' ELSE state END, \
                 finished_at = COALESCE(finished_at, ?2) WHERE id = ?3",
                params![n as i64, now, id_bytes(id)],
            )?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn new_row(now: Millis) -> NewInvocation {
        NewInvocation {
            invocation: Invocation {
                id: stratus_core::new_id(),
                project: "p".into(),
                function: "f".into(),
                version: 1,
                state: InvocationState::Queued,
                attempts: 0,
                max_attempts: 1,
                job_id: None,
                task_index: None,
                queued_at: now,
                started_at: None,
                finished_at: None,
                worker: None,
                error: None,
            },
            input: Vec::new(),
            partition: None,
        }
    }

    /// A small record commits on the caller's thread when the writer is
    /// idle (it is done at its first poll), and waits its turn behind a
    /// write queued before it, which it never overtakes; a large one, or
    /// one that may checkpoint, is never run on the caller's thread.
    #[tokio::test]
    async fn a_small_record_runs_at_once_when_idle_and_never_overtakes_a_queued_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&format!("sqlite://{}/state.db", dir.path().display())).await.unwrap();
        let row = new_row(1);
        let id = row.invocation.id;
        // Too many rows (starts count too), or a commit that may have to
        // finish a checkpoint: the writer thread's job, never the caller's.
        let many: Vec<AttemptStart> = (0..=INLINE_ROWS)
            .map(|_| AttemptStart { id: stratus_core::new_id(), attempt: 1, worker: "w".into(), started_at: 3 })
            .collect();
        assert!(s.idle_writer(&[], &many, &[]).is_none(), "{} starts go to the writer thread", many.len());
        assert!(s.idle_writer(&[], &many[1..], &[]).is_some(), "{} do not", many.len() - 1);
        s.checkpoints.state.store(DONE, Release);
        assert!(s.idle_writer(&[], &many[1..], &[]).is_none(), "a checkpoint to finish goes to the writer thread");
        s.checkpoints.state.store(IDLE, Release);

        let mut cx = Context::from_waker(Waker::noop());
        let rows = [row];
        let first = pin!(s.record(&rows, &[], &[])).poll(&mut cx);
        assert!(matches!(first, Poll::Ready(Ok(_))), "written at once: {first:?}");

        let (release, released) = mpsc::channel::<()>();
        let earlier = s
            .queue(true, move |c| {
                released.recv().unwrap();
                c.execute("UPDATE invocations SET worker = 'earlier' WHERE id = ?1", params![id_bytes(id)])?;
                Ok(())
            })
            .unwrap();
        let start = [AttemptStart { id, attempt: 1, worker: "later".into(), started_at: 2 }];
        let mut later = pin!(s.record(&[], &start, &[]));
        assert!(later.as_mut().poll(&mut cx).is_pending(), "queued behind the earlier write");
        release.send(()).unwrap();
        earlier.await.unwrap();
        later.await.unwrap();
        let inv = s.get_invocation("p", id).await.unwrap().unwrap();
        assert_eq!((inv.state, inv.worker.as_deref()), (InvocationState::Running, Some("later")));
    }
}
