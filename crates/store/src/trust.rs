//! Projects, tokens and the audit trail: the statements both engines run,
//! written once in SQLite's `?N` style ([`pg`] turns them into
//! PostgreSQL's `$N`). Every value in a `SELECT` list is cast, so that
//! PostgreSQL knows its type without a column to infer it from.

use stratus_core::pyenv::PyEnv;
use stratus_core::settings::{Sealed, StoredSecret, TagLimit, Variable};
use stratus_core::trust::{Role, Token, TrustChange};

pub(crate) const CREATE_PROJECT: &str =
    "INSERT INTO projects (name, created_at) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING";

pub(crate) const DELETE_PROJECT: &str = "UPDATE projects SET deleted_at = ?2 \
     WHERE name = ?1 AND deleted_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM functions WHERE project = ?1 AND deleted_at IS NULL)";

/// Run only after [`DELETE_PROJECT`] applied.
pub(crate) const REVOKE_PROJECT_TOKENS: &str =
    "UPDATE tokens SET revoked_at = ?2 WHERE project = ?1 AND revoked_at IS NULL AND role <> 'worker'";

pub(crate) const PUT_TOKEN: &str = "INSERT INTO tokens (hash, name, project, role, created_at, created_by, expires_at) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS TEXT), CAST(?5 AS BIGINT), \
            CAST(?6 AS TEXT), CAST(?7 AS BIGINT) \
     WHERE NOT EXISTS (SELECT 1 FROM tokens WHERE name = ?2 AND revoked_at IS NULL) \
     AND (?4 = 'worker' OR EXISTS (SELECT 1 FROM projects WHERE name = ?3 AND deleted_at IS NULL)) \
     AND (NOT ?8 OR NOT EXISTS (SELECT 1 FROM tokens))";

pub(crate) const REVOKE_TOKEN: &str = "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL";

pub(crate) const INSERT_AUDIT: &str =
    "INSERT INTO audit (id, at, actor, project, action, target) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

pub(crate) const SET_QUOTAS: &str = "UPDATE projects SET quotas = ?2 WHERE name = ?1 AND deleted_at IS NULL";

/// Run only after [`DELETE_PROJECT`] applied, as is [`DELETE_PROJECT_SECRETS`].
pub(crate) const DELETE_PROJECT_VARIABLES: &str = "DELETE FROM variables WHERE project = ?1";
pub(crate) const DELETE_PROJECT_SECRETS: &str = "DELETE FROM secrets WHERE project = ?1";
pub(crate) const DELETE_PROJECT_LIMITS: &str = "DELETE FROM tag_limits WHERE project = ?1";
pub(crate) const DELETE_PROJECT_PYENVS: &str = "DELETE FROM pyenvs WHERE project = ?1";

pub(crate) const PUT_PYENV: &str = "INSERT INTO pyenvs (project, name, python, requirements, updated_at, updated_by) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS TEXT), CAST(?5 AS BIGINT), CAST(?6 AS TEXT) \
     WHERE EXISTS (SELECT 1 FROM projects WHERE name = ?1 AND deleted_at IS NULL) \
     ON CONFLICT (project, name) DO UPDATE SET python = excluded.python, requirements = excluded.requirements, \
        updated_at = excluded.updated_at, updated_by = excluded.updated_by";

pub(crate) const DELETE_PYENV: &str = "DELETE FROM pyenvs WHERE project = ?1 AND name = ?2";

/// `?1` is the project, or NULL for every project.
pub(crate) const PYENVS: &str = "SELECT project, name, python, requirements, updated_at, updated_by \
     FROM pyenvs WHERE (CAST(?1 AS TEXT) IS NULL OR project = ?1) ORDER BY project, name";

/// An environment as stored, read back from `(project, name, python,
/// requirements, updated_at, updated_by)`.
pub(crate) fn pyenv_from(row: (String, String, Option<String>, String, i64, String)) -> (String, PyEnv) {
    let (project, name, python, requirements, updated_at, updated_by) = row;
    (project, PyEnv { name, python, requirements, updated_at, updated_by })
}

