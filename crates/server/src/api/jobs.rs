//! `/v1/jobs`: map and map_reduce jobs over inputs or object storage.

use super::AppState;
use super::auth::Caller;
use super::extract::params::{Page, ResourceId, Wait};
use super::extract::{Params, parse_id, parse_json};
use super::functions::load_function;
use super::objects::list_objects;
use crate::error::{ApiError, ApiResult};
use crate::scheduler::TaskSpec;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use stratus_core::api::{ErrorBody, JobCancelled, JobInfo, JobList, JobRequest, ResultsPage, TimingsPage};
use stratus_core::trust::Quotas;
use stratus_core::wire::TaskResultView;
use stratus_core::{Function, Id, Job, Partition};
use tokio::sync::mpsc;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(create_job).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/results", get(job_results))
        .route("/v1/jobs/{id}/timings", get(job_timings))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
}

async fn functions(
    st: &AppState,
    project: &str,
    name: &str,
    reduce: Option<&str>,
) -> ApiResult<(Arc<Function>, Option<Arc<Function>>)> {
    let f = load_function(st, project, name).await?;
    let r = match reduce {
        Some(r) => Some(load_function(st, project, r).await?),
        None => None,
    };
    Ok((f, r))
}

#[utoipa::path(
    post,
    path = "/v1/jobs",
    params(
        ("function" = Option<String>, Query, description = "with an NDJSON body"),
        ("reduce" = Option<String>, Query, description = "with an NDJSON body"),
        ("tags" = Option<String>, Query, description = "with an NDJSON body: concurrency tags of every task"),
    ),
    summary = "Create a map (or map_reduce) job",
    description = concat!(
        "A JSON body, or an application/x-ndjson body of inputs, one JSON value per line, ",
        "with function and reduce in the query."
    ),
    request_body(content((JobRequest = "application/json"), ("application/x-ndjson"))),
    responses(
        (status = 201, description = "created", body = JobInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 413, description = "error", body = ErrorBody),
        (status = 422, description = "over the project's max_tasks_per_job", body = ErrorBody),
    )
)]
async fn create_job(
    State(st): State<AppState>,
    caller: Caller,
    q: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-ndjson"));
    let (tx, rx) = mpsc::channel::<Result<TaskSpec, String>>(1024);
    let mut tags = q.tags()?;
    let (f, r) = if ndjson {
        let name =
            q.get("function").ok_or_else(|| ApiError::BadRequest("missing query parameter 'function'".into()))?;
        let fs = functions(&st, &caller.project, name, q.get("reduce")).await?;
        tokio::spawn(feed_ndjson(body, tx, st.max_body));
        fs
    } else {
        let bytes =
            axum::body::to_bytes(body, st.max_body).await.map_err(|_| ApiError::PayloadTooLarge(st.max_body))?;
        let req: JobRequest = parse_json(&bytes)?;
        if !req.tags.is_empty() {
            stratus_core::validate_tags(&req.tags)?;
            tags = req.tags.clone();
        }
        let fs = functions(&st, &caller.project, &req.function, req.reduce.as_deref()).await?;
        let specs = match (req.inputs, req.objects) {
            (Some(inputs), None) => {
                if req.chunk_size.is_some() {
                    return Err(ApiError::BadRequest("chunk_size goes with objects".into()));
                }
                inputs.into_iter().map(|v| TaskSpec::Input(v.to_string().into_bytes())).collect()
            }
            (None, Some(objects)) => {
                let min = st
                    .trust
                    .project(&caller.project)
                    .map_or(Quotas::DEFAULT_MIN_CHUNK_SIZE, |p| p.quotas.min_chunk_size());
                if let Some(c) = req.chunk_size.filter(|c| *c < min) {
                    return Err(ApiError::Quota(format!(
                        "chunk_size {c} is below project '{}''s min_chunk_size of {min} bytes",
                        caller.project
                    )));
                }
                partitions(&st, &caller.project, &objects, req.chunk_size).await?
            }
            _ => return Err(ApiError::BadRequest("give exactly one of 'inputs' and 'objects'".into())),
        };
        tokio::spawn(async move {
            for s in specs {
                if tx.send(Ok(s)).await.is_err() {
                    return;
                }
            }
        });
        fs
    };
    // The project's task limit: the producer's rows pass through a counter
    // that aborts the job (nothing of it is kept) at one task too many.
    let max =
        st.trust.project(&caller.project).map_or(Quotas::DEFAULT_MAX_TASKS_PER_JOB, |p| p.quotas.max_tasks_per_job());
    let (counted_tx, counted) = mpsc::channel::<Result<TaskSpec, String>>(1024);
    let over = Arc::new(AtomicBool::new(false));
    let flag = over.clone();
    let project = caller.project.clone();
    tokio::spawn(async move {
        let mut rx = rx;
        let mut n = 0u64;
        while let Some(item) = rx.recv().await {
            n += 1;
            let item = if n > max {
                flag.store(true, Relaxed);
                Err(format!("the job has more than {max} tasks, project '{project}''s max_tasks_per_job"))
            } else {
                item
            };
            let stop = item.is_err();
            if counted_tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    let job = st.scheduler.create_job(f, r, tags, counted).await.map_err(|e| match e {
        crate::scheduler::Error::Store(stratus_store::Error::Aborted(why)) if over.load(Relaxed) => {
            ApiError::Quota(why)
        }
        crate::scheduler::Error::Store(stratus_store::Error::Aborted(why)) => ApiError::BadRequest(why),
        other => other.into(),
    })?;
    tracing::info!(job = %job.id, function = %job.function, tasks = job.total, "job created");
    Ok((StatusCode::CREATED, Json(job_info(&st, job))))
}

/// Streams NDJSON lines into task specs; a line that is not JSON aborts the job.
async fn feed_ndjson(body: Body, tx: mpsc::Sender<Result<TaskSpec, String>>, max_line: usize) {
    let mut stream = body.into_data_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no = 0u64;
    let send_line = |line: &[u8], line_no: u64| -> Option<Result<TaskSpec, String>> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            return None;
        }
        match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) => Some(Ok(TaskSpec::Input(line.to_vec()))),
            Err(e) => Some(Err(format!("line {line_no} of the inputs is not valid JSON: {e}"))),
        }
    };
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                let mut start = 0;
                while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
                    line_no += 1;
                    let item = send_line(&buf[start..start + i], line_no);
                    start += i + 1;
                    if let Some(item) = item {
                        let stop = item.is_err();
                        if tx.send(item).await.is_err() || stop {
                            return;
                        }
                    }
                }
                buf.drain(..start);
                if buf.len() > max_line {
                    let _ = tx
                        .send(Err(format!("line {} of the inputs is longer than {max_line} bytes", line_no + 1)))
                        .await;
                    return;
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(format!("reading the request body: {e}"))).await;
                return;
            }
            None => break,
        }
    }
    if let Some(item) = send_line(&buf, line_no + 1) {
        let _ = tx.send(item).await;
    }
}

