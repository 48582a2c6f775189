//! The HTTP API under `/v1`, plus `/metrics` (`/healthz` is [`crate::front`]'s).
//!
//! Every body is parsed and validated here, at the edge; the scheduler and
//! the store only ever see valid values. Errors answer with the JSON body
//! described in [`crate::error`].

use crate::error::{ApiError, ApiResult};
use crate::scheduler::{Finished, Scheduler};
use crate::{api_jobs, api_objects, api_workers};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use stratus_blob::{Key, ObjectStore};
use stratus_core::{
    Clock, DEFAULT_PROJECT, Function, FunctionSpec, Id, Invocation, InvocationState, Limits, Runtime, validate_name,
};
use stratus_runtime::wasm::WasmRuntime;
use stratus_store::StateStore;

/// The longest a synchronous invoke or a `wait` holds the request open.
pub const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// Latest function versions by name, so an invoke does not read the store.
/// Deploys and deletes through this server invalidate at once; changes made
/// through another server are seen within [`FUNCTION_TTL`].
#[derive(Default)]
pub struct FunctionCache(std::sync::Mutex<HashMap<(String, String), Cached>>);

type Cached = (std::time::Instant, Arc<Function>);

pub const FUNCTION_TTL: Duration = Duration::from_secs(1);

impl FunctionCache {
    fn get(&self, project: &str, name: &str) -> Option<Arc<Function>> {
        let map = self.0.lock().unwrap();
        let (at, f) = map.get(&(project.to_string(), name.to_string()))?;
        (at.elapsed() < FUNCTION_TTL).then(|| f.clone())
    }
    fn put(&self, f: Arc<Function>) {
        self.0.lock().unwrap().insert((f.project.clone(), f.name.clone()), (std::time::Instant::now(), f));
    }
    fn forget(&self, project: &str, name: &str) {
        self.0.lock().unwrap().remove(&(project.to_string(), name.to_string()));
    }
}

#[derive(Clone)]
pub struct AppState {
    pub functions: Arc<FunctionCache>,
    pub scheduler: Arc<Scheduler>,
    pub store: Arc<dyn StateStore>,
    pub objects: Arc<dyn ObjectStore>,
    pub wasm: Arc<WasmRuntime>,
    pub clock: Arc<dyn Clock>,
    pub max_body: usize,
    pub slots: usize,
    pub lease_timeout: Duration,
    /// The object store URL handed to remote workers at registration, when
    /// they can reach it themselves (not for `file://`).
    pub shared_objects: Option<String>,
    /// The broker workers consume dispatch messages from, when there is one.
    pub broker: Option<stratus_core::wire::WireBroker>,
    /// The local slots' sandbox layers, and why those off are off.
    pub sandbox: Option<(stratus_runtime::sandbox::Layers, Vec<String>)>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/info", get(info))
        .route("/v1/artifacts/{digest}", put(put_artifact).head(head_artifact).get(get_artifact))
        .route(
            "/v1/objects/{bucket}/{*key}",
            put(api_objects::put_object)
                .get(api_objects::get_object)
                .head(api_objects::head_object)
                .delete(api_objects::delete_object),
        )
        .route("/v1/objects/{bucket}", get(api_objects::list_bucket))
        .route("/v1/jobs", post(api_jobs::create_job).get(api_jobs::list_jobs))
        .route("/v1/jobs/{id}", get(api_jobs::get_job))
        .route("/v1/jobs/{id}/results", get(api_jobs::job_results))
        .route("/v1/jobs/{id}/events", get(api_jobs::job_events))
        .route("/v1/jobs/{id}/cancel", post(api_jobs::cancel_job))
        .route("/v1/workers", post(api_workers::register).get(api_workers::list))
        .route("/v1/workers/{id}", axum::routing::delete(api_workers::deregister))
        .route("/v1/workers/{id}/heartbeat", post(api_workers::heartbeat))
        .route("/v1/workers/{id}/lease", post(api_workers::lease))
        .route("/v1/workers/{id}/complete", post(api_workers::complete))
        .route("/v1/functions", get(list_functions))
        .route("/v1/functions/{name}", put(deploy).get(get_function).delete(delete_function))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/invocations", get(list_invocations))
        .route("/v1/invocations/{id}", get(get_invocation))
        .route("/v1/invocations/{id}/output", get(get_output))
        .route("/v1/invocations/{id}/logs", get(get_logs))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_requests))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn count_requests(State(st): State<AppState>, req: Request, next: axum::middleware::Next) -> Response {
    let res = next.run(req).await;
    let m = &st.scheduler.metrics;
    m.http_requests.fetch_add(1, Relaxed);
    if res.status().is_client_error() || res.status().is_server_error() {
        m.http_errors.fetch_add(1, Relaxed);
    }
    res
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not served on {}", uri.path()))
}

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

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

