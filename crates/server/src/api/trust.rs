//! `/v1/projects`, `/v1/tokens`, `/v1/audit` and `/v1/whoami`: projects,
//! the tokens that act in them, and the trail of who changed what. Each
//! change commits with its audit entry, then updates what the leader holds
//! in memory ([`super::auth::Trust`]), then answers.

use super::AppState;
use super::auth::Caller;
use super::extract::{Body, Params, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use std::path::Path as FsPath;
use stratus_core::api::{
    AuditList, ErrorBody, ProjectInfo, ProjectList, ProjectRequest, Purged, TokenCreated, TokenInfo, TokenList,
    TokenRequest,
};
use stratus_core::change::{ChangeSet, Purge};
use stratus_core::clock::Millis;
use stratus_core::trust::{
    AuditEntry, Project, Quotas, Role, Token, TrustChange, hash_token, new_secret, validate_token_name,
};
use stratus_core::{DEFAULT_PROJECT, new_id, validate_name};
use stratus_store::StateStore;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/projects", post(create_project).get(list_projects))
        .route("/v1/projects/{name}", get(show_project).delete(delete_project))
        .route("/v1/projects/{name}/quotas", put(set_quotas))
        .route("/v1/projects/{name}/purge", post(purge_project))
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{name}", delete(revoke_token))
        .route("/v1/audit", get(audit))
        .route("/v1/whoami", get(whoami))
}

/// What the audit trail records of a change `caller` makes.
pub fn entry(caller: &Caller, at: Millis, project: &str, action: &str, target: &str) -> AuditEntry {
    AuditEntry {
        id: new_id(),
        at,
        actor: caller.token.clone(),
        project: project.into(),
        action: action.into(),
        target: target.into(),
    }
}

/// Commits one trust change with its audit entry; whether it applied. An
/// applied change is made in memory before this returns.
pub(crate) async fn change(
    store: &dyn StateStore,
    trust: &super::auth::Trust,
    change: TrustChange,
    audit: AuditEntry,
) -> Result<bool, stratus_store::Error> {
    let set = ChangeSet { trust: vec![change.clone()], audit: vec![audit], ..Default::default() };
    let applied = store.commit(set).await?.trust.first().copied().unwrap_or(false);
    if applied {
        trust.applied(&change);
    }
    Ok(applied)
}

async fn project_info(st: &AppState, p: Project) -> ApiResult<ProjectInfo> {
    let functions = st.store.list_functions(&p.name).await?.len() as u64;
    let tokens = st.trust.tokens().iter().filter(|t| t.project == p.name && t.role != Role::Worker).count() as u64;
    let q = p.quotas;
    let quotas = Quotas {
        max_tasks_per_job: Some(q.max_tasks_per_job()),
        max_object_size: q.max_object_size,
        min_chunk_size: Some(q.min_chunk_size()),
        retention_s: Some(q.retention_ms() as u64 / 1000),
        max_running: q.max_running,
        max_object_bytes: q.max_object_bytes,
        retention_bytes: q.retention_bytes,
    };
    let running = st.scheduler.project_running(&p.name);
    let object_bytes = match q.max_object_bytes {
        Some(_) => Some(st.object_usage.bytes(&*st.objects, &p.name).await?),
        None => None,
    };
    Ok(ProjectInfo { name: p.name, created_at: p.created_at, functions, tokens, quotas, running, object_bytes })
}

#[utoipa::path(
    post,
    path = "/v1/projects",
    summary = "Create a project (admin)",
    request_body = ProjectRequest,
    responses(
        (status = 201, description = "created", body = ProjectInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn create_project(State(st): State<AppState>, caller: Caller, Body(body): Body) -> ApiResult<impl IntoResponse> {
    let r: ProjectRequest = parse_json(&body)?;
    validate_name("project", &r.name)?;
    let p = Project { name: r.name.clone(), created_at: st.clock.now_ms(), quotas: Quotas::default() };
    let audit = entry(&caller, p.created_at, &p.name, "project.create", &p.name);
    if !change(&*st.store, &st.trust, TrustChange::CreateProject(p.clone()), audit).await? {
        return Err(ApiError::Conflict(match st.trust.project(&r.name) {
            Some(_) => format!("project '{}' exists", r.name),
            None => format!("project '{}' existed and was deleted; its name is not reused", r.name),
        }));
    }
    Ok((StatusCode::CREATED, Json(project_info(&st, p).await?)))
}

#[utoipa::path(
    get,
    path = "/v1/projects",
    summary = "List projects (admin)",
    responses((status = 200, description = "projects", body = ProjectList))
)]
async fn list_projects(State(st): State<AppState>) -> ApiResult<Json<ProjectList>> {
    let mut projects = Vec::new();
    for p in st.trust.projects() {
        projects.push(project_info(&st, p).await?);
    }
    Ok(Json(ProjectList { projects }))
}

