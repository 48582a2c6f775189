-- Schema version 2: leadership among servers sharing the database. One
-- server at a time drives the queue (pages queued work, dispatches it,
-- records its ends, drives jobs); the others forward requests to it and take
-- over when its lease runs out. At most one row. Times are the database's
-- clock, in milliseconds since the epoch, so servers' clocks need not agree.

CREATE TABLE leader (
    id          smallint PRIMARY KEY CHECK (id = 1),
    -- The server: the id kept in its data directory, which one process at a
    -- time can hold, so a server restarted takes its lease back at once.
    server      uuid     NOT NULL,
    -- The leader's URL as the other servers reach it (its --advertise).
    url         text     NOT NULL,
    -- Which start of that server holds the lease.
    incarnation uuid     NOT NULL,
    renewed_at  bigint   NOT NULL
);
