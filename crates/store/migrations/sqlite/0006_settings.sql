-- Schema version 6: a project's variables, and its secrets, sealed
-- (stratus_core::settings): a secret's value is never stored in the clear.

CREATE TABLE variables (
    project     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    json        BOOLEAN NOT NULL,
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (project, name)
);

CREATE TABLE secrets (
    project     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    -- Which key sealed it, and the nonce, ciphertext and tag in base64.
    key_id      TEXT    NOT NULL,
    sealed      TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    updated_by  TEXT    NOT NULL,
    PRIMARY KEY (project, name)
);
