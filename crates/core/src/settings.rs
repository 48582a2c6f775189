//! A project's variables and secrets: values its functions read from their
//! environment at each invocation, changed without deploying again.
//!
//! A variable is stored as it is and may be read by anyone who may read the
//! project. A secret is sealed with an AEAD ([`SecretKey`], ChaCha20-Poly1305)
//! before it reaches the store, bound to its project, name and version, and
//! is opened only for an attempt that needs it; the API answers with its
//! name, version and dates, never its value. What a function's stderr says
//! of a secret is masked ([`mask`]) before its logs are stored.

use crate::Error;
use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The most bytes a variable's or a secret's value may have.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// What replaces a secret's value in stored logs.
pub const MASK: &[u8] = b"***";

/// A variable's name, which is also the environment variable a function
/// reads it from: 1 to 128 of `A-Z a-z 0-9 _`, not starting with a digit,
/// and not `STRATUS_…` (those are Stratus's own).
pub fn validate_env_name(what: &str, name: &str) -> Result<(), Error> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if !ok {
        return Err(Error::invalid(
            what,
            format!(
                "'{}' is not a valid environment variable name: use 1 to 128 of A-Z, a-z, 0-9 and '_', \
                 not starting with a digit",
                name.chars().take(80).collect::<String>()
            ),
        ));
    }
    if name.starts_with("STRATUS_") {
        return Err(Error::invalid(what, format!("'{name}': names starting with STRATUS_ are Stratus's own")));
    }
    Ok(())
}

/// A secret's name: a name (`a-z 0-9 -`, at most 63) that starts with a
/// letter, so that the environment variable named after it by default is
/// valid.
pub fn validate_secret_name(name: &str) -> Result<(), Error> {
    crate::validate_name("secret", name)?;
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err(Error::invalid("secret", format!("'{name}' is not a valid name: a secret's starts with a letter")));
    }
    Ok(())
}

/// A value a function gets in its environment: text without NUL, at most
/// [`MAX_VALUE_BYTES`].
pub fn validate_value(what: &str, value: &[u8]) -> Result<String, Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid(what, format!("{} bytes; at most {MAX_VALUE_BYTES}", value.len())));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| Error::invalid(what, "must be UTF-8 text: it is put in an environment variable"))?;
    if text.contains('\0') {
        return Err(Error::invalid(what, "contains a NUL byte, which no environment variable can hold"));
    }
    Ok(text.to_string())
}

/// A function's use of a secret: the secret `name` in the environment
/// variable `env`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub name: String,
    pub env: String,
}

impl SecretRef {
    /// `NAME` or `NAME=ENV`; without `ENV`, the name in capitals with `_`
    /// for `-` (`db-password` → `DB_PASSWORD`).
    pub fn parse(s: &str) -> Result<SecretRef, Error> {
        let (name, env) = match s.split_once('=') {
            Some((n, e)) => (n.to_string(), e.to_string()),
            None => (s.to_string(), s.to_ascii_uppercase().replace('-', "_")),
        };
        let r = SecretRef { name, env };
        r.validate()?;
        Ok(r)
    }

    pub fn validate(&self) -> Result<(), Error> {
        validate_secret_name(&self.name)?;
        validate_env_name("secret's environment variable", &self.env)
    }
}

/// A variable as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Variable {
    pub name: String,
    pub value: String,
    /// Whether `value` was set as JSON (and is valid JSON).
    pub json: bool,
    /// 1 when first set, and one more at each change.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub updated_at: Millis,
    /// The token that set it last.
    pub updated_by: String,
}

/// A concurrency limit as stored: at most `slots` attempts carrying `tag`
/// run at once in its project; 0 pauses the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TagLimit {
    pub tag: String,
    pub slots: u32,
    /// Milliseconds since the Unix epoch.
    pub updated_at: Millis,
    /// The token that set it last.
    pub updated_by: String,
    /// When an admin last released its slots (`stratus limit reset`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_at: Option<Millis>,
}

/// The most slots a limit may have.
pub const MAX_LIMIT_SLOTS: u32 = 1_000_000;

/// A secret as stored: sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub name: String,
    pub version: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub updated_by: String,
    pub sealed: Sealed,
}

