//! Who may do what: projects, API tokens and their roles, and the audit
//! trail of changes to them.
//!
//! A token is 256 random bits shown once to whoever created it; the store
//! keeps only its SHA-256 ([`hash_token`]). Every token has a role, and
//! every role but `worker` acts inside one project. What each role may do
//! is [`Role::may`], against the [`Need`] of a request.

use crate::clock::Millis;
use crate::settings::{Sealed, StoredSecret, TagLimit, Variable};
use crate::{Error, Id};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Projects, tokens, and everything inside any project.
    Admin,
    /// Everything inside its project.
    Developer,
    /// Invokes functions and runs jobs in its project, and reads it.
    Invoker,
    /// Reads its project.
    Reader,
    /// The worker API only; belongs to no project and serves all.
    Worker,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Developer, Role::Invoker, Role::Reader, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Invoker => "invoker",
            Role::Reader => "reader",
            Role::Worker => "worker",
        }
    }

    /// Whether this role may make a request that needs `need`.
    pub fn may(self, need: Need) -> bool {
        use Role::*;
        match need {
            Need::Read => matches!(self, Admin | Developer | Invoker | Reader),
            Need::Fetch => matches!(self, Admin | Developer | Invoker | Reader | Worker),
            Need::Invoke => matches!(self, Admin | Developer | Invoker),
            Need::Develop => matches!(self, Admin | Developer),
            Need::Admin => self == Admin,
            Need::Worker => self == Worker,
            Need::Any => true,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            Error::invalid("role", format!("'{s}' is not a role: use admin, developer, invoker, reader or worker"))
        })
    }
}

/// What a request needs its token's role to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Reading a project's functions, invocations, jobs, objects and logs.
    Read,
    /// Reading artifacts and objects, which workers do too (for any project).
    Fetch,
    /// Invoking functions and running jobs.
    Invoke,
    /// Deploying and deleting functions, writing objects, cancelling jobs.
    Develop,
    /// Projects and tokens.
    Admin,
    /// The worker API.
    Worker,
    /// Asking who the token is.
    Any,
}

/// A token as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret's SHA-256, in hex.
    pub hash: String,
    /// Unique among tokens not revoked.
    pub name: String,
    /// The project it acts in; empty for a worker token.
    pub project: String,
    pub role: Role,
    pub created_at: Millis,
    /// The name of the token that created it (`-` for the first admin token).
    pub created_by: String,
    pub expires_at: Option<Millis>,
    pub revoked_at: Option<Millis>,
}

impl Token {
    /// Whether it is accepted at `now`.
    pub fn live(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A project: a namespace of functions, invocations, jobs and objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    pub created_at: Millis,
    pub quotas: Quotas,
}

/// A project's limits, enforced by the server; a limit left out takes its
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Tasks one job may have [default: 1,000,000].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks_per_job: Option<u64>,
    /// Bytes one object may have [default: no limit but the request body's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<u64>,
    /// The smallest `chunk_size` of a map over objects [default: 64 KiB].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_chunk_size: Option<u64>,
    /// Seconds a finished invocation keeps its input, output and logs
    /// [default: 7 days].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_s: Option<u64>,
    /// Attempts of the project that may run at once; more wait in the
    /// queue [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// Bytes all the project's objects may have together [default: no
    /// limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<u64>,
    /// Bytes of payloads (inputs, outputs, logs) its finished invocations
    /// keep in all: past it, the oldest are emptied as if their retention
    /// had passed [default: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
}

impl Quotas {
    pub const DEFAULT_MAX_TASKS_PER_JOB: u64 = 1_000_000;
    pub const DEFAULT_MIN_CHUNK_SIZE: u64 = 64 << 10;
    pub const DEFAULT_RETENTION_S: u64 = 7 * 24 * 3600;

    pub fn retention_ms(&self) -> i64 {
        (self.retention_s.unwrap_or(Self::DEFAULT_RETENTION_S).min(100 * 365 * 24 * 3600) * 1000) as i64
    }

    pub fn max_tasks_per_job(&self) -> u64 {
        self.max_tasks_per_job.unwrap_or(Self::DEFAULT_MAX_TASKS_PER_JOB)
    }

    pub fn min_chunk_size(&self) -> u64 {
        self.min_chunk_size.unwrap_or(Self::DEFAULT_MIN_CHUNK_SIZE)
    }

    /// Refuses zeros: a limit of nothing is a mistake, not a setting.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, v) in [
            ("max_tasks_per_job", self.max_tasks_per_job),
            ("max_object_size", self.max_object_size),
            ("min_chunk_size", self.min_chunk_size),
            ("retention_s", self.retention_s),
            ("max_running", self.max_running.map(u64::from)),
            ("max_object_bytes", self.max_object_bytes),
            ("retention_bytes", self.retention_bytes),
        ] {
            if v == Some(0) {
                return Err(Error::invalid(name, "must be at least 1"));
            }
        }
        Ok(())
    }
}

