//! The dashboard: server-rendered pages under `/ui/`, for the project of
//! the token that logged in. Assets are embedded in the binary; nothing is
//! fetched from elsewhere.
//!
//! Logging in makes a session: a token of the logging-in token's role and
//! project, named `ui-session-…`, expiring after [`SESSION_HOURS`], created
//! through the trust commit path like any token (so it is stored hashed,
//! holds on every server and after a failover, and is revoked with the token
//! that made it). Its secret lives only in an HttpOnly, SameSite=Strict
//! cookie. Two ways in:
//! - `stratus dashboard` asks `POST /v1/dashboard/codes` for a single-use
//!   code valid for [`CODE_TTL`] and prints `URL/ui/login?code=…`: a token
//!   never goes into a URL. Codes live in the leader's memory (every request
//!   reaches the leader); a failover within the minute only costs a new code;
//! - the login page's form takes a pasted token.
//!
//! Pages also take `Authorization: Bearer TOKEN`, for scripts.
//! The API accepts the cookie on its GET routes (live updates over SSE and
//! NDJSON); pages change state only with POST forms that carry a CSRF token
//! derived from the session's secret, and the front door refuses requests
//! whose `Origin` is not the server's own (see [`crate::origin`]).

mod html;
mod pages;
pub mod plot;

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::error::ApiError;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use stratus_core::trust::{ATTEMPT_TOKEN_PREFIX, Need, Token, TrustChange, hash_token, new_secret};

/// The cookie that carries a session's secret.
pub const COOKIE: &str = "stratus_session";
/// How long a login code may be used.
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// How long a session lasts.
pub const SESSION_HOURS: i64 = 12;
/// The prefix of session tokens' names.
pub const SESSION_PREFIX: &str = "ui-session-";

/// The leader's unused login codes, by their hash.
#[derive(Default)]
pub struct Codes(Mutex<HashMap<String, (Caller, Instant)>>);

impl Codes {
    fn issue(&self, caller: Caller) -> String {
        let code = new_secret().split_off(stratus_core::trust::TOKEN_PREFIX.len());
        let mut codes = self.0.lock().unwrap();
        codes.retain(|_, (_, at)| at.elapsed() < CODE_TTL);
        codes.insert(hash_token(&code), (caller, Instant::now()));
        code
    }

    /// The caller a code was issued to, once, within [`CODE_TTL`].
    fn redeem(&self, code: &str) -> Option<Caller> {
        let (caller, at) = self.0.lock().unwrap().remove(&hash_token(code))?;
        (at.elapsed() < CODE_TTL).then_some(caller)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login_page).post(login_form))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/app.css", get(|| asset("text/css", include_str!("assets/app.css"))))
        .route("/ui/assets/app.js", get(|| asset("text/javascript", include_str!("assets/app.js"))))
        .route("/ui/assets/icon.svg", get(|| asset("image/svg+xml", include_str!("assets/icon.svg"))))
        .route("/v1/dashboard/codes", post(create_code))
        .merge(pages::routes())
}