/// A value sealed by a [`SecretKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// [`SecretKey::id`] of the key that sealed it.
    pub key_id: String,
    /// 12-byte nonce, then the ciphertext and its 16-byte tag.
    pub bytes: Vec<u8>,
}

/// The key secrets are sealed with: 256 bits, from `--secret-key-file`
/// (written as 64 hex digits) or drawn on a single node's first start.
#[derive(Clone)]
pub struct SecretKey {
    key: [u8; 32],
    id: String,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

impl SecretKey {
    pub fn random() -> SecretKey {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source");
        SecretKey::from_bytes(key)
    }

    pub fn from_bytes(key: [u8; 32]) -> SecretKey {
        let mut h = Sha256::new();
        h.update(b"stratus-secret-key-id:");
        h.update(key);
        let id = crate::trust::hex_of(&h.finalize()[..8]);
        SecretKey { key, id }
    }

    /// A key as written in a key file: 64 hex digits, surrounding white
    /// space ignored.
    pub fn parse(text: &str) -> Result<SecretKey, Error> {
        let t = text.trim();
        let bad = || {
            Error::invalid("secret key", "a key file holds 64 hex digits (256 bits), e.g. from `openssl rand -hex 32`")
        };
        if t.len() != 64 {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, pair) in t.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| bad())?;
            key[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
        }
        Ok(SecretKey::from_bytes(key))
    }

    /// The key as a key file holds it.
    pub fn to_hex(&self) -> String {
        crate::trust::hex_of(&self.key)
    }

    /// Names the key without revealing it: which key sealed a value.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals the value of version `version` of secret `name` of `project`.
    pub fn seal(&self, project: &str, name: &str, version: u64, value: &[u8]) -> Sealed {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 256-bit key"));
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the operating system's random source");
        let mut data = value.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(project, name, version)),
            &mut data,
        )
        .expect("a value under 4 GiB");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&data);
        Sealed { key_id: self.id.clone(), bytes }
    }

    /// Opens what [`SecretKey::seal`] sealed for the same project, name and
    /// version; `None` if the key, the binding or a byte differs.
    pub fn open(&self, project: &str, name: &str, version: u64, sealed: &Sealed) -> Option<Vec<u8>> {
        use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
        if sealed.bytes.len() < 12 + 16 {
            return None;
        }
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 256-bit key"));
        let (nonce, rest) = sealed.bytes.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = rest.to_vec();
        let plain = key.open_in_place(nonce, Aad::from(aad(project, name, version)), &mut data).ok()?;
        Some(plain.to_vec())
    }
}

fn aad(project: &str, name: &str, version: u64) -> Vec<u8> {
    format!("stratus-secret\0{project}\0{name}\0{version}").into_bytes()
}

/// The keys a server holds: the one it seals with, and older ones it still
/// opens with until every secret is sealed again under the current one.
#[derive(Debug, Clone)]
pub struct SecretKeys {
    pub current: SecretKey,
    pub previous: Vec<SecretKey>,
}

impl SecretKeys {
    /// Opens a stored secret with whichever key sealed it.
    pub fn open(&self, project: &str, s: &StoredSecret) -> Result<Vec<u8>, Error> {
        let key = std::iter::once(&self.current).chain(&self.previous).find(|k| k.id() == s.sealed.key_id).ok_or_else(
            || {
                Error::invalid(
                    "secret key",
                    format!(
                        "secret '{}' is sealed with key {}, which this server does not hold (it holds {}): \
                         give every server the same --secret-key-file",
                        s.name,
                        s.sealed.key_id,
                        self.current.id()
                    ),
                )
            },
        )?;
        key.open(project, &s.name, s.version, &s.sealed).ok_or_else(|| {
            Error::invalid("secret", format!("secret '{}' does not open: its stored bytes were changed", s.name))
        })
    }
}

