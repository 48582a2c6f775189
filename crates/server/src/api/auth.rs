//! Who is asking, and whether they may: every `/v1` request but the API's
//! own description carries `Authorization: Bearer TOKEN`. [`authorize`]
//! checks it against the tokens the leading server holds in memory (every
//! request reaches the leader: a standby forwards it), so a request costs a
//! hash and a map lookup, never a query. Tokens are loaded from the store
//! when a server takes the lead and changed only through it, which commits
//! each change before it answers; so a revocation holds for every request
//! that starts after it returns, on every server, and after a failover.
//!
//! What a request needs is [`need`], one table of every route: anything it
//! does not name needs a developer. The [`Caller`] it finds is the only
//! source of a request's project.

use super::AppState;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use stratus_core::clock::Millis;
use stratus_core::trust::{ATTEMPT_TOKEN_PREFIX, AttemptKey, Need, Project, Role, Token, TrustChange, hash_token};
use stratus_core::{DEFAULT_PROJECT, Id, validate_name};

/// The header in which an admin names the project a request acts in.
pub const PROJECT_HEADER: &str = "stratus-project";

/// The token a request came with, and the project it acts in.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (what the audit trail records).
    pub token: String,
    pub role: Role,
    /// Empty for a worker.
    pub project: String,
}

impl Caller {
    /// The invocation whose running attempt makes this request, for a
    /// function's own token.
    pub fn invocation(&self) -> Option<stratus_core::Id> {
        self.token.strip_prefix("invocation-")?.parse().ok()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::Internal("request was not authorized".into()))
    }
}

/// The projects and tokens, as the leader holds them.
pub struct Trust {
    /// False only with `--insecure-no-auth` (on loopback): every request
    /// then acts as an admin.
    required: bool,
    /// Checks the tokens of attempts (`STRATUS_TOKEN` in a function).
    attempts: Arc<AttemptKey>,
    state: RwLock<State_>,
}

#[derive(Default)]
struct State_ {
    /// By the hash of the secret.
    tokens: HashMap<String, Arc<Token>>,
    projects: BTreeMap<String, Project>,
}

impl Trust {
    pub fn new(required: bool, loaded: stratus_store::Trust, attempts: Arc<AttemptKey>) -> Trust {
        let state = State_ {
            tokens: loaded.tokens.into_iter().map(|t| (t.hash.clone(), Arc::new(t))).collect(),
            projects: loaded.projects.into_iter().map(|p| (p.name.clone(), p)).collect(),
        };
        Trust { required, attempts, state: RwLock::new(state) }
    }

    pub fn required(&self) -> bool {
        self.required
    }

    pub fn project(&self, name: &str) -> Option<Project> {
        self.state.read().unwrap().projects.get(name).cloned()
    }

    pub fn projects(&self) -> Vec<Project> {
        self.state.read().unwrap().projects.values().cloned().collect()
    }

