//! PostgreSQL engine (the distributed mode): several servers may share one
//! database, so nothing here relies on being the only writer.
//!
//! URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME&pool_size=N&...]`
//! (`postgresql://` too). `schema` keeps Stratus's tables in that schema
//! (created if missing; lowercase letters, digits and `_`), which lets one
//! database hold several independent stores, as the tests do. `pool_size`
//! (default 8) bounds the connections this process opens. Other parameters
//! are PostgreSQL's own (`connect_timeout`, `application_name`, `options`,
//! ...); TLS is not supported yet, so `sslmode=require` fails to connect.
//!
//! Correctness comes from the database, never from this process: every
//! guarded change is one conditional `UPDATE ... WHERE state/attempt match`,
//! which PostgreSQL re-checks against the row it locks, and a job's counters
//! move in the same statement as the tasks that move them. A batch of starts
//! or ends is one statement over `UNNEST`ed arrays, and a job's tasks stream
//! in with one binary `COPY`, so the cost of a task is amortised over its
//! batch. Two statements touching the same rows in different orders can
//! deadlock; PostgreSQL then fails one of them, and since each write is one
//! statement or one transaction, it is simply run again.

use crate::{
    AttemptEnd, AttemptStart, EndOutcome, EndReport, Error, JobRows, JobUpdate, Lane, NewInvocation, Payloads,
    PendingInvocation, Result, SchemaVersion, Seat, StateStore, TaskResult,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::{
    Attempt, Failure, FailureKind, Function, FunctionSpec, Id, Invocation, InvocationState, Job, JobState, Partition,
};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
use uuid::Uuid;

/// Numbered migrations; the `stratus_schema` table records those applied.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_leader.sql")),
    (3, include_str!("../migrations/postgres/0003_health.sql")),
];

/// First key of the advisory lock that serialises migrations ("STRT"); the
/// second is a hash of the schema, so separate stores do not wait on each other.
const MIGRATION_LOCK: i32 = 0x5354_5254;

/// First key of the advisory locks that serialise a function's versions ("FUNC").
const FUNCTION_LOCK: i32 = 0x4655_4e43;

const DEFAULT_POOL_SIZE: usize = 8;

/// How many times a write that lost a deadlock is run again.
const RETRIES: u32 = 8;

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        Error::Db(describe(&e))
    }
}

/// The error with its causes: tokio-postgres's own message is only the kind
/// ("db error"), the server's message is in the source.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            s.push_str(&format!("; {detail}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// An error inside the engine, keeping PostgreSQL's code so that the
/// transient ones (deadlock, serialisation failure) can be retried.
#[derive(Debug)]
enum Fail {
    Pg(tokio_postgres::Error),
    Store(Error),
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail::Store(e)
    }
}

impl From<Fail> for Error {
    fn from(f: Fail) -> Self {
        match f {
            Fail::Pg(e) => e.into(),
            Fail::Store(e) => e,
        }
    }
}

impl Fail {
    fn is_transient(&self) -> bool {
        let Fail::Pg(e) = self else { return false };
        matches!(e.code(), Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE)
    }
}

type PgResult<T> = std::result::Result<T, Fail>;

/// Runs `op` again while it fails with a transient error.
async fn retrying<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = PgResult<T>>,
{
    let mut tries = 0;
    loop {
        match op().await {
            Err(f) if tries < RETRIES && f.is_transient() => {
                tries += 1;
                tracing::debug!(tries, error = ?f, "retrying a PostgreSQL write");
                tokio::time::sleep(Duration::from_millis(2 * u64::from(tries))).await;
            }
            r => return r.map_err(Error::from),
        }
    }
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// What `open` makes of the URL.
struct Settings {
    config: Config,
    schema: Option<String>,
    pool_size: usize,
    /// The URL without its password, for messages.
    shown: String,
}

impl Settings {
    fn parse(url: &str) -> Result<Settings> {
        let shown = stratus_core::url::redact(url);
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(Error::UnsupportedUrl(shown));
        }
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let (mut schema, mut pool_size, mut rest) = (None, DEFAULT_POOL_SIZE, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) if valid_schema(v) => schema = Some(v.to_string()),
                Some(("schema", v)) => {
                    return Err(invalid(format!(
                        "schema '{v}' is not a plain name (lowercase letters, digits and '_', at most 63)"
                    )));
                }
                Some(("pool_size", v)) => {
                    pool_size = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=1024).contains(n))
                        .ok_or_else(|| invalid(format!("pool_size '{v}' is not a number from 1 to 1024")))?;
                }
                _ => rest.push(pair),
            }
        }
        let pg_url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
        let mut config: Config = pg_url.parse().map_err(|e: tokio_postgres::Error| invalid(describe(&e)))?;
        if config.get_application_name().is_none() {
            config.application_name("stratus");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if let Some(s) = &schema {
            // Set at connection start, so every statement of every pooled
            // connection resolves the unqualified table names in the schema.
            let options = match config.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c search_path={s}"),
                _ => format!("-c search_path={s}"),
            };
            config.options(options);
        }
        Ok(Settings { config, schema, pool_size, shown })
    }
}

/// A connection with its prepared statements.
struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// The statement for `sql`, prepared once per connection.
    async fn stmt(&mut self, sql: &str) -> PgResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// A small pool: at most `pool_size` connections, opened on demand and kept
/// while healthy. (A pool crate would add more than it saves here.)
struct Pool {
    config: Config,
    shown: String,
    idle: Mutex<Vec<PgConn>>,
    permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
struct Lease<'a> {
    conn: Option<PgConn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
}

impl std::ops::Deref for Lease<'_> {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        self.conn.as_ref().expect("a lease holds its connection until dropped")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        // A transaction or copy cut short by a cancelled future has already
        // queued its ROLLBACK / CopyFail on the connection, ahead of whatever
        // the next user sends.
        if let Some(c) = self.conn.take().filter(|c| !c.client.is_closed()) {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
    }
}

