//! `/v1/events` and `/v1/triggers`: publishing and reading the event
//! stream, and the triggers that react to it (see [`crate::events`]).

use super::AppState;
use super::auth::Caller;
use super::extract::{Body, Params, parse_json};
use crate::error::{ApiError, ApiResult};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::time::Duration;
use stratus_core::api::ErrorBody;
use stratus_core::events::{Event, EventChange, TriggerSpec};
use stratus_core::validate_name;
use stratus_store::{ChangeSet, EventQuery};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(publish).get(list_events))
        .route("/v1/triggers", post(create_trigger).get(list_triggers))
        .route("/v1/triggers/{name}", get(show_trigger).delete(delete_trigger))
        .route("/v1/triggers/{name}/enable", post(enable_trigger))
        .route("/v1/triggers/{name}/disable", post(disable_trigger))
        .route("/v1/schedules", post(create_schedule).get(list_schedules))
        .route("/v1/schedules/{name}", get(show_schedule).delete(delete_schedule))
        .route("/v1/schedules/{name}/pause", post(pause_schedule))
        .route("/v1/schedules/{name}/resume", post(resume_schedule))
        .route("/v1/schedules/{name}/backfill", post(backfill_schedule))
}

/// The most events one request may publish.
const MAX_BATCH: usize = 10_000;

