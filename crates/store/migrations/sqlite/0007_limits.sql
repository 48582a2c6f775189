-- Schema version 7: concurrency limits by tag, and the tags a call gave
-- its invocation (comma-separated; NULL when none). A limit's occupancy is
-- never stored: the leader computes it from the attempts that run.

ALTER TABLE invocations ADD COLUMN tags TEXT;

CREATE TABLE tag_limits (
    project     TEXT    NOT NULL,
    tag         TEXT    NOT NULL,
    slots       INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    reset_at    INTEGER,
    PRIMARY KEY (project, tag)
);
