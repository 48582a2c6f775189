//! `/v1/objects/{bucket}/{key...}`: user objects, streamed both ways.

use super::AppState;
use super::auth::Caller;
use super::extract::Params;
use super::extract::params::{Bucket, ObjectKey};
use crate::error::{ApiError, ApiResult};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use stratus_blob::Key;
use stratus_core::api::{ErrorBody, ObjectInfo, ObjectList, ObjectStored};
use stratus_core::validate_name;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/objects/{bucket}/{*key}", put(put_object).get(get_object).head(head_object).delete(delete_object))
        .route("/v1/objects/{bucket}", get(list_bucket))
}

/// The user-facing key `bucket/key`, validated.
pub fn object_key(bucket: &str, key: &str) -> ApiResult<Key> {
    validate_name("bucket", bucket)?;
    Ok(Key::new(format!("{bucket}/{key}"))?)
}

#[utoipa::path(
    put,
    path = "/v1/objects/{bucket}/{key}",
    params(
        Bucket,
        ObjectKey,
    ),
    summary = "Store an object (streamed)",
    request_body(content(("application/octet-stream"))),
    responses(
        (status = 201, description = "stored", body = ObjectStored),
        (status = 400, description = "error", body = ErrorBody),
        (status = 422, description = "over the project's max_object_size or max_object_bytes", body = ErrorBody),
    )
)]
async fn put_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let object = object_key(&bucket, &key)?;
    let quotas = st.trust.project(&caller.project).map(|p| p.quotas).unwrap_or_default();
    let internal = Key::user(&caller.project, &object);
    // With a budget for all the project's objects, this one may have what
    // the others leave (an object it replaces counts as gone).
    let budget = match quotas.max_object_bytes {
        None => None,
        Some(total) => {
            let used = st.object_usage.bytes(&*st.objects, &caller.project).await?;
            let old = st.objects.head(&internal).await?.map_or(0, |m| m.size);
            Some((total, total.saturating_sub(used.saturating_sub(old)), old))
        }
    };
    let limit = match (quotas.max_object_size, budget) {
        (Some(a), Some((_, b, _))) => Some(a.min(b)),
        (a, b) => a.or(b.map(|(_, room, _)| room)),
    };
    let too_big = |_: u64| match (quotas.max_object_size, budget) {
        (Some(size), _) if budget.is_none_or(|(_, room, _)| size <= room) => ApiError::Quota(format!(
            "the object is larger than project '{}''s max_object_size of {size} bytes",
            caller.project
        )),
        (_, Some((total, room, _))) => ApiError::Quota(format!(
            "project '{}''s objects would pass its max_object_bytes of {total} bytes ({room} bytes are left)",
            caller.project
        )),
        _ => ApiError::Quota("over the project's quota".into()),
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let (Some(limit), Some(n)) = (limit, declared)
        && n > limit
    {
        return Err(too_big(limit));
    }
    // A body of no declared length is counted as it streams: one that
    // passes the limit fails the upload, which then leaves nothing.
    let over = Arc::new(AtomicBool::new(false));
    let (mut seen, flag) = (0u64, over.clone());
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            seen += chunk.len() as u64;
            let past = limit.is_some_and(|l| seen > l);
            flag.store(past, Relaxed);
            std::future::ready(if past {
                Err(std::io::Error::other("over the project's max_object_size"))
            } else {
                Ok(chunk)
            })
        })
        .boxed();
    let stored = st.objects.put_stream(&internal, stream).await;
    let size = match (stored, limit) {
        (Err(_), Some(limit)) if over.load(Relaxed) => return Err(too_big(limit)),
        (other, _) => other?,
    };
    if let Some((_, _, old)) = budget {
        st.object_usage.moved(&caller.project, size as i64 - old as i64);
    }
    object_event(&st, &caller.project, object.as_str(), Some(size)).await?;
    Ok((StatusCode::CREATED, Json(ObjectStored { key: object.as_str().to_string(), size })))
}

/// Commits `stratus.object.created` (with its size) or `.deleted`. The
/// object is written first: should this commit fail, the request fails
/// and making it again writes the same object and its event.
async fn object_event(st: &AppState, project: &str, object: &str, size: Option<u64>) -> ApiResult<()> {
    let at = st.clock.now_ms();
    let event = stratus_core::events::builtin::object(project, object, size.is_some(), size, at);
    st.store.commit(stratus_store::ChangeSet { events: vec![event], ..Default::default() }).await?;
    Ok(())
}

fn parse_range(headers: &HeaderMap, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
    let Some(v) = headers.get(header::RANGE) else { return Ok(None) };
    let bad = || ApiError::BadRequest("invalid Range header: use bytes=START-END".into());
    let v = v.to_str().map_err(|_| bad())?;
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (a, b) = spec.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.parse().map_err(|_| bad())?;
    let end: u64 = match b {
        "" => size,
        b => b.parse::<u64>().ok().and_then(|e| e.checked_add(1)).ok_or_else(bad)?,
    };
    if start >= end || end > size {
        return Err(ApiError::RangeNotSatisfiable(format!("range {spec} is outside the object's {size} bytes")));
    }
    Ok(Some(start..end))
}

