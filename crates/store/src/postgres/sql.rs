//! The statements, prepared once per connection.

use super::*;

macro_rules! invocation_columns {
    () => {
        "id, project, function, version, state, attempts, max_attempts, job_id, task_index, queued_at, started_at, \
         finished_at, worker, error, tags"
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
pub(super) const LOCK_FUNCTION: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2::text || '/' || $3::text))";

pub(super) const PUT_FUNCTION: &str = "INSERT INTO functions (project, name, version, spec, created_at) \
     SELECT $1::text, $2::text, COALESCE(MAX(version), 0) + 1, $3::text, $4::bigint \
     FROM functions WHERE project = $1 AND name = $2 RETURNING version";

pub(super) const GET_FUNCTION_VERSION: &str = "SELECT project, name, version, spec, created_at FROM functions \
     WHERE project = $1 AND name = $2 AND version = $3";

pub(super) const GET_FUNCTION_LATEST: &str = "SELECT project, name, version, spec, created_at FROM functions \
     WHERE project = $1 AND name = $2 AND deleted_at IS NULL ORDER BY version DESC LIMIT 1";

/// Names sort in byte order (the column's collation is "C"), as in SQLite.
pub(super) const LIST_FUNCTIONS: &str = "SELECT f.project, f.name, f.version, f.spec, f.created_at FROM functions f \
     WHERE f.project = $1 AND f.deleted_at IS NULL \
     AND f.version = (SELECT MAX(version) FROM functions g WHERE g.project = f.project AND g.name = f.name) \
     ORDER BY f.name";

pub(super) const DELETE_FUNCTION: &str =
    "UPDATE functions SET deleted_at = $1 WHERE project = $2 AND name = $3 AND deleted_at IS NULL";

/// Many rows in one statement: one array per column.
macro_rules! insert_invocations {
    () => {
        "INSERT INTO invocations (id, project, function, version, state, attempts, \
         max_attempts, job_id, task_index, queued_at, not_before, input, partition, tags) \
         SELECT id, project, function, version, state, attempts, max_attempts, job_id, task_index, queued_at, \
         queued_at, input, partition, tags FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], \
         $5::text[], $6::bigint[], $7::bigint[], $8::uuid[], $9::bigint[], $10::bigint[], $11::bytea[], $12::text[], \
         $13::text[]) AS t(id, project, function, version, state, attempts, max_attempts, job_id, task_index, \
         queued_at, input, partition, tags)"
    };
}
pub(super) const INSERT_INVOCATIONS: &str = insert_invocations!();
/// [`INSERT_INVOCATIONS`] that skips an id stored already.
pub(super) const INSERT_INVOCATIONS_ONCE: &str = concat!(insert_invocations!(), " ON CONFLICT (id) DO NOTHING");

/// A job's tasks, streamed.
pub(super) const COPY_INVOCATIONS: &str = "COPY invocations (id, project, function, version, state, attempts, max_attempts, \
     job_id, task_index, queued_at, not_before, input, partition, tags) FROM STDIN (FORMAT binary)";

pub(super) const COPY_TYPES: [Type; 14] = [
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
    Type::TEXT,
];

pub(super) const GET_INVOCATION: &str =
    concat!("SELECT ", invocation_columns!(), " FROM invocations WHERE id = $1 AND project = $2");

pub(super) const GET_PAYLOADS: &str = "SELECT output, logs, purged_at FROM invocations WHERE id = $1 AND project = $2";

pub(super) const LIST_ATTEMPTS: &str = "SELECT attempt, worker, started_at, finished_at, state, error FROM attempts \
     WHERE invocation_id = $1 ORDER BY attempt";

pub(super) const LIST_INVOCATIONS: &str = concat!(
    "SELECT ",
    invocation_columns!(),
    " FROM invocations WHERE project = $1 AND id < $2 AND ($3::text IS NULL OR function = $3) \
     ORDER BY id DESC LIMIT $4"
);

