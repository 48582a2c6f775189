-- Schema version 4: projects, API tokens (only their hashes), the audit trail,
-- and invocations whose payloads were dropped (retention).
-- Everything stored so far belongs to project 'default'.

CREATE TABLE projects (
    name        TEXT    PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    -- stratus_core::trust::Quotas as JSON.
    quotas      TEXT    NOT NULL DEFAULT '{}'
);
INSERT INTO projects (name, created_at) VALUES ('default', 0);

CREATE TABLE tokens (
    -- The SHA-256 of the secret, in hex; the secret itself is never stored.
    hash        TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    -- Empty for a worker token.
    project     TEXT    NOT NULL,
    role        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT    NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
    id          BLOB    PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    project     TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit (at);

-- When the invocation's input, output and logs were dropped (retention, or
-- its function deleted); the row itself stays. No index: every finished
-- invocation would be written into it, on the invoke path.
ALTER TABLE invocations ADD COLUMN purged_at INTEGER;

