//! The HTTP API under `/v1`, plus `/metrics` (`/healthz` is [`crate::front`]'s):
//! one module per resource, each with its own `routes()`, merged here.
//!
//! Every body is parsed and validated at the edge, with the extractors of
//! [`extract`]; the scheduler and the store only ever see valid values.
//! Errors answer with the JSON body described in [`crate::error`].

pub mod artifacts;
pub mod auth;
pub mod events;
pub mod extract;
pub mod functions;
pub mod invocations;
pub mod jobs;
pub mod limits;
pub mod meta;
pub mod objects;
pub mod openapi;
pub mod pyenvs;
pub mod settings;
pub mod trust;
pub mod workers;

use crate::error::ApiError;
use crate::scheduler::Scheduler;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::Method;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use stratus_blob::ObjectStore;
use stratus_core::{Clock, Function};
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
    /// The event processor: trigger changes, and how far the stream is processed.
    pub events: Arc<crate::events::EventProcessor>,
    /// The projects and tokens requests are checked against.
    pub trust: Arc<auth::Trust>,
    /// The dashboard's unused login codes.
    pub ui_codes: Arc<crate::ui::Codes>,
    /// The name of the token each remote worker registered with, by id.
    pub worker_tokens: Arc<std::sync::Mutex<HashMap<String, String>>>,
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
    /// The keys secrets are sealed with.
    pub secret_keys: Arc<stratus_core::settings::SecretKeys>,
    /// The SHA-256 of the token `/metrics` requires, when it requires one.
    pub metrics_token: Option<String>,
    /// Bytes of the projects' objects, for `max_object_bytes`.
    pub object_usage: Arc<objects::ObjectUsage>,
    /// The Python environments of this server's own slots (none without).
    pub pyenvs: Option<Arc<stratus_runtime::pyenv::PyEnvs>>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.max_body;
    Router::new()
        .merge(meta::routes())
        .merge(artifacts::routes())
        .merge(objects::routes())
        .merge(events::routes())
        .merge(jobs::routes())
        .merge(workers::routes())
        .merge(functions::routes())
        .merge(invocations::routes())
        .merge(trust::routes())
        .merge(limits::routes())
        .merge(pyenvs::routes())
        .merge(settings::routes())
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authorize))
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