pub(crate) fn parse_id(s: &str) -> ApiResult<Id> {
    s.parse().map_err(ApiError::from)
}

pub(crate) fn project() -> &'static str {
    DEFAULT_PROJECT
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    let (queued, running) = st.scheduler.depth();
    let mut workers = BTreeMap::new();
    for w in st.scheduler.workers() {
        *workers.entry(w.state.to_string()).or_default() += 1;
    }
    let mut jobs = BTreeMap::new();
    // A store that cannot answer leaves the job gauges at zero; the scrape
    // still shows everything else.
    for j in st.store.active_jobs().await.unwrap_or_default() {
        *jobs.entry(j.state.as_str().to_string()).or_default() += 1;
    }
    let gauges = crate::metrics::Gauges { queued, running, slots: st.slots, workers, jobs };
    let mut text = st.scheduler.metrics.render(&gauges);
    let waiting = st.scheduler.waiting();
    text.push_str(&format!(
        "# HELP stratus_waiters Requests waiting for an invocation or a job to finish.\n# TYPE stratus_waiters gauge\nstratus_waiters {waiting}\n"
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// What this node is and runs: version, local slots, and the sandbox
/// layers of its process functions.
async fn info(State(st): State<AppState>) -> Json<Value> {
    let sandbox = match &st.sandbox {
        Some((layers, reasons)) => {
            json!({"layers": layers, "all": layers.all(), "off": layers.missing(), "reasons": reasons})
        }
        None => Value::Null,
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "slots": st.slots,
        "sandbox": sandbox,
    }))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
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
    let size = body.len();
    st.objects.put(&Key::artifact(&digest), body).await?;
    Ok((StatusCode::CREATED, Json(json!({"digest": digest, "size": size}))))
}

async fn get_artifact(State(st): State<AppState>, Path(digest): Path<String>) -> ApiResult<Response> {
    check_digest(&digest)?;
    let bytes = st.objects.get(&Key::artifact(&digest)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

/// `?wait=SECONDS`: 0 up to [`MAX_WAIT`]; a longer wait is cut to it.
pub(crate) fn wait_param(q: &HashMap<String, String>) -> ApiResult<Option<Duration>> {
    match q.get("wait") {
        None => Ok(None),
        Some(v) => Ok(Some(
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                // Clamped before the conversion, which panics past u64 seconds.
                .map(|s| Duration::from_secs_f64(s.min(MAX_WAIT.as_secs_f64())))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "invalid wait '{v}': a number of seconds from 0 to {}",
                        MAX_WAIT.as_secs()
                    ))
                })?,
        )),
    }
}

/// `?limit=N`, 1 to 1000, default 50.
pub(crate) fn limit_param(q: &HashMap<String, String>) -> ApiResult<u32> {
    match q.get("limit") {
        None => Ok(50),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("invalid limit '{v}': use 1 to 1000"))),
    }
}

async fn head_artifact(State(st): State<AppState>, Path(digest): Path<String>) -> ApiResult<StatusCode> {
    check_digest(&digest)?;
    match st.objects.head(&Key::artifact(&digest)).await? {
        Some(_) => Ok(StatusCode::OK),
        None => Ok(StatusCode::NOT_FOUND),
    }
}

/// The body of `PUT /v1/functions/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    runtime: Runtime,
    artifact: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    /// Processes the function's tree may have at once (process functions).
    max_procs: Option<u32>,
    /// CPU cores the function may use (process functions), e.g. 0.5.
    cpus: Option<f64>,
    #[serde(default)]
    retries: u32,
    /// Outbound network for a process function.
    #[serde(default)]
    network: bool,
}

async fn deploy(
    State(st): State<AppState>,
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
    let f = st.store.put_function(project(), &name, &spec, st.clock.now_ms()).await?;
    st.functions.forget(project(), &name);
    tracing::info!(function = %name, version = f.version, runtime = f.spec.runtime.kind(), "deployed");
    Ok((StatusCode::CREATED, Json(function_json(&f))))
}

fn function_json(f: &Function) -> Value {
    json!({
        "name": f.name,
        "project": f.project,
        "version": f.version,
        "runtime": f.spec.runtime,
        "artifact": f.spec.artifact,
        "env": f.spec.env,
        "timeout_ms": f.spec.limits.timeout_ms,
        "memory_mb": f.spec.limits.memory_mb,
        "max_procs": f.spec.limits.max_procs,
        "cpus": (f.spec.limits.cpu_millis > 0).then(|| f.spec.limits.cpu_millis as f64 / 1000.0),
        "network": f.spec.network,
        "retries": f.spec.retries,
        "created_at": f.created_at,
    })
}

async fn list_functions(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    let fs = st.store.list_functions(project()).await?;
    Ok(Json(json!({"functions": fs.iter().map(function_json).collect::<Vec<_>>()})))
}

