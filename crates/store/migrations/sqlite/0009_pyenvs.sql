-- Schema version 9: Python environments, per project (`stratus pyenv`).
-- Workers install them; only what to install is stored.

CREATE TABLE pyenvs (
    project       TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    python        TEXT,
    requirements  TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL,
    updated_by    TEXT    NOT NULL,
    PRIMARY KEY (project, name)
);