fn no_project(name: &str) -> ApiError {
    ApiError::NotFound(format!("project '{name}' not found"))
}

#[utoipa::path(
    get,
    path = "/v1/projects/{name}",
    params(("name" = String, Path)),
    summary = "Show a project (admin)",
    responses(
        (status = 200, description = "the project", body = ProjectInfo),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_project(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<ProjectInfo>> {
    let p = st.trust.project(&name).ok_or_else(|| no_project(&name))?;
    Ok(Json(project_info(&st, p).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/projects/{name}",
    params(("name" = String, Path)),
    summary = "Delete a project with no live function, revoking its tokens (admin)",
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn delete_project(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    st.trust.project(&name).ok_or_else(|| no_project(&name))?;
    if name == DEFAULT_PROJECT {
        return Err(ApiError::Conflict("the default project cannot be deleted".into()));
    }
    let functions = st.store.list_functions(&name).await?.len();
    if functions > 0 {
        return Err(ApiError::Conflict(format!("project '{name}' has {functions} live functions: delete them first")));
    }
    let at = st.clock.now_ms();
    let audit = entry(&caller, at, &name, "project.delete", &name);
    match change(&*st.store, &st.trust, TrustChange::DeleteProject { name: name.clone(), at }, audit).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::Conflict(format!("project '{name}' changed meanwhile; try again"))),
    }
}

#[utoipa::path(
    put,
    path = "/v1/projects/{name}/quotas",
    params(("name" = String, Path)),
    summary = "Set a project's quotas, all at once: a limit left out takes its default (admin)",
    request_body = Quotas,
    responses(
        (status = 200, description = "the project", body = ProjectInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn set_quotas(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<ProjectInfo>> {
    st.trust.project(&name).ok_or_else(|| no_project(&name))?;
    let quotas: Quotas = parse_json(&body)?;
    quotas.validate()?;
    let max_running = quotas.max_running;
    let audit = entry(&caller, st.clock.now_ms(), &name, "project.quotas", &name);
    if !change(&*st.store, &st.trust, TrustChange::SetQuotas { name: name.clone(), quotas }, audit).await? {
        return Err(no_project(&name));
    }
    st.scheduler.set_project_limit(&name, max_running);
    let p = st.trust.project(&name).ok_or_else(|| no_project(&name))?;
    Ok(Json(project_info(&st, p).await?))
}

#[utoipa::path(
    post,
    path = "/v1/projects/{name}/purge",
    params(("name" = String, Path)),
    summary = "Apply a project's retention now: drop the payloads of invocations finished before it (admin)",
    responses(
        (status = 200, description = "how many invocations were emptied", body = Purged),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn purge_project(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Purged>> {
    let p = st.trust.project(&name).ok_or_else(|| no_project(&name))?;
    let purged = retain(&*st.store, &p, None, st.clock.now_ms()).await?;
    Ok(Json(Purged { purged }))
}

/// Drops the payloads of `p`'s invocations finished longer ago than its
/// retention, of those made since `made_since` (all without), and of the
/// oldest past its `retention_bytes`; returns how many.
async fn retain(
    store: &dyn StateStore,
    p: &Project,
    made_since: Option<Millis>,
    now: Millis,
) -> Result<u64, stratus_store::Error> {
    let mut finished_before = now - p.quotas.retention_ms();
    let mut made_since = made_since;
    // Past its byte budget, the oldest are emptied too, however recent.
    if let Some(budget) = p.quotas.retention_bytes
        && let Some(cut) = store.payload_cutoff(&p.name, budget).await?
        && cut > finished_before
    {
        finished_before = cut;
        made_since = None;
    }
    let purge = Purge { project: p.name.clone(), function: None, finished_before, made_since, at: now };
    Ok(store.commit(ChangeSet { purges: vec![purge], ..Default::default() }).await?.purged.pop().unwrap_or(0))
}

/// How often the leader applies every project's retention.
const RETENTION_PERIOD: std::time::Duration = std::time::Duration::from_secs(600);

/// A sweep looks at the invocations made since a day before the previous
/// sweep's cutoff (those made earlier that finished since are rare: queued
/// or running for over a day); once a day it looks at all of them.
const SWEEP_SLACK_MS: Millis = 24 * 3600 * 1000;

/// Applies every project's retention a minute after the lead is taken, then
/// every ten minutes, until `stop`; and deletes the artifacts no function
/// uses that were stored over an hour before.
pub async fn keep_retention(
    store: std::sync::Arc<dyn StateStore>,
    objects: std::sync::Arc<dyn stratus_blob::ObjectStore>,
    trust: std::sync::Arc<super::auth::Trust>,
    clock: std::sync::Arc<dyn stratus_core::Clock>,
) {
    let mut wait = std::time::Duration::from_secs(60);
    // The cutoff of each project's last sweep, and when the last full one ran.
    let mut swept: std::collections::HashMap<String, Millis> = Default::default();
    let mut full_at: Option<Millis> = None;
    loop {
        tokio::time::sleep(wait).await;
        wait = RETENTION_PERIOD;
        let now = clock.now_ms();
        let full = full_at.is_none_or(|t| now - t >= SWEEP_SLACK_MS);
        if full {
            full_at = Some(now);
        }
        for p in trust.projects() {
            let made_since = swept.get(&p.name).filter(|_| !full).map(|cutoff| cutoff - SWEEP_SLACK_MS);
            let swept_now = retain(&*store, &p, made_since, now).await;
            if swept_now.is_ok() {
                swept.insert(p.name.clone(), now - p.quotas.retention_ms());
            }
            match swept_now {
                Ok(0) => {}
                Ok(n) => tracing::info!(project = %p.name, invocations = n, "retention: payloads dropped"),
                Err(e) => {
                    tracing::warn!(project = %p.name, error = %e, "retention: cannot drop payloads; retrying later")
                }
            }
        }
        let before = now - super::artifacts::UNUSED_GRACE_MS;
        match super::artifacts::collect(&*store, &*objects, None, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(artifacts = n, "retention: artifacts no function uses deleted"),
            Err(e) => tracing::warn!(error = %e, "retention: cannot collect artifacts; retrying later"),
        }
    }
}

/// The longest a token may live: ten years.
const MAX_EXPIRY_S: u64 = 10 * 365 * 24 * 3600;

#[utoipa::path(
    post,
    path = "/v1/tokens",
    summary = "Create a token; the answer is the only place its secret is shown (admin)",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "created", body = TokenCreated),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn create_token(State(st): State<AppState>, caller: Caller, Body(body): Body) -> ApiResult<impl IntoResponse> {
    let r: TokenRequest = parse_json(&body)?;
    let project = match (r.role, r.project) {
        (Role::Worker, Some(_)) => {
            return Err(ApiError::BadRequest("a worker token serves every project: give it none".into()));
        }
        (Role::Worker, None) => String::new(),
        (_, Some(p)) => {
            validate_name("project", &p)?;
            st.trust.project(&p).ok_or_else(|| no_project(&p))?;
            p
        }
        (_, None) => caller.project.clone(),
    };
    let name = match r.name {
        Some(n) => {
            validate_token_name(&n)?;
            n
        }
        None => format!("{}-{}", r.role, &new_id().to_string().replace('-', "")[24..]),
    };
    let expires_in = match r.expires_in_s {
        Some(s) if s == 0 || s > MAX_EXPIRY_S => {
            return Err(ApiError::BadRequest(format!("invalid expires_in_s: 1 to {MAX_EXPIRY_S} seconds")));
        }
        other => other,
    };
    let now = st.clock.now_ms();
    let secret = new_secret();
    let token = Token {
        hash: hash_token(&secret),
        name: name.clone(),
        project: project.clone(),
        role: r.role,
        created_at: now,
        created_by: caller.token.clone(),
        expires_at: expires_in.map(|s| now + (s as i64) * 1000),
        revoked_at: None,
    };
    let expires_at = token.expires_at;
    let audit = entry(&caller, now, &project, "token.create", &name);
    if !change(&*st.store, &st.trust, TrustChange::PutToken { token, first: false }, audit).await? {
        return Err(ApiError::Conflict(format!("a token named '{name}' exists: revoke it or choose another name")));
    }
    let created = TokenCreated { token: secret, name, project, role: r.role, expires_at };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    summary = "List the tokens not revoked, never their secrets (admin)",
    responses((status = 200, description = "tokens", body = TokenList))
)]
async fn list_tokens(State(st): State<AppState>) -> Json<TokenList> {
    let now = st.clock.now_ms();
    let tokens = st
        .trust
        .tokens()
        .iter()
        .map(|t| TokenInfo {
            name: t.name.clone(),
            project: t.project.clone(),
            role: t.role,
            created_at: t.created_at,
            created_by: t.created_by.clone(),
            expires_at: t.expires_at,
            expired: !t.live(now),
        })
        .collect();
    Json(TokenList { tokens })
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{name}",
    params(("name" = String, Path)),
    summary = "Revoke a token: refused for every request that starts after this answers (admin)",
    responses((status = 204, description = "revoked"), (status = 404, description = "error", body = ErrorBody))
)]
async fn revoke_token(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let t = st.trust.token_named(&name).ok_or_else(|| ApiError::NotFound(format!("token '{name}' not found")))?;
    let at = st.clock.now_ms();
    let audit = entry(&caller, at, &t.project, "token.revoke", &name);
    // Applied, or revoked meanwhile by another request: revoked either way.
    change(&*st.store, &st.trust, TrustChange::RevokeToken { name: name.clone(), at }, audit).await?;
    // The dashboard sessions it logged in end with it.
    for s in st.trust.tokens().iter().filter(|s| s.created_by == name && s.name.starts_with(crate::ui::SESSION_PREFIX))
    {
        let audit = entry(&caller, at, &s.project, "session.end", &s.name);
        change(&*st.store, &st.trust, TrustChange::RevokeToken { name: s.name.clone(), at }, audit).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    params(
        ("since" = Option<i64>, Query, description = "From this time on, in ms since the Unix epoch"),
        ("limit" = Option<u32>, Query, description = "How many, 1 to 1000; 50 by default"),
    ),
    summary = "Changes to projects, tokens and functions, oldest first: all for an admin, else the project's",
    responses((status = 200, description = "entries", body = AuditList), (status = 400, description = "error", body = ErrorBody))
)]
async fn audit(State(st): State<AppState>, caller: Caller, q: Params) -> ApiResult<Json<AuditList>> {
    q.only(&["since", "limit"])?;
    let since =
        match q.get("since") {
            None => 0,
            Some(v) => v.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!("invalid since '{v}': milliseconds since the Unix epoch"))
            })?,
        };
    let project = (caller.role != Role::Admin).then_some(caller.project.as_str());
    let entries = st.store.audit(project, since, q.limit()?).await?;
    Ok(Json(AuditList { entries }))
}

#[utoipa::path(
    get,
    path = "/v1/whoami",
    summary = "The token's name, role and project",
    responses((status = 200, description = "who", body = TokenInfo))
)]
async fn whoami(State(st): State<AppState>, caller: Caller) -> Json<serde_json::Value> {
    let t = st.trust.token_named(&caller.token);
    Json(serde_json::json!({
        "name": caller.token,
        "role": caller.role,
        "project": caller.project,
        "expires_at": t.and_then(|t| t.expires_at),
    }))
}

