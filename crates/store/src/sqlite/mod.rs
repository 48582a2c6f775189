//! SQLite engine (the embedded default): WAL journal, one writer thread that
//! runs writes on the write connection, and reader threads with their own
//! connections.
//!
//! Each trait call is one hop to a database thread, whatever the number of
//! rows: a batch of 1,000 completions is one closure running prepared
//! statements in one transaction, not 1,000 round trips. The exception is
//! the scheduler's small batches of attempt starts and ends
//! ([`StateStore::commit`]): when the writer thread is idle, the caller
//! commits them itself (see `SqliteStore::idle_writer`).

use crate::{
    AttemptEnd, AttemptStart, ChangeSet, CommitReport, EndOutcome, Error, FunctionChange, FunctionOutcome, JobCancel,
    JobMove, JobRows, Lane, NewInvocation, Payloads, PendingInvocation, Result, SchemaVersion, StateStore, TaskResult,
};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use stratus_core::change::{failure_json, partition_json, tags_text};
use stratus_core::clock::Millis;
use stratus_core::events::{Event, EventChange, Firing, Trigger};
use stratus_core::trust::{AuditEntry, Project, Token, TrustChange};
use stratus_core::{Attempt, Failure, Function, FunctionSpec, Id, Invocation, InvocationState, Job, Partition};

mod rows;
mod threads;
use rows::*;
use threads::*;

/// Numbered migrations; `PRAGMA user_version` records the last applied.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_jobs.sql")),
    (3, include_str!("../../migrations/sqlite/0003_health.sql")),
    (4, include_str!("../../migrations/sqlite/0004_trust.sql")),
    (5, include_str!("../../migrations/sqlite/0005_events.sql")),
    (6, include_str!("../../migrations/sqlite/0006_settings.sql")),
    (7, include_str!("../../migrations/sqlite/0007_limits.sql")),
    (8, include_str!("../../migrations/sqlite/0008_queue_by_project.sql")),
    (9, include_str!("../../migrations/sqlite/0009_pyenvs.sql")),
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
    /// The highest event number committed, sent after each commit that
    /// stored events.
    event_commits: Arc<tokio::sync::watch::Sender<u64>>,
}

/// The most rows, and payload bytes, a commit run on the caller's thread
/// may write: a few tens of microseconds of work, never a batch under load.
const INLINE_ROWS: usize = 16;
const INLINE_BYTES: usize = 256 << 10;

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
            std::fs::create_dir_all(dir).map_err(|e| os_error(dir.display().to_string(), e))?;
        }
        let (p, s) = (path.clone(), sync.clone());
        let (mut writer_conn, schema) = tokio::task::spawn_blocking(move || -> Result<(Connection, SchemaVersion)> {
            let mut c = open_conn(&p, &s, false)?;
            let schema = migrate(&mut c)?;
            Ok((c, schema))
        })
        .await
        .map_err(|e| os_error("opening the database".into(), e))??;
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
        let last_seq = {
            let c = write_conn.lock().unwrap();
            let max: Option<i64> = c.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
            max.unwrap_or(0) as u64
        };
        let event_commits = Arc::new(tokio::sync::watch::Sender::new(last_seq));
        Ok(SqliteStore {
            writer: wtx,
            readers: rtx,
            schema,
            write_conn,
            queued,
            commit_inline,
            checkpoints,
            event_commits,
        })
    }

    /// The write connection, for a small write to run on the caller's
    /// thread, when nothing is queued for the writer thread (so the write
    /// overtakes none) and the thread is not running a job. That spares the
    /// two hand-offs between threads that a queued job costs (the writer
    /// thread woken, then the caller, which the woken thread may preempt
    /// on a machine of few cores; the saving is in docs/benchmarks.md). A
    /// write that is large, or that would sync the
    /// disk (`synchronous=full`, or a commit that may have to finish a
    /// checkpoint), is always queued, so the caller (a runtime worker) is
    /// held for tens of microseconds at most.
    fn idle_writer(&self, changes: &ChangeSet) -> Option<MutexGuard<'_, Connection>> {
        let rows = changes.rows();
        let bytes = changes.new.iter().map(|n| n.input.len()).sum::<usize>()
            + changes
                .ends
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
        chan.send(job).map_err(|_| Error::db("database thread stopped"))?;
        Ok(async move { rx.await.map_err(|_| Error::db("database thread stopped"))? })
    }
}