impl Pool {
    async fn get(&self) -> PgResult<Lease<'_>> {
        let permit = self.permits.acquire().await.expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.client.is_closed());
            idle.pop()
        };
        let conn = match idle {
            Some(c) => c,
            None => self.connect().await?,
        };
        Ok(Lease { conn: Some(conn), pool: self, _permit: permit })
    }

    async fn connect(&self) -> PgResult<PgConn> {
        let (client, connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| Error::Db(format!("cannot connect to PostgreSQL at {}: {}", self.shown, describe(&e))))?;
        // The connection's IO task ends when its client is dropped (or the
        // server goes away), so the pool owns it through the client.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "PostgreSQL connection lost");
            }
        });
        Ok(PgConn { client, statements: HashMap::new() })
    }
}

/// Applies the pending `migrations` in one transaction that holds an advisory
/// lock, so servers starting together apply each one once. Returns the
/// schema version now in force.
async fn migrate(client: &mut Client, schema: Option<&str>, migrations: &[(u32, &str)]) -> Result<SchemaVersion> {
    let tx = client.transaction().await?;
    match apply_migrations(&tx, schema, migrations).await {
        Ok(version) => {
            tx.commit().await?;
            Ok(version)
        }
        Err(e) => {
            // Release the lock now rather than whenever the connection task
            // next runs; the error says what went wrong.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn apply_migrations(
    tx: &Transaction<'_>,
    schema: Option<&str>,
    migrations: &[(u32, &str)],
) -> Result<SchemaVersion> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(COALESCE($2::text, current_schema()::text, '')))",
        &[&MIGRATION_LOCK, &schema],
    )
    .await?;
    if let Some(s) = schema {
        // Created only when missing: CREATE SCHEMA IF NOT EXISTS would demand
        // the CREATE privilege on the database even when it exists.
        if tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&s]).await?.is_none() {
            tx.batch_execute(&format!("CREATE SCHEMA \"{s}\"")).await?;
        }
        tx.batch_execute(&format!("SET LOCAL search_path TO \"{s}\"")).await?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stratus_schema (
            version    integer     PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let current: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM stratus_schema", &[]).await?.get(0);
    let current = u32::try_from(current).map_err(|_| Error::Corrupt(format!("schema version {current}")))?;
    let known = migrations.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(Error::TooNew { found: current, known });
    }
    for (version, sql) in migrations.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).await.map_err(|e| Error::Migrate { version: *version, message: describe(&e) })?;
        tx.execute("INSERT INTO stratus_schema (version) VALUES ($1)", &[&(*version as i32)]).await?;
        tracing::info!(version, "applied state store migration");
    }
    Ok(SchemaVersion { found: current, now: known.max(current) })
}

pub struct PostgresStore {
    pool: Pool,
    schema: SchemaVersion,
}

impl PostgresStore {
    /// Connects to the database named by `url` (see the module docs) and
    /// applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, MIGRATIONS).await
    }

    pub(crate) async fn open_with(url: &str, migrations: &[(u32, &str)]) -> Result<Self> {
        let Settings { config, schema, pool_size, shown } = Settings::parse(url)?;
        let pool = Pool { config, shown, idle: Mutex::new(Vec::new()), permits: Semaphore::new(pool_size) };
        let version = {
            let mut conn = pool.get().await?;
            migrate(&mut conn.client, schema.as_deref(), migrations).await?
        };
        Ok(PostgresStore { pool, schema: version })
    }
}

macro_rules! invocation_columns {
    () => {
        "id, project, function, version, state, attempts, max_attempts, job_id, task_index, queued_at, started_at, \
         finished_at, worker, error"
    };
}

macro_rules! job_columns {
    () => {
        "id, project, function, version, reduce_function, reduce_version, state, total, succeeded, failed, cancelled, \
         created_at, finished_at, reduce_invocation, error"
    };
}

/// Serialises the versions of one function across servers: the INSERT that
/// follows, in the same transaction, reads the maximum after the lock is
/// held, so it sees the version a concurrent writer just committed.
const LOCK_FUNCTION: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3::text))";

const PUT_FUNCTION: &str = "INSERT INTO functions (project, name, version, spec, created_at) \
     SELECT $1::text, $2::text, COALESCE(MAX(version), 0) + 1, $3::text, $4::bigint \
     FROM functions WHERE project = $1 AND name = $2 RETURNING version";

const GET_FUNCTION_VERSION: &str = "SELECT project, name, version, spec, created_at FROM functions \
     WHERE project = $1 AND name = $2 AND version = $3";

const GET_FUNCTION_LATEST: &str = "SELECT project, name, version, spec, created_at FROM functions \
     WHERE project = $1 AND name = $2 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1";

/// Names sort in byte order (the column's collation is "C"), as in SQLite.
const LIST_FUNCTIONS: &str = "SELECT f.project, f.name, f.version, f.spec, f.created_at FROM functions f \
     WHERE f.project = $1 AND f.deleted_at IS NULL \
     AND f.version = (SELECT MAX(version) FROM functions g WHERE g.project = f.project AND g.name = f.name) \
     ORDER BY f.name";

const DELETE_FUNCTION: &str =
    "UPDATE functions SET deleted_at = $1 WHERE project = $2 AND name = $3 AND deleted_at IS NULL";

/// Many rows in one statement: one array per column.
macro_rules! insert_invocations {
    () => {
        "INSERT INTO invocations (id, project, function, version, state, attempts, \
         max_attempts, job_id, task_index, queued_at, not_before, input, partition) \
         SELECT id, project, function, version, state, attempts, max_attempts, job_id, task_index, queued_at, \
         queued_at, input, partition FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
         $6::bigint[], $7::bigint[], $8::uuid[], $9::bigint[], $10::bigint[], $11::bytea[], $12::text[]) \
         AS t(id, project, function, version, state, attempts, max_attempts, job_id, task_index, queued_at, input, \
         partition)"
    };
}
const INSERT_INVOCATIONS: &str = insert_invocations!();
/// [`INSERT_INVOCATIONS`] that skips an id stored already.
const INSERT_INVOCATIONS_ONCE: &str = concat!(insert_invocations!(), " ON CONFLICT (id) DO NOTHING");

/// A job's tasks, streamed.
const COPY_INVOCATIONS: &str = "COPY invocations (id, project, function, version, state, attempts, max_attempts, \
     job_id, task_index, queued_at, not_before, input, partition) FROM STDIN (FORMAT binary)";

