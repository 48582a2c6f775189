//! `/v1/workers`: registration, leases, heartbeats and completions of
//! workers that run in their own process.

use super::AppState;
use super::auth::Caller;
use super::extract::params::WorkerId;
use super::extract::{Body, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};
use std::time::Duration;
use stratus_core::api::{
    CompleteRequest, ErrorBody, Heartbeat, LeaseRequest, Leased, RegisterRequest, Registration, WorkerInfo, WorkerList,
};
use stratus_core::wire::WireTask;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", post(register).get(list))
        .route("/v1/workers/{id}", delete(deregister))
        .route("/v1/workers/{id}/heartbeat", post(heartbeat))
        .route("/v1/workers/{id}/lease", post(lease))
        .route("/v1/workers/{id}/complete", post(complete))
}

#[utoipa::path(
    post,
    path = "/v1/workers",
    summary = "Register a worker",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "registered", body = Registration),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn register(State(st): State<AppState>, caller: Caller, Body(body): Body) -> ApiResult<impl IntoResponse> {
    let r: RegisterRequest = parse_json(&body)?;
    if r.slots == 0 || r.slots > 4096 {
        return Err(ApiError::BadRequest("invalid slots: 1 to 4096".into()));
    }
    if r.name.is_empty() || r.name.len() > 200 || r.name.chars().any(|c| c.is_control() || c == '/') {
        return Err(ApiError::BadRequest("invalid worker name".into()));
    }
    let id = st.scheduler.register_worker(&r.name, &r.host, r.slots, false);
    st.worker_tokens.lock().unwrap().insert(id.clone(), caller.token);
    let lease_ms = st.lease_timeout.as_millis() as u64;
    // At least every 2 s, however long the lease: a server that takes over
    // from a leader that died knows its workers once they beat again.
    let heartbeat_ms = (lease_ms / 4).min(2000);
    let reg = Registration {
        id,
        lease_timeout_ms: lease_ms,
        heartbeat_ms,
        objects: st.shared_objects.clone(),
        broker: st.broker.clone(),
    };
    Ok((StatusCode::CREATED, Json(reg)))
}

#[utoipa::path(
    get,
    path = "/v1/workers",
    summary = "List workers",
    responses((status = 200, description = "workers", body = WorkerList))
)]
async fn list(State(st): State<AppState>) -> Json<WorkerList> {
    let workers = st
        .scheduler
        .workers()
        .into_iter()
        .map(|w| WorkerInfo {
            id: w.id,
            host: w.host,
            slots: w.slots,
            local: w.local,
            registered_at: w.registered_at,
            last_heartbeat: w.last_heartbeat,
            state: w.state.to_string(),
            running: w.running,
        })
        .collect();
    Json(WorkerList { workers })
}

/// A worker registered with one token is driven with that token only;
/// another worker token is told the worker does not exist. (A worker this
/// server does not know, registered with the server that led before, may
/// still report ends: the store's guard decides whether they apply.)
fn owned(st: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    match st.worker_tokens.lock().unwrap().get(id) {
        Some(owner) if owner != &caller.token => Err(ApiError::NotFound(format!("worker '{id}' not found"))),
        _ => Ok(()),
    }
}

fn lost(id: &str) -> ApiError {
    ApiError::Gone(format!("worker '{id}' is unknown or was declared lost; register again"))
}

#[utoipa::path(
    post,
    path = "/v1/workers/{id}/heartbeat",
    params(WorkerId),
    summary = "Keep a worker's leases; answers the ids of its tasks to cancel",
    responses(
        (status = 200, description = "the tasks to cancel", body = Heartbeat),
        (status = 410, description = "error", body = ErrorBody),
    )
)]
async fn heartbeat(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Heartbeat>> {
    owned(&st, &caller, &id)?;
    let cancel = st.scheduler.heartbeat(&id).ok_or_else(|| lost(&id))?;
    Ok(Json(Heartbeat { cancel, lent: st.scheduler.lent_to(&id) }))
}

#[utoipa::path(
    post,
    path = "/v1/workers/{id}/lease",
    params(WorkerId),
    summary = "Lease up to max tasks, waiting up to wait_ms for one",
    request_body = LeaseRequest,
    responses(
        (status = 200, description = "the leased tasks", body = Leased),
        (status = 400, description = "error", body = ErrorBody),
        (status = 410, description = "error", body = ErrorBody),
    )
)]
async fn lease(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Leased>> {
    owned(&st, &caller, &id)?;
    let l: LeaseRequest = parse_json(&body)?;
    st.scheduler.heartbeat(&id).ok_or_else(|| lost(&id))?;
    let wait = Duration::from_millis(l.wait_ms.min(30_000));
    let (leased, lent) = st.scheduler.lease(&id, l.max.clamp(1, 256), wait).await;
    let tasks: Vec<WireTask> = leased.iter().map(|t| WireTask::from(&t.task)).collect();
    Ok(Json(Leased { tasks, lent }))
}

#[utoipa::path(
    post,
    path = "/v1/workers/{id}/complete",
    params(WorkerId),
    summary = "Report attempt ends (a duplicate or late one changes nothing)",
    request_body = CompleteRequest,
    responses((status = 204, description = "accepted"), (status = 400, description = "error", body = ErrorBody))
)]
async fn complete(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    owned(&st, &caller, &id)?;
    let c: CompleteRequest = parse_json(&body)?;
    // A lost worker's late results are recorded only if still current; the
    // store's guard decides, so they are passed on either way. The answer
    // waits until they are durable: a worker acknowledges its dispatch
    // message on it.
    st.scheduler
        .complete_durably(c.completions.into_owned().into_iter().map(|w| w.into_completion(&id)).collect())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A worker that stops cleanly says so, and leaves the list at once rather
/// than being declared lost a lease timeout later.
#[utoipa::path(
    delete,
    path = "/v1/workers/{id}",
    params(WorkerId),
    summary = "Deregister a worker that stopped cleanly (its completions delivered)",
    responses(
        (status = 204, description = "deregistered"),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn deregister(State(st): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    owned(&st, &caller, &id)?;
    match st.scheduler.deregister_worker(&id) {
        Ok(true) => {
            st.worker_tokens.lock().unwrap().remove(&id);
            Ok(StatusCode::NO_CONTENT)
        }
        Ok(false) => Err(ApiError::NotFound(format!("worker '{id}' not found"))),
        Err(n) => Err(ApiError::Conflict(format!("worker '{id}' still runs {n} attempts"))),
    }
}
