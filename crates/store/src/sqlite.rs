//! SQLite engine: WAL journal, one writer connection, a small pool of readers.

use crate::{
    AttemptEnd, AttemptStart, EndOutcome, Error, NewInvocation, Payloads, PendingInvocation,
    Result, StateStore,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::{Attempt, Failure, Function, FunctionSpec, Id, Invocation, InvocationState};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
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
        let mut sync = SqliteSynchronous::Normal;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("synchronous", v)) => {
                    sync = SqliteSynchronous::from_str(v)
                        .map_err(|_| Error::UnsupportedUrl(url.to_string()))?
                }
                _ => return Err(Error::UnsupportedUrl(url.to_string())),
            }
        }
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Db(sqlx::Error::Io(e)))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sync)
            .busy_timeout(Duration::from_secs(10))
            .statement_cache_capacity(64);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { write, read })
    }
}

fn id_bytes(id: Id) -> Vec<u8> {
    id.to_bytes().to_vec()
}

fn id_from(bytes: &[u8]) -> Result<Id> {
    let arr: [u8; 16] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt("id is not 16 bytes".into()))?;
    Ok(Id::from_bytes(arr))
}

fn failure_json(f: &Failure) -> String {
    serde_json::to_string(f).expect("Failure serialises")
}

fn failure_from(s: Option<String>) -> Result<Option<Failure>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(format!("error record: {e}"))))
        .transpose()
}

fn function_from(row: &SqliteRow) -> Result<Function> {
    let spec: String = row.try_get("spec")?;
    let spec: FunctionSpec =
        serde_json::from_str(&spec).map_err(|e| Error::Corrupt(format!("function spec: {e}")))?;
    Ok(Function {
        project: row.try_get("project")?,
        name: row.try_get("name")?,
        version: row.try_get::<i64, _>("version")? as u32,
        spec,
        created_at: row.try_get("created_at")?,
    })
}

const INVOCATION_COLUMNS: &str = "id, project, function, version, state, attempts, max_attempts, job_id, task_index, \
     queued_at, started_at, finished_at, worker, error";

