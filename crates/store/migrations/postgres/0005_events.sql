-- Schema version 5: events, triggers and what they fired.

-- CloudEvents. Several connections commit at once, so an event's number
-- (`seq`) is not given when it is inserted but by the leader's sequencer
-- (`StateStore::sequence_events`), under a lock, in commit order: a reader
-- that follows `seq` never skips an event. Unsequenced events are not read.
CREATE SEQUENCE events_seq;
CREATE TABLE events (
    pk              bigserial PRIMARY KEY,
    seq             bigint  UNIQUE,
    project         text    COLLATE "C" NOT NULL,
    source          text    COLLATE "C" NOT NULL,
    id              text    COLLATE "C" NOT NULL,
    type            text    COLLATE "C" NOT NULL,
    subject         text    COLLATE "C",
    time            bigint  NOT NULL,
    datacontenttype text,
    data            bytea,
    depth           int4    NOT NULL DEFAULT 0,
    stored_at       bigint  NOT NULL
);
-- One event per key. An invocation's event is one by construction (it is
-- stored with the end that applies, once) and left out: it would cost every
-- invocation an index entry.
CREATE UNIQUE INDEX events_key ON events (project, source, id) WHERE source <> '/stratus/invocations';
CREATE INDEX events_unsequenced ON events (pk) WHERE seq IS NULL;

CREATE TABLE triggers (
    project     text    COLLATE "C" NOT NULL,
    name        text    COLLATE "C" NOT NULL,
    -- stratus_core::events::TriggerSpec as JSON.
    spec        text    NOT NULL,
    enabled     boolean NOT NULL,
    created_at  bigint  NOT NULL,
    -- It reacts to events numbered after this only.
    from_seq    bigint  NOT NULL,
    PRIMARY KEY (project, name)
);

-- What a trigger remembers per group (stratus_core::events::Context as JSON).
CREATE TABLE trigger_contexts (
    project     text    COLLATE "C" NOT NULL,
    trigger     text    COLLATE "C" NOT NULL,
    grp         text    COLLATE "C" NOT NULL,
    context     text    NOT NULL,
    PRIMARY KEY (project, trigger, grp)
);

-- One row per firing: the event that completed the condition, and the
-- invocation the action started.
CREATE TABLE trigger_firings (
    project     text    COLLATE "C" NOT NULL,
    trigger     text    COLLATE "C" NOT NULL,
    seq         bigint  NOT NULL,
    at          bigint  NOT NULL,
    invocation  uuid,
    output      text,
    depth       int4    NOT NULL,
    PRIMARY KEY (project, trigger, seq)
);
CREATE INDEX trigger_firings_invocation ON trigger_firings (invocation) WHERE invocation IS NOT NULL;

-- How far the event processor got: every event up to `seq` is matched.
CREATE TABLE event_cursor (
    id          int4    PRIMARY KEY CHECK (id = 1),
    seq         bigint  NOT NULL
);
INSERT INTO event_cursor (id, seq) VALUES (1, 0);