/// The events of a request: structured JSON (one object, or a batch as an
/// array or `application/cloudevents-batch+json`), or binary mode (the
/// attributes in `ce-*` headers, the body the data).
fn events_of(project: &str, headers: &HeaderMap, body: &[u8], now: i64) -> ApiResult<Vec<Event>> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = header(header::CONTENT_TYPE.as_str());
    if let Some(ty) = header("ce-type") {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), ty.into());
        for (attr, name) in [("source", "ce-source"), ("id", "ce-id"), ("subject", "ce-subject"), ("time", "ce-time")] {
            if let Some(v) = header(name) {
                m.insert(attr.into(), v.into());
            }
        }
        if let Some(v) = header("ce-specversion") {
            m.insert("specversion".into(), v.into());
        }
        let mut e = Event::from_json(project, &Value::Object(m), now)?;
        if !body.is_empty() {
            e.datacontenttype = content_type;
            e.data = Some(body.to_vec());
            e.validate()?;
        }
        return Ok(vec![e]);
    }
    let v: Value = parse_json(body)?;
    let batch = match v {
        Value::Array(items) => items,
        one if !content_type.is_some_and(|c| c.starts_with("application/cloudevents-batch+json")) => vec![one],
        _ => return Err(ApiError::BadRequest("a batch is a JSON array of events".into())),
    };
    if batch.is_empty() || batch.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!("publish 1 to {MAX_BATCH} events at once")));
    }
    batch
        .iter()
        .enumerate()
        .map(|(i, v)| {
            Event::from_json(project, v, now).map_err(|e| match batch.len() {
                1 => ApiError::from(e),
                _ => ApiError::BadRequest(format!("event {i}: {e}")),
            })
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/v1/events",
    summary = "Publish CloudEvents (structured JSON, a batch, or binary mode with ce-* headers)",
    description = concat!(
        "Answered once the events are committed. An event whose (source, id) is stored already is accepted and ",
        "ignored (counted in `duplicates`)."
    ),
    request_body(content(("application/cloudevents+json"), ("application/cloudevents-batch+json"), ("application/json"))),
    responses(
        (status = 202, description = "stored", body = Object),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn publish(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> ApiResult<impl IntoResponse> {
    let events = events_of(&caller.project, &headers, &body, st.clock.now_ms())?;
    let n = events.len();
    let report = st.store.commit(ChangeSet { events, ..Default::default() }).await?;
    let stored = report.events.iter().filter(|s| **s).count();
    Ok((StatusCode::ACCEPTED, Json(json!({"accepted": n, "stored": stored, "duplicates": n - stored}))))
}

#[utoipa::path(
    get,
    path = "/v1/events",
    summary = "Read the event stream, oldest first (with follow=true, an NDJSON stream that does not end)",
    params(
        ("type" = Option<String>, Query, description = "only events of this type"),
        ("subject_prefix" = Option<String>, Query, description = "only events whose subject starts with this"),
        ("after" = Option<u64>, Query, description = "only events numbered after this"),
        ("limit" = Option<u32>, Query, description = "at most this many, 1 to 1000 (50)"),
        ("follow" = Option<bool>, Query, description = "stream events as they are stored, as NDJSON"),
    ),
    responses(
        (status = 200, description = "events and the number to read after", body = Object),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn list_events(State(st): State<AppState>, caller: Caller, params: Params) -> ApiResult<Response> {
    params.only(&["type", "subject_prefix", "after", "limit", "follow"])?;
    let after = match params.get("after") {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid after '{v}': a number")))?,
    };
    let q = EventQuery {
        project: Some(caller.project.clone()),
        after,
        limit: params.limit()?,
        ty: params.get("type").map(str::to_string),
        subject_prefix: params.get("subject_prefix").map(str::to_string),
    };
    if !params.flag("follow")? {
        // Events stored but not yet numbered (PostgreSQL) come with the next read.
        let events = st.store.events(&q).await?;
        let next = events.last().map(|e| e.seq).unwrap_or(after);
        let events: Vec<Value> = events.iter().map(Event::to_json).collect();
        return Ok(Json(json!({"events": events, "next_after": next})).into_response());
    }
    let following = st.events.follow();
    let stream = futures::stream::unfold((st, q, following), |(st, mut q, following)| async move {
        loop {
            match st.store.events(&q).await {
                Ok(events) if !events.is_empty() => {
                    q.after = events.last().map(|e| e.seq).unwrap_or(q.after);
                    let mut lines = Vec::new();
                    for e in &events {
                        serde_json::to_writer(&mut lines, &e.to_json()).expect("JSON serialises");
                        lines.push(b'\n');
                    }
                    return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(lines)), (st, q, following)));
                }
                Ok(_) => st.events.wait_after(q.after.max(st.events.processed()), Duration::from_secs(1)).await,
                Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (st, q, following))),
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(stream))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(serde::Deserialize)]
struct TriggerRequest {
    name: String,
    #[serde(flatten)]
    spec: Value,
}

pub(crate) fn trigger_json(t: &stratus_core::events::Trigger) -> Value {
    let mut v = serde_json::to_value(&t.spec).expect("a trigger serialises");
    v["name"] = t.name.clone().into();
    v["enabled"] = t.enabled.into();
    v["created_at"] = t.created_at.into();
    v["condition"] = t.spec.condition.to_string().into();
    v
}

/// A trigger (`schedule`: false) or a schedule (true) of the project.
async fn find(st: &AppState, project: &str, name: &str, schedule: bool) -> ApiResult<stratus_core::events::Trigger> {
    let what = if schedule { "schedule" } else { "trigger" };
    validate_name(what, name)?;
    let all = st.store.triggers().await?;
    all.triggers
        .into_iter()
        .find(|t| t.project == project && t.name == name && t.spec.schedule.is_some() == schedule)
        .ok_or_else(|| ApiError::NotFound(format!("{what} '{name}' not found")))
}

async fn find_trigger(st: &AppState, project: &str, name: &str) -> ApiResult<stratus_core::events::Trigger> {
    find(st, project, name, false).await
}

#[utoipa::path(
    post,
    path = "/v1/triggers",
    summary = "Create a trigger: an event type, filters, a condition and an action",
    request_body(content(("application/json"))),
    responses(
        (status = 201, description = "created", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn create_trigger(State(st): State<AppState>, caller: Caller, Body(body): Body) -> ApiResult<impl IntoResponse> {
    let r: TriggerRequest = parse_json(&body)?;
    validate_name("trigger", &r.name)?;
    let mut spec = r.spec;
    if let Some(f) = spec.get("filter") {
        stratus_core::events::Filter::parse(f)?;
    }
    // The condition as the CLI writes it ("join:3"), or as stored.
    if let Some(Value::String(c)) = spec.get("condition") {
        let c: stratus_core::events::Condition = c.parse()?;
        spec["condition"] = serde_json::to_value(c).expect("a condition serialises");
    }
    let spec: TriggerSpec =
        serde_json::from_value(spec).map_err(|e| ApiError::BadRequest(format!("invalid trigger: {e}")))?;
    spec.validate()?;
    let t = crate::events::new_trigger(&caller.project, &r.name, spec, st.clock.now_ms());
    if !st.events.change(EventChange::Create(Box::new(t.clone()))).await? {
        return Err(ApiError::Conflict(format!("trigger '{}' exists", r.name)));
    }
    let t = find_trigger(&st, &caller.project, &r.name).await?;
    Ok((StatusCode::CREATED, Json(trigger_json(&t))))
}

#[utoipa::path(
    get,
    path = "/v1/triggers",
    summary = "List the project's triggers",
    responses((status = 200, description = "triggers", body = Object))
)]
async fn list_triggers(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let all = st.store.triggers().await?;
    let triggers: Vec<Value> = all
        .triggers
        .iter()
        .filter(|t| t.project == caller.project && t.spec.schedule.is_none())
        .map(trigger_json)
        .collect();
    Ok(Json(json!({"triggers": triggers})))
}

#[utoipa::path(
    get,
    path = "/v1/triggers/{name}",
    params(("name" = String, Path, description = "the trigger's name")),
    summary = "A trigger, its contexts and its latest firings",
    responses(
        (status = 200, description = "the trigger", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_trigger(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let t = find_trigger(&st, &caller.project, &name).await?;
    let state = st.store.triggers().await?;
    let contexts: Vec<Value> = state
        .contexts
        .iter()
        .filter(|((p, n, _), _)| *p == t.project && *n == t.name)
        .map(|((_, _, group), c)| json!({"group": group, "context": c}))
        .collect();
    let firings: Vec<Value> = st
        .store
        .firings(&t.project, &t.name, 20)
        .await?
        .into_iter()
        .map(|f| {
            json!({"seq": f.seq, "at": f.at, "invocation": f.invocation.map(|i| i.to_string()),
                   "output": f.output, "depth": f.depth})
        })
        .collect();
    let mut v = trigger_json(&t);
    v["contexts"] = contexts.into();
    v["firings"] = firings.into();
    Ok(Json(v))
}

#[utoipa::path(
    delete,
    path = "/v1/triggers/{name}",
    params(("name" = String, Path, description = "the trigger's name")),
    summary = "Delete a trigger and its contexts",
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_trigger(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    find_trigger(&st, &caller.project, &name).await?;
    if !st.events.change(EventChange::Delete { project: caller.project.clone(), name: name.clone() }).await? {
        return Err(ApiError::NotFound(format!("trigger '{name}' not found")));
    }
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn set_enabled(st: &AppState, caller: &Caller, name: &str, enabled: bool) -> ApiResult<Json<Value>> {
    find_trigger(st, &caller.project, name).await?;
    let change = EventChange::SetEnabled { project: caller.project.clone(), name: name.into(), enabled };
    if !st.events.change(change).await? {
        return Err(ApiError::NotFound(format!("trigger '{name}' not found")));
    }
    Ok(Json(trigger_json(&find_trigger(st, &caller.project, name).await?)))
}

#[utoipa::path(
    post,
    path = "/v1/triggers/{name}/enable",
    params(("name" = String, Path, description = "the trigger's name")),
    summary = "Enable a trigger (it reacts to events stored from now on)",
    responses(
        (status = 200, description = "the trigger", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn enable_trigger(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(&st, &caller, &name, true).await
}

#[utoipa::path(
    post,
    path = "/v1/triggers/{name}/disable",
    params(("name" = String, Path, description = "the trigger's name")),
    summary = "Disable a trigger (events meanwhile do not fire it)",
    responses(
        (status = 200, description = "the trigger", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn disable_trigger(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_enabled(&st, &caller, &name, false).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRequest {
    name: String,
    timing: stratus_core::schedule::Timing,
    #[serde(default)]
    overlap: Option<String>,
    #[serde(default)]
    catchup_ms: Option<u64>,
    action: Value,
}

/// A schedule as the API shows it, with its context from `state`.
pub(crate) fn schedule_json(state: &stratus_store::TriggerState, t: &stratus_core::events::Trigger) -> Value {
    use stratus_core::clock::rfc3339;
    let spec = t.spec.schedule.as_ref().expect("a schedule");
    let context = state.contexts.iter().find(|((p, n, _), _)| *p == t.project && *n == t.name).map(|(_, c)| c);
    let (next, last, buffered) = match context {
        Some(stratus_core::events::Context::Schedule { next_at, last, buffered }) => (*next_at, *last, *buffered),
        _ => (None, None, None),
    };
    let mut v = json!({
        "name": t.name,
        "timing": spec.timing,
        "overlap": spec.overlap,
        "catchup_ms": spec.catchup_ms,
        "action": t.spec.action,
        "paused": !t.enabled,
        "created_at": t.created_at,
    });
    if t.enabled {
        v["next"] = next.map(rfc3339).into();
    }
    v["last_invocation"] = last.map(|i| i.to_string()).into();
    v["buffered"] = buffered.map(rfc3339).into();
    v
}

/// Schedule `name` of `project` as the API shows it, from one read of the triggers.
async fn schedule_view(st: &AppState, project: &str, name: &str) -> ApiResult<(stratus_core::events::Trigger, Value)> {
    validate_name("schedule", name)?;
    let state = st.store.triggers().await?;
    let t = state
        .triggers
        .iter()
        .find(|t| t.project == project && t.name == name && t.spec.schedule.is_some())
        .ok_or_else(|| ApiError::NotFound(format!("schedule '{name}' not found")))?;
    Ok((t.clone(), schedule_json(&state, t)))
}

#[utoipa::path(
    post,
    path = "/v1/schedules",
    summary = "Create a schedule: a cron expression (in a time zone) or an interval, and an action",
    request_body(content(("application/json"))),
    responses(
        (status = 201, description = "created", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn create_schedule(State(st): State<AppState>, caller: Caller, Body(body): Body) -> ApiResult<impl IntoResponse> {
    let r: ScheduleRequest = parse_json(&body)?;
    validate_name("schedule", &r.name)?;
    let overlap = match &r.overlap {
        Some(o) => o.parse()?,
        None => Default::default(),
    };
    let schedule = stratus_core::schedule::ScheduleSpec {
        timing: r.timing,
        overlap,
        catchup_ms: r.catchup_ms.unwrap_or(stratus_core::schedule::DEFAULT_CATCHUP_MS),
    };
    let action: stratus_core::events::Action =
        serde_json::from_value(r.action).map_err(|e| ApiError::BadRequest(format!("invalid action: {e}")))?;
    let spec = TriggerSpec {
        on: "stratus.schedule.fired".into(),
        source: Some(stratus_core::events::builtin::schedule_source(&r.name)),
        subject_prefix: None,
        subject_suffix: None,
        filter: None,
        condition: Default::default(),
        group_by: None,
        transient: false,
        action,
        schedule: Some(schedule),
    };
    spec.validate()?;
    let t = crate::events::new_trigger(&caller.project, &r.name, spec, st.clock.now_ms());
    if !st.events.change(EventChange::Create(Box::new(t))).await? {
        return Err(ApiError::Conflict(format!("a trigger or schedule '{}' exists", r.name)));
    }
    let (_, v) = schedule_view(&st, &caller.project, &r.name).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(
    get,
    path = "/v1/schedules",
    summary = "List the project's schedules",
    responses((status = 200, description = "schedules", body = Object))
)]
async fn list_schedules(State(st): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let all = st.store.triggers().await?;
    let schedules: Vec<Value> = all
        .triggers
        .iter()
        .filter(|t| t.project == caller.project && t.spec.schedule.is_some())
        .map(|t| schedule_json(&all, t))
        .collect();
    Ok(Json(json!({"schedules": schedules})))
}

#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    params(("name" = String, Path, description = "the schedule's name")),
    summary = "A schedule: its next time, its last run and its latest firings",
    responses(
        (status = 200, description = "the schedule", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn show_schedule(State(st): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let (t, mut v) = schedule_view(&st, &caller.project, &name).await?;
    let firings: Vec<Value> = st
        .store
        .firings(&t.project, &t.name, 20)
        .await?
        .into_iter()
        .map(|f| json!({"seq": f.seq, "at": f.at, "invocation": f.invocation.map(|i| i.to_string())}))
        .collect();
    v["firings"] = firings.into();
    Ok(Json(v))
}

#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    params(("name" = String, Path, description = "the schedule's name")),
    summary = "Delete a schedule",
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_schedule(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    find(&st, &caller.project, &name, true).await?;
    st.events.change(EventChange::Delete { project: caller.project.clone(), name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn set_paused(st: &AppState, caller: &Caller, name: &str, paused: bool) -> ApiResult<Json<Value>> {
    find(st, &caller.project, name, true).await?;
    let change = EventChange::SetEnabled { project: caller.project.clone(), name: name.into(), enabled: !paused };
    st.events.change(change).await?;
    Ok(Json(schedule_view(st, &caller.project, name).await?.1))
}

#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    params(("name" = String, Path, description = "the schedule's name")),
    summary = "Pause a schedule: no fires until it resumes, and none missed",
    responses(
        (status = 200, description = "the schedule", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn pause_schedule(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_paused(&st, &caller, &name, true).await
}

#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    params(("name" = String, Path, description = "the schedule's name")),
    summary = "Resume a schedule from its next time after now",
    responses(
        (status = 200, description = "the schedule", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn resume_schedule(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    set_paused(&st, &caller, &name, false).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillRequest {
    from: String,
    to: String,
}

#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/backfill",
    params(("name" = String, Path, description = "the schedule's name")),
    summary = "Fire a schedule's nominal times between two times (RFC 3339) now; times fired before are not again",
    request_body(content(("application/json"))),
    responses(
        (status = 200, description = "how many fired", body = Object),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn backfill_schedule(
    State(st): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(body): Body,
) -> ApiResult<Json<Value>> {
    let r: BackfillRequest = parse_json(&body)?;
    let time = |what: &str, v: &str| {
        stratus_core::clock::parse_rfc3339(v).map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))
    };
    let (from, to) = (time("from", &r.from)?, time("to", &r.to)?);
    if from > to {
        return Err(ApiError::BadRequest("'from' is after 'to'".into()));
    }
    find(&st, &caller.project, &name, true).await?;
    let fired = st.events.backfill(&caller.project, &name, from, to).await?;
    Ok(Json(json!({"fired": fired, "max": crate::events::MAX_BACKFILL})))
}