pub(crate) const PUT_LIMIT: &str = "INSERT INTO tag_limits (project, tag, slots, updated_at, updated_by) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS BIGINT), CAST(?4 AS BIGINT), CAST(?5 AS TEXT) \
     WHERE EXISTS (SELECT 1 FROM projects WHERE name = ?1 AND deleted_at IS NULL) \
     ON CONFLICT (project, tag) DO UPDATE SET slots = excluded.slots, updated_at = excluded.updated_at, \
        updated_by = excluded.updated_by";

pub(crate) const DELETE_LIMIT: &str = "DELETE FROM tag_limits WHERE project = ?1 AND tag = ?2";

pub(crate) const RESET_LIMIT: &str = "UPDATE tag_limits SET reset_at = ?3 WHERE project = ?1 AND tag = ?2";

/// The finished time of the newest finished invocation of project `?1`
/// whose payloads, added to those of the newer ones, pass `?2` bytes.
/// `{LEN}` is the engine's byte length.
macro_rules! payload_cutoff {
    ($len:literal) => {
        concat!(
            "SELECT finished_at FROM (SELECT finished_at, SUM(",
            $len,
            "(input) + COALESCE(",
            $len,
            "(output), 0) + COALESCE(",
            $len,
            "(logs), 0)) OVER (ORDER BY finished_at DESC, id DESC) AS total FROM invocations \
             WHERE project = ?1 AND finished_at IS NOT NULL AND purged_at IS NULL) AS kept \
             WHERE total > ?2 ORDER BY finished_at DESC LIMIT 1"
        )
    };
}
pub(crate) const PAYLOAD_CUTOFF_SQLITE: &str = payload_cutoff!("LENGTH");
pub(crate) const PAYLOAD_CUTOFF_POSTGRES: &str = payload_cutoff!("octet_length");

/// The specs of the function versions whose artifacts are in use.
pub(crate) const SPECS_IN_USE: &str = "SELECT spec FROM functions WHERE deleted_at IS NULL \
     UNION SELECT f.spec FROM functions f JOIN (SELECT DISTINCT project, function, version FROM invocations \
        WHERE state IN ('queued', 'running')) i ON i.project = f.project AND i.function = f.name AND i.version = f.version";

/// The artifacts of function specs (as stored: JSON).
pub(crate) fn artifacts_of(specs: impl IntoIterator<Item = String>) -> std::collections::HashSet<String> {
    specs
        .into_iter()
        .filter_map(|s| serde_json::from_str::<stratus_core::FunctionSpec>(&s).ok())
        .map(|f| f.artifact)
        .collect()
}

/// `?1` is the project, or NULL for every project.
pub(crate) const LIMITS: &str = "SELECT project, tag, CAST(slots AS BIGINT), updated_at, updated_by, reset_at \
     FROM tag_limits WHERE (CAST(?1 AS TEXT) IS NULL OR project = ?1) ORDER BY project, tag";

/// A limit as stored, read back from `(project, tag, slots, updated_at,
/// updated_by, reset_at)`.
pub(crate) fn limit_from(row: (String, String, i64, i64, String, Option<i64>)) -> (String, TagLimit) {
    let (project, tag, slots, updated_at, updated_by, reset_at) = row;
    let slots = u32::try_from(slots).unwrap_or(u32::MAX);
    (project, TagLimit { tag, slots, updated_at, updated_by, reset_at })
}

pub(crate) const PUT_VARIABLE: &str = "INSERT INTO variables (project, name, value, json, version, updated_at, updated_by) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS BOOLEAN), 1, CAST(?5 AS BIGINT), \
            CAST(?6 AS TEXT) \
     WHERE EXISTS (SELECT 1 FROM projects WHERE name = ?1 AND deleted_at IS NULL) \
     ON CONFLICT (project, name) DO UPDATE SET value = excluded.value, json = excluded.json, \
        version = variables.version + 1, updated_at = excluded.updated_at, updated_by = excluded.updated_by";

