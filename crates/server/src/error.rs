//! API errors and their one mapping to HTTP: a status and a JSON body
//! `{"error": {"code": "...", "message": "..."}}`. Internal errors are logged
//! once, here, and reach the client without their details.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stratus_core::api::{ErrorBody, ErrorDetail};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// No token, or one that is unknown, expired or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's role does not allow the request.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    RangeNotSatisfiable(String),
    #[error("{0}")]
    Gone(String),
    /// A project's quota would be exceeded; nothing was created.
    #[error("{0}")]
    Quota(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            ApiError::Gone(_) => (StatusCode::GONE, "gone"),
            ApiError::Quota(_) => (StatusCode::UNPROCESSABLE_ENTITY, "quota_exceeded"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        (status, Json(ErrorBody { error: ErrorDetail { code: code.to_string(), message } })).into_response()
    }
}

impl From<stratus_core::Error> for ApiError {
    fn from(e: stratus_core::Error) -> Self {
        match e {
            stratus_core::Error::Invalid { .. } => ApiError::BadRequest(e.to_string()),
            stratus_core::Error::NotFound { .. } => ApiError::NotFound(e.to_string()),
            stratus_core::Error::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

impl From<stratus_store::Error> for ApiError {
    fn from(e: stratus_store::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::scheduler::Error> for ApiError {
    fn from(e: crate::scheduler::Error) -> Self {
        match e {
            crate::scheduler::Error::Store(e) => e.into(),
            crate::scheduler::Error::Stopped => ApiError::Unavailable("the server is stopping".into()),
        }
    }
}

impl From<stratus_blob::Error> for ApiError {
    fn from(e: stratus_blob::Error) -> Self {
        match e {
            stratus_blob::Error::NotFound(k) => ApiError::NotFound(format!("object '{k}' not found")),
            stratus_blob::Error::InvalidKey { .. } => ApiError::BadRequest(e.to_string()),
            stratus_blob::Error::Conflict(..) => ApiError::Conflict(e.to_string()),
            // The body being stored broke off (the client went away or sent a bad stream).
            stratus_blob::Error::Source(_) => ApiError::BadRequest(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