const COPY_TYPES: [Type; 13] = [
    Type::UUID,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::UUID,
    Type::INT8,
    Type::INT8,
    Type::INT8,
    Type::BYTEA,
    Type::TEXT,
];

const GET_INVOCATION: &str =
    concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE id = $1 AND project = $2");

const GET_PAYLOADS: &str = "SELECT output, logs FROM invocations WHERE id = $1 AND project = $2";

const LIST_ATTEMPTS: &str = "SELECT attempt, worker, started_at, finished_at, state, error FROM attempts \
     WHERE invocation_id = $1 ORDER BY attempt";

const LIST_INVOCATIONS: &str = concat!(
    "SELECT ",
    invocation_columns!(),
    " FROM invocations WHERE project = $1 AND id < $2 AND ($3::text IS NULL OR function = $3) \
     ORDER BY id DESC LIMIT $4"
);

const START_ATTEMPTS: &str = "UPDATE invocations i SET state = 'running', attempts = n.attempt, \
     started_at = n.started_at, worker = n.worker \
     FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::text[]) AS n(id, attempt, started_at, worker) \
     WHERE i.id = n.id AND i.state = 'queued'";

/// A batch of ends in one statement, whose ids are distinct. The guard: the
/// invocation is still on this attempt (or queued for it, when the start was
/// never recorded) and not finished; PostgreSQL re-checks it on the row it
/// locks, so of two servers recording the same end, one applies. The
/// attempts are recorded and the jobs' counters moved by the same statement,
/// which returns which ends applied and the jobs as they are now.
///
/// `counts` says which job counter an end moves: 0 none (a requeue), 1
/// succeeded, 2 failed, 3 cancelled.
const END_ATTEMPTS: &str = concat!(
    "WITH input AS (
        SELECT * FROM UNNEST($1::int4[], $2::uuid[], $3::bigint[], $4::text[], $5::bytea[], $6::text[], $7::bytea[],
                             $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::int4[])
            AS t(ord, id, attempt, state, output, error, logs, worker, started_at, finished_at, not_before,
                 attempt_state, counts)
    ), done AS (
        UPDATE invocations i SET state = n.state, attempts = n.attempt, output = n.output, error = n.error,
            logs = n.logs, worker = n.worker, started_at = n.started_at,
            finished_at = CASE WHEN n.not_before IS NULL THEN n.finished_at END,
            not_before = COALESCE(n.not_before, i.not_before)
        FROM input n
        WHERE i.id = n.id
          AND ((i.state = 'running' AND i.attempts = n.attempt) OR (i.state = 'queued' AND i.attempts < n.attempt))
        RETURNING n.ord, i.job_id, i.task_index, n.counts
    ), recorded AS (
        INSERT INTO attempts (invocation_id, attempt, worker, started_at, finished_at, state, error)
        SELECT n.id, n.attempt, n.worker, n.started_at, n.finished_at, n.attempt_state, n.error
        FROM input n JOIN done d ON d.ord = n.ord
        ON CONFLICT (invocation_id, attempt) DO UPDATE SET worker = excluded.worker,
            started_at = excluded.started_at, finished_at = excluded.finished_at, state = excluded.state,
            error = excluded.error
    ), delta AS (
        SELECT job_id, MIN(ord) AS first_end,
            COUNT(*) FILTER (WHERE counts = 1) AS succeeded,
            COUNT(*) FILTER (WHERE counts = 2) AS failed,
            COUNT(*) FILTER (WHERE counts = 3) AS cancelled
        FROM done WHERE job_id IS NOT NULL AND task_index IS NOT NULL AND counts > 0
        GROUP BY job_id
    ), jobs_now AS (
        UPDATE jobs j SET succeeded = j.succeeded + d.succeeded, failed = j.failed + d.failed,
            cancelled = j.cancelled + d.cancelled
        FROM delta d WHERE j.id = d.job_id
        RETURNING d.first_end, ",
    "j.id, j.project, j.function, j.version, j.reduce_function, j.reduce_version, j.state, j.total, j.succeeded, \
     j.failed, j.cancelled, j.created_at, j.finished_at, j.reduce_invocation, j.error",
    "
    )
    SELECT (SELECT array_agg(ord) FROM done) AS applied, n.*
    FROM (SELECT 1) AS one LEFT JOIN jobs_now n ON true
    ORDER BY n.first_end"
);

/// The database's clock, in milliseconds.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

/// Takes or renews the lease (see [`StateStore::lead`]); returns a row when
/// it applied.
const LEAD: &str = concat!(
    "INSERT INTO leader AS l (id, server, url, incarnation, renewed_at) VALUES (1, $5, $1, $2, ",
    now_ms!(),
    ") ON CONFLICT (id) DO UPDATE SET server = excluded.server, url = excluded.url, \
     incarnation = excluded.incarnation, renewed_at = excluded.renewed_at \
     WHERE l.incarnation = excluded.incarnation OR l.renewed_at < excluded.renewed_at - $3 \
        OR ($4 AND l.server = excluded.server) \
     RETURNING 1"
);

const LEADER: &str = "SELECT server, url, incarnation FROM leader WHERE id = 1";

const RESIGN: &str = "DELETE FROM leader WHERE id = 1 AND incarnation = $1";

const REQUEUE_RUNNING: &str = "UPDATE invocations SET state = 'queued' WHERE state = 'running'";

macro_rules! queued_sql {
    ($lane:literal) => {
        concat!(
            "SELECT ",
            invocation_columns!(),
            ", input, partition, not_before FROM invocations WHERE state = 'queued' ",
            $lane,
            " AND id > $1 ORDER BY id LIMIT $2"
        )
    };
}

const QUEUED_ANY: &str = queued_sql!("");
const QUEUED_DIRECT: &str = queued_sql!("AND task_index IS NULL");
const QUEUED_TASKS: &str = queued_sql!("AND task_index IS NOT NULL");

const ACTIVE_JOBS: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE state IN ('running', 'reducing')");

