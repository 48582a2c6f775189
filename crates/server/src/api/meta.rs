//! What the node is and how it is doing: `/metrics`, `/v1/info`, and this
//! API's own description at `/v1/openapi.json`.

use super::AppState;
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;
use stratus_core::api::{ErrorBody, NodeInfo, SandboxInfo};

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics)).route("/v1/openapi.json", get(openapi)).route("/v1/info", get(info))
}

#[utoipa::path(
    get,
    path = "/metrics",
    summary = "Prometheus metrics (with --metrics-token-file, only for `Authorization: Bearer` that token)",
    responses(
        (status = 200, description = "text exposition format", content(("text/plain"))),
        (status = 401, description = "error", body = ErrorBody),
    )
)]
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<impl IntoResponse> {
    if let Some(want) = &st.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| stratus_core::trust::hash_token(t.trim()));
        // Hashes compared: equal lengths, and nothing learnt of the token.
        if given.as_deref() != Some(want.as_str()) {
            return Err(ApiError::Unauthorized("/metrics needs its token: Authorization: Bearer TOKEN".into()));
        }
    }
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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}

/// What this node is and runs: version, local slots, and the sandbox
/// layers of its process functions.
async fn info(State(st): State<AppState>) -> Json<NodeInfo> {
    let sandbox = st.sandbox.as_ref().map(|(layers, reasons)| SandboxInfo {
        // The layers by name, as they serialise.
        layers: serde_json::to_value(layers).and_then(serde_json::from_value).expect("layers are booleans"),
        all: layers.all(),
        off: layers.missing().into_iter().map(String::from).collect(),
        reasons: reasons.clone(),
    });
    Json(NodeInfo { version: env!("CARGO_PKG_VERSION").to_string(), slots: st.slots, sandbox })
}

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    summary = "This document",
    responses((status = 200, description = "OpenAPI document", content(("application/json"))))
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::openapi::document())
}

/// `/healthz` is answered by [`crate::front`] before a request reaches this
/// router (a standby answers it too); it is described here with the rest.
#[utoipa::path(
    get,
    path = "/healthz",
    summary = "Liveness, answered by this server itself",
    responses(
        (status = 200, description = concat!(
            "{status: ok, role: leader | standby | starting, leader?: URL} — ",
            "a standby forwards every other request to the leader"
        )),
    )
)]
#[allow(dead_code)]
fn healthz() {}
