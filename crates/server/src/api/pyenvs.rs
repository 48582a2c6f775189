//! `/v1/pyenvs`: a project's Python environments. What to install is
//! stored through the commit path; each worker installs an environment the
//! first time one of its functions runs there, and this server's own slots
//! start installing it as soon as it is set, in the background.

use super::AppState;
use super::auth::Caller;
use super::extract::params::PyEnvName;
use super::extract::{Body, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use stratus_core::api::{ErrorBody, PyEnvInfo, PyEnvList, PyEnvRequest};
use stratus_core::pyenv::PyEnv;
use stratus_core::trust::TrustChange;
use stratus_core::validate_name;
use stratus_runtime::pyenv::PyEnvState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/pyenvs", get(list_pyenvs))
        .route("/v1/pyenvs/{name}", get(show_pyenv).put(set_pyenv).delete(delete_pyenv))
}

fn no_pyenv(name: &str) -> ApiError {
    ApiError::NotFound(format!("python environment '{name}' not found"))
}

/// The project's environment `name`, as stored.
pub async fn stored(st: &AppState, project: &str, name: &str) -> ApiResult<Option<PyEnv>> {
    Ok(st.store.pyenvs(Some(project)).await?.into_iter().map(|(_, e)| e).find(|e| e.name == name))
}

/// An environment with its state on this server's slots.
fn info(st: &AppState, pyenv: PyEnv) -> PyEnvInfo {
    let spec = pyenv.spec();
    let (state, message) = match &st.pyenvs {
        None => ("no-slots".to_string(), None),
        Some(p) => match p.state(&spec) {
            PyEnvState::Failed(m) => ("failed".to_string(), Some(m)),
            s => (s.name().to_string(), None),
        },
    };
    PyEnvInfo { digest: spec.digest(), pyenv, state, message }
}

#[utoipa::path(
    get,
    path = "/v1/pyenvs",
    summary = "List the project's Python environments, with their state on this server's slots",
    responses((status = 200, description = "environments", body = PyEnvList))
)]
async fn list_pyenvs(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<PyEnvList>> {
    let all = st.store.pyenvs(Some(&caller.project)).await?;
    Ok(Json(PyEnvList { pyenvs: all.into_iter().map(|(_, e)| info(&st, e)).collect() }))
}

#[utoipa::path(
    get,
    path = "/v1/pyenvs/{name}",
    params(PyEnvName),
    summary = "Show a Python environment: its requirements and its state",
    responses(
        (status = 200, description = "the environment", body = PyEnvInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_pyenv(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<PyEnvInfo>> {
    validate_name("pyenv name", &name)?;
    let e = stored(&st, &caller.project, &name).await?.ok_or_else(|| no_pyenv(&name))?;
    Ok(Json(info(&st, e)))
}

#[utoipa::path(
    put,
    path = "/v1/pyenvs/{name}",
    params(PyEnvName),
    summary = "Set a Python environment: the packages of a requirements file, for a Python minor version",
    request_body = PyEnvRequest,
    responses(
        (status = 200, description = "the environment as set; installing in the background", body = PyEnvInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn set_pyenv(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<PyEnvInfo>> {
    validate_name("pyenv name", &name)?;
    let r: PyEnvRequest = parse_json(&body)?;
    let env = PyEnv {
        name: name.clone(),
        python: r.python,
        requirements: r.requirements,
        updated_at: st.clock.now_ms(),
        updated_by: caller.token.clone(),
    };
    let spec = env.spec();
    spec.validate()?;
    let event = stratus_core::events::builtin::pyenv(&caller.project, &name, Some(&spec.digest()), env.updated_at);
    let put = TrustChange::PutPyEnv { project: caller.project.clone(), env };
    if !super::settings::commit_with(&st, &caller, put, "pyenv.set", &name, event).await? {
        return Err(ApiError::NotFound(format!("project '{}' not found", caller.project)));
    }
    if let Some(p) = &st.pyenvs {
        p.start(&spec);
    }
    let e = stored(&st, &caller.project, &name).await?.ok_or_else(|| no_pyenv(&name))?;
    Ok(Json(info(&st, e)))
}

#[utoipa::path(
    delete,
    path = "/v1/pyenvs/{name}",
    params(PyEnvName),
    summary = "Delete a Python environment: functions deployed with it keep it",
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_pyenv(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    validate_name("pyenv name", &name)?;
    if stored(&st, &caller.project, &name).await?.is_none() {
        return Err(no_pyenv(&name));
    }
    let event = stratus_core::events::builtin::pyenv(&caller.project, &name, None, st.clock.now_ms());
    let del = TrustChange::DeletePyEnv { project: caller.project.clone(), name: name.clone() };
    if !super::settings::commit_with(&st, &caller, del, "pyenv.delete", &name, event).await? {
        return Err(no_pyenv(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}