/// The tasks of a map over `bucket/prefix`.
async fn partitions(st: &AppState, project: &str, objects: &str, chunk: Option<u64>) -> ApiResult<Vec<TaskSpec>> {
    let (bucket, prefix) = objects.split_once('/').unwrap_or((objects, ""));
    if chunk == Some(0) {
        return Err(ApiError::BadRequest("chunk_size must be at least 1 byte".into()));
    }
    let list = list_objects(st, project, bucket, prefix).await?;
    if list.is_empty() {
        return Err(ApiError::BadRequest(format!("no objects match '{objects}'")));
    }
    let mut out = Vec::new();
    for m in list {
        match chunk {
            Some(c) if m.size > 0 => {
                let mut start = 0;
                while start < m.size {
                    let end = (start + c).min(m.size);
                    out.push(TaskSpec::Partition(Partition {
                        object: m.key.clone(),
                        start,
                        end,
                        size: m.size,
                        lines: true,
                    }));
                    start = end;
                }
            }
            _ => out.push(TaskSpec::Partition(Partition {
                object: m.key.clone(),
                start: 0,
                end: m.size,
                size: m.size,
                lines: false,
            })),
        }
    }
    Ok(out)
}

fn job_info(st: &AppState, job: Job) -> JobInfo {
    let running = if job.state.is_terminal() { 0 } else { st.scheduler.job_running(job.id) as u64 };
    let queued =
        if job.state == stratus_core::JobState::Running { job.total.saturating_sub(job.done() + running) } else { 0 };
    JobInfo { job, running, queued, failures: None }
}

