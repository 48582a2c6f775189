//! `/v1/limits`: a project's concurrency limits by tag. A limit is stored
//! through the commit path; its occupancy is the leading scheduler's, read
//! from the attempts in flight (`scheduler/tags.rs`).

use super::AppState;
use super::auth::Caller;
use super::extract::params::Tag;
use super::extract::{Body, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use stratus_core::api::{ErrorBody, LimitInfo, LimitList, LimitRequest};
use stratus_core::settings::{MAX_LIMIT_SLOTS, TagLimit};
use stratus_core::trust::TrustChange;
use stratus_core::validate_tag;

/// Waiting invocations `GET /v1/limits/{tag}` lists at most.
const WAITERS_SHOWN: usize = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/limits", get(list_limits))
        .route("/v1/limits/{tag}", get(show_limit).put(set_limit).delete(delete_limit))
        .route("/v1/limits/{tag}/reset", post(reset_limit))
}

/// Commits a change to a limit with its audit entry and its event
/// (`stratus.limit.set|deleted|reset`); whether it applied.
async fn commit(st: &AppState, caller: &Caller, change: TrustChange, action: &str, tag: &str) -> ApiResult<bool> {
    let event = stratus_core::events::builtin::limit(&caller.project, tag, action, st.clock.now_ms());
    super::settings::commit_with(st, caller, change, action, tag, event).await
}

fn no_limit(tag: &str) -> ApiError {
    ApiError::NotFound(format!("no limit is set on tag '{tag}'"))
}

async fn stored(st: &AppState, project: &str, tag: &str) -> ApiResult<Option<TagLimit>> {
    Ok(st.store.limits(Some(project)).await?.into_iter().map(|(_, l)| l).find(|l| l.tag == tag))
}

/// A limit with its occupancy; with `detail`, its holders and waiters too.
fn info(st: &AppState, project: &str, limit: TagLimit, detail: bool) -> LimitInfo {
    let (holders, waiting, waiters) =
        st.scheduler.limit_status(project, &limit.tag, if detail { WAITERS_SHOWN } else { 0 });
    LimitInfo {
        limit,
        running: holders.len() as u64,
        waiting: waiting as u64,
        holders: detail.then_some(holders),
        waiters: detail.then_some(waiters),
    }
}

#[utoipa::path(
    get,
    path = "/v1/limits",
    summary = "List the project's concurrency limits, with their occupancy",
    responses((status = 200, description = "limits", body = LimitList))
)]
async fn list_limits(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<LimitList>> {
    let limits = st.store.limits(Some(&caller.project)).await?;
    Ok(Json(LimitList { limits: limits.into_iter().map(|(_, l)| info(&st, &caller.project, l, false)).collect() }))
}

#[utoipa::path(
    get,
    path = "/v1/limits/{tag}",
    params(Tag),
    summary = "Show a limit: the attempts holding its slots, and those waiting for one",
    responses(
        (status = 200, description = "the limit", body = LimitInfo),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_limit(State(st): State<AppState>, caller: Caller, Path(tag): Path<String>) -> ApiResult<Json<LimitInfo>> {
    let limit = stored(&st, &caller.project, &tag).await?.ok_or_else(|| no_limit(&tag))?;
    Ok(Json(info(&st, &caller.project, limit, true)))
}

#[utoipa::path(
    put,
    path = "/v1/limits/{tag}",
    params(Tag),
    summary = "Set a limit: at most `slots` attempts carrying the tag run at once (0 pauses it)",
    request_body = LimitRequest,
    responses(
        (status = 200, description = "the limit as set", body = LimitInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn set_limit(
    State(st): State<AppState>,
    caller: Caller,
    Path(tag): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<LimitInfo>> {
    validate_tag(&tag)?;
    let r: LimitRequest = parse_json(&body)?;
    if r.slots > MAX_LIMIT_SLOTS {
        return Err(ApiError::BadRequest(format!("slots: at most {MAX_LIMIT_SLOTS}")));
    }
    let limit = TagLimit {
        tag: tag.clone(),
        slots: r.slots,
        updated_at: st.clock.now_ms(),
        updated_by: caller.token.clone(),
        reset_at: None,
    };
    let put = TrustChange::PutLimit { project: caller.project.clone(), limit };
    if !commit(&st, &caller, put, "limit.set", &tag).await? {
        return Err(ApiError::NotFound(format!("project '{}' not found", caller.project)));
    }
    st.scheduler.set_limit(&caller.project, &tag, Some(r.slots));
    let limit = stored(&st, &caller.project, &tag).await?.ok_or_else(|| no_limit(&tag))?;
    Ok(Json(info(&st, &caller.project, limit, false)))
}

#[utoipa::path(
    delete,
    path = "/v1/limits/{tag}",
    params(Tag),
    summary = "Delete a limit: its tag runs unlimited",
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_limit(State(st): State<AppState>, caller: Caller, Path(tag): Path<String>) -> ApiResult<StatusCode> {
    if stored(&st, &caller.project, &tag).await?.is_none() {
        return Err(no_limit(&tag));
    }
    let del = TrustChange::DeleteLimit { project: caller.project.clone(), tag: tag.clone() };
    if !commit(&st, &caller, del, "limit.delete", &tag).await? {
        return Err(no_limit(&tag));
    }
    st.scheduler.set_limit(&caller.project, &tag, None);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/limits/{tag}/reset",
    params(Tag),
    summary = "Release every slot of a tag (admin): the attempts holding them run on, no longer counted",
    responses(
        (status = 200, description = "the limit after the reset", body = LimitInfo),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn reset_limit(
    State(st): State<AppState>,
    caller: Caller,
    Path(tag): Path<String>,
) -> ApiResult<Json<LimitInfo>> {
    if stored(&st, &caller.project, &tag).await?.is_none() {
        return Err(no_limit(&tag));
    }
    let reset = TrustChange::ResetLimit { project: caller.project.clone(), tag: tag.clone(), at: st.clock.now_ms() };
    if !commit(&st, &caller, reset, "limit.reset", &tag).await? {
        return Err(no_limit(&tag));
    }
    st.scheduler.reset_limit(&caller.project, &tag);
    let limit = stored(&st, &caller.project, &tag).await?.ok_or_else(|| no_limit(&tag))?;
    Ok(Json(info(&st, &caller.project, limit, true)))
}