    /// Tokens not revoked, by name.
    pub fn tokens(&self) -> Vec<Arc<Token>> {
        let mut all: Vec<_> = self.state.read().unwrap().tokens.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The live token whose secret is `secret`.
    pub fn token_by_secret(&self, secret: &str) -> Option<Arc<Token>> {
        self.state.read().unwrap().tokens.get(&hash_token(secret)).cloned()
    }

    pub fn token_named(&self, name: &str) -> Option<Arc<Token>> {
        self.state.read().unwrap().tokens.values().find(|t| t.name == name).cloned()
    }

    /// Makes a change the store applied true here too.
    pub fn applied(&self, change: &TrustChange) {
        let mut s = self.state.write().unwrap();
        match change {
            TrustChange::CreateProject(p) => {
                s.projects.insert(p.name.clone(), p.clone());
            }
            TrustChange::DeleteProject { name, .. } => {
                s.projects.remove(name);
                s.tokens.retain(|_, t| t.role == Role::Worker || &t.project != name);
            }
            TrustChange::PutToken { token, .. } => {
                s.tokens.insert(token.hash.clone(), Arc::new(token.clone()));
            }
            TrustChange::RevokeToken { name, .. } => s.tokens.retain(|_, t| &t.name != name),
            TrustChange::SetQuotas { name, quotas } => {
                if let Some(p) = s.projects.get_mut(name) {
                    p.quotas = *quotas;
                }
            }
            // Read from the store when an attempt needs them.
            TrustChange::PutVariable { .. }
            | TrustChange::DeleteVariable { .. }
            | TrustChange::PutSecret { .. }
            | TrustChange::DeleteSecret { .. }
            | TrustChange::Reseal { .. }
            // The scheduler's, told by the handler.
            | TrustChange::PutLimit { .. }
            | TrustChange::DeleteLimit { .. }
            | TrustChange::ResetLimit { .. }
            // Read from the store at each deploy and listing.
            | TrustChange::PutPyEnv { .. }
            | TrustChange::DeletePyEnv { .. } => {}
        }
    }

    /// The caller of a request that needs `need`: 401 without a live token,
    /// 403 when its role does not allow the request or names a project
    /// the token does not act in.
    ///
    /// A function's token (`STRATUS_TOKEN`) is accepted while `running`
    /// says its attempt still runs.
    pub fn caller(
        &self,
        headers: &HeaderMap,
        need: Need,
        now: Millis,
        running: impl Fn(Id, u32) -> bool,
    ) -> Result<Caller, ApiError> {
        let named = match headers.get(PROJECT_HEADER) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .filter(|p| validate_name("project", p).is_ok())
                    .ok_or_else(|| ApiError::BadRequest(format!("invalid {PROJECT_HEADER} header: a project name")))?,
            ),
        };
        if !self.required {
            let project = named.unwrap_or(DEFAULT_PROJECT);
            self.must_exist(project)?;
            return Ok(Caller { token: "-".into(), role: Role::Admin, project: project.into() });
        }
        let token = bearer(headers)?;
        if token.starts_with(ATTEMPT_TOKEN_PREFIX) {
            return self.attempt_caller(token, named, need, now, running);
        }
        let found = self.state.read().unwrap().tokens.get(&hash_token(token)).cloned();
        let t = found
            .filter(|t| t.live(now))
            .ok_or_else(|| ApiError::Unauthorized("the bearer token is unknown, expired or revoked".into()))?;
        if !t.role.may(need) {
            return Err(ApiError::Forbidden(format!("a {} token may not do this", t.role)));
        }
        let project = match named {
            Some(p) if matches!(t.role, Role::Admin | Role::Worker) => {
                self.must_exist(p)?;
                p.to_string()
            }
            Some(p) if p != t.project => {
                return Err(ApiError::Forbidden(format!("this token acts in project '{}' only", t.project)));
            }
            _ => t.project.clone(),
        };
        Ok(Caller { token: t.name.clone(), role: t.role, project })
    }

    /// The caller of a request from inside a function: a developer of its
    /// project, until its attempt's deadline.
    fn attempt_caller(
        &self,
        token: &str,
        named: Option<&str>,
        need: Need,
        now: Millis,
        running: impl Fn(Id, u32) -> bool,
    ) -> Result<Caller, ApiError> {
        let (project, invocation) = self
            .attempts
            .check(token, now)
            .filter(|(_, id, attempt)| running(*id, *attempt))
            .map(|(p, id, _)| (p, id))
            .ok_or_else(|| ApiError::Unauthorized("the attempt's token is unknown or its attempt is over".into()))?;
        if !Role::Developer.may(need) {
            return Err(ApiError::Forbidden("a function's token may not do this".into()));
        }
        if named.is_some_and(|p| p != project) {
            return Err(ApiError::Forbidden(format!("this token acts in project '{project}' only")));
        }
        self.must_exist(&project)?;
        Ok(Caller { token: format!("invocation-{invocation}"), role: Role::Developer, project })
    }

    fn must_exist(&self, project: &str) -> Result<(), ApiError> {
        match self.state.read().unwrap().projects.contains_key(project) {
            true => Ok(()),
            false => Err(ApiError::NotFound(format!("project '{project}' not found"))),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("this API needs a token: send Authorization: Bearer TOKEN".into()))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("the Authorization header is not 'Bearer TOKEN'".into()))
}

/// What a request needs its token to allow, by method and path: the one
/// table of every route's permission.
pub fn need(method: &Method, path: &str) -> Need {
    let rest = path.strip_prefix("/v1/").unwrap_or(path);
    let resource = rest.split('/').next().unwrap_or("");
    let read = method == Method::GET || method == Method::HEAD;
    match resource {
        "whoami" => Need::Any,
        // A dashboard login code, for whoever may read the project.
        "dashboard" => Need::Read,
        "projects" | "tokens" => Need::Admin,
        "audit" => Need::Develop,
        "limits" if !read && rest.ends_with("/reset") => Need::Admin,
        // Listing workers is reading; the rest of `/v1/workers` is theirs.
        "workers" if !(read && rest == "workers") => Need::Worker,
        // Workers read artifacts, and any project's objects, to run tasks.
        "artifacts" | "objects" if read && rest.contains('/') => Need::Fetch,
        _ if read => Need::Read,
        "functions" if rest.ends_with("/invoke") => Need::Invoke,
        "jobs" if rest == "jobs" => Need::Invoke,
        "events" if rest == "events" => Need::Invoke,
        _ => Need::Develop,
    }
}