#[utoipa::path(
    get,
    path = "/v1/objects/{bucket}/{key}",
    params(
        Bucket,
        ObjectKey,
    ),
    summary = "Read an object (streamed; Range: bytes=A-B gives 206)",
    responses(
        (status = 200, description = "the object", content(("application/octet-stream"))),
        (status = 206, description = "a range", content(("application/octet-stream"))),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 416, description = "error", body = ErrorBody),
    )
)]
async fn get_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let object = object_key(&bucket, &key)?;
    let internal = Key::user(&caller.project, &object);
    let meta =
        st.objects.head(&internal).await?.ok_or_else(|| ApiError::NotFound(format!("object '{object}' not found")))?;
    let range = parse_range(&headers, meta.size)?;
    let (_, stream) = st.objects.get_stream(&internal, range.clone()).await?;
    let len = range.as_ref().map(|r| r.end - r.start).unwrap_or(meta.size);
    let mut res = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes");
    if let Some(r) = &range {
        res = res
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size));
    }
    res.body(Body::from_stream(stream)).map_err(|e| ApiError::Internal(e.to_string()))
}

#[utoipa::path(
    head,
    path = "/v1/objects/{bucket}/{key}",
    params(
        Bucket,
        ObjectKey,
    ),
    summary = "An object's size",
    responses((status = 200, description = "exists"), (status = 404, description = "missing"))
)]
async fn head_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((bucket, key)): Path<(String, String)>,
) -> ApiResult<Response> {
    let object = object_key(&bucket, &key)?;
    match st.objects.head(&Key::user(&caller.project, &object)).await? {
        Some(m) => Ok(([(header::CONTENT_LENGTH, m.size.to_string())], ()).into_response()),
        None => Ok(StatusCode::NOT_FOUND.into_response()),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/objects/{bucket}/{key}",
    params(
        Bucket,
        ObjectKey,
    ),
    summary = "Delete an object",
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn delete_object(
    State(st): State<AppState>,
    caller: Caller,
    Path((bucket, key)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let object = object_key(&bucket, &key)?;
    let internal = Key::user(&caller.project, &object);
    // Its size matters only to a project whose bytes are counted.
    let size = match st.object_usage.counts(&caller.project) {
        true => st.objects.head(&internal).await?.map_or(0, |m| m.size),
        false => 0,
    };
    if st.objects.delete(&internal).await? {
        st.object_usage.moved(&caller.project, -(size as i64));
        object_event(&st, &caller.project, object.as_str(), None).await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("object '{object}' not found")))
    }
}

/// Bytes of each project's objects, as this (leading) server counts them
/// for `max_object_bytes`: listed when a project's count is first needed
/// or is over a minute old (so objects written another way, a trigger's
/// output say, are counted then), and moved by each put and delete through
/// the API meanwhile. Two puts at once may each pass with the room the
/// other then takes: the budget can be passed by an object.
#[derive(Default)]
pub struct ObjectUsage(std::sync::Mutex<std::collections::HashMap<String, (u64, std::time::Instant)>>);

/// How long a listed count is used before the project is listed again.
const USAGE_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl ObjectUsage {
    /// The bytes of `project`'s objects.
    pub async fn bytes(&self, objects: &dyn stratus_blob::ObjectStore, project: &str) -> ApiResult<u64> {
        if let Some((n, at)) = self.0.lock().unwrap().get(project)
            && at.elapsed() < USAGE_FRESH
        {
            return Ok(*n);
        }
        let listed = objects.list(Some(&Key::project(project))).await?;
        let n = listed.iter().map(|m| m.size).sum();
        self.0.lock().unwrap().insert(project.to_string(), (n, std::time::Instant::now()));
        Ok(n)
    }

    /// Whether `project`'s bytes are counted (it has a byte budget and
    /// stored an object since this server led).
    pub fn counts(&self, project: &str) -> bool {
        self.0.lock().unwrap().contains_key(project)
    }

    /// Moves a counted project's bytes by `delta`.
    pub fn moved(&self, project: &str, delta: i64) {
        if let Some((n, _)) = self.0.lock().unwrap().get_mut(project) {
            *n = n.saturating_add_signed(delta);
        }
    }
}

/// Objects of a bucket whose key (after `bucket/`) starts with `prefix`.
pub async fn list_objects(
    st: &AppState,
    project: &str,
    bucket: &str,
    prefix: &str,
) -> ApiResult<Vec<stratus_blob::ObjectMeta>> {
    validate_name("bucket", bucket)?;
    let base = Key::user(project, &Key::new(bucket.to_string())?);
    let strip = format!("p/{}/", project);
    let all = st.objects.list(Some(&base)).await?;
    let want = format!("{bucket}/{prefix}");
    Ok(all
        .into_iter()
        .filter_map(|mut m| {
            m.key = m.key.strip_prefix(&strip)?.to_string();
            m.key.starts_with(&want).then_some(m)
        })
        .collect())
}

#[utoipa::path(
    get,
    path = "/v1/objects/{bucket}",
    params(Bucket, ("prefix" = Option<String>, Query)),
    summary = "List a bucket's objects",
    responses(
        (status = 200, description = "objects", body = ObjectList),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn list_bucket(
    State(st): State<AppState>,
    caller: Caller,
    Path(bucket): Path<String>,
    q: Params,
) -> ApiResult<Json<ObjectList>> {
    let prefix = q.get("prefix").unwrap_or("");
    let list = list_objects(&st, &caller.project, &bucket, prefix).await?;
    let objects =
        list.into_iter().map(|m| ObjectInfo { key: m.key, size: m.size, last_modified: m.last_modified }).collect();
    Ok(Json(ObjectList { objects }))
}