fn invocation_from(row: &SqliteRow) -> Result<Invocation> {
    let state: String = row.try_get("state")?;
    let job: Option<Vec<u8>> = row.try_get("job_id")?;
    Ok(Invocation {
        id: id_from(&row.try_get::<Vec<u8>, _>("id")?)?,
        project: row.try_get("project")?,
        function: row.try_get("function")?,
        version: row.try_get::<i64, _>("version")? as u32,
        state: state
            .parse()
            .map_err(|_| Error::Corrupt(format!("state '{state}'")))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        job_id: job.map(|b| id_from(&b)).transpose()?,
        task_index: row
            .try_get::<Option<i64>, _>("task_index")?
            .map(|i| i as u64),
        queued_at: row.try_get("queued_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        worker: row.try_get("worker")?,
        error: failure_from(row.try_get("error")?)?,
    })
}

#[async_trait]
impl StateStore for SqliteStore {
    async fn put_function(
        &self,
        project: &str,
        name: &str,
        spec: &FunctionSpec,
        now: Millis,
    ) -> Result<Function> {
        let spec_json = serde_json::to_string(spec).expect("spec serialises");
        let mut tx = self.write.begin().await?;
        let max: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM functions WHERE project = ? AND name = ?")
                .bind(project)
                .bind(name)
                .fetch_one(&mut *tx)
                .await?;
        let version = max.unwrap_or(0) + 1;
        sqlx::query("INSERT INTO functions (project, name, version, spec, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(project)
            .bind(name)
            .bind(version)
            .bind(&spec_json)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Function {
            project: project.into(),
            name: name.into(),
            version: version as u32,
            spec: spec.clone(),
            created_at: now,
        })
    }

    async fn get_function(
        &self,
        project: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<Function>> {
        let row =
            match version {
                Some(v) => {
                    sqlx::query(
                        "SELECT * FROM functions WHERE project = ? AND name = ? AND version = ?",
                    )
                    .bind(project)
                    .bind(name)
                    .bind(v as i64)
                    .fetch_optional(&self.read)
                    .await?
                }
                None => sqlx::query(
                    "SELECT * FROM functions WHERE project = ? AND name = ? AND deleted_at IS NULL \
                     ORDER BY version DESC LIMIT 1",
                )
                .bind(project)
                .bind(name)
                .fetch_optional(&self.read)
                .await?,
            };
        row.as_ref().map(function_from).transpose()
    }

    async fn list_functions(&self, project: &str) -> Result<Vec<Function>> {
        let rows = sqlx::query(
            "SELECT f.* FROM functions f WHERE f.project = ? AND f.deleted_at IS NULL AND f.version = \
             (SELECT MAX(version) FROM functions g WHERE g.project = f.project AND g.name = f.name) ORDER BY f.name",
        )
        .bind(project)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(function_from).collect()
    }

    async fn delete_function(&self, project: &str, name: &str, now: Millis) -> Result<bool> {
        let done = sqlx::query("UPDATE functions SET deleted_at = ? WHERE project = ? AND name = ? AND deleted_at IS NULL")
            .bind(now)
            .bind(project)
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_invocations(&self, new: &[NewInvocation]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for n in new {
            let i = &n.invocation;
            sqlx::query(
                "INSERT INTO invocations (id, project, function, version, state, attempts, max_attempts, job_id, \
                 task_index, queued_at, not_before, input) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(id_bytes(i.id))
            .bind(&i.project)
            .bind(&i.function)
            .bind(i.version as i64)
            .bind(i.state.as_str())
            .bind(i.attempts as i64)
            .bind(i.max_attempts as i64)
            .bind(i.job_id.map(id_bytes))
            .bind(i.task_index.map(|x| x as i64))
            .bind(i.queued_at)
            .bind(i.queued_at)
            .bind(&n.input)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn get_invocation(&self, project: &str, id: Id) -> Result<Option<Invocation>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = ? AND project = ?"
        )))
        .bind(id_bytes(id))
        .bind(project)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(invocation_from).transpose()
    }

    async fn get_payloads(&self, project: &str, id: Id) -> Result<Option<Payloads>> {
        let row = sqlx::query("SELECT output, logs FROM invocations WHERE id = ? AND project = ?")
            .bind(id_bytes(id))
            .bind(project)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| {
            Ok(Payloads {
                output: r.try_get("output")?,
                logs: r.try_get("logs")?,
            })
        })
        .transpose()
    }

    async fn list_attempts(&self, id: Id) -> Result<Vec<Attempt>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE invocation_id = ? ORDER BY attempt")
            .bind(id_bytes(id))
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(Attempt {
                    attempt: r.try_get::<i64, _>("attempt")? as u32,
                    worker: r.try_get("worker")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    state: state
                        .parse()
                        .map_err(|_| Error::Corrupt(format!("state '{state}'")))?,
                    error: failure_from(r.try_get("error")?)?,
                })
            })
            .collect()
    }

    async fn list_invocations(
        &self,
        project: &str,
        function: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> Result<Vec<Invocation>> {
        let before = before.map(id_bytes).unwrap_or_else(|| vec![0xff; 17]);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations WHERE project = ? AND id < ? AND (? IS NULL OR function = ?) \
             ORDER BY id DESC LIMIT ?"
        )))
        .bind(project)
        .bind(before)
        .bind(function)
        .bind(function)
        .bind(limit as i64)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(invocation_from).collect()
    }

    async fn start_attempts(&self, starts: &[AttemptStart]) -> Result<()> {
        let mut tx = self.write.begin().await?;
        for s in starts {
            sqlx::query(
                "UPDATE invocations SET state = 'running', attempts = ?, started_at = ?, worker = ? \
                 WHERE id = ? AND state = 'queued'",
            )
            .bind(s.attempt as i64)
            .bind(s.started_at)
            .bind(&s.worker)
            .bind(id_bytes(s.id))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn end_attempts(&self, ends: &[AttemptEnd]) -> Result<Vec<bool>> {
        let mut applied = Vec::with_capacity(ends.len());
        let mut tx = self.write.begin().await?;
        for e in ends {
            let id = id_bytes(e.id);
            // The guard: still on this attempt (or queued for it, when the
            // start was not yet recorded) and not finished.
            let (state, output, error, logs, not_before) = match &e.outcome {
                EndOutcome::Finish {
                    state,
                    output,
                    error,
                    logs,
                } => (*state, output.clone(), error.clone(), logs, None),
                EndOutcome::Requeue {
                    not_before,
                    error,
                    logs,
                } => (
                    InvocationState::Queued,
                    None,
                    Some(error.clone()),
                    logs,
                    Some(*not_before),
                ),
            };
            let err_json = error.as_ref().map(failure_json);
            let done = sqlx::query(
                "UPDATE invocations SET state = ?, attempts = ?, output = ?, error = ?, logs = ?, worker = ?, \
                 started_at = COALESCE(started_at, ?), finished_at = CASE WHEN ? THEN NULL ELSE ? END, \
                 not_before = COALESCE(?, not_before) \
                 WHERE id = ? AND ((state = 'running' AND attempts = ?) OR (state = 'queued' AND attempts < ?))",
            )
            .bind(state.as_str())
            .bind(e.attempt as i64)
            .bind(output)
            .bind(&err_json)
            .bind(logs)
            .bind(&e.worker)
            .bind(e.started_at)
            .bind(not_before.is_some())
            .bind(e.finished_at)
            .bind(not_before)
            .bind(&id)
            .bind(e.attempt as i64)
            .bind(e.attempt as i64)
            .execute(&mut *tx)
            .await?;
            let ok = done.rows_affected() > 0;
            if ok {
                let attempt_state = match &e.outcome {
                    EndOutcome::Finish { state, .. } => *state,
                    EndOutcome::Requeue { error, .. }
                        if error.kind == stratus_core::FailureKind::Timeout =>
                    {
                        InvocationState::TimedOut
                    }
                    EndOutcome::Requeue { .. } => InvocationState::Failed,
                };
                sqlx::query(
                    "INSERT OR REPLACE INTO attempts (invocation_id, attempt, worker, started_at, finished_at, state, error) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(e.attempt as i64)
                .bind(&e.worker)
                .bind(e.started_at)
                .bind(e.finished_at)
                .bind(attempt_state.as_str())
                .bind(&err_json)
                .execute(&mut *tx)
                .await?;
            }
            applied.push(ok);
        }
        tx.commit().await?;
        Ok(applied)
    }

    async fn requeue_running(&self) -> Result<u64> {
        let done = sqlx::query("UPDATE invocations SET state = 'queued' WHERE state = 'running'")
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn queued(&self, after: Option<Id>, limit: u32) -> Result<Vec<PendingInvocation>> {
        let after = after.map(id_bytes).unwrap_or_default();
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INVOCATION_COLUMNS}, input, not_before FROM invocations WHERE state = 'queued' AND id > ? \
             ORDER BY id LIMIT ?"
        )))
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingInvocation {
                    invocation: invocation_from(r)?,
                    input: r.try_get("input")?,
                    not_before: r.try_get("not_before")?,
                })
            })
            .collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(InvocationState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM invocations GROUP BY state")
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let s: String = r.try_get("state")?;
                let n: i64 = r.try_get("n")?;
                Ok((
                    s.parse()
                        .map_err(|_| Error::Corrupt(format!("state '{s}'")))?,
                    n as u64,
                ))
            })
            .collect()
    }
}