#[async_trait]
impl StateStore for SqliteStore {
    fn schema(&self) -> SchemaVersion {
        self.schema
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

    async fn commit(&self, changes: ChangeSet) -> Result<CommitReport> {
        if changes.is_empty() {
            return Ok(CommitReport::default());
        }
        let tell = self.event_commits.clone();
        if let Some(mut c) = self.idle_writer(&changes) {
            return commit_telling(&mut c, &changes, &tell);
        }
        self.call(true, move |c| commit_telling(c, &changes, &tell)).await
    }

    async fn commit_ordered(&self, changes: ChangeSet) -> Result<crate::Committed> {
        let tell = self.event_commits.clone();
        let committed = self.queue(true, move |c| commit_telling(c, &changes, &tell).map(drop))?;
        Ok(Box::pin(committed))
    }

    async fn events(&self, q: &crate::EventQuery) -> Result<Vec<Event>> {
        let q = q.clone();
        self.call(false, move |c| {
            let prefix = q.subject_prefix.filter(|p| !p.is_empty());
            let end = prefix.as_deref().map(crate::events::prefix_end);
            let rows = c
                .prepare_cached(crate::events::EVENTS)?
                .query_map(params![q.after as i64, q.limit, q.project, q.ty, prefix, end], |r| {
                    Ok(crate::events::event_from((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                        r.get(8)?,
                        r.get(9)?,
                    )))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn sequence_events(&self) -> Result<u64> {
        // Numbered as they are stored; the watch holds the highest committed.
        Ok(*self.event_commits.borrow())
    }

    fn event_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.event_commits.subscribe()
    }

    async fn triggers(&self) -> Result<crate::TriggerState> {
        self.call(false, |c| {
            use crate::events::*;
            let triggers = c
                .prepare_cached(TRIGGERS)?
                .query_map([], |r| {
                    let spec: String = r.get(2)?;
                    Ok(Trigger {
                        project: r.get(0)?,
                        name: r.get(1)?,
                        spec: spec_from(&spec).map_err(corrupt("trigger"))?,
                        enabled: r.get(3)?,
                        created_at: r.get(4)?,
                        from_seq: r.get::<_, i64>(5)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let contexts = c
                .prepare_cached(CONTEXTS)?
                .query_map([], |r| {
                    let context: String = r.get(3)?;
                    Ok(((r.get(0)?, r.get(1)?, r.get(2)?), context_from(&context).map_err(corrupt("context"))?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let cursor: i64 = c.prepare_cached(CURSOR)?.query_row([], |r| r.get(0))?;
            Ok(crate::TriggerState { triggers, contexts, cursor: cursor as u64 })
        })
        .await
    }

    async fn firings(&self, project: &str, trigger: &str, limit: u32) -> Result<Vec<Firing>> {
        let (project, trigger) = (project.to_string(), trigger.to_string());
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::events::FIRINGS)?
                .query_map(params![project, trigger, limit], firing_from)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn firings_of(&self, invocations: &[Id]) -> Result<Vec<Firing>> {
        let ids: Vec<[u8; 16]> = invocations.iter().map(|i| id_bytes(*i)).collect();
        self.call(false, move |c| {
            let mut st = c.prepare_cached(
                "SELECT project, trigger, seq, at, invocation, output, depth FROM trigger_firings WHERE invocation = ?1",
            )?;
            let mut out = Vec::new();
            for id in ids {
                out.extend(st.query_map(params![id], firing_from)?.collect::<rusqlite::Result<Vec<_>>>()?);
            }
            Ok(out)
        })
        .await
    }

    async fn trust(&self) -> Result<crate::Trust> {
        self.call(false, |c| {
            use crate::trust::*;
            let projects = c
                .prepare_cached(LIVE_PROJECTS)?
                .query_map([], |r| {
                    let quotas: String = r.get(2)?;
                    let quotas = quotas_from(&quotas).map_err(corrupt("project"))?;
                    Ok(Project { name: r.get(0)?, created_at: r.get(1)?, quotas })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let tokens = c
                .prepare_cached(LIVE_TOKENS)?
                .query_map([], |r| {
                    let role: String = r.get(3)?;
                    Ok(Token {
                        hash: r.get(0)?,
                        name: r.get(1)?,
                        project: r.get(2)?,
                        role: role_from(&role).map_err(corrupt("token role"))?,
                        created_at: r.get(4)?,
                        created_by: r.get(5)?,
                        expires_at: r.get(6)?,
                        revoked_at: None,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::Trust { projects, tokens })
        })
        .await
    }

    async fn variables(&self, project: &str) -> Result<Vec<stratus_core::settings::Variable>> {
        let project = project.to_string();
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::trust::VARIABLES)?
                .query_map(params![project], |r| {
                    Ok(stratus_core::settings::Variable {
                        name: r.get(0)?,
                        value: r.get(1)?,
                        json: r.get(2)?,
                        version: r.get::<_, i64>(3)? as u64,
                        updated_at: r.get(4)?,
                        updated_by: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn secrets(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::StoredSecret)>> {
        let project = project.map(str::to_string);
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::trust::SECRETS)?
                .query_map(params![project], |r| {
                    let row = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
                    crate::trust::secret_from(row).map_err(corrupt("secret"))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn payload_cutoff(&self, project: &str, budget: u64) -> Result<Option<Millis>> {
        let project = project.to_string();
        let budget = budget.min(i64::MAX as u64) as i64;
        self.call(false, move |c| {
            let cut = c
                .prepare_cached(crate::trust::PAYLOAD_CUTOFF_SQLITE)?
                .query_row(params![project, budget], |r| r.get::<_, i64>(0))
                .optional()?;
            Ok(cut.map(|at| at + 1))
        })
        .await
    }

    async fn artifacts_in_use(&self) -> Result<std::collections::HashSet<String>> {
        self.call(false, move |c| {
            let specs = c
                .prepare_cached(crate::trust::SPECS_IN_USE)?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(crate::trust::artifacts_of(specs))
        })
        .await
    }

    async fn limits(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::TagLimit)>> {
        let project = project.map(str::to_string);
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::trust::LIMITS)?
                .query_map(params![project], |r| {
                    Ok(crate::trust::limit_from((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn pyenvs(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::pyenv::PyEnv)>> {
        let project = project.map(str::to_string);
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::trust::PYENVS)?
                .query_map(params![project], |r| {
                    Ok(crate::trust::pyenv_from((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn audit(&self, project: Option<&str>, since: Millis, limit: u32) -> Result<Vec<AuditEntry>> {
        let project = project.map(str::to_string);
        self.call(false, move |c| {
            let rows = c
                .prepare_cached(crate::trust::AUDIT)?
                .query_map(params![since, project, limit], |r| {
                    Ok(AuditEntry {
                        id: id_from(r.get(0)?)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        project: r.get(3)?,
                        action: r.get(4)?,
                        target: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
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
            Ok(c.prepare_cached("SELECT output, logs, purged_at FROM invocations WHERE id = ?1 AND project = ?2")?
                .query_row(params![id_bytes(id), project], |r| {
                    Ok(Payloads { output: r.get(0)?, logs: r.get(1)?, purged_at: r.get(2)? })
                })
                .optional()?)
        })
        .await
    }

    async fn input_preview(&self, project: &str, id: Id, max: u32) -> Result<Option<(Vec<u8>, u64)>> {
        let project = project.to_string();
        self.call(false, move |c| {
            Ok(c.prepare_cached(
                "SELECT substr(input, 1, ?3), length(input) FROM invocations WHERE id = ?1 AND project = ?2",
            )?
            .query_row(params![id_bytes(id), project, max], |r| {
                Ok((r.get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(), r.get::<_, i64>(1)?.max(0) as u64))
            })
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

    async fn requeue_running(&self) -> Result<u64> {
        self.call(
            true,
            |c| Ok(c.execute("UPDATE invocations SET state = 'queued' WHERE state = 'running'", [])? as u64),
        )
        .await
    }

    async fn queued_in(
        &self,
        lane: Option<Lane>,
        project: Option<&str>,
        after: Option<Id>,
        limit: u32,
    ) -> Result<Vec<PendingInvocation>> {
        let project = project.map(str::to_string);
        self.call(true, move |c| {
            let after = after.map(|a| id_bytes(a).to_vec()).unwrap_or_default();
            let lane = match lane {
                None => "",
                Some(Lane::Direct) => "AND task_index IS NULL",
                Some(Lane::Tasks) => "AND task_index IS NOT NULL",
            };
            let of = if project.is_some() { "AND project = ?3" } else { "AND ?3 IS NULL" };
            let mut st = c.prepare_cached(&format!(
                "SELECT {INVOCATION_COLUMNS}, input, partition, not_before FROM invocations \
                 WHERE state = 'queued' {lane} {of} AND id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![after, limit, project], |r| {
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

    async fn queued_projects(&self, lane: Lane) -> Result<Vec<String>> {
        self.call(true, move |c| {
            let lane = match lane {
                Lane::Direct => "task_index IS NULL",
                Lane::Tasks => "task_index IS NOT NULL",
            };
            let mut st = c.prepare_cached(&format!(
                "SELECT DISTINCT project FROM invocations WHERE state = 'queued' AND {lane}"
            ))?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
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

    async fn job_timings(&self, job: Id, from: u64, limit: u32) -> Result<Vec<stratus_core::api::TaskTiming>> {
        self.call(false, move |c| {
            let mut st = c.prepare_cached(crate::events::JOB_TIMINGS)?;
            let rows = st.query_map(params![id_bytes(job), from as i64, limit], |r| {
                Ok(stratus_core::api::TaskTiming {
                    index: r.get::<_, i64>(0)? as u64,
                    invocation: id_from(r.get(1)?)?,
                    state: state_from(r.get(2)?)?,
                    attempts: r.get(3)?,
                    worker: r.get(4)?,
                    queued_at: r.get(5)?,
                    started_at: r.get(6)?,
                    finished_at: r.get(7)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
                tags: Vec::new(),
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
        assert!(
            s.idle_writer(&ChangeSet::start(many.clone())).is_none(),
            "{} starts go to the writer thread",
            many.len()
        );
        assert!(s.idle_writer(&ChangeSet::start(many[1..].to_vec())).is_some(), "{} do not", many.len() - 1);
        s.checkpoints.state.store(DONE, Release);
        assert!(
            s.idle_writer(&ChangeSet::start(many[1..].to_vec())).is_none(),
            "a checkpoint to finish goes to the writer thread"
        );
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