pub(crate) async fn load_function(st: &AppState, name: &str) -> ApiResult<Arc<Function>> {
    validate_name("function name", name)?;
    if let Some(f) = st.functions.get(project(), name) {
        return Ok(f);
    }
    let f = st
        .store
        .get_function(project(), name, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("function '{name}' not found")))?;
    let f = Arc::new(f);
    st.functions.put(f.clone());
    Ok(f)
}

async fn get_function(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    validate_name("function name", &name)?;
    let f = st.store.get_function(project(), &name, None).await?;
    let f = f.ok_or_else(|| ApiError::NotFound(format!("function '{name}' not found")))?;
    Ok(Json(function_json(&f)))
}

async fn delete_function(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    validate_name("function name", &name)?;
    st.functions.forget(project(), &name);
    if st.store.delete_function(project(), &name, st.clock.now_ms()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("function '{name}' not found")))
    }
}

fn flag(q: &HashMap<String, String>, name: &str) -> ApiResult<bool> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("" | "true" | "1") => Ok(true),
        Some(v) => Err(ApiError::BadRequest(format!("invalid {name}: '{v}' is not true or false"))),
    }
}

async fn invoke(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    Body(input): Body,
) -> ApiResult<Response> {
    let is_async = flag(&q, "async")?;
    if let Some(k) = q.keys().find(|k| k.as_str() != "async") {
        return Err(ApiError::BadRequest(format!("unknown query parameter '{k}'")));
    }
    let f = load_function(&st, &name).await?;
    let mut input = input.to_vec();
    if !is_async {
        match st.scheduler.run_here(f.clone(), input) {
            Ok(mut here) => {
                return match tokio::time::timeout(MAX_WAIT, &mut here).await {
                    Ok(Some(finished)) => Ok(sync_response(&finished)),
                    _ => {
                        here.stored().await;
                        Ok((StatusCode::ACCEPTED, Json(json!({"id": here.id, "state": "running"}))).into_response())
                    }
                };
            }
            Err(back) => input = back,
        }
    }
    let mut submitted = st.scheduler.submit(f, vec![input], !is_async).await?;
    let (id, rx) = submitted.pop().expect("one submitted");
    if is_async {
        return Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "state": "queued"}))).into_response());
    }
    match tokio::time::timeout(MAX_WAIT, rx.expect("watched")).await {
        Ok(Ok(finished)) => Ok(sync_response(&finished)),
        _ => {
            // Its row may still be held back by the writer: the id is handed
            // out only once the row is in the store.
            st.scheduler.flush().await;
            Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "state": "running"}))).into_response())
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
    let body = json!({
        "error": {"code": code, "message": message},
        "invocation": inv,
        "logs_tail": logs_tail(&f.logs),
    });
    (status, headers, Json(body)).into_response()
}

async fn list_invocations(
    State(st): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let limit = limit_param(&q)?;
    let before = q.get("before").map(|s| parse_id(s)).transpose()?;
    let function = q.get("function").map(String::as_str);
    if let Some(f) = function {
        validate_name("function", f)?;
    }
    let list = st.store.list_invocations(project(), function, before, limit).await?;
    let next = (list.len() == limit as usize).then(|| list.last().map(|i| i.id)).flatten();
    Ok(Json(json!({"invocations": list, "next_before": next})))
}

async fn find_invocation(st: &AppState, id: Id) -> ApiResult<Invocation> {
    st.store
        .get_invocation(project(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invocation '{id}' not found")))
}

async fn get_invocation(
    State(st): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let wait = wait_param(&q)?;
    // Watch before reading, so a finish in between is not missed.
    let rx = wait.map(|_| st.scheduler.watch(id));
    let mut inv = find_invocation(&st, id).await?;
    if let (Some(rx), Some(wait)) = (rx, wait)
        && !inv.state.is_terminal()
    {
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(f)) => inv = f.invocation.clone(),
            // Finished elsewhere, or the wait ran out: read it again.
            _ => inv = find_invocation(&st, id).await?,
        }
    }
    let attempts = st.store.list_attempts(id).await?;
    let mut v = serde_json::to_value(&inv).map_err(|e| ApiError::Internal(e.to_string()))?;
    v["attempt_history"] = serde_json::to_value(attempts).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(v))
}

async fn get_output(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let inv = find_invocation(&st, id).await?;
    if inv.state != InvocationState::Succeeded {
        return Err(ApiError::Conflict(format!("invocation '{id}' has no output: it is {}", inv.state)));
    }
    let p = st.store.get_payloads(project(), id).await?.unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], p.output.unwrap_or_default()).into_response())
}

async fn get_logs(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let p = st
        .store
        .get_payloads(project(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invocation '{id}' not found")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], p.logs.unwrap_or_default()).into_response())
}
