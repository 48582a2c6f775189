//! `/v1/artifacts/{digest}`: wasm modules and bundle archives, stored under
//! their sha256.

use super::AppState;
use super::extract::Body;
use super::extract::params::Digest;
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use stratus_blob::Key;
use stratus_core::api::{ArtifactStored, ErrorBody};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/artifacts/{digest}", put(put_artifact).head(head_artifact).get(get_artifact))
}

fn check_digest(digest: &str) -> ApiResult<()> {
    if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid artifact digest '{digest}': expected 64 lowercase hex characters (sha256)"
        )))
    }
}

#[utoipa::path(
    put,
    path = "/v1/artifacts/{digest}",
    params(Digest),
    summary = "Upload a wasm module or bundle archive under its sha256",
    request_body(content(("application/octet-stream"))),
    responses(
        (status = 201, description = "stored", body = ArtifactStored),
        (status = 400, description = "error", body = ErrorBody),
        (status = 413, description = "error", body = ErrorBody),
    )
)]
async fn put_artifact(
    State(st): State<AppState>,
    Path(digest): Path<String>,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    check_digest(&digest)?;
    let actual = stratus_runtime::bundle::digest(&body);
    if actual != digest {
        return Err(ApiError::BadRequest(format!(
            "artifact digest mismatch: the body's sha256 is {actual}, not {digest}"
        )));
    }
    let size = body.len() as u64;
    st.objects.put(&Key::artifact(&digest), body).await?;
    Ok((StatusCode::CREATED, Json(ArtifactStored { digest, size })))
}

async fn get_artifact(State(st): State<AppState>, Path(digest): Path<String>) -> ApiResult<Response> {
    check_digest(&digest)?;
    let bytes = st.objects.get(&Key::artifact(&digest)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

#[utoipa::path(
    head,
    path = "/v1/artifacts/{digest}",
    params(Digest),
    summary = "Whether an artifact is stored",
    responses((status = 200, description = "stored"), (status = 404, description = "not stored"))
)]
async fn head_artifact(State(st): State<AppState>, Path(digest): Path<String>) -> ApiResult<StatusCode> {
    check_digest(&digest)?;
    match st.objects.head(&Key::artifact(&digest)).await? {
        Some(_) => Ok(StatusCode::OK),
        None => Ok(StatusCode::NOT_FOUND),
    }
}

/// How long an artifact no function uses is kept: time to deploy what was
/// just uploaded.
pub const UNUSED_GRACE_MS: i64 = 3600 * 1000;

/// Deletes the artifacts that no live function, and no queued or running
/// invocation's function version, uses: of `only` (digests) when given,
/// else every one stored before `before`. Returns how many it deleted.
pub async fn collect(
    store: &dyn stratus_store::StateStore,
    objects: &dyn stratus_blob::ObjectStore,
    only: Option<&[String]>,
    before: i64,
) -> Result<usize, String> {
    let in_use = store.artifacts_in_use().await.map_err(|e| e.to_string())?;
    let candidates: Vec<String> = match only {
        Some(digests) => digests.iter().filter(|d| !in_use.contains(*d)).cloned().collect(),
        None => objects
            .list(Some(&Key::artifacts()))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|m| m.last_modified < before)
            .filter_map(|m| Key::artifact_digest(&m.key).map(str::to_string))
            .filter(|d| !in_use.contains(d))
            .collect(),
    };
    let mut deleted = 0;
    for digest in candidates {
        if objects.delete(&Key::artifact(&digest)).await.map_err(|e| e.to_string())? {
            deleted += 1;
        }
    }
    Ok(deleted)
}
