-- Schema version 7: concurrency limits by tag, and the tags a call gave
-- its invocation (comma-separated; NULL when none). A limit's occupancy is
-- never stored: the leader computes it from the attempts that run.

ALTER TABLE invocations ADD COLUMN tags text;

CREATE TABLE tag_limits (
    project     text    COLLATE "C" NOT NULL,
    tag         text    COLLATE "C" NOT NULL,
    slots       bigint  NOT NULL,
    updated_at  bigint  NOT NULL,
    updated_by  text    NOT NULL,
    reset_at    bigint,
    PRIMARY KEY (project, tag)
);
