//! `/v1/invocations`, and `POST /v1/functions/{name}/invoke` that creates
//! them: synchronous (answered with the output) or queued.

use super::auth::Caller;
use super::extract::params::{FunctionName, Page, ResourceId, Wait};
use super::extract::{Body, Params, parse_id};
use super::functions::load_function;
use super::{AppState, MAX_WAIT};
use crate::error::{ApiError, ApiResult};
use crate::scheduler::Finished;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use stratus_core::api::{Accepted, ErrorBody, ErrorDetail, FunctionError, InvocationInfo, InvocationList};
use stratus_core::{Id, Invocation, InvocationState, validate_name};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/invocations", get(list_invocations))
        .route("/v1/invocations/{id}", get(get_invocation))
        .route("/v1/invocations/{id}/output", get(get_output))
        .route("/v1/invocations/{id}/logs", get(get_logs))
}

#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invoke",
    params(
        FunctionName,
        ("async" = Option<bool>, Query),
        ("tags" = Option<String>, Query, description = "concurrency tags of this call, comma-separated"),
    ),
    summary = "Invoke a function with the request body as its input",
    description = concat!(
        "Synchronous by default: answers with the output bytes when the invocation finishes. ",
        "With async=true, answers 202 with the invocation id once the invocation is durably queued."
    ),
    request_body(content(("application/octet-stream"))),
    responses(
        (
            status = 200, description = "succeeded; the body is the output", content(("application/octet-stream")),
            headers(("x-stratus-invocation-id" = String), ("x-stratus-function-version" = u32)),
        ),
        (status = 202, description = "accepted", body = Accepted),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 413, description = "error", body = ErrorBody),
        (status = 502, description = "the function failed", body = FunctionError),
        (status = 504, description = "the function timed out", body = FunctionError),
    )
)]
async fn invoke(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    q: Params,
    Body(input): Body,
) -> ApiResult<Response> {
    let is_async = q.flag("async")?;
    let tags = q.tags()?;
    q.only(&["async", "tags"])?;
    let f = load_function(&st, &caller.project, &name).await?;
    let mut input = input.to_vec();
    if !is_async && tags.is_empty() {
        match st.scheduler.run_here(f.clone(), input) {
            Ok(mut here) => {
                return match tokio::time::timeout(MAX_WAIT, &mut here).await {
                    Ok(Some(finished)) => Ok(sync_response(&finished)),
                    _ => {
                        here.stored().await;
                        Ok((StatusCode::ACCEPTED, Json(Accepted { id: here.id, state: InvocationState::Running }))
                            .into_response())
                    }
                };
            }
            Err(back) => input = back,
        }
    }
    let mut submitted = st.scheduler.submit(f, vec![input], &tags, !is_async).await?;
    let (id, rx) = submitted.pop().expect("one submitted");
    if is_async {
        return Ok((StatusCode::ACCEPTED, Json(Accepted { id, state: InvocationState::Queued })).into_response());
    }
    match tokio::time::timeout(MAX_WAIT, rx.expect("watched")).await {
        Ok(Ok(finished)) => Ok(sync_response(&finished)),
        _ => {
            // Its row may still be held back by the writer: the id is handed
            // out only once the row is in the store.
            st.scheduler.flush().await;
            Ok((StatusCode::ACCEPTED, Json(Accepted { id, state: InvocationState::Running })).into_response())
        }
    }
}

/// The tail of the logs, for error replies.
fn logs_tail(logs: &[u8]) -> String {
    let tail = &logs[logs.len().saturating_sub(4096)..];
    String::from_utf8_lossy(tail).into_owned()
}

