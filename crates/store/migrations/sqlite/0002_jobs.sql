-- Schema version 2: jobs (map / map_reduce) and object partitions as task inputs.

ALTER TABLE invocations ADD COLUMN partition TEXT;

CREATE TABLE jobs (
    id                BLOB    PRIMARY KEY,
    project           TEXT    NOT NULL,
    function          TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    reduce_function   TEXT,
    reduce_version    INTEGER,
    state             TEXT    NOT NULL,
    total             INTEGER NOT NULL DEFAULT 0,
    succeeded         INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    cancelled         INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    reduce_invocation BLOB,
    error             TEXT
) WITHOUT ROWID;

CREATE INDEX jobs_by_project ON jobs (project, id);

-- The scheduler pages queued work in two lanes: direct invocations (and
-- reducers), and the map tasks of jobs.
DROP INDEX invocations_pending;
CREATE INDEX invocations_queued_direct ON invocations (id) WHERE state = 'queued' AND task_index IS NULL;
CREATE INDEX invocations_queued_tasks ON invocations (id) WHERE state = 'queued' AND task_index IS NOT NULL;
CREATE INDEX invocations_running ON invocations (id) WHERE state = 'running';
CREATE INDEX jobs_active ON jobs (id) WHERE state IN ('running', 'reducing');
