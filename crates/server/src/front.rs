//! Several servers on one database: the front door of each.
//!
//! One server at a time leads: it holds the lease in the state store
//! ([`StateStore::lead`]), runs the scheduler, and serves the API. Every
//! other server is a standby that forwards each request, as it came, to the
//! leader, and answers `/healthz` itself; when the leader's lease runs out
//! (it died, or lost the database), a standby takes the lease, recovers the
//! queue as a restarted server would, and serves from then on. So any
//! request works on any server, and only one server ever dispatches or drives
//! jobs. [`keep_lease`] holds the lease: a leader that finds it taken, or
//! cannot renew it for three quarters of its length, stops at once.

use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use stratus_store::{Seat, StateStore};
use tokio::sync::watch;
use tower::ServiceExt;

/// Set on a forwarded request, so a server that is no longer leading does
/// not forward it again (to a server that may forward it back).
const FORWARDED_BY: &str = "stratus-forwarded-by";

/// Headers that belong to one connection, not to the request.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub struct Front {
    seat: Seat,
    health: Arc<crate::health::Health>,
    /// The API, once this server leads.
    api: OnceLock<Router>,
    /// Who leads while this server stands by.
    leader: Mutex<Option<String>>,
    http: reqwest::Client,
    origins: crate::origin::Origins,
}

impl Front {
    pub fn new(seat: Seat, health: Arc<crate::health::Health>, origins: crate::origin::Origins) -> Arc<Front> {
        // No overall timeout: a synchronous invoke or a lease poll takes as
        // long as it takes on the leader.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Arc::new(Front { seat, health, api: OnceLock::new(), leader: Mutex::new(None), http, origins })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// From now on this server serves the API itself.
    pub fn lead(&self, api: Router) {
        let _ = self.api.set(api);
        *self.leader.lock().unwrap() = None;
    }

    pub fn follow(&self, leader: &Seat) {
        *self.leader.lock().unwrap() = Some(leader.url.clone());
    }

    pub fn seat(&self) -> &Seat {
        &self.seat
    }

    async fn forward(&self, leader: &str, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", leader.trim_end_matches('/'));
        let mut headers = parts.headers;
        let has_body = headers.contains_key(header::CONTENT_LENGTH) || headers.contains_key(header::TRANSFER_ENCODING);
        strip_hop_by_hop(&mut headers);
        headers.insert(FORWARDED_BY, self.seat.server.to_string().parse().expect("an id is a header value"));
        let mut out = self.http.request(parts.method, &url).headers(headers);
        if has_body {
            out = out.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        match out.send().await {
            Ok(res) => {
                let mut out = Response::builder().status(res.status());
                if let Some(h) = out.headers_mut() {
                    h.extend(res.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
                    strip_hop_by_hop(h);
                }
                out.body(Body::from_stream(res.bytes_stream())).unwrap_or_else(|e| {
                    ApiError::Internal(format!("cannot relay the leader's answer: {e}")).into_response()
                })
            }
            Err(e) => ApiError::Unavailable(format!(
                "this server stands by; the leading server {leader} cannot be reached ({e}); \
                 a standby takes over when its lease runs out: try again"
            ))
            .into_response(),
        }
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove(header::UPGRADE);
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    // Checked where the request arrives; the leader does not check a
    // request a standby forwards (its Host is the leader's then).
    if !req.headers().contains_key(FORWARDED_BY)
        && let Err(e) = front.origins.check(req.headers())
    {
        return e.into_response();
    }
    let leader = front.leader.lock().unwrap().clone();
    if req.uri().path() == "/healthz" {
        let mut body = match &leader {
            None if front.api.get().is_some() => json!({"status": "ok", "role": "leader"}),
            None => json!({"status": "ok", "role": "starting"}),
            Some(url) => json!({"status": "ok", "role": "standby", "leader": url}),
        };
        let problems = front.health.problems().await;
        if problems.is_empty() {
            return axum::Json(body).into_response();
        }
        body["status"] = json!("unhealthy");
        body["problems"] = json!(problems);
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if let Some(api) = front.api.get() {
        return match api.clone().oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        };
    }
    match leader {
        Some(url) if !req.headers().contains_key(FORWARDED_BY) => front.forward(&url, req).await,
        _ => ApiError::Unavailable("no server leads yet (this one is taking over); try again".into()).into_response(),
    }
}

/// What the lease says of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// Another server leads.
    Standby(Seat),
}

/// How often the lease is renewed, or tried for: at least every second, so
/// a resignation is seen at once.
fn lease_period(lease: Duration) -> Duration {
    (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Why a leader must stop at once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LeaseLost {
    #[error("another server ({0}) took the lead")]
    Taken(String),
    #[error("the lease could not be renewed for three quarters of its length")]
    NotRenewed,
}

/// Renews the lease while this server leads and tries to take it while it
/// stands by, telling `role` of each change; runs until aborted (after the
/// leader has finished its work and before it resigns). Returns when a
/// leader finds the lease taken, or has not renewed it for three quarters
/// of its length (a standby may take it at its end, by the database's
/// clock): the node must then stop at once, as two servers must never drive
/// the queue, and everything acknowledged is in the store for the next
/// leader.
pub async fn keep_lease(
    store: Arc<dyn StateStore>,
    seat: Seat,
    lease: Duration,
    role: watch::Sender<Role>,
) -> LeaseLost {
    let period = lease_period(lease);
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let leading = *role.borrow() == Role::Leader;
        let asked = Instant::now();
        match tokio::time::timeout(lease / 2, store.lead(&seat, lease, false)).await {
            Ok(Ok(None)) => {
                renewed = asked;
                set(&role, Role::Leader);
            }
            Ok(Ok(Some(holder))) if leading => return LeaseLost::Taken(holder.url),
            Ok(Ok(Some(holder))) => set(&role, Role::Standby(holder)),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew or check the leader's lease; retrying"),
            Err(_) => tracing::warn!("renewing or checking the leader's lease timed out; retrying"),
        }
        if leading && renewed.elapsed() > lease * 3 / 4 {
            return LeaseLost::NotRenewed;
        }
    }
}

/// Changes the role, telling its watchers only of a change.
fn set(role: &watch::Sender<Role>, to: Role) {
    role.send_if_modified(|r| {
        let changed = *r != to;
        *r = to;
        changed
    });
}