/// `logs` with every occurrence of each of `secrets` replaced by [`MASK`].
/// `truncated` says the logs were cut at their cap: a secret's beginning
/// left at their end is masked too. Empty secrets are ignored.
pub fn mask(logs: &[u8], secrets: &[&[u8]], truncated: bool) -> Vec<u8> {
    let secrets: Vec<&[u8]> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    if secrets.is_empty() {
        return logs.to_vec();
    }
    let mut out = Vec::with_capacity(logs.len());
    let mut i = 0;
    'scan: while i < logs.len() {
        // The longest secret that starts here, so that one containing
        // another is masked whole.
        if let Some(len) = secrets.iter().filter(|s| logs[i..].starts_with(s)).map(|s| s.len()).max() {
            out.extend_from_slice(MASK);
            i += len;
            continue;
        }
        if truncated {
            for s in &secrets {
                let rest = &logs[i..];
                if rest.len() < s.len() && s.starts_with(rest) {
                    out.extend_from_slice(MASK);
                    break 'scan;
                }
            }
        }
        out.push(logs[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_binding() {
        let k = SecretKey::random();
        let s = k.seal("p", "db", 2, b"hunter2");
        assert!(!s.bytes.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("p", "db", 2, &s).as_deref(), Some(&b"hunter2"[..]));
        assert_eq!(k.open("p", "db", 3, &s), None, "bound to its version");
        assert_eq!(k.open("q", "db", 2, &s), None, "bound to its project");
        assert_eq!(k.open("p", "other", 2, &s), None, "bound to its name");
        assert_eq!(SecretKey::random().open("p", "db", 2, &s), None, "another key");
        let mut bent = s.clone();
        *bent.bytes.last_mut().unwrap() ^= 1;
        assert_eq!(k.open("p", "db", 2, &bent), None, "a changed byte");
        assert_ne!(k.seal("p", "db", 2, b"hunter2").bytes, s.bytes, "a fresh nonce each time");

        let again = SecretKey::parse(&format!("{}\n", k.to_hex())).unwrap();
        assert_eq!(again.id(), k.id());
        assert!(SecretKey::parse("abc").is_err());
        assert!(SecretKey::parse(&"zz".repeat(32)).is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()), "Debug shows only the id");

        let old = SecretKey::random();
        let stored = StoredSecret {
            name: "db".into(),
            version: 1,
            created_at: 0,
            updated_at: 0,
            updated_by: "t".into(),
            sealed: old.seal("p", "db", 1, b"v"),
        };
        let keys = SecretKeys { current: k.clone(), previous: vec![old] };
        assert_eq!(keys.open("p", &stored).unwrap(), b"v");
        let e = SecretKeys { current: k, previous: vec![] }.open("p", &stored).unwrap_err().to_string();
        assert!(e.contains("--secret-key-file"), "{e}");
    }

    #[test]
    fn masking_covers_every_occurrence_and_a_cut_end() {
        let m = |logs: &str, secrets: &[&str], cut: bool| {
            let s: Vec<&[u8]> = secrets.iter().map(|s| s.as_bytes()).collect();
            String::from_utf8(mask(logs.as_bytes(), &s, cut)).unwrap()
        };
        assert_eq!(m("pw=hunter2 and hunter2\n", &["hunter2"], false), "pw=*** and ***\n");
        assert_eq!(m("abcd", &["bc", "abcd"], false), "***", "the longest match");
        assert_eq!(m("x hunt", &["hunter2"], false), "x hunt", "not cut: a prefix is just text");
        assert_eq!(m("x hunt", &["hunter2"], true), "x ***");
        assert_eq!(m("plain", &[""], false), "plain");
    }

    #[test]
    fn names_and_references() {
        assert!(validate_env_name("variable", "API_URL").is_ok());
        assert!(validate_env_name("variable", "1X").is_err());
        assert!(validate_env_name("variable", "A-B").is_err());
        assert!(validate_env_name("variable", "STRATUS_TOKEN").is_err());
        assert_eq!(SecretRef::parse("db-password").unwrap().env, "DB_PASSWORD");
        assert_eq!(
            SecretRef::parse("db=PGPASSWORD").unwrap(),
            SecretRef { name: "db".into(), env: "PGPASSWORD".into() }
        );
        assert!(SecretRef::parse("Bad Name").is_err());
        assert!(SecretRef::parse("0").is_err() && validate_secret_name("9lives").is_err());
        assert!(validate_value("value", b"ok").is_ok());
        assert!(validate_value("value", b"a\0b").is_err());
        assert!(validate_value("value", &[0xff]).is_err());
        assert!(validate_value("value", &vec![b'a'; MAX_VALUE_BYTES + 1]).is_err());
    }
}
