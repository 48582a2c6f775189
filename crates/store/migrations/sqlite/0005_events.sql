-- Schema version 5: events, triggers and what they fired.

-- CloudEvents, numbered in commit order (one writer: the rowid order is the
-- commit order). A number is never given twice because the newest event is
-- never dropped (retention keeps it), so the next rowid is always past it;
-- AUTOINCREMENT would say the same at the cost of a page written per commit.
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    project         TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    type            TEXT    NOT NULL,
    subject         TEXT,
    time            INTEGER NOT NULL,
    datacontenttype TEXT,
    data            BLOB,
    depth           INTEGER NOT NULL DEFAULT 0,
    stored_at       INTEGER NOT NULL
);
-- One event per key. An invocation's event is one by construction (it is
-- stored with the end that applies, once) and left out: it would cost every
-- invocation an index page written.
CREATE UNIQUE INDEX events_key ON events (project, source, id) WHERE source <> '/stratus/invocations';

CREATE TABLE triggers (
    project     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    -- stratus_core::events::TriggerSpec as JSON.
    spec        TEXT    NOT NULL,
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    -- It reacts to events numbered after this only.
    from_seq    INTEGER NOT NULL,
    PRIMARY KEY (project, name)
);

-- What a trigger remembers per group (stratus_core::events::Context as JSON).
CREATE TABLE trigger_contexts (
    project     TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,
    grp         TEXT    NOT NULL,
    context     TEXT    NOT NULL,
    PRIMARY KEY (project, trigger, grp)
);

-- One row per firing: the event that completed the condition, and the
-- invocation the action started.
CREATE TABLE trigger_firings (
    project     TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    invocation  BLOB,
    output      TEXT,
    depth       INTEGER NOT NULL,
    PRIMARY KEY (project, trigger, seq)
);
CREATE INDEX trigger_firings_invocation ON trigger_firings (invocation) WHERE invocation IS NOT NULL;

-- How far the event processor got: every event up to `seq` is matched.
CREATE TABLE event_cursor (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         INTEGER NOT NULL
);
INSERT INTO event_cursor (id, seq) VALUES (1, 0);
