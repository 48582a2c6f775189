//! Python environments (`stratus pyenv`): the packages of a requirements
//! file, installed once per worker for a Python minor version, that process
//! functions (and the Python SDK's runner) import. A function pins the
//! environment it was deployed with ([`PyEnvSpec`] in its spec); each worker
//! installs it on first use into a directory named by its digest, so a
//! change of the requirements is a new environment, never an edit of one in
//! use.

use crate::Error;
use crate::clock::Millis;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest requirements file an environment may have.
pub const MAX_REQUIREMENTS_BYTES: usize = 64 * 1024;

/// What a function runs with: the requirements, and the interpreter's minor
/// version (`None`: the worker's `python3`). `name` is the environment it
/// came from (`None` for a bundle's own `requirements.txt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PyEnvSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    pub requirements: String,
}

impl PyEnvSpec {
    /// Names the installed environment: the same requirements for the same
    /// interpreter are one environment, whatever its name.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.python.as_deref().unwrap_or("python3").as_bytes());
        h.update(b"\n");
        h.update(self.requirements.as_bytes());
        crate::trust::hex_of(&h.finalize())
    }

    /// The interpreter functions run with and packages are installed for:
    /// `python3.X`, or `python3`.
    pub fn interpreter(&self) -> String {
        match &self.python {
            Some(v) => format!("python{v}"),
            None => "python3".into(),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if let Some(v) = &self.python {
            validate_python(v)?;
        }
        validate_requirements(&self.requirements)
    }
}

/// A project's named environment, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PyEnv {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    pub requirements: String,
    /// Milliseconds since the Unix epoch.
    pub updated_at: Millis,
    /// The token that set it last.
    pub updated_by: String,
}

impl PyEnv {
    /// What a function deployed with it pins.
    pub fn spec(&self) -> PyEnvSpec {
        PyEnvSpec {
            name: Some(self.name.clone()),
            python: self.python.clone(),
            requirements: self.requirements.clone(),
        }
    }
}

/// A Python minor version: `3.N`.
pub fn validate_python(v: &str) -> Result<(), Error> {
    let ok = v.strip_prefix("3.").is_some_and(|minor| {
        !minor.is_empty() && minor.len() <= 2 && minor.bytes().all(|b| b.is_ascii_digit()) && !minor.starts_with('0')
    });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("python", format!("'{v}' is not a Python 3 minor version such as 3.11")))
    }
}

/// A requirements file: at most [`MAX_REQUIREMENTS_BYTES`], and only
/// requirement lines (no pip options, which could point pip at another
/// index or at files of the worker).
pub fn validate_requirements(text: &str) -> Result<(), Error> {
    if text.len() > MAX_REQUIREMENTS_BYTES {
        return Err(Error::invalid("requirements", format!("longer than {MAX_REQUIREMENTS_BYTES} bytes")));
    }
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = line.starts_with('-')
            || line.contains("://")
            || line.starts_with('.')
            || line.starts_with('/')
            || line.contains('\0');
        if bad {
            return Err(Error::invalid(
                "requirements",
                format!(
                    "line {}: '{line}': only package requirements (e.g. numpy==2.1.0) are allowed, \
                     not pip options, URLs or paths",
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_requirements_are_checked() {
        for ok in ["3.9", "3.11", "3.13"] {
            assert!(validate_python(ok).is_ok(), "{ok}");
        }
        for bad in ["3", "3.", "2.7", "3.011", "3.1a", "python3.11", "3.111"] {
            assert!(validate_python(bad).is_err(), "{bad}");
        }
        assert!(validate_requirements("six==1.16.0\n# a comment\nnumpy>=2 ; python_version>'3.9'\n\n").is_ok());
        for bad in
            ["-i https://evil/simple", "--extra-index-url x", "git+https://x/y", "./local", "/abs/path", "-r other.txt"]
        {
            assert!(validate_requirements(bad).is_err(), "{bad}");
        }
        assert!(validate_requirements(&"a\n".repeat(MAX_REQUIREMENTS_BYTES)).is_err());
    }

    #[test]
    fn the_digest_names_the_requirements_and_interpreter_not_the_name() {
        let a = PyEnvSpec { name: Some("a".into()), python: Some("3.11".into()), requirements: "six\n".into() };
        let b = PyEnvSpec { name: Some("b".into()), ..a.clone() };
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), PyEnvSpec { python: None, ..a.clone() }.digest());
        assert_ne!(a.digest(), PyEnvSpec { requirements: "six==1\n".into(), ..a.clone() }.digest());
        assert_eq!(
            (a.interpreter(), PyEnvSpec { python: None, ..a }.interpreter()),
            ("python3.11".into(), "python3".into())
        );
    }
}
