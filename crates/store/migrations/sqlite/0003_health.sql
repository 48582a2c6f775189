-- Schema version 3: one row the server writes to check that the store takes writes (/healthz).

CREATE TABLE health (
    id         INTEGER PRIMARY KEY,
    checked_at INTEGER NOT NULL
);