const COUNT_BY_STATE: &str = "SELECT state, COUNT(*) FROM invocations GROUP BY state ORDER BY state";

const INSERT_JOB: &str = "INSERT INTO jobs (id, project, function, version, reduce_function, reduce_version, state, \
     total, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

const GET_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1 AND project = $2");

const LIST_JOBS: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE project = $1 AND id < $2 ORDER BY id DESC LIMIT $3");

const SET_JOB_STATE: &str = "UPDATE jobs SET state = $1, finished_at = COALESCE($2, finished_at), \
     error = COALESCE($3, error), reduce_invocation = COALESCE($4, reduce_invocation) \
     WHERE id = $5 AND state = ANY($6::text[])";

const JOB_RESULTS: &str = "SELECT task_index, id, state, output, error FROM invocations \
     WHERE job_id = $1 AND task_index >= $2 ORDER BY task_index LIMIT $3";

/// The queued tasks and the job's counter and state, in one statement.
const CANCEL_JOB: &str = "WITH cancelled AS (
        UPDATE invocations SET state = 'cancelled', finished_at = $1, error = $2
        WHERE job_id = $3 AND state = 'queued' RETURNING 1
    ), n AS (
        SELECT COUNT(*) AS n FROM cancelled
    ), job AS (
        UPDATE jobs SET cancelled = cancelled + (SELECT n FROM n),
            state = CASE WHEN state IN ('running', 'reducing') THEN 'cancelled' ELSE state END,
            finished_at = COALESCE(finished_at, $1)
        WHERE id = $3
    )
    SELECT n FROM n";

fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} is out of range")))
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} is out of range")))
}

fn failure_json(f: &Failure) -> String {
    serde_json::to_string(f).expect("Failure serialises")
}

fn failure_from(s: Option<String>) -> Result<Option<Failure>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(format!("error record: {e}")))).transpose()
}

fn partition_from(s: Option<String>) -> Result<Option<Partition>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(format!("partition: {e}")))).transpose()
}

fn state_from(s: &str) -> Result<InvocationState> {
    s.parse().map_err(|e| Error::Corrupt(format!("state: {e}")))
}

fn function_from(r: &Row) -> Result<Function> {
    let spec: &str = r.try_get("spec")?;
    let spec: FunctionSpec = serde_json::from_str(spec).map_err(|e| Error::Corrupt(format!("function spec: {e}")))?;
    Ok(Function {
        project: r.try_get("project")?,
        name: r.try_get("name")?,
        version: to_u32(r.try_get("version")?, "version")?,
        spec,
        created_at: r.try_get("created_at")?,
    })
}

fn invocation_from(r: &Row) -> Result<Invocation> {
    Ok(Invocation {
        id: Id::from_uuid(r.try_get("id")?),
        project: r.try_get("project")?,
        function: r.try_get("function")?,
        version: to_u32(r.try_get("version")?, "version")?,
        state: state_from(r.try_get("state")?)?,
        attempts: to_u32(r.try_get("attempts")?, "attempts")?,
        max_attempts: to_u32(r.try_get("max_attempts")?, "max attempts")?,
        job_id: r.try_get::<_, Option<Uuid>>("job_id")?.map(Id::from_uuid),
        task_index: r.try_get::<_, Option<i64>>("task_index")?.map(|i| to_u64(i, "task index")).transpose()?,
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        worker: r.try_get("worker")?,
        error: failure_from(r.try_get("error")?)?,
    })
}

fn job_from(r: &Row) -> Result<Job> {
    let state: &str = r.try_get("state")?;
    Ok(Job {
        id: Id::from_uuid(r.try_get("id")?),
        project: r.try_get("project")?,
        function: r.try_get("function")?,
        version: to_u32(r.try_get("version")?, "version")?,
        reduce_function: r.try_get("reduce_function")?,
        reduce_version: r.try_get::<_, Option<i64>>("reduce_version")?.map(|v| to_u32(v, "version")).transpose()?,
        state: state.parse().map_err(|e| Error::Corrupt(format!("job state: {e}")))?,
        total: to_u64(r.try_get("total")?, "total")?,
        succeeded: to_u64(r.try_get("succeeded")?, "succeeded")?,
        failed: to_u64(r.try_get("failed")?, "failed")?,
        cancelled: to_u64(r.try_get("cancelled")?, "cancelled")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        reduce_invocation: r.try_get::<_, Option<Uuid>>("reduce_invocation")?.map(Id::from_uuid),
        error: r.try_get("error")?,
    })
}

type Param<'a> = &'a (dyn ToSql + Sync);

/// New invocations as one array per column, for [`INSERT_INVOCATIONS`].
struct InvocationArrays<'a> {
    id: Vec<Uuid>,
    project: Vec<&'a str>,
    function: Vec<&'a str>,
    version: Vec<i64>,
    state: Vec<&'static str>,
    attempts: Vec<i64>,
    max_attempts: Vec<i64>,
    job_id: Vec<Option<Uuid>>,
    task_index: Vec<Option<i64>>,
    queued_at: Vec<i64>,
    input: Vec<&'a [u8]>,
    partition: Vec<Option<String>>,
}

fn partition_json(p: &Option<Partition>) -> Option<String> {
    p.as_ref().map(|p| serde_json::to_string(p).expect("partition serialises"))
}

impl<'a> InvocationArrays<'a> {
    fn new(rows: &'a [NewInvocation]) -> Self {
        let mut a = InvocationArrays {
            id: Vec::with_capacity(rows.len()),
            project: Vec::with_capacity(rows.len()),
            function: Vec::with_capacity(rows.len()),
            version: Vec::with_capacity(rows.len()),
            state: Vec::with_capacity(rows.len()),
            attempts: Vec::with_capacity(rows.len()),
            max_attempts: Vec::with_capacity(rows.len()),
            job_id: Vec::with_capacity(rows.len()),
            task_index: Vec::with_capacity(rows.len()),
            queued_at: Vec::with_capacity(rows.len()),
            input: Vec::with_capacity(rows.len()),
            partition: Vec::with_capacity(rows.len()),
        };
        for n in rows {
            let i = &n.invocation;
            a.id.push(i.id.as_uuid());
            a.project.push(&i.project);
            a.function.push(&i.function);
            a.version.push(i.version.into());
            a.state.push(i.state.as_str());
            a.attempts.push(i.attempts.into());
            a.max_attempts.push(i.max_attempts.into());
            a.job_id.push(i.job_id.map(|j| j.as_uuid()));
            a.task_index.push(i.task_index.map(|x| x as i64));
            a.queued_at.push(i.queued_at);
            a.input.push(&n.input);
            a.partition.push(partition_json(&n.partition));
        }
        a
    }

