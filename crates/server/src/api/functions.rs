//! `/v1/functions`: deploy, list, read and delete functions. Invoking one
//! is [`super::invocations`]'s.

use super::AppState;
use super::auth::Caller;
use super::extract::params::FunctionName;
use super::extract::{Body, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use std::sync::Arc;
use stratus_blob::Key;
use stratus_core::api::{DeployRequest, ErrorBody, FunctionInfo, FunctionList};
use stratus_core::change::{ChangeSet, FunctionChange, FunctionOutcome, Purge};
use stratus_core::{Function, FunctionSpec, Limits, Runtime, validate_name};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/functions", get(list_functions))
        .route("/v1/functions/{name}", put(deploy).get(get_function).delete(delete_function))
}

#[utoipa::path(
    put,
    path = "/v1/functions/{name}",
    params(FunctionName),
    summary = "Deploy a new version of a function",
    request_body = DeployRequest,
    responses(
        (status = 201, description = "deployed", body = FunctionInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 413, description = "error", body = ErrorBody),
    )
)]
async fn deploy(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    validate_name("function name", &name)?;
    let req: DeployRequest = parse_json(&body)?;
    let defaults = Limits::default();
    let cpu_millis = match req.cpus {
        None => 0,
        Some(c) if c.is_finite() && c > 0.0 && c <= 1024.0 => ((c * 1000.0).round() as u32).max(1),
        Some(c) => return Err(ApiError::BadRequest(format!("invalid cpus {c}: more than 0, at most 1024"))),
    };
    // The environment is pinned now: a later change of it is for later deploys.
    let pyenv = match (req.pyenv, req.requirements) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give pyenv (a project's environment) or requirements, not both".into()));
        }
        (Some(name), None) => {
            if req.python.is_some() {
                return Err(ApiError::BadRequest(format!("python: the environment '{name}' says its own")));
            }
            validate_name("pyenv", &name)?;
            let env = super::pyenvs::stored(&st, &caller.project, &name).await?.ok_or_else(|| {
                ApiError::BadRequest(format!("pyenv: no python environment '{name}' (stratus pyenv create)"))
            })?;
            Some(Box::new(env.spec()))
        }
        (None, Some(requirements)) => {
            Some(Box::new(stratus_core::pyenv::PyEnvSpec { name: None, python: req.python, requirements }))
        }
        (None, None) if req.python.is_some() => {
            return Err(ApiError::BadRequest("python: applies with requirements".into()));
        }
        (None, None) => None,
    };
    let spec = FunctionSpec {
        runtime: req.runtime,
        artifact: req.artifact,
        env: req.env,
        limits: Limits {
            timeout_ms: req.timeout_ms.unwrap_or(defaults.timeout_ms),
            memory_mb: req.memory_mb.unwrap_or(defaults.memory_mb),
            max_procs: req.max_procs.unwrap_or(defaults.max_procs),
            cpu_millis,
        },
        retries: req.retries,
        network: req.network,
        vars: req.vars,
        secrets: req.secrets,
        tags: req.tags,
        pyenv,
    };
    spec.validate()?;
    let key = Key::artifact(&spec.artifact);
    let bytes = match st.objects.get(&key).await {
        Ok(b) => b,
        Err(stratus_blob::Error::NotFound(_)) => {
            return Err(ApiError::BadRequest(format!(
                "artifact {} has not been uploaded (PUT /v1/artifacts/{{digest}} first)",
                spec.artifact
            )));
        }
        Err(e) => return Err(e.into()),
    };
    if spec.runtime == Runtime::Wasm {
        let (wasm, digest) = (st.wasm.clone(), spec.artifact.clone());
        tokio::task::spawn_blocking(move || wasm.validate(&digest, &bytes))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let project = caller.project.clone();
    let at = st.clock.now_ms();
    let change = FunctionChange::Put { project: project.clone(), name: name.clone(), spec, at };
    let audit = super::trust::entry(&caller, at, &project, "function.deploy", &name);
    let set = ChangeSet { functions: vec![change], audit: vec![audit], ..Default::default() };
    let f = match st.store.commit(set).await?.functions.pop() {
        Some(FunctionOutcome::Put(f)) => f,
        other => return Err(ApiError::Internal(format!("a function's deploy reported {other:?}"))),
    };
    st.functions.forget(&project, &name);
    tracing::info!(function = %name, version = f.version, runtime = f.spec.runtime.kind(), "deployed");
    Ok((StatusCode::CREATED, Json(FunctionInfo::from(&f))))
}

#[utoipa::path(
    get,
    path = "/v1/functions",
    summary = "List functions (latest version of each)",
    responses((status = 200, description = "functions", body = FunctionList))
)]
async fn list_functions(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<FunctionList>> {
    let fs = st.store.list_functions(&caller.project).await?;
    Ok(Json(FunctionList { functions: fs.iter().map(FunctionInfo::from).collect() }))
}

/// The latest version of a function of `project`, from the cache if it is fresh.
pub async fn load_function(st: &AppState, project: &str, name: &str) -> ApiResult<Arc<Function>> {
    validate_name("function name", name)?;
    if let Some(f) = st.functions.get(project, name) {
        return Ok(f);
    }
    let f = st
        .store
        .get_function(project, name, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("function '{name}' not found")))?;
    let f = Arc::new(f);
    st.functions.put(f.clone());
    Ok(f)
}

#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    params(FunctionName),
    summary = "The latest version of a function",
    responses(
        (status = 200, description = "function", body = FunctionInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn get_function(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionInfo>> {
    validate_name("function name", &name)?;
    let f = st.store.get_function(&caller.project, &name, None).await?;
    let f = f.ok_or_else(|| ApiError::NotFound(format!("function '{name}' not found")))?;
    Ok(Json(FunctionInfo::from(&f)))
}

#[utoipa::path(
    delete,
    path = "/v1/functions/{name}",
    params(FunctionName),
    summary = "Delete a function (its invocations are kept, without their input, output and logs)",
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_function(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    validate_name("function name", &name)?;
    let project = &caller.project;
    st.functions.forget(project, &name);
    let at = st.clock.now_ms();
    let change = FunctionChange::Delete { project: project.clone(), name: name.clone(), at };
    let audit = super::trust::entry(&caller, at, project, "function.delete", &name);
    let missing = || ApiError::NotFound(format!("function '{name}' not found"));
    // Asked first so that the audit trail records only deletes of a live
    // function (two deletes racing each record one).
    let latest = st.store.get_function(project, &name, None).await?.ok_or_else(missing)?;
    // Its finished invocations' payloads go with it (their rows stay): no
    // one can run it again, and its outputs are what fills a store.
    let (function, finished_before) = (Some(name.clone()), at + 1);
    let purge = Purge { project: project.clone(), function, finished_before, made_since: None, at };
    let set = ChangeSet { functions: vec![change], audit: vec![audit], purges: vec![purge], ..Default::default() };
    if st.store.commit(set).await?.functions.pop() == Some(FunctionOutcome::Deleted(true)) {
        // Its code goes with it when nothing else uses it (older versions'
        // code, with the leader's sweep).
        let only = [latest.spec.artifact];
        if let Err(e) = super::artifacts::collect(&*st.store, &*st.objects, Some(&only), 0).await {
            tracing::warn!(error = %e, "cannot collect the deleted function's artifact; the sweep will");
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(missing())
    }
}