/// On a store no token was ever stored in, creates the first admin token,
/// in project `default`, and writes its secret to `DATA_DIR/admin.token`
/// (mode 0600). Only one server ever does: the store's guard lets one such
/// token in. Returns whether this call created it.
pub async fn first_admin_token(
    store: &dyn StateStore,
    trust: &super::auth::Trust,
    data_dir: &FsPath,
    now: Millis,
) -> Result<bool, crate::node::NodeError> {
    if !trust.required() || !trust.tokens().is_empty() {
        return Ok(false);
    }
    let secret = new_secret();
    let token = Token {
        hash: hash_token(&secret),
        name: "admin".into(),
        project: DEFAULT_PROJECT.into(),
        role: Role::Admin,
        created_at: now,
        created_by: "-".into(),
        expires_at: None,
        revoked_at: None,
    };
    let nobody = Caller { token: "-".into(), role: Role::Admin, project: DEFAULT_PROJECT.into() };
    let audit = entry(&nobody, now, DEFAULT_PROJECT, "token.create", "admin");
    if !change(store, trust, TrustChange::PutToken { token, first: true }, audit).await? {
        return Ok(false);
    }
    let path = data_dir.join("admin.token");
    write_secret(&path, &secret).map_err(|e| crate::node::NodeError::DataDir(path, e))?;
    Ok(true)
}

/// Writes a secret to a file only its owner can read.
fn write_secret(path: &FsPath, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(format!("{secret}\n").as_bytes())?;
    f.sync_all()
}
