//! What every resource reads from a request, parsed in one place: the raw
//! body (with the size limit answered as a JSON 413), JSON bodies, ids, and
//! the query parameters several resources share (`wait`,
//! `limit`, `before`, flags), each with the message that names it.

use super::{AppState, MAX_WAIT};
use crate::error::{ApiError, ApiResult};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::collections::HashMap;
use std::time::Duration;
use stratus_core::Id;

/// The raw request body, with the size limit reported as a JSON 413.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge(state.max_body)),
            Err(r) => Err(ApiError::BadRequest(r.body_text())),
        }
    }
}

/// A JSON body, read after whatever the handler checks first (a name in the
/// path is validated before the body is).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

pub fn parse_id(s: &str) -> ApiResult<Id> {
    s.parse().map_err(ApiError::from)
}

/// The query string as names and values, with typed accessors for the
/// parameters several resources share. The handler decides when to read
/// each one, so the order of its checks (and so which error a request with
/// several mistakes gets) stays its own.
pub struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::BadRequest(r.body_text()))?;
        Ok(Params(q))
    }
}

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Refuses any parameter not in `known`.
    pub fn only(&self, known: &[&str]) -> ApiResult<()> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::BadRequest(format!("unknown query parameter '{k}'"))),
            None => Ok(()),
        }
    }

    /// `?wait=SECONDS`: 0 up to [`MAX_WAIT`]; a longer wait is cut to it.
    pub fn wait(&self) -> ApiResult<Option<Duration>> {
        let Some(v) = self.get("wait") else { return Ok(None) };
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            // Clamped before the conversion, which panics past u64 seconds.
            .map(|s| Some(Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64()))))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid wait '{v}': a number of seconds from 0 to {}",
                    MAX_WAIT.as_secs()
                ))
            })
    }

    /// `?tags=A,B`: a call's concurrency tags, validated; none when absent.
    pub fn tags(&self) -> ApiResult<Vec<String>> {
        let tags = self.get("tags").map(stratus_core::names::split_tags).unwrap_or_default();
        stratus_core::validate_tags(&tags)?;
        Ok(tags)
    }

    /// `?limit=N`, 1 to 1000, default 50.
    pub fn limit(&self) -> ApiResult<u32> {
        match self.get("limit") {
            None => Ok(50),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| ApiError::BadRequest(format!("invalid limit '{v}': use 1 to 1000"))),
        }
    }

    /// `?before=ID`: the page of a newest-first list that starts after `ID`.
    pub fn before(&self) -> ApiResult<Option<Id>> {
        self.get("before").map(parse_id).transpose()
    }

    /// A boolean parameter: absent, `false` or `0` is false; present without
    /// a value, `true` or `1` is true.
    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(v) => Err(ApiError::BadRequest(format!("invalid {name}: '{v}' is not true or false"))),
        }
    }
}

/// The parameters as the OpenAPI document describes them, one type for each
/// that several operations share. Handlers read them with [`Params`] and
/// `Path`; these types only document them.
pub mod params {
    use stratus_core::Id;
    use utoipa::IntoParams;

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct FunctionName {
        #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub name: String,
    }

    /// A Python environment's name.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct PyEnvName {
        #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub name: String,
    }

    /// A concurrency tag (`stratus_core::names::TAG_PATTERN`).
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Tag {
        #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
        pub tag: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Digest {
        /// The sha256 of the artifact's bytes, in hex.
        #[param(pattern = "^[0-9a-f]{64}$")]
        pub digest: String,
    }

    /// The id of an invocation or a job.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ResourceId {
        pub id: Id,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct WorkerId {
        /// The id the worker registered with.
        pub id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct Bucket {
        #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
        pub bucket: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ObjectKey {
        /// May contain '/'; no '.' or '..' segments.
        pub key: String,
    }

    /// A page of a newest-first list.
    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct Page {
        /// How many, 1 to 1000; 50 by default.
        #[param(minimum = 1, maximum = 1000)]
        pub limit: Option<u32>,
        /// Start after this id (the `next_before` of the previous page).
        pub before: Option<Id>,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct Wait {
        /// Seconds to wait for it to finish, at most 900.
        pub wait: Option<f64>,
    }
}