async fn find_job(st: &AppState, project: &str, id: &str) -> ApiResult<Job> {
    let id = parse_id(id)?;
    st.store.get_job(project, id).await?.ok_or_else(|| ApiError::NotFound(format!("job '{id}' not found")))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    params(
        ResourceId,
        Wait,
        ("failures" = Option<u32>, Query, maximum = 1000, description = "include up to N failed tasks"),
    ),
    summary = "A job with its counters",
    responses(
        (status = 200, description = "job", body = JobInfo),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn get_job(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<JobInfo>> {
    let parsed: Id = parse_id(&id)?;
    let wait = q.wait()?;
    let failures_wanted = match q.get("failures") {
        None => None,
        Some(n) => Some(
            n.parse::<usize>()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| ApiError::BadRequest(format!("invalid failures '{n}': use 0 to 1000")))?,
        ),
    };
    let rx = wait.map(|_| st.scheduler.watch_job(parsed));
    let mut job = find_job(&st, &caller.project, &id).await?;
    if let (Some(rx), Some(wait)) = (rx, wait)
        && !job.state.is_terminal()
    {
        // A function waiting for a job of its own lends its slot meanwhile.
        let _lent = caller.invocation().and_then(|me| st.scheduler.lend_slot(me));
        let _ = tokio::time::timeout(wait, rx).await;
        job = find_job(&st, &caller.project, &id).await?;
    }
    let failures = match failures_wanted {
        Some(n) => Some(failures(&st, &job, n).await?),
        None => None,
    };
    Ok(Json(JobInfo { failures, ..job_info(&st, job) }))
}

async fn failures(st: &AppState, job: &Job, n: usize) -> ApiResult<Vec<TaskResultView>> {
    let mut out = Vec::new();
    let mut from = 0;
    while job.failed > 0 && out.len() < n {
        let page = st.store.job_results(job.id, from, 5000).await?;
        let Some(last) = page.last() else { break };
        from = last.index + 1;
        for r in page {
            if matches!(r.state, stratus_core::InvocationState::Failed | stratus_core::InvocationState::TimedOut)
                && out.len() < n
            {
                out.push(TaskResultView::new(r.index, r.invocation, r.state, None, r.error));
            }
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/v1/jobs",
    params(Page),
    summary = "List jobs, newest first",
    responses(
        (status = 200, description = "jobs", body = JobList),
        (status = 400, description = "error", body = ErrorBody),
    )
)]
async fn list_jobs(State(st): State<AppState>, caller: Caller, q: Params) -> ApiResult<Json<JobList>> {
    let limit = q.limit()?;
    let before = q.before()?;
    let jobs = st.store.list_jobs(&caller.project, before, limit).await?;
    Ok(Json(JobList { jobs: jobs.into_iter().map(|j| job_info(&st, j)).collect() }))
}

/// `?from=N`: the first task index of a page.
fn from_index(q: &Params) -> ApiResult<u64> {
    match q.get("from") {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| ApiError::BadRequest(format!("invalid from '{v}'"))),
    }
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/timings",
    params(
        ResourceId,
        ("from" = Option<u64>, Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000),
    ),
    summary = "When each task was queued, started and finished, and on which worker, in input order",
    responses(
        (status = 200, description = "a page of task timings", body = TimingsPage),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn job_timings(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<TimingsPage>> {
    q.only(&["from", "limit"])?;
    let job = find_job(&st, &caller.project, &id).await?;
    let from = from_index(&q)?;
    let limit = match q.get("limit") {
        None => 1000,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| ApiError::BadRequest(format!("invalid limit '{v}': use 1 to 10000")))?,
    };
    let tasks = st.store.job_timings(job.id, from, limit).await?;
    let next = (tasks.len() == limit as usize).then(|| tasks.last().map(|t| t.index + 1)).flatten();
    Ok(Json(TimingsPage { tasks, next }))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/results",
    params(
        ResourceId,
        ("from" = Option<u64>, Query),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000),
    ),
    summary = "Task results in input order",
    responses(
        (status = 200, description = "a page of results (and the reducer's output)", body = ResultsPage),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn job_results(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Params,
) -> ApiResult<Json<ResultsPage>> {
    let job = find_job(&st, &caller.project, &id).await?;
    let from = from_index(&q)?;
    let limit = q.limit()?;
    let page = st.store.job_results(job.id, from, limit).await?;
    let next = (page.len() == limit as usize).then(|| page.last().map(|r| r.index + 1)).flatten();
    let results: Vec<TaskResultView> =
        page.into_iter().map(|r| TaskResultView::new(r.index, r.invocation, r.state, r.output, r.error)).collect();
    let mut page = ResultsPage { results, next, reduce_output: None };
    if let Some(rid) = job.reduce_invocation
        && let Some(p) = st.store.get_payloads(&caller.project, rid).await?
    {
        page.reduce_output = Some(p.output.map(|o| String::from_utf8_lossy(&o).into_owned()));
    }
    Ok(Json(page))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    params(ResourceId),
    summary = "Progress as server-sent events until the job ends",
    responses(
        (
            status = 200, description = "text/event-stream of 'progress' events, each a job",
            content(("text/event-stream")),
        ),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
    )
)]
async fn job_events(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let job = find_job(&st, &caller.project, &id).await?;
    let project: std::sync::Arc<str> = caller.project.into();
    let stream = futures::stream::unfold((st, job.id, false), move |(st, id, done)| {
        let project = project.clone();
        async move {
            if done {
                return None;
            }
            let job = st.store.get_job(&project, id).await.ok().flatten()?;
            let ended = job.state.is_terminal();
            let info = serde_json::to_string(&job_info(&st, job)).expect("a job serialises");
            let event = Event::default().event("progress").data(info);
            if !ended {
                let rx = st.scheduler.watch_job(id);
                let _ = tokio::time::timeout(Duration::from_millis(500), rx).await;
            }
            Some((Ok::<_, std::convert::Infallible>(event), (st, id, ended)))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    params(ResourceId),
    summary = "Cancel a job: queued tasks never start, running ones are killed",
    responses(
        (status = 200, description = "cancelled", body = JobCancelled),
        (status = 400, description = "error", body = ErrorBody),
        (status = 404, description = "error", body = ErrorBody),
        (status = 409, description = "error", body = ErrorBody),
    )
)]
async fn cancel_job(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<JobCancelled>> {
    let job = find_job(&st, &caller.project, &id).await?;
    if job.state.is_terminal() {
        return Err(ApiError::Conflict(format!("job '{}' is already {}", job.id, job.state)));
    }
    let n = st.scheduler.cancel_job(&job).await?;
    Ok(Json(JobCancelled { id: job.id, cancelled_queued: n }))
}
