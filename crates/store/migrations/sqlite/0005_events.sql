-- Schema version 5: events, triggers and what they fired.

-- CloudEvents, numbered in commit order (one writer: the rowid order is the
-- commit order; AUTOINCREMENT never reuses a number, even once the newest
-- events are dropped).
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
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
CREATE UNIQUE INDEX events_key ON events (project, source, id);

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