    fn params(&self) -> [Param<'_>; 12] {
        [
            &self.id,
            &self.project,
            &self.function,
            &self.version,
            &self.state,
            &self.attempts,
            &self.max_attempts,
            &self.job_id,
            &self.task_index,
            &self.queued_at,
            &self.input,
            &self.partition,
        ]
    }
}

/// One round of ends (distinct ids) as arrays, for [`END_ATTEMPTS`].
struct EndArrays<'a> {
    ord: Vec<i32>,
    id: Vec<Uuid>,
    attempt: Vec<i64>,
    state: Vec<&'static str>,
    output: Vec<Option<&'a [u8]>>,
    error: Vec<Option<String>>,
    logs: Vec<&'a [u8]>,
    worker: Vec<&'a str>,
    started_at: Vec<i64>,
    finished_at: Vec<i64>,
    not_before: Vec<Option<i64>>,
    attempt_state: Vec<&'static str>,
    counts: Vec<i32>,
}

impl<'a> EndArrays<'a> {
    fn new(ends: &'a [AttemptEnd], round: &[usize]) -> Self {
        let mut a = EndArrays {
            ord: Vec::with_capacity(round.len()),
            id: Vec::with_capacity(round.len()),
            attempt: Vec::with_capacity(round.len()),
            state: Vec::with_capacity(round.len()),
            output: Vec::with_capacity(round.len()),
            error: Vec::with_capacity(round.len()),
            logs: Vec::with_capacity(round.len()),
            worker: Vec::with_capacity(round.len()),
            started_at: Vec::with_capacity(round.len()),
            finished_at: Vec::with_capacity(round.len()),
            not_before: Vec::with_capacity(round.len()),
            attempt_state: Vec::with_capacity(round.len()),
            counts: Vec::with_capacity(round.len()),
        };
        for &i in round {
            let e = &ends[i];
            let (state, output, error, logs, not_before) = match &e.outcome {
                EndOutcome::Finish { state, output, error, logs } => {
                    (*state, output.as_deref(), error.as_ref(), logs.as_slice(), None)
                }
                EndOutcome::Requeue { not_before, error, logs } => {
                    (InvocationState::Queued, None, Some(error), logs.as_slice(), Some(*not_before))
                }
            };
            let (attempt_state, counts) = match &e.outcome {
                EndOutcome::Finish { state: InvocationState::Succeeded, .. } => (InvocationState::Succeeded, 1),
                EndOutcome::Finish { state: InvocationState::Cancelled, .. } => (InvocationState::Cancelled, 3),
                EndOutcome::Finish { state, .. } => (*state, 2),
                EndOutcome::Requeue { error, .. } if error.kind == FailureKind::Timeout => {
                    (InvocationState::TimedOut, 0)
                }
                EndOutcome::Requeue { .. } => (InvocationState::Failed, 0),
            };
            a.ord.push(i as i32);
            a.id.push(e.id.as_uuid());
            a.attempt.push(e.attempt.into());
            a.state.push(state.as_str());
            a.output.push(output);
            a.error.push(error.map(failure_json));
            a.logs.push(logs);
            a.worker.push(&e.worker);
            a.started_at.push(e.started_at);
            a.finished_at.push(e.finished_at);
            a.not_before.push(not_before);
            a.attempt_state.push(attempt_state.as_str());
            a.counts.push(counts);
        }
        a
    }

    fn params(&self) -> [Param<'_>; 13] {
        [
            &self.ord,
            &self.id,
            &self.attempt,
            &self.state,
            &self.output,
            &self.error,
            &self.logs,
            &self.worker,
            &self.started_at,
            &self.finished_at,
            &self.not_before,
            &self.attempt_state,
            &self.counts,
        ]
    }
}

/// Splits a batch of ends into rounds in which each invocation appears once,
/// keeping the batch's order per invocation: a set-based statement over one
/// round then does what ends applied one by one would.
fn end_rounds(ends: &[AttemptEnd]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<Id, usize> = HashMap::with_capacity(ends.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, e) in ends.iter().enumerate() {
        let r = seen.entry(e.id).or_insert(0);
        if rounds.len() <= *r {
            rounds.push(Vec::new());
        }
        rounds[*r].push(i);
        *r += 1;
    }
    rounds
}

/// Folds the rows of one round of [`END_ATTEMPTS`] into the report: which
/// ends applied, and each touched job as it is now, keyed by its first end.
fn absorb_round(rows: &[Row], applied: &mut [bool], jobs: &mut Vec<(i32, Job)>) -> Result<()> {
    for r in rows {
        if let Some(ords) = r.try_get::<_, Option<Vec<i32>>>("applied")? {
            for o in ords {
                if let Some(a) = usize::try_from(o).ok().and_then(|o| applied.get_mut(o)) {
                    *a = true;
                }
            }
        }
        if r.try_get::<_, Option<Uuid>>("id")?.is_none() {
            continue;
        }
        let first: i32 = r.try_get("first_end")?;
        let job = job_from(r)?;
        match jobs.iter_mut().find(|(_, j)| j.id == job.id) {
            Some((f, j)) => {
                *f = (*f).min(first);
                *j = job;
            }
            None => jobs.push((first, job)),
        }
    }
    Ok(())
}

/// The statements of [`StateStore::record`], prepared on one connection.
struct Recording {
    insert: Statement,
    start: Statement,
    end: Statement,
}

