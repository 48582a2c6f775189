//! `/v1/variables` and `/v1/secrets`: a project's settings, which its
//! functions read at each attempt (`fn deploy --var`, `--secret`); and the
//! worker route that hands an attempt its values.
//!
//! A secret is sealed here, before it is committed, and its value is never
//! in an answer, an error or a log line: only its name, version and dates.

use super::AppState;
use super::auth::Caller;
use super::extract::{Body, parse_json};
use super::trust::entry;
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use stratus_core::Id;
use stratus_core::api::{
    AttemptSettingsInfo, ErrorBody, SecretInfo, SecretList, SecretRequest, VariableList, VariableRequest,
};
use stratus_core::settings::{StoredSecret, Variable, validate_env_name, validate_secret_name, validate_value};
use stratus_core::trust::TrustChange;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/variables", get(list_variables))
        .route("/v1/variables/{name}", get(get_variable).put(set_variable).delete(delete_variable))
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", get(show_secret).put(set_secret).delete(delete_secret))
        .route("/v1/workers/{id}/attempts/{invocation}/{attempt}/settings", get(attempt_settings))
}

/// Commits a change to a setting with its audit entry and its event. The
/// event is stored even if the change's guard refuses it, so callers look
/// first: a delete of what is not there answers 404 without a commit.
async fn commit(
    st: &AppState,
    caller: &Caller,
    change: TrustChange,
    action: &str,
    name: &str,
    version: Option<u64>,
) -> ApiResult<bool> {
    let at = st.clock.now_ms();
    let kind = action.split('.').next().unwrap_or(action);
    let event = stratus_core::events::builtin::setting(&caller.project, kind, name, version, at);
    commit_with(st, caller, change, action, name, event).await
}

/// Commits a change to a project's settings or limits with its audit entry
/// (`action` on `target`) and `event`; whether the change applied.
pub(super) async fn commit_with(
    st: &AppState,
    caller: &Caller,
    change: TrustChange,
    action: &str,
    target: &str,
    event: stratus_core::events::Event,
) -> ApiResult<bool> {
    let audit = entry(caller, event.time, &caller.project, action, target);
    let set = stratus_core::change::ChangeSet {
        trust: vec![change],
        audit: vec![audit],
        events: vec![event],
        ..Default::default()
    };
    Ok(st.store.commit(set).await?.trust.first().copied().unwrap_or(false))
}

fn no_variable(name: &str) -> ApiError {
    ApiError::NotFound(format!("variable '{name}' not found"))
}

fn no_secret(name: &str) -> ApiError {
    ApiError::NotFound(format!("secret '{name}' not found"))
}