fn sync_response(f: &Finished) -> Response {
    let inv = &f.invocation;
    let mut headers = HeaderMap::new();
    headers.insert("x-stratus-invocation-id", HeaderValue::from_str(&inv.id.to_string()).expect("uuid is ascii"));
    headers.insert("x-stratus-function-version", HeaderValue::from(inv.version));
    if inv.state == InvocationState::Succeeded {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        return (StatusCode::OK, headers, f.output.clone().unwrap_or_default()).into_response();
    }
    let (status, code) = match inv.state {
        InvocationState::TimedOut => (StatusCode::GATEWAY_TIMEOUT, "function_timed_out"),
        InvocationState::Cancelled => (StatusCode::CONFLICT, "cancelled"),
        _ => (StatusCode::BAD_GATEWAY, "function_failed"),
    };
    let message = inv.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| inv.state.to_string());
    let body = FunctionError {
        error: ErrorDetail { code: code.into(), message },
        invocation: inv.clone(),
        logs_tail: logs_tail(&f.logs),
    };
    (status, headers, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/v1/invocations",
    params(
        ("function" = Option<String>, Query),
        Page,
    ),
    summary = "List invocations, newest first",
    responses(
        (status = 200, description = "a page of invocations", body = InvocationList),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn list_invocations(State(st): State<AppState>, caller: Caller, q: Params) -> ApiResult<Json<InvocationList>> {
    let limit = q.limit()?;
    let before = q.before()?;
    let function = q.get("function");
    if let Some(f) = function {
        validate_name("function", f)?;
    }
    let list = st.store.list_invocations(&caller.project, function, before, limit).await?;
    let next = (list.len() == limit as usize).then(|| list.last().map(|i| i.id)).flatten();
    Ok(Json(InvocationList { invocations: list, next_before: next }))
}

async fn find_invocation(st: &AppState, project: &str, id: Id) -> ApiResult<Invocation> {
    st.store
        .get_invocation(project, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invocation '{id}' not found")))
}

#[utoipa::path(
    get,
    path = "/v1/invocations/{id}",
    params(
        ResourceId,
        Wait,
    ),
    summary = "An invocation, with its attempts",
    responses(
        (status = 200, description = "invocation", body = InvocationInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn get_invocation(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<InvocationInfo>> {
    let id = parse_id(&id)?;
    let wait = q.wait()?;
    // Watch before reading, so a finish in between is not missed.
    let rx = wait.map(|_| st.scheduler.watch(id));
    let mut inv = find_invocation(&st, &caller.project, id).await?;
    if let (Some(rx), Some(wait)) = (rx, wait)
        && !inv.state.is_terminal()
    {
        // A function waiting for a call of its own lends its slot meanwhile.
        let _lent = caller.invocation().and_then(|me| st.scheduler.lend_slot(me));
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(f)) => inv = f.invocation.clone(),
            // Finished elsewhere, or the wait ran out: read it again.
            _ => inv = find_invocation(&st, &caller.project, id).await?,
        }
    }
    let attempt_history = st.store.list_attempts(id).await?;
    Ok(Json(InvocationInfo { invocation: inv, attempt_history }))
}

#[utoipa::path(
    get,
    path = "/v1/invocations/{id}/output",
    params(ResourceId),
    summary = "The output bytes of a succeeded invocation",
    responses(
        (status = 200, description = "output", content(("application/octet-stream"))),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
        (status = 410, description = "deleted after retention", body = ErrorBody),
    )
)]
async fn get_output(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let inv = find_invocation(&st, &caller.project, id).await?;
    if inv.state != InvocationState::Succeeded {
        return Err(ApiError::Conflict(format!("invocation '{id}' has no output: it is {}", inv.state)));
    }
    let p = st.store.get_payloads(&caller.project, id).await?.unwrap_or_default();
    if p.purged_at.is_some() {
        return Err(purged(id));
    }
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], p.output.unwrap_or_default()).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/invocations/{id}/logs",
    params(ResourceId),
    summary = "The captured stderr of an invocation",
    responses(
        (status = 200, description = "logs", content(("text/plain"))),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 410, description = "deleted after retention", body = ErrorBody),
    )
)]
async fn get_logs(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let p = st
        .store
        .get_payloads(&caller.project, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invocation '{id}' not found")))?;
    if p.purged_at.is_some() {
        return Err(purged(id));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], p.logs.unwrap_or_default()).into_response())
}

/// The payloads of a purged invocation are gone for good.
fn purged(id: Id) -> ApiError {
    ApiError::Gone(format!(
        "invocation '{id}' no longer has its input, output and logs: they were deleted after its project's \
         retention, or with its function"
    ))
}