/// One recorded change: who (the token's name) did what to what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: Id,
    /// Milliseconds since the Unix epoch.
    pub at: Millis,
    /// The name of the token that made the change.
    pub actor: String,
    /// The project changed, or the project the change happened in.
    pub project: String,
    /// `project.create`, `project.delete`, `project.quotas`,
    /// `token.create`, `token.revoke`, `function.deploy`, `function.delete`,
    /// `variable.set`, `variable.delete`, `secret.set`, `secret.delete` or
    /// `secret.reseal`.
    pub action: String,
    /// What was changed: a project, token or function name.
    pub target: String,
}

/// A change to projects, tokens, or a project's variables and secrets,
/// applied by the state store inside a commit, each guarded so that it
/// applies at most once. Deleting a project deletes its variables and
/// secrets with it.
#[derive(Debug, Clone)]
pub enum TrustChange {
    /// Applies when no project of that name ever existed: a deleted
    /// project's name is not given to another, which would see its data.
    CreateProject(Project),
    /// Applies while the project is live and has no live function; revokes
    /// its tokens with it.
    DeleteProject { name: String, at: Millis },
    /// Applies when no live token has that name and, but for a worker
    /// token, its project is live. With `first`, applies only when no token
    /// was ever stored: the admin token a new installation starts with.
    PutToken { token: Token, first: bool },
    /// Applies while the token is not revoked.
    RevokeToken { name: String, at: Millis },
    /// Applies while the project is live.
    SetQuotas { name: String, quotas: Quotas },
    /// Sets a variable while its project is live: version 1, or the stored
    /// one + 1 (the variable's own `version` is not read).
    PutVariable { project: String, variable: Variable },
    /// Applies when the variable exists.
    DeleteVariable { project: String, name: String },
    /// Sets a secret, sealed for its `version`, while its project is live:
    /// applies only if the stored version is `version - 1` (or none is
    /// stored, for version 1), since the seal is bound to the version.
    PutSecret { project: String, secret: StoredSecret },
    /// Applies when the secret exists.
    DeleteSecret { project: String, name: String },
    /// The same value sealed again under another key: applies only while
    /// the secret is at `version`, which stays.
    Reseal { project: String, name: String, version: u64, sealed: Sealed },
    /// Sets a concurrency limit while its project is live.
    PutLimit { project: String, limit: TagLimit },
    /// Sets a Python environment while its project is live.
    PutPyEnv { project: String, env: crate::pyenv::PyEnv },
    /// Applies when the environment exists.
    DeletePyEnv { project: String, name: String },
    /// Applies when the limit exists.
    DeleteLimit { project: String, tag: String },
    /// Records that an admin released every slot of the tag (the
    /// scheduler forgets its holders): applies when the limit exists.
    ResetLimit { project: String, tag: String, at: Millis },
}

/// The prefix of an attempt's token.
pub const ATTEMPT_TOKEN_PREFIX: &str = "stratus_a.";

/// Signs and checks the tokens a function's attempts get (`STRATUS_TOKEN`),
/// so that code inside a function calls the API as its project, until its
/// attempt's deadline. A token is `stratus_a.PROJECT.INVOCATION.ATTEMPT.
/// EXPIRES.MAC`, the MAC an HMAC-SHA256 under a key the leading server
/// draws when it takes the lead and never stores: nothing is written per
/// attempt, and a leader that takes over does not honour its
/// predecessor's (their attempts are run again anyway).
pub struct AttemptKey([u8; 32]);

impl AttemptKey {
    pub fn random() -> AttemptKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        AttemptKey(key)
    }

    pub fn mint(&self, project: &str, invocation: Id, attempt: u32, expires_at: Millis) -> String {
        use base64::Engine;
        let body = format!("{project}.{invocation}.{attempt}.{expires_at}");
        let mac = hmac_sha256(&self.0, body.as_bytes());
        format!("{ATTEMPT_TOKEN_PREFIX}{body}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac))
    }

    /// The project, invocation and attempt of a token this key signed that
    /// has not expired at `now`.
    pub fn check(&self, token: &str, now: Millis) -> Option<(String, Id, u32)> {
        let (project, invocation, attempt, expires) = self.signed(token)?;
        (now < expires).then_some((project, invocation, attempt))
    }

    /// Whether `token` is this key's for attempt `attempt` of
    /// `invocation`, expired or not: the claim of an attempt dispatched
    /// through the broker, whose message may wait past the deadline.
    pub fn claims(&self, token: &str, invocation: Id, attempt: u32) -> bool {
        self.signed(token).is_some_and(|(_, i, a, _)| i == invocation && a == attempt)
    }

    /// What a token this key signed says: project, invocation, attempt and
    /// deadline.
    fn signed(&self, token: &str) -> Option<(String, Id, u32, Millis)> {
        use base64::Engine;
        let rest = token.strip_prefix(ATTEMPT_TOKEN_PREFIX)?;
        let (body, mac) = rest.rsplit_once('.')?;
        let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(mac).ok()?;
        let expected = hmac_sha256(&self.0, body.as_bytes());
        // Compared in constant time: every byte is looked at.
        if mac.len() != expected.len() || mac.iter().zip(expected).fold(0u8, |d, (a, b)| d | (a ^ b)) != 0 {
            return None;
        }
        let mut parts = body.split('.');
        let (project, invocation, attempt, expires) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let expires: Millis = expires.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some((project.to_string(), invocation.parse().ok()?, attempt.parse().ok()?, expires))
    }
}

