-- Stratus state, SQLite engine, schema version 1.
-- Every record belongs to a project. Timestamps are milliseconds since the epoch.

CREATE TABLE functions (
    project     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    -- FunctionSpec as JSON; the "format" column versions its shape.
    spec        TEXT    NOT NULL,
    format      INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    PRIMARY KEY (project, name, version)
);

CREATE TABLE invocations (
    id            BLOB    PRIMARY KEY,
    project       TEXT    NOT NULL,
    function      TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER NOT NULL,
    job_id        BLOB,
    task_index    INTEGER,
    queued_at     INTEGER NOT NULL,
    not_before    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    worker        TEXT,
    error         TEXT,
    input         BLOB    NOT NULL,
    output        BLOB,
    logs          BLOB
) WITHOUT ROWID;

CREATE INDEX invocations_pending ON invocations (state, id) WHERE state IN ('queued', 'running');
CREATE INDEX invocations_by_project ON invocations (project, id);
CREATE INDEX invocations_by_job ON invocations (job_id, task_index) WHERE job_id IS NOT NULL;

CREATE TABLE attempts (
    invocation_id BLOB    NOT NULL,
    attempt       INTEGER NOT NULL,
    worker        TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    error         TEXT,
    PRIMARY KEY (invocation_id, attempt)
) WITHOUT ROWID;
