-- Schema version 6: a project's variables, and its secrets, sealed
-- (stratus_core::settings): a secret's value is never stored in the clear.

CREATE TABLE variables (
    project     text    COLLATE "C" NOT NULL,
    name        text    COLLATE "C" NOT NULL,
    value       text    NOT NULL,
    json        boolean NOT NULL,
    version     bigint  NOT NULL,
    updated_at  bigint  NOT NULL,
    updated_by  text    NOT NULL,
    PRIMARY KEY (project, name)
);

CREATE TABLE secrets (
    project     text    COLLATE "C" NOT NULL,
    name        text    COLLATE "C" NOT NULL,
    version     bigint  NOT NULL,
    -- Which key sealed it, and the nonce, ciphertext and tag in base64.
    key_id      text    NOT NULL,
    sealed      text    NOT NULL,
    created_at  bigint  NOT NULL,
    updated_at  bigint  NOT NULL,
    updated_by  text    NOT NULL,
    PRIMARY KEY (project, name)
);