#[utoipa::path(
    get,
    path = "/v1/variables",
    summary = "List the project's variables, with their values",
    responses((status = 200, description = "variables", body = VariableList))
)]
async fn list_variables(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<VariableList>> {
    Ok(Json(VariableList { variables: st.store.variables(&caller.project).await? }))
}

#[utoipa::path(
    get,
    path = "/v1/variables/{name}",
    params(("name" = String, Path)),
    summary = "Show a variable",
    responses(
        (status = 200, description = "the variable", body = Variable),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn get_variable(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Variable>> {
    let vars = st.store.variables(&caller.project).await?;
    vars.into_iter().find(|v| v.name == name).map(Json).ok_or_else(|| no_variable(&name))
}

#[utoipa::path(
    put,
    path = "/v1/variables/{name}",
    params(("name" = String, Path)),
    summary = "Set a variable: functions deployed with --var NAME read it at their next attempt",
    request_body = VariableRequest,
    responses(
        (status = 200, description = "the variable as set", body = Variable),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn set_variable(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Variable>> {
    validate_env_name("variable", &name)?;
    let r: VariableRequest = parse_json(&body)?;
    let value = validate_value("value", r.value.as_bytes())?;
    if r.json
        && let Err(e) = serde_json::from_str::<serde_json::Value>(&value)
    {
        return Err(ApiError::BadRequest(format!("value: not JSON ({e}); leave out --json to set it as text")));
    }
    let variable = Variable {
        name: name.clone(),
        value,
        json: r.json,
        version: 0,
        updated_at: st.clock.now_ms(),
        updated_by: caller.token.clone(),
    };
    let old = st.store.variables(&caller.project).await?.into_iter().find(|v| v.name == name);
    let version = old.map_or(1, |v| v.version + 1);
    let put = TrustChange::PutVariable { project: caller.project.clone(), variable };
    if !commit(&st, &caller, put, "variable.set", &name, Some(version)).await? {
        return Err(ApiError::NotFound(format!("project '{}' not found", caller.project)));
    }
    let vars = st.store.variables(&caller.project).await?;
    vars.into_iter().find(|v| v.name == name).map(Json).ok_or_else(|| no_variable(&name))
}

#[utoipa::path(
    delete,
    path = "/v1/variables/{name}",
    params(("name" = String, Path)),
    summary = "Delete a variable",
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_variable(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    if !st.store.variables(&caller.project).await?.iter().any(|v| v.name == name) {
        return Err(no_variable(&name));
    }
    let del = TrustChange::DeleteVariable { project: caller.project.clone(), name: name.clone() };
    match commit(&st, &caller, del, "variable.delete", &name, None).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_variable(&name)),
    }
}

fn info(s: &StoredSecret) -> SecretInfo {
    SecretInfo {
        name: s.name.clone(),
        version: s.version,
        created_at: s.created_at,
        updated_at: s.updated_at,
        updated_by: s.updated_by.clone(),
        key_id: s.sealed.key_id.clone(),
    }
}

async fn stored_secret(st: &AppState, project: &str, name: &str) -> ApiResult<Option<StoredSecret>> {
    Ok(st.store.secrets(Some(project)).await?.into_iter().map(|(_, s)| s).find(|s| s.name == name))
}

#[utoipa::path(
    get,
    path = "/v1/secrets",
    summary = "List the project's secrets: names, versions and dates, never values",
    responses((status = 200, description = "secrets", body = SecretList))
)]
async fn list_secrets(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<SecretList>> {
    let secrets = st.store.secrets(Some(&caller.project)).await?;
    Ok(Json(SecretList { secrets: secrets.iter().map(|(_, s)| info(s)).collect() }))
}

#[utoipa::path(
    get,
    path = "/v1/secrets/{name}",
    params(("name" = String, Path)),
    summary = "Show a secret's name, version and dates (never its value)",
    responses(
        (status = 200, description = "the secret", body = SecretInfo),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_secret(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<SecretInfo>> {
    let s = stored_secret(&st, &caller.project, &name).await?.ok_or_else(|| no_secret(&name))?;
    Ok(Json(info(&s)))
}

#[utoipa::path(
    put,
    path = "/v1/secrets/{name}",
    params(("name" = String, Path)),
    summary = "Set a secret: sealed before it is stored, never shown again",
    request_body = SecretRequest,
    responses(
        (status = 200, description = "the secret as set, without its value", body = SecretInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn set_secret(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<SecretInfo>> {
    validate_secret_name(&name)?;
    // Not serde's message: it may quote the value.
    let r: SecretRequest = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("invalid JSON body: send {\"value\": \"…\"} and nothing else".into()))?;
    let value = validate_value("value", r.value.as_bytes())?;
    if value.is_empty() {
        return Err(ApiError::BadRequest("value: a secret cannot be empty".into()));
    }
    let old = stored_secret(&st, &caller.project, &name).await?;
    let now = st.clock.now_ms();
    let version = old.as_ref().map_or(1, |s| s.version + 1);
    let secret = StoredSecret {
        name: name.clone(),
        version,
        created_at: old.as_ref().map_or(now, |s| s.created_at),
        updated_at: now,
        updated_by: caller.token.clone(),
        sealed: st.secret_keys.current.seal(&caller.project, &name, version, value.as_bytes()),
    };
    let put = TrustChange::PutSecret { project: caller.project.clone(), secret };
    if !commit(&st, &caller, put, "secret.set", &name, Some(version)).await? {
        return Err(ApiError::Conflict(format!("secret '{name}' changed meanwhile; try again")));
    }
    let s = stored_secret(&st, &caller.project, &name).await?.ok_or_else(|| no_secret(&name))?;
    Ok(Json(info(&s)))
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{name}",
    params(("name" = String, Path)),
    summary = "Delete a secret",
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_secret(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    stored_secret(&st, &caller.project, &name).await?.ok_or_else(|| no_secret(&name))?;
    let del = TrustChange::DeleteSecret { project: caller.project.clone(), name: name.clone() };
    match commit(&st, &caller, del, "secret.delete", &name, None).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(no_secret(&name)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/workers/{id}/attempts/{invocation}/{attempt}/settings",
    params(("id" = String, Path), ("invocation" = String, Path), ("attempt" = u32, Path)),
    summary = "The variables and secrets an attempt running on this worker reads (worker)",
    responses(
        (status = 200, description = "its environment's values", body = AttemptSettingsInfo),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "a variable or secret it reads is not set", body = ErrorBody),
    )
)]
async fn attempt_settings(
    State(st): State<AppState>,
    caller: Caller,
    Path((id, invocation, attempt)): Path<(String, String, String)>,
) -> ApiResult<Json<AttemptSettingsInfo>> {
    // Only the worker registered with this token, and only for an attempt
    // it runs now (or one the broker handed to any worker).
    let owner = st.worker_tokens.lock().unwrap().get(&id).cloned();
    let not_running =
        || ApiError::NotFound(format!("attempt {attempt} of {invocation} is not running on worker '{id}'"));
    if owner.as_deref() != Some(caller.token.as_str()) {
        return Err(not_running());
    }
    let (Ok(inv), Ok(n)) = (invocation.parse::<Id>(), attempt.parse::<u32>()) else { return Err(not_running()) };
    let f = st.scheduler.attempt_function(inv, n, &id).ok_or_else(not_running)?;
    let env = crate::settings::resolve(&*st.store, &st.secret_keys, &f)
        .await
        .map_err(|failure| ApiError::Conflict(failure.message))?;
    Ok(Json(AttemptSettingsInfo { env }))
}
