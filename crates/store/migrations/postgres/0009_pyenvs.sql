-- Schema version 9: Python environments, per project (`stratus pyenv`).
-- Workers install them; only what to install is stored.

CREATE TABLE pyenvs (
    project       text    COLLATE "C" NOT NULL,
    name          text    COLLATE "C" NOT NULL,
    python        text,
    requirements  text    NOT NULL,
    updated_at    bigint  NOT NULL,
    updated_by    text    NOT NULL,
    PRIMARY KEY (project, name)
);