async fn asset(ty: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// A request from a logged-in browser.
pub struct Session {
    pub caller: Caller,
    /// The token that logged in (the session token's maker).
    pub login: String,
    /// What the page's forms must send back.
    pub csrf: String,
}

impl Session {
    /// Refuses a form whose CSRF token is not the one derived from this login's secret.
    fn check(&self, csrf: &str) -> Result<(), PageError> {
        match csrf == self.csrf {
            true => Ok(()),
            false => Err(PageError(ApiError::Forbidden(
                "the form is stale or not from this dashboard: reload the page".into(),
            ))),
        }
    }

    fn may(&self, need: Need) -> Result<(), PageError> {
        match self.caller.role.may(need) {
            true => Ok(()),
            false => Err(PageError(ApiError::Forbidden(format!("a {} token may not do this", self.caller.role)))),
        }
    }
}

fn csrf_of(secret: &str) -> String {
    let d = Sha256::digest(format!("stratus-csrf:{secret}").as_bytes());
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The session secret in a request's cookies.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .filter(|s| !s.is_empty())
}

fn bearer(secret: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

/// Not logged in: to the login page, back here after.
pub struct ToLogin(String);

impl IntoResponse for ToLogin {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/ui/login?next={}", html::query_value(&self.0))).into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ToLogin;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ToLogin> {
        let here = parts.uri.path_and_query().map_or("/ui/", |p| p.as_str()).to_string();
        // The cookie; or, for scripts, the token in the Authorization header.
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let secret = match header.and_then(|v| v.strip_prefix("Bearer ")) {
            Some(token) => token.trim(),
            None => cookie(&parts.headers).unwrap_or(""),
        };
        if secret.starts_with(ATTEMPT_TOKEN_PREFIX) {
            return Err(ToLogin(here));
        }
        let running = |id, attempt| st.scheduler.attempt_running(id, attempt);
        match st.trust.caller(&bearer(secret), Need::Read, st.clock.now_ms(), running) {
            Ok(caller) => {
                let login = match st.trust.token_by_secret(secret) {
                    Some(t) if t.name.starts_with(SESSION_PREFIX) => t.created_by.clone(),
                    _ => caller.token.clone(),
                };
                Ok(Session { caller, login, csrf: csrf_of(secret) })
            }
            Err(_) => Err(ToLogin(here)),
        }
    }
}

/// A page's error, as a page.
pub struct PageError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, _) = self.0.parts();
        let message = match &self.0 {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; see the server log".to_string()
            }
            other => other.to_string(),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body =
            format!(r#"<p class="error">{}</p><p><a href="/ui/">Back to the dashboard</a></p>"#, html::esc(&message));
        (status, Html(html::bare(title, &body))).into_response()
    }
}

pub type PageResult = Result<Html<String>, PageError>;

/// Where to go after logging in: a dashboard path, else the overview.
fn next_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with("/ui/") && !p.contains("//") && !p.contains('\\') => p,
        _ => "/ui/",
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    code: Option<String>,
    next: Option<String>,
}

async fn login_page(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = next_path(q.next.as_deref()).to_string();
    let Some(code) = q.code else { return login_form_page(StatusCode::OK, &next, None) };
    match st.ui_codes.redeem(&code) {
        Some(caller) => match start_session(&st, &caller).await {
            Ok(secret) => logged_in(&secret, &next),
            Err(e) => e.into_response(),
        },
        None => login_form_page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some(
                "This login link was used already or is over a minute old: run `stratus dashboard` again, or paste a token.",
            ),
        ),
    }
}