/// The middleware that authorizes every `/v1` request (but the API's own
/// description) and hands its [`Caller`] to the handler.
pub async fn authorize(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
        return next.run(req).await;
    }
    let need = need(req.method(), path);
    // A dashboard session's cookie stands for its token on reads (live
    // updates); changes need the header, which a page of another site
    // cannot set.
    if !req.headers().contains_key(header::AUTHORIZATION)
        && (req.method() == Method::GET || req.method() == Method::HEAD)
        && let Some(v) = crate::ui::cookie(req.headers()).and_then(|s| format!("Bearer {s}").parse().ok())
    {
        req.headers_mut().insert(header::AUTHORIZATION, v);
    }
    let running = |id, attempt| st.scheduler.attempt_running(id, attempt);
    match st.trust.caller(req.headers(), need, st.clock.now_ms(), running) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trust() -> (Trust, String) {
        let secret = stratus_core::trust::new_secret();
        let token = Token {
            hash: hash_token(&secret),
            name: "dev".into(),
            project: "a".into(),
            role: Role::Developer,
            created_at: 0,
            created_by: "-".into(),
            expires_at: Some(1000),
            revoked_at: None,
        };
        let projects =
            ["a", "b"].map(|n| Project { name: n.into(), created_at: 0, quotas: Default::default() }).to_vec();
        (
            Trust::new(true, stratus_store::Trust { projects, tokens: vec![token] }, Arc::new(AttemptKey::random())),
            secret,
        )
    }

    fn headers(token: Option<&str>, project: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
        }
        if let Some(p) = project {
            h.insert(PROJECT_HEADER, HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn a_token_acts_in_its_project_until_it_expires_or_is_revoked() {
        let (t, secret) = trust();
        let c = t.caller(&headers(Some(&secret), None), Need::Develop, 10, |_, _| true).unwrap();
        assert_eq!((c.token.as_str(), c.project.as_str()), ("dev", "a"));
        let unauthorized = |r: Result<Caller, ApiError>| matches!(r, Err(ApiError::Unauthorized(_)));
        assert!(unauthorized(t.caller(&headers(None, None), Need::Read, 10, |_, _| true)));
        assert!(unauthorized(t.caller(&headers(Some("stratus_guess"), None), Need::Read, 10, |_, _| true)));
        assert!(unauthorized(t.caller(&headers(Some(&secret), None), Need::Read, 1000, |_, _| true)), "expired");
        assert!(matches!(
            t.caller(&headers(Some(&secret), None), Need::Admin, 10, |_, _| true),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            t.caller(&headers(Some(&secret), Some("b")), Need::Read, 10, |_, _| true),
            Err(ApiError::Forbidden(_))
        ));
        t.applied(&TrustChange::RevokeToken { name: "dev".into(), at: 20 });
        assert!(unauthorized(t.caller(&headers(Some(&secret), None), Need::Read, 30, |_, _| true)));
    }

    #[test]
    fn a_functions_token_acts_in_its_project_while_its_attempt_runs() {
        let key = Arc::new(AttemptKey::random());
        let projects = ["a", "b"].map(|n| Project { name: n.into(), created_at: 0, quotas: Default::default() });
        let t = Trust::new(true, stratus_store::Trust { projects: projects.to_vec(), tokens: vec![] }, key.clone());
        let id = stratus_core::new_id();
        let token = key.mint("a", id, 1, 100);
        let h = headers(Some(&token), None);
        let c = t.caller(&h, Need::Develop, 10, |i, n| i == id && n == 1).unwrap();
        assert_eq!((c.project.as_str(), c.role), ("a", Role::Developer));
        let over = |r: Result<Caller, ApiError>| matches!(r, Err(ApiError::Unauthorized(_)));
        assert!(over(t.caller(&h, Need::Read, 10, |_, _| false)), "its attempt ended");
        assert!(over(t.caller(&h, Need::Read, 100, |_, _| true)), "past its deadline");
        let forbidden = |r: Result<Caller, ApiError>| matches!(r, Err(ApiError::Forbidden(_)));
        assert!(forbidden(t.caller(&h, Need::Admin, 10, |_, _| true)));
        assert!(forbidden(t.caller(&headers(Some(&token), Some("b")), Need::Read, 10, |_, _| true)));
        let other = Trust::new(true, stratus_store::Trust::default(), Arc::new(AttemptKey::random()));
        assert!(over(other.caller(&h, Need::Read, 10, |_, _| true)), "another leader's key");
    }

    #[test]
    fn every_route_needs_what_its_table_says() {
        let cases = [
            (Method::GET, "/v1/functions", Need::Read),
            (Method::PUT, "/v1/functions/f", Need::Develop),
            (Method::POST, "/v1/functions/f/invoke", Need::Invoke),
            (Method::POST, "/v1/jobs", Need::Invoke),
            (Method::POST, "/v1/jobs/x/cancel", Need::Develop),
            (Method::GET, "/v1/workers", Need::Read),
            (Method::POST, "/v1/workers", Need::Worker),
            (Method::POST, "/v1/workers/w/complete", Need::Worker),
            (Method::GET, "/v1/workers/w/anything", Need::Worker),
            (Method::GET, "/v1/tokens", Need::Admin),
            (Method::DELETE, "/v1/projects/p", Need::Admin),
            (Method::GET, "/v1/whoami", Need::Any),
            (Method::POST, "/v1/dashboard/codes", Need::Read),
            (Method::GET, "/v1/artifacts/abc", Need::Fetch),
            (Method::HEAD, "/v1/objects/b/k", Need::Fetch),
            (Method::GET, "/v1/objects/b", Need::Fetch),
            (Method::PUT, "/v1/artifacts/abc", Need::Develop),
            (Method::DELETE, "/v1/objects/b/k", Need::Develop),
            (Method::POST, "/v1/anything-new", Need::Develop),
        ];
        for (m, p, n) in cases {
            assert_eq!(need(&m, p), n, "{m} {p}");
        }
    }
}