impl Recording {
    /// The new rows, then the starts, each statement atomic on its own.
    async fn insert_and_start(&self, cl: &Client, new: &[NewInvocation], starts: &[&AttemptStart]) -> PgResult<()> {
        if !new.is_empty() {
            cl.execute(&self.insert, &InvocationArrays::new(new).params()).await?;
        }
        if !starts.is_empty() {
            let ids: Vec<Uuid> = starts.iter().map(|s| s.id.as_uuid()).collect();
            let attempts: Vec<i64> = starts.iter().map(|s| s.attempt.into()).collect();
            let started: Vec<i64> = starts.iter().map(|s| s.started_at).collect();
            let workers: Vec<&str> = starts.iter().map(|s| s.worker.as_str()).collect();
            cl.execute(&self.start, &[&ids, &attempts, &started, &workers]).await?;
        }
        Ok(())
    }

    /// The ends, round by round, on `cl`: a connection or a transaction.
    async fn end(&self, cl: &impl GenericClient, ends: &[AttemptEnd], rounds: &[Vec<usize>]) -> PgResult<EndReport> {
        let mut applied = vec![false; ends.len()];
        let mut jobs = Vec::new();
        for round in rounds {
            let rows = cl.query(&self.end, &EndArrays::new(ends, round).params()).await?;
            absorb_round(&rows, &mut applied, &mut jobs)?;
        }
        jobs.sort_by_key(|(first, _)| *first);
        Ok(EndReport { applied, jobs: jobs.into_iter().map(|(_, j)| j).collect() })
    }
}

impl PostgresStore {
    async fn put_function_once(&self, project: &str, name: &str, spec: &str, now: Millis) -> PgResult<u32> {
        let mut c = self.pool.get().await?;
        let lock = c.stmt(LOCK_FUNCTION).await?;
        let put = c.stmt(PUT_FUNCTION).await?;
        let tx = c.client.transaction().await?;
        tx.execute(&lock, &[&FUNCTION_LOCK, &project, &name]).await?;
        let row = tx.query_one(&put, &[&project, &name, &spec, &now]).await?;
        tx.commit().await?;
        Ok(to_u32(row.try_get(0)?, "version")?)
    }

    async fn record_once(
        &self,
        new: &[NewInvocation],
        starts: &[&AttemptStart],
        ends: &[AttemptEnd],
        rounds: &[Vec<usize>],
    ) -> PgResult<EndReport> {
        let mut c = self.pool.get().await?;
        let st = Recording {
            insert: c.stmt(INSERT_INVOCATIONS_ONCE).await?,
            start: c.stmt(START_ATTEMPTS).await?,
            end: c.stmt(END_ATTEMPTS).await?,
        };
        // Each statement commits on its own, in order: a transaction around
        // them cost as much in round trips as the commits it saved (a sync
        // invoke's latency unchanged, a quarter more server CPU, measured).
        // Each is guarded, so running them all again after a failure is safe.
        st.insert_and_start(&c.client, new, starts).await?;
        match rounds {
            [] => return Ok(EndReport::default()),
            // One statement is atomic on its own.
            [_] => return st.end(&c.client, ends, rounds).await,
            _ => {}
        }
        let tx = c.client.transaction().await?;
        let report = st.end(&tx, ends, rounds).await?;
        tx.commit().await?;
        Ok(report)
    }

    async fn set_job_state_once(&self, id: Id, from: &[&str], to: JobState, update: &JobUpdate) -> PgResult<bool> {
        let mut c = self.pool.get().await?;
        let set = c.stmt(SET_JOB_STATE).await?;
        let params: [Param<'_>; 6] = [
            &to.as_str(),
            &update.finished_at,
            &update.error,
            &update.reduce_invocation.map(|i| i.as_uuid()),
            &id.as_uuid(),
            &from,
        ];
        let Some(row) = &update.insert else {
            return Ok(c.client.execute(&set, &params).await? > 0);
        };
        let insert = c.stmt(INSERT_INVOCATIONS).await?;
        let tx = c.client.transaction().await?;
        // The guarded move first: when it does not apply, nothing is inserted.
        if tx.execute(&set, &params).await? == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.execute(&insert, &InvocationArrays::new(std::slice::from_ref(row)).params()).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_job_once(&self, id: Id, now: Millis, error: &str) -> PgResult<u64> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(CANCEL_JOB).await?;
        let row = c.client.query_one(&st, &[&now, &error, &id.as_uuid()]).await?;
        Ok(to_u64(row.try_get(0)?, "count")?)
    }

    async fn lead_once(&self, seat: &Seat, lease_ms: i64, restarted: bool) -> PgResult<Option<Seat>> {
        let mut c = self.pool.get().await?;
        let lead = c.stmt(LEAD).await?;
        let leader = c.stmt(LEADER).await?;
        let incarnation = seat.incarnation.as_uuid();
        loop {
            let params: [Param<'_>; 5] = [&seat.url, &incarnation, &lease_ms, &restarted, &seat.server.as_uuid()];
            if c.client.query_opt(&lead, &params).await?.is_some() {
                return Ok(None);
            }
            // Another holds it, unless it resigned in between: then try again.
            if let Some(row) = c.client.query_opt(&leader, &[]).await? {
                return Ok(Some(Seat {
                    server: Id::from_uuid(row.try_get(0)?),
                    url: row.try_get(1)?,
                    incarnation: Id::from_uuid(row.try_get(2)?),
                }));
            }
        }
    }

    async fn requeue_running_once(&self) -> PgResult<u64> {
        let c = self.pool.get().await?;
        Ok(c.client.execute(REQUEUE_RUNNING, &[]).await?)
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn schema(&self) -> SchemaVersion {
        self.schema
    }

    async fn put_function(&self, project: &str, name: &str, spec: &FunctionSpec, now: Millis) -> Result<Function> {
        let spec_json = serde_json::to_string(spec).expect("spec serialises");
        let spec_json = spec_json.as_str();
        let version = retrying(move || self.put_function_once(project, name, spec_json, now)).await?;
        Ok(Function { project: project.into(), name: name.into(), version, spec: spec.clone(), created_at: now })
    }

    async fn get_function(&self, project: &str, name: &str, version: Option<u32>) -> Result<Option<Function>> {
        let mut c = self.pool.get().await?;
        let row = match version {
            Some(v) => {
                let st = c.stmt(GET_FUNCTION_VERSION).await?;
                c.client.query_opt(&st, &[&project, &name, &i64::from(v)]).await?
            }
            None => {
                let st = c.stmt(GET_FUNCTION_LATEST).await?;
                c.client.query_opt(&st, &[&project, &name]).await?
            }
        };
        row.as_ref().map(function_from).transpose()
    }

    async fn list_functions(&self, project: &str) -> Result<Vec<Function>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_FUNCTIONS).await?;
        c.client.query(&st, &[&project]).await?.iter().map(function_from).collect()
    }