pub(super) const START_ATTEMPTS: &str = "UPDATE invocations i SET state = 'running', attempts = n.attempt, \
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
pub(super) const END_ATTEMPTS: &str = concat!(
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
          AND ((i.state = 'running' AND i.attempts = n.attempt AND (i.worker = n.worker OR i.worker = 'broker'))
               OR (i.state = 'queued' AND i.attempts < n.attempt))
        RETURNING n.ord, i.job_id, i.task_index, n.counts, i.id, i.project, i.function, i.version
    ), ev AS (
        -- The event of each direct invocation that finished (built as
        -- stratus_core::events::builtin::invocation builds it), with the
        -- causation depth of the trigger action that started it.
        INSERT INTO events (project, source, id, type, subject, time, datacontenttype, data, depth, stored_at)
        SELECT d.project, '/stratus/invocations', d.id::text, 'stratus.invocation.' || n.state, d.function,
            n.finished_at, 'application/json',
            convert_to(json_build_object('attempts', n.attempt, 'error', n.error::json, 'function', d.function,
                'invocation', d.id::text, 'state', n.state, 'version', d.version)::text, 'UTF8'),
            COALESCE(f.depth, 0), (extract(epoch from clock_timestamp()) * 1000)::bigint
        FROM done d JOIN input n ON n.ord = d.ord LEFT JOIN trigger_firings f ON f.invocation = d.id
        WHERE d.job_id IS NULL AND n.not_before IS NULL
        RETURNING 1
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
    SELECT (SELECT array_agg(ord) FROM done) AS applied, (SELECT COUNT(*) FROM ev) AS events, n.*
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
pub(super) const LEAD: &str = concat!(
    "INSERT INTO leader AS l (id, server, url, incarnation, renewed_at) VALUES (1, $5, $1, $2, ",
    now_ms!(),
    ") ON CONFLICT (id) DO UPDATE SET server = excluded.server, url = excluded.url, \
     incarnation = excluded.incarnation, renewed_at = excluded.renewed_at \
     WHERE l.incarnation = excluded.incarnation OR l.renewed_at < excluded.renewed_at - $3 \
        OR ($4 AND l.server = excluded.server) \
     RETURNING 1"
);

pub(super) const LEADER: &str = "SELECT server, url, incarnation FROM leader WHERE id = 1";

pub(super) const RESIGN: &str = "DELETE FROM leader WHERE id = 1 AND incarnation = $1";

pub(super) const REQUEUE_RUNNING: &str = "UPDATE invocations SET state = 'queued' WHERE state = 'running'";

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

pub(super) const QUEUED_ANY: &str = queued_sql!("");
pub(super) const QUEUED_DIRECT: &str = queued_sql!("AND task_index IS NULL");
pub(super) const QUEUED_TASKS: &str = queued_sql!("AND task_index IS NOT NULL");
pub(super) const QUEUED_ANY_OF: &str = queued_sql!("AND project = $3");
pub(super) const QUEUED_DIRECT_OF: &str = queued_sql!("AND task_index IS NULL AND project = $3");
pub(super) const QUEUED_TASKS_OF: &str = queued_sql!("AND task_index IS NOT NULL AND project = $3");
pub(super) const QUEUED_PROJECTS_DIRECT: &str =
    "SELECT DISTINCT project FROM invocations WHERE state = 'queued' AND task_index IS NULL";
pub(super) const QUEUED_PROJECTS_TASKS: &str =
    "SELECT DISTINCT project FROM invocations WHERE state = 'queued' AND task_index IS NOT NULL";

pub(super) const ACTIVE_JOBS: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE state IN ('running', 'reducing')");

pub(super) const COUNT_BY_STATE: &str = "SELECT state, COUNT(*) FROM invocations GROUP BY state ORDER BY state";

pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (id, project, function, version, reduce_function, reduce_version, state, \
     total, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

pub(super) const JOB_BY_ID: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");

/// Numbers the events committed since the last call (see the migration).
pub(super) const SEQUENCE_EVENTS: &str = "UPDATE events e SET seq = nextval('events_seq')      FROM (SELECT pk FROM events WHERE seq IS NULL ORDER BY pk LIMIT 10000) s WHERE e.pk = s.pk";

/// First key of the advisory lock under which events are numbered ("EVNT").
pub(super) const EVENT_LOCK: i64 = 0x4556_4e54;

pub(super) const GET_JOB: &str = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1 AND project = $2");

pub(super) const LIST_JOBS: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE project = $1 AND id < $2 ORDER BY id DESC LIMIT $3");

pub(super) const SET_JOB_STATE: &str = "UPDATE jobs SET state = $1, finished_at = COALESCE($2, finished_at), \
     error = COALESCE($3, error), reduce_invocation = COALESCE($4, reduce_invocation) \
     WHERE id = $5 AND state = ANY($6::text[])";

pub(super) const JOB_RESULTS: &str = "SELECT task_index, id, state, output, error FROM invocations \
     WHERE job_id = $1 AND task_index >= $2 ORDER BY task_index LIMIT $3";

/// The queued tasks and the job's counter and state, in one statement.
pub(super) const CANCEL_JOB: &str = "WITH cancelled AS (
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