/// HMAC-SHA256 (RFC 2104) of `msg` under a key of at most 64 bytes.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    assert!(key.len() <= 64, "longer keys are hashed first; ours are 32 bytes");
    let mut inner = Sha256::new();
    let mut outer = Sha256::new();
    let (mut ipad, mut opad) = ([0x36u8; 64], [0x5cu8; 64]);
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    inner.update(ipad);
    inner.update(msg);
    outer.update(opad);
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// The prefix of every token's secret, so one found in a file or a log can
/// be recognised (and so a secret scanner can be taught it).
pub const TOKEN_PREFIX: &str = "stratus_";

/// A new token's secret: [`TOKEN_PREFIX`] and 256 random bits, base64url.
pub fn new_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of a secret, in hex: all the store keeps of a token.
pub fn hash_token(secret: &str) -> String {
    hex_of(&Sha256::digest(secret.as_bytes()))
}

/// `bytes` in lower-case hex.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// A token's name: 1 to 63 of `a-z 0-9 - _ .`.
pub fn validate_token_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "token name",
            format!(
                "'{}' is not a valid token name: use 1 to 63 characters of a-z, 0-9, '-', '_' and '.'",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hashed() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "256 bits in base64url");
        assert_eq!(hash_token("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn roles_allow_what_they_say() {
        use Need::*;
        let table = [
            (Role::Admin, [true, true, true, true, false, true]),
            (Role::Developer, [true, true, true, false, false, true]),
            (Role::Invoker, [true, true, false, false, false, true]),
            (Role::Reader, [true, false, false, false, false, true]),
            (Role::Worker, [false, false, false, false, true, true]),
        ];
        for (role, allowed) in table {
            for (need, ok) in [Read, Invoke, Develop, Admin, Worker, Fetch].into_iter().zip(allowed) {
                assert_eq!(role.may(need), ok, "{role} {need:?}");
            }
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!("root".parse::<Role>().unwrap_err().to_string().contains("not a role"));
    }

    #[test]
    fn attempt_tokens_are_signed_and_expire() {
        let key = AttemptKey([7; 32]);
        let id = crate::new_id();
        let t = key.mint("team-a", id, 2, 1000);
        assert_eq!(key.check(&t, 999), Some(("team-a".to_string(), id, 2)));
        assert_eq!(key.check(&t, 1000), None, "expired");
        assert_eq!(AttemptKey([8; 32]).check(&t, 0), None, "another leader's key");
        let forged = t.replacen("team-a", "team-b", 1);
        assert_eq!(key.check(&forged, 0), None, "the project is signed");
        assert_eq!(key.check("stratus_a.x", 0), None);
        assert!(key.claims(&t, id, 2) && key.check(&t, 5000).is_none(), "a claim holds past the deadline");
        assert!(!key.claims(&t, id, 3) && !key.claims(&t, crate::new_id(), 2), "for its attempt only");
        assert!(!AttemptKey([8; 32]).claims(&t, id, 2) && !key.claims(&forged, id, 2));
        // RFC 4231, test cases 1 and 2.
        assert_eq!(
            hex_of(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex_of(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn expiry_and_revocation() {
        let t = Token {
            hash: hash_token("x"),
            name: "t".into(),
            project: "p".into(),
            role: Role::Reader,
            created_at: 0,
            created_by: "-".into(),
            expires_at: Some(100),
            revoked_at: None,
        };
        assert!(t.live(99));
        assert!(!t.live(100));
        assert!(!Token { revoked_at: Some(5), ..t.clone() }.live(0));
        assert!(Token { expires_at: None, ..t }.live(i64::MAX));
        assert!(validate_token_name("ci.deploy_1").is_ok());
        assert!(validate_token_name("Bad Name").is_err());
    }
}