    async fn check_writable(&self, now: Millis) -> Result<()> {
        let c = self.pool.get().await?;
        c.client
            .execute(
                "INSERT INTO health (id, checked_at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET checked_at = $1",
                &[&now],
            )
            .await?;
        Ok(())
    }

    async fn delete_function(&self, project: &str, name: &str, now: Millis) -> Result<bool> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(DELETE_FUNCTION).await?;
        Ok(c.client.execute(&st, &[&now, &project, &name]).await? > 0)
    }

    async fn insert_invocations(&self, new: &[NewInvocation]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let mut c = self.pool.get().await?;
        let st = c.stmt(INSERT_INVOCATIONS).await?;
        c.client.execute(&st, &InvocationArrays::new(new).params()).await?;
        Ok(())
    }

    async fn get_invocation(&self, project: &str, id: Id) -> Result<Option<Invocation>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_INVOCATION).await?;
        c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?.as_ref().map(invocation_from).transpose()
    }

    async fn get_payloads(&self, project: &str, id: Id) -> Result<Option<Payloads>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_PAYLOADS).await?;
        let row = c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?;
        Ok(match row {
            Some(r) => Some(Payloads { output: r.try_get(0)?, logs: r.try_get(1)? }),
            None => None,
        })
    }

    async fn max_attempts(&self, ids: &[Id]) -> Result<Vec<(Id, u32)>> {
        let uuids: Vec<_> = ids.iter().map(|id| id.as_uuid()).collect();
        let mut c = self.pool.get().await?;
        let st = c.stmt("SELECT id, max_attempts FROM invocations WHERE id = ANY($1)").await?;
        c.client
            .query(&st, &[&uuids])
            .await?
            .iter()
            .map(|r| Ok((Id::from_uuid(r.try_get("id")?), to_u32(r.try_get("max_attempts")?, "max attempts")?)))
            .collect()
    }

    async fn list_attempts(&self, id: Id) -> Result<Vec<Attempt>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_ATTEMPTS).await?;
        c.client
            .query(&st, &[&id.as_uuid()])
            .await?
            .iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: to_u32(r.try_get("attempt")?, "attempt")?,
                    worker: r.try_get("worker")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    state: state_from(r.try_get("state")?)?,
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
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_INVOCATIONS).await?;
        // No UUIDv7 is all ones, so `id < max` keeps every real id.
        let before = before.map(|b| b.as_uuid()).unwrap_or(Uuid::max());
        c.client
            .query(&st, &[&project, &before, &function, &i64::from(limit)])
            .await?
            .iter()
            .map(invocation_from)
            .collect()
    }

    async fn start_attempts(&self, starts: &[AttemptStart]) -> Result<()> {
        self.record(&[], starts, &[]).await.map(drop)
    }

    async fn end_attempts(&self, ends: &[AttemptEnd]) -> Result<EndReport> {
        self.record(&[], &[], ends).await
    }

    async fn record(&self, new: &[NewInvocation], starts: &[AttemptStart], ends: &[AttemptEnd]) -> Result<EndReport> {
        // A second start of the same invocation in one batch would not apply
        // (it is no longer queued): keep the first, as one by one would.
        let mut seen = std::collections::HashSet::with_capacity(starts.len());
        let starts: Vec<&AttemptStart> = starts.iter().filter(|s| seen.insert(s.id)).collect();
        if new.is_empty() && starts.is_empty() && ends.is_empty() {
            return Ok(EndReport::default());
        }
        let rounds = end_rounds(ends);
        let (starts, rounds) = (&starts, &rounds);
        retrying(move || self.record_once(new, starts, ends, rounds)).await
    }

    async fn lead(&self, seat: &Seat, lease: Duration, restarted: bool) -> Result<Option<Seat>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        retrying(move || self.lead_once(seat, lease_ms, restarted)).await
    }

    async fn resign(&self, seat: &Seat) -> Result<()> {
        let c = self.pool.get().await?;
        c.client.execute(RESIGN, &[&seat.incarnation.as_uuid()]).await?;
        Ok(())
    }

    async fn requeue_running(&self) -> Result<u64> {
        retrying(move || self.requeue_running_once()).await
    }

    async fn queued_in(&self, lane: Option<Lane>, after: Option<Id>, limit: u32) -> Result<Vec<PendingInvocation>> {
        let sql = match lane {
            None => QUEUED_ANY,
            Some(Lane::Direct) => QUEUED_DIRECT,
            Some(Lane::Tasks) => QUEUED_TASKS,
        };
        let mut c = self.pool.get().await?;
        let st = c.stmt(sql).await?;
        // No UUIDv7 is nil, so `id > nil` keeps every real id.
        let after = after.map(|a| a.as_uuid()).unwrap_or(Uuid::nil());
        c.client
            .query(&st, &[&after, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(PendingInvocation {
                    invocation: invocation_from(r)?,
                    input: r.try_get("input")?,
                    partition: partition_from(r.try_get("partition")?)?,
                    not_before: r.try_get("not_before")?,
                })
            })
            .collect()
    }

    async fn active_jobs(&self) -> Result<Vec<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(ACTIVE_JOBS).await?;
        c.client.query(&st, &[]).await?.iter().map(job_from).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(InvocationState, u64)>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(COUNT_BY_STATE).await?;
        c.client
            .query(&st, &[])
            .await?
            .iter()
            .map(|r| Ok((state_from(r.try_get(0)?)?, to_u64(r.try_get(1)?, "count")?)))
            .collect()
    }

    async fn create_job(&self, job: &Job, mut rows: tokio::sync::mpsc::Receiver<JobRows>) -> Result<Job> {
        let mut job = job.clone();
        let mut c = self.pool.get().await?;
        let insert_job = c.stmt(INSERT_JOB).await?;
        let tx = c.client.transaction().await?;
        // One COPY for the whole stream, however the rows are batched. On an
        // abort, dropping the writer fails the COPY and dropping the
        // transaction rolls it back.
        let sink = tx.copy_in(COPY_INVOCATIONS).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
        let mut total = 0u64;
        loop {
            match rows.recv().await {
                Some(JobRows::Rows(batch)) => {
                    total += batch.len() as u64;
                    for n in &batch {
                        let i = &n.invocation;
                        let partition = partition_json(&n.partition);
                        writer
                            .as_mut()
                            .write(&[
                                &i.id.as_uuid(),
                                &i.project,
                                &i.function,
                                &i64::from(i.version),
                                &i.state.as_str(),
                                &i64::from(i.attempts),
                                &i64::from(i.max_attempts),
                                &i.job_id.map(|j| j.as_uuid()),
                                &i.task_index.map(|x| x as i64),
                                &i.queued_at,
                                &i.queued_at,
                                &n.input,
                                &partition,
                            ])
                            .await?;
                    }
                }
                Some(JobRows::Commit) => break,
                Some(JobRows::Abort(why)) => return Err(Error::Aborted(why)),
                None => return Err(Error::Aborted("the request ended before the job was complete".into())),
            }
        }
        writer.as_mut().finish().await?;
        job.total = total;
        tx.execute(
            &insert_job,
            &[
                &job.id.as_uuid(),
                &job.project,
                &job.function,
                &i64::from(job.version),
                &job.reduce_function,
                &job.reduce_version.map(i64::from),
                &job.state.as_str(),
                &(total as i64),
                &job.created_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn get_job(&self, project: &str, id: Id) -> Result<Option<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_JOB).await?;
        c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?.as_ref().map(job_from).transpose()
    }

    async fn list_jobs(&self, project: &str, before: Option<Id>, limit: u32) -> Result<Vec<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_JOBS).await?;
        let before = before.map(|b| b.as_uuid()).unwrap_or(Uuid::max());
        c.client.query(&st, &[&project, &before, &i64::from(limit)]).await?.iter().map(job_from).collect()
    }

    async fn set_job_state(&self, id: Id, from: &[JobState], to: JobState, update: JobUpdate) -> Result<bool> {
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let (from, update) = (&from, &update);
        retrying(move || self.set_job_state_once(id, from, to, update)).await
    }

    async fn job_results(&self, job: Id, from: u64, limit: u32) -> Result<Vec<TaskResult>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(JOB_RESULTS).await?;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        c.client
            .query(&st, &[&job.as_uuid(), &from, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(TaskResult {
                    index: to_u64(r.try_get(0)?, "task index")?,
                    invocation: Id::from_uuid(r.try_get(1)?),
                    state: state_from(r.try_get(2)?)?,
                    output: r.try_get(3)?,
                    error: failure_from(r.try_get(4)?)?,
                })
            })
            .collect()
    }

    async fn cancel_job(&self, id: Id, now: Millis) -> Result<u64> {
        let err = failure_json(&Failure::new(FailureKind::Cancelled, "the job was cancelled"));
        let err = err.as_str();
        retrying(move || self.cancel_job_once(id, now, err)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL of a fresh schema on the test server (see `tests/common`).
    fn fresh_schema_url() -> (String, String) {
        let base = std::env::var("STRATUS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!("t_{}", stratus_core::new_id().to_string().replace('-', ""));
        let sep = if base.contains('?') { '&' } else { '?' };
        (format!("{base}{sep}schema={schema}"), schema)
    }

    #[test]
    fn batches_split_into_rounds_of_distinct_invocations() {
        let (a, b) = (stratus_core::new_id(), stratus_core::new_id());
        let end = |id| AttemptEnd {
            id,
            attempt: 1,
            worker: "w".into(),
            started_at: 0,
            finished_at: 0,
            outcome: EndOutcome::Requeue { not_before: 0, error: Failure::new(FailureKind::Exit, "x"), logs: vec![] },
        };
        let ends = [end(a), end(b), end(a), end(a), end(b)];
        assert_eq!(end_rounds(&ends), [vec![0, 1], vec![2, 4], vec![3]]);
    }

    /// A database on schema version 1, with data, is upgraded to the latest
    /// version (the leader's lease, the health row); the data stays, and a
    /// binary that knows only version 1 is then refused.
    #[tokio::test]
    async fn an_older_schema_is_upgraded_without_losing_data() {
        let (url, schema) = fresh_schema_url();
        let v1 = PostgresStore::open_with(&url, &MIGRATIONS[..1])
            .await
            .unwrap_or_else(|e| panic!("this test needs PostgreSQL ({e}); set STRATUS_TEST_POSTGRES"));
        let spec = FunctionSpec {
            runtime: stratus_core::Runtime::Wasm,
            artifact: "a".repeat(64),
            env: Default::default(),
            limits: Default::default(),
            retries: 0,
            network: false,
        };
        v1.put_function("p", "f", &spec, 1).await.unwrap();
        drop(v1);

        let v2 = PostgresStore::open(&url).await.unwrap();
        assert_eq!(v2.schema(), SchemaVersion { found: 1, now: 3 });
        assert_eq!(v2.get_function("p", "f", None).await.unwrap().unwrap().spec, spec);
        assert_eq!(v2.put_function("p", "f", &spec, 2).await.unwrap().version, 2);
        let seat =
            crate::Seat { server: stratus_core::new_id(), url: "http://a".into(), incarnation: stratus_core::new_id() };
        assert_eq!(v2.lead(&seat, Duration::from_secs(10), true).await.unwrap(), None, "the lease table is there");
        let c = v2.pool.get().await.unwrap();
        let versions: Vec<i32> = c
            .client
            .query("SELECT version FROM stratus_schema ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [1, 2, 3]);

        assert!(matches!(
            PostgresStore::open_with(&url, &MIGRATIONS[..1]).await,
            Err(Error::TooNew { found: 3, known: 1 })
        ));
        c.client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.unwrap();
    }
}
