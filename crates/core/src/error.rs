use thiserror::Error;

/// Errors of validation and of the domain rules. Each names the field or the
/// thing that was wrong, because the message reaches the user as is.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{kind} '{name}' not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { field: field.into(), message: message.into() }
    }
    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Error::NotFound { kind, name: name.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
