-- Schema version 4: projects, API tokens (only their hashes), the audit trail,
-- and invocations whose payloads were dropped (retention).
-- Everything stored so far belongs to project 'default'.

CREATE TABLE projects (
    name        text    COLLATE "C" PRIMARY KEY,
    created_at  bigint  NOT NULL,
    deleted_at  bigint,
    -- stratus_core::trust::Quotas as JSON.
    quotas      text    NOT NULL DEFAULT '{}'
);
INSERT INTO projects (name, created_at) VALUES ('default', 0);

CREATE TABLE tokens (
    -- The SHA-256 of the secret, in hex; the secret itself is never stored.
    hash        text    PRIMARY KEY,
    name        text    COLLATE "C" NOT NULL,
    -- Empty for a worker token.
    project     text    COLLATE "C" NOT NULL,
    role        text    NOT NULL,
    created_at  bigint  NOT NULL,
    created_by  text    NOT NULL,
    expires_at  bigint,
    revoked_at  bigint
);
CREATE UNIQUE INDEX tokens_live_name ON tokens (name) WHERE revoked_at IS NULL;

CREATE TABLE audit (
    id          uuid    PRIMARY KEY,
    at          bigint  NOT NULL,
    actor       text    NOT NULL,
    project     text    COLLATE "C" NOT NULL,
    action      text    NOT NULL,
    target      text    NOT NULL
);
CREATE INDEX audit_at ON audit (at);

-- When the invocation's input, output and logs were dropped (retention, or
-- its function deleted); the row itself stays. No index: every finished
-- invocation would be written into it, on the invoke path.
ALTER TABLE invocations ADD COLUMN purged_at bigint;