pub(crate) const DELETE_VARIABLE: &str = "DELETE FROM variables WHERE project = ?1 AND name = ?2";

pub(crate) const PUT_SECRET: &str = "INSERT INTO secrets \
        (project, name, version, key_id, sealed, created_at, updated_at, updated_by) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS BIGINT), CAST(?4 AS TEXT), CAST(?5 AS TEXT), \
            CAST(?6 AS BIGINT), CAST(?7 AS BIGINT), CAST(?8 AS TEXT) \
     WHERE EXISTS (SELECT 1 FROM projects WHERE name = ?1 AND deleted_at IS NULL) \
     ON CONFLICT (project, name) DO UPDATE SET version = excluded.version, key_id = excluded.key_id, \
        sealed = excluded.sealed, updated_at = excluded.updated_at, updated_by = excluded.updated_by \
     WHERE secrets.version = excluded.version - 1";

pub(crate) const DELETE_SECRET: &str = "DELETE FROM secrets WHERE project = ?1 AND name = ?2";

pub(crate) const RESEAL_SECRET: &str =
    "UPDATE secrets SET key_id = ?4, sealed = ?5 WHERE project = ?1 AND name = ?2 AND version = ?3";

pub(crate) const VARIABLES: &str = "SELECT name, value, json, version, updated_at, updated_by FROM variables \
     WHERE project = ?1 ORDER BY name";

/// `?1` is the project, or NULL for every project.
pub(crate) const SECRETS: &str = "SELECT project, name, version, key_id, sealed, created_at, updated_at, updated_by \
     FROM secrets WHERE (CAST(?1 AS TEXT) IS NULL OR project = ?1) ORDER BY project, name";

pub(crate) const LIVE_PROJECTS: &str =
    "SELECT name, created_at, quotas FROM projects WHERE deleted_at IS NULL ORDER BY name";

pub(crate) const LIVE_TOKENS: &str = "SELECT hash, name, project, role, created_at, created_by, expires_at \
     FROM tokens WHERE revoked_at IS NULL ORDER BY created_at, name";

/// Empties finished invocations of project `?1` finished before `?2` (of
/// function `?4` only, unless NULL), but tasks of jobs still under way;
/// `?5` is the empty input; only ids in `[?6, ?7)` are looked at (the
/// project's id index bounds the scan: no index of their own, which every
/// finished invocation would have to be written into).
pub(crate) const PURGE: &str = "UPDATE invocations SET input = ?5, output = NULL, logs = NULL, purged_at = ?3 \
     WHERE project = ?1 AND id >= ?6 AND id < ?7 \
     AND finished_at IS NOT NULL AND finished_at < ?2 AND purged_at IS NULL \
     AND (CAST(?4 AS TEXT) IS NULL OR function = ?4) \
     AND (job_id IS NULL OR job_id NOT IN (SELECT id FROM jobs WHERE state IN ('running', 'reducing')))";

/// `?2` is the project, or NULL for every project.
pub(crate) const AUDIT: &str = "SELECT id, at, actor, project, action, target FROM audit \
     WHERE at >= ?1 AND (CAST(?2 AS TEXT) IS NULL OR project = ?2) ORDER BY at, id LIMIT ?3";