fn login_form_page(status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let error = error.map(|e| format!(r#"<p class="error" id="login-error">{}</p>"#, html::esc(e))).unwrap_or_default();
    let body = format!(
        r#"{error}<form method="post" action="/ui/login" class="login"><input type="hidden" name="next" value="{}"><label>Token <input type="password" name="token" autocomplete="off" required autofocus></label><button type="submit">Log in</button></form><p class="hint">Or run <code>stratus dashboard</code>: it prints a link that logs you in.</p>"#,
        html::esc(next)
    );
    (status, Html(html::bare("Log in to Stratus", &body))).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login_form(State(st): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    let next = next_path(f.next.as_deref()).to_string();
    let token = f.token.trim();
    let refused = |why: &str| login_form_page(StatusCode::UNAUTHORIZED, &next, Some(why));
    if token.starts_with(ATTEMPT_TOKEN_PREFIX) {
        return refused("A function's token cannot log in to the dashboard.");
    }
    let running = |_, _| false;
    match st.trust.caller(&bearer(token), Need::Read, st.clock.now_ms(), running) {
        Ok(caller) => match start_session(&st, &caller).await {
            Ok(secret) => logged_in(&secret, &next),
            Err(e) => e.into_response(),
        },
        Err(ApiError::Forbidden(_)) => refused("This token's role cannot read a project (a worker token?)."),
        Err(_) => refused("This token is unknown, expired or revoked."),
    }
}

/// Commits a session token for `caller`; its secret.
async fn start_session(st: &AppState, caller: &Caller) -> Result<String, PageError> {
    let now = st.clock.now_ms();
    let secret = new_secret();
    let name = format!("{SESSION_PREFIX}{}", &hash_token(&secret)[..12]);
    let token = Token {
        hash: hash_token(&secret),
        name: name.clone(),
        project: caller.project.clone(),
        role: caller.role,
        created_at: now,
        created_by: caller.token.clone(),
        expires_at: Some(now + SESSION_HOURS * 3_600_000),
        revoked_at: None,
    };
    let audit = crate::api::trust::entry(caller, now, &caller.project, "session.create", &name);
    if !crate::api::trust::change(&*st.store, &st.trust, TrustChange::PutToken { token, first: false }, audit).await? {
        return Err(PageError(ApiError::Conflict("a session of that name exists: log in again".into())));
    }
    Ok(secret)
}

/// Sets the cookie, then goes on with a page of this site (not a redirect:
/// a SameSite=Strict cookie is not sent on a redirect that a link from
/// another site started).
fn logged_in(secret: &str, next: &str) -> Response {
    let cookie = format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", SESSION_HOURS * 3600);
    let next = html::esc(next);
    let body =
        format!(r#"<meta http-equiv="refresh" content="0;url={next}"><p>Logged in. <a href="{next}">Continue</a></p>"#);
    ([(header::SET_COOKIE, cookie)], Html(html::bare("Logged in", &body))).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(st): State<AppState>, s: Session, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Err(e) = s.check(&f.csrf) {
        return e.into_response();
    }
    if let Some(t) = cookie(&headers).and_then(|secret| st.trust.token_by_secret(secret)) {
        let at = st.clock.now_ms();
        let audit = crate::api::trust::entry(&s.caller, at, &t.project, "session.end", &t.name);
        if let Err(e) = crate::api::trust::change(
            &*st.store,
            &st.trust,
            TrustChange::RevokeToken { name: t.name.clone(), at },
            audit,
        )
        .await
        {
            return PageError::from(e).into_response();
        }
    }
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/ui/login")).into_response()
}

#[derive(Deserialize)]
pub(crate) struct CodeQuery {
    next: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/dashboard/codes",
    params(("next" = Option<String>, Query, description = "the dashboard page to open after logging in, e.g. /ui/jobs")),
    summary = "A single-use dashboard login code, valid for 60 s; `path` logs a browser in",
    responses(
        (status = 201, description = "code", body = Object),
        (status = 400, description = "error", body = stratus_core::api::ErrorBody),
        (status = 403, description = "error", body = stratus_core::api::ErrorBody),
    )
)]
pub(crate) async fn create_code(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<CodeQuery>,
) -> Result<Response, ApiError> {
    if caller.token.starts_with("invocation-") {
        return Err(ApiError::Forbidden("a function's token cannot log in to the dashboard".into()));
    }
    if let Some(n) = &q.next
        && next_path(Some(n)) != n
    {
        return Err(ApiError::BadRequest(format!("invalid next '{n}': a dashboard path such as /ui/jobs")));
    }
    let next = next_path(q.next.as_deref()).to_string();
    let code = st.ui_codes.issue(caller);
    let path = format!("/ui/login?code={code}&next={}", html::query_value(&next));
    let expires_at = st.clock.now_ms() + CODE_TTL.as_millis() as i64;
    Ok((StatusCode::CREATED, Json(json!({"code": code, "path": path, "expires_at": expires_at}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_once_and_the_cookie_is_found_among_others() {
        let codes = Codes::default();
        let caller = Caller { token: "t".into(), role: stratus_core::trust::Role::Reader, project: "p".into() };
        let code = codes.issue(caller);
        assert_eq!(codes.redeem(&code).map(|c| c.token), Some("t".into()));
        assert!(codes.redeem(&code).is_none(), "single use");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; stratus_session=s3cret; b=2"));
        assert_eq!(cookie(&h), Some("s3cret"));
        assert_eq!(next_path(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(next_path(Some("/ui/jobs/x")), "/ui/jobs/x");
        assert_eq!(next_path(Some("https://evil.example")), "/ui/");
    }
}
