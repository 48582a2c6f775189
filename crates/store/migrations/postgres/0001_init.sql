-- Stratus state, PostgreSQL engine, schema version 1: the tables of the
-- SQLite engine's versions 1 and 2 (functions, invocations and their
-- attempts, jobs), created in one step.
--
-- Every record belongs to a project. Timestamps are milliseconds since the
-- epoch (bigint), ids are UUIDv7 (uuid, which PostgreSQL orders bytewise, so
-- by creation time). Numbers the code holds as u32/u64 are bigint, so that no
-- value of those ranges can fail to fit. Names are compared and sorted as
-- bytes (COLLATE "C"), as SQLite does, whatever the database's collation.

CREATE TABLE functions (
    project     text    COLLATE "C" NOT NULL,
    name        text    COLLATE "C" NOT NULL,
    version     bigint  NOT NULL,
    -- FunctionSpec as JSON; the "format" column versions its shape.
    spec        text    NOT NULL,
    format      integer NOT NULL DEFAULT 1,
    created_at  bigint  NOT NULL,
    deleted_at  bigint,
    PRIMARY KEY (project, name, version)
);

CREATE TABLE invocations (
    id            uuid    PRIMARY KEY,
    project       text    COLLATE "C" NOT NULL,
    function      text    COLLATE "C" NOT NULL,
    version       bigint  NOT NULL,
    state         text    NOT NULL,
    attempts      bigint  NOT NULL DEFAULT 0,
    max_attempts  bigint  NOT NULL,
    job_id        uuid,
    task_index    bigint,
    queued_at     bigint  NOT NULL,
    not_before    bigint  NOT NULL,
    started_at    bigint,
    finished_at   bigint,
    worker        text,
    -- Failure as JSON.
    error         text,
    input         bytea   NOT NULL,
    output        bytea,
    logs          bytea,
    -- Partition as JSON, when the input is a range of an object.
    partition     text
);

CREATE INDEX invocations_by_project ON invocations (project, id);
CREATE INDEX invocations_by_job ON invocations (job_id, task_index) WHERE job_id IS NOT NULL;
-- The scheduler pages queued work in two lanes: direct invocations (and
-- reducers), and the map tasks of jobs.
CREATE INDEX invocations_queued_direct ON invocations (id) WHERE state = 'queued' AND task_index IS NULL;
CREATE INDEX invocations_queued_tasks ON invocations (id) WHERE state = 'queued' AND task_index IS NOT NULL;
CREATE INDEX invocations_running ON invocations (id) WHERE state = 'running';

CREATE TABLE attempts (
    invocation_id uuid    NOT NULL,
    attempt       bigint  NOT NULL,
    worker        text    NOT NULL,
    started_at    bigint  NOT NULL,
    finished_at   bigint  NOT NULL,
    state         text    NOT NULL,
    error         text,
    PRIMARY KEY (invocation_id, attempt)
);

CREATE TABLE jobs (
    id                uuid    PRIMARY KEY,
    project           text    COLLATE "C" NOT NULL,
    function          text    COLLATE "C" NOT NULL,
    version           bigint  NOT NULL,
    reduce_function   text,
    reduce_version    bigint,
    state             text    NOT NULL,
    total             bigint  NOT NULL DEFAULT 0,
    succeeded         bigint  NOT NULL DEFAULT 0,
    failed            bigint  NOT NULL DEFAULT 0,
    cancelled         bigint  NOT NULL DEFAULT 0,
    created_at        bigint  NOT NULL,
    finished_at       bigint,
    reduce_invocation uuid,
    error             text
);

CREATE INDEX jobs_by_project ON jobs (project, id);
CREATE INDEX jobs_active ON jobs (id) WHERE state IN ('running', 'reducing');