/// A statement in PostgreSQL's placeholder style: `?N` becomes `$N`.
pub(crate) fn pg(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The statements one trust change runs, in order: the first decides
/// whether the change applied, the rest run only if it did.
pub(crate) enum Steps<'a> {
    Project { name: &'a str, at: i64 },
    DeleteProject { name: &'a str, at: i64 },
    Token { token: &'a Token, first: bool },
    Revoke { name: &'a str, at: i64 },
    Quotas { name: &'a str, quotas: String },
    PutVariable { project: &'a str, v: &'a Variable },
    DeleteVariable { project: &'a str, name: &'a str },
    PutSecret { project: &'a str, s: &'a StoredSecret, version: i64, sealed: String },
    DeleteSecret { project: &'a str, name: &'a str },
    Reseal { project: &'a str, name: &'a str, version: i64, key_id: &'a str, sealed: String },
    PutLimit { project: &'a str, l: &'a TagLimit, slots: i64 },
    DeleteLimit { project: &'a str, tag: &'a str },
    PutPyEnv { project: &'a str, e: &'a PyEnv },
    DeletePyEnv { project: &'a str, name: &'a str },
    ResetLimit { project: &'a str, tag: &'a str, at: i64 },
}

impl<'a> Steps<'a> {
    pub(crate) fn of(change: &'a TrustChange) -> Self {
        match change {
            TrustChange::CreateProject(p) => Steps::Project { name: &p.name, at: p.created_at },
            TrustChange::DeleteProject { name, at } => Steps::DeleteProject { name, at: *at },
            TrustChange::PutToken { token, first } => Steps::Token { token, first: *first },
            TrustChange::RevokeToken { name, at } => Steps::Revoke { name, at: *at },
            TrustChange::SetQuotas { name, quotas } => {
                Steps::Quotas { name, quotas: serde_json::to_string(quotas).expect("quotas serialise") }
            }
            TrustChange::PutVariable { project, variable } => Steps::PutVariable { project, v: variable },
            TrustChange::DeleteVariable { project, name } => Steps::DeleteVariable { project, name },
            TrustChange::PutSecret { project, secret } => Steps::PutSecret {
                project,
                s: secret,
                version: secret.version as i64,
                sealed: sealed_text(&secret.sealed),
            },
            TrustChange::DeleteSecret { project, name } => Steps::DeleteSecret { project, name },
            TrustChange::Reseal { project, name, version, sealed } => Steps::Reseal {
                project,
                name,
                version: *version as i64,
                key_id: &sealed.key_id,
                sealed: sealed_text(sealed),
            },
            TrustChange::PutLimit { project, limit } => {
                Steps::PutLimit { project, l: limit, slots: i64::from(limit.slots) }
            }
            TrustChange::DeleteLimit { project, tag } => Steps::DeleteLimit { project, tag },
            TrustChange::ResetLimit { project, tag, at } => Steps::ResetLimit { project, tag, at: *at },
            TrustChange::PutPyEnv { project, env } => Steps::PutPyEnv { project, e: env },
            TrustChange::DeletePyEnv { project, name } => Steps::DeletePyEnv { project, name },
        }
    }
}

/// A sealed value as stored: base64.
fn sealed_text(s: &Sealed) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(&s.bytes)
}

/// A secret as stored, read back from `(project, name, version, key_id,
/// sealed, created_at, updated_at, updated_by)`.
#[allow(clippy::type_complexity)]
pub(crate) fn secret_from(
    row: (String, String, i64, String, String, i64, i64, String),
) -> Result<(String, StoredSecret), String> {
    use base64::Engine;
    let (project, name, version, key_id, sealed, created_at, updated_at, updated_by) = row;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|e| format!("secret {project}/{name}: {e}"))?;
    let secret = StoredSecret {
        name,
        version: version as u64,
        created_at,
        updated_at,
        updated_by,
        sealed: Sealed { key_id, bytes },
    };
    Ok((project, secret))
}

/// Quotas as stored, read back.
pub(crate) fn quotas_from(s: &str) -> Result<stratus_core::trust::Quotas, String> {
    serde_json::from_str(s).map_err(|e| format!("project quotas: {e}"))
}

/// A role as stored, read back.
pub(crate) fn role_from(s: &str) -> Result<Role, String> {
    s.parse::<Role>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(super::pg("a = ?1 AND b = ?12 OR c = '?'"), "a = $1 AND b = $12 OR c = '?'");
    }
}
