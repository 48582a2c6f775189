//! The dashboard's pages, one handler each, reading what the API reads.

use super::html::{Table, badge, esc, facts, link, page, preview, preview_of, query_value, when};
use super::{PageError, PageResult, Session, plot};
use crate::api::AppState;
use crate::error::ApiError;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::fmt::Write;
use stratus_core::human::duration;
use stratus_core::trust::Need;
use stratus_core::{Function, Id, Invocation, InvocationState, Job, Runtime};
use stratus_store::EventQuery;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/", get(overview))
        .route("/ui/functions", get(functions))
        .route("/ui/functions/{name}", get(function))
        .route("/ui/invocations", get(invocations))
        .route("/ui/invocations/{id}", get(invocation))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/cancel", post(cancel_job))
        .route("/ui/workers", get(workers))
        .route("/ui/events", get(events))
        .route("/ui/triggers", get(triggers))
        .route("/ui/schedules", get(schedules))
        .route("/ui/settings", get(settings))
        .route("/ui/triggers/{name}/{verb}", post(switch_trigger))
        .route("/ui/schedules/{name}/{verb}", post(switch_schedule))
}

/// How many recent invocations a function's figures are computed over.
const RECENT: u32 = 200;

fn parse_id(id: &str) -> Result<Id, PageError> {
    Ok(crate::api::extract::parse_id(id)?)
}

fn runtime(f: &Function) -> String {
    match &f.spec.runtime {
        Runtime::Wasm => "wasm".into(),
        Runtime::Process { warm: true, .. } => "process (warm)".into(),
        Runtime::Process { .. } => "process".into(),
    }
}

/// Figures of some invocations: how many, the share that failed, and the
/// median and 99th percentile duration of those that finished.
struct Figures {
    n: usize,
    failed: usize,
    p50: Option<i64>,
    p99: Option<i64>,
}

fn figures(list: &[Invocation]) -> Figures {
    let ended: Vec<&Invocation> = list.iter().filter(|i| i.state.is_terminal()).collect();
    let mut d: Vec<i64> = ended.iter().filter_map(|i| Some(i.finished_at? - i.started_at?)).collect();
    d.sort_unstable();
    let pct = |p: f64| (!d.is_empty()).then(|| d[((d.len() - 1) as f64 * p).round() as usize]);
    Figures {
        n: ended.len(),
        failed: ended.iter().filter(|i| i.state != InvocationState::Succeeded).count(),
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn figure_cells(f: &Figures) -> [String; 4] {
    let rate = if f.n == 0 { "–".into() } else { format!("{:.1}%", f.failed as f64 * 100.0 / f.n as f64) };
    let ms = |v: Option<i64>| v.map_or("–".into(), duration);
    [f.n.to_string(), rate, ms(f.p50), ms(f.p99)]
}

fn invocation_table(id: &str, list: &[Invocation], now: i64, with_function: bool) -> String {
    let mut headers = vec!["Invocation", "State", "Queued", "Duration", "Attempts", "Worker"];
    if with_function {
        headers.insert(1, "Function");
    }
    let mut t = Table::new(id, &headers);
    for i in list {
        let took = match (i.started_at, i.finished_at) {
            (Some(s), Some(f)) => duration(f - s),
            (Some(_), None) => "running".into(),
            _ => "–".into(),
        };
        let mut cells = vec![
            link(&format!("/ui/invocations/{}", i.id), &i.id.to_string()),
            badge(i.state.as_str()),
            when(i.queued_at, now),
            took,
            format!("{}/{}", i.attempts, i.max_attempts),
            esc(i.worker.as_deref().unwrap_or("–")),
        ];
        if with_function {
            cells.insert(1, link(&format!("/ui/functions/{}", i.function), &format!("{} v{}", i.function, i.version)));
        }
        t.row(&format!(r#"data-state="{}""#, i.state.as_str()), &cells);
    }
    t.finish("No invocations.")
}

fn job_table(list: &[Job], now: i64) -> String {
    let mut t = Table::new("jobs", &["Job", "Function", "State", "Progress", "Failed", "Created", "Took"]);
    for j in list {
        let took = j.finished_at.map_or("–".into(), |f| duration(f - j.created_at));
        let function = match &j.reduce_function {
            Some(r) => format!("{} → {}", esc(&j.function), esc(r)),
            None => esc(&j.function),
        };
        t.row(
            &format!(r#"data-state="{}""#, j.state),
            &[
                link(&format!("/ui/jobs/{}", j.id), &j.id.to_string()),
                function,
                badge(j.state.as_str()),
                progress(j.done(), j.total),
                j.failed.to_string(),
                when(j.created_at, now),
                took,
            ],
        );
    }
    t.finish("No jobs yet: run `stratus map`.")
}

fn progress(done: u64, total: u64) -> String {
    let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
    format!(
        r#"<span class="progress" title="{done} of {total}"><span style="width:{pct:.1}%"></span></span> {done}/{total}"#
    )
}

async fn overview(State(st): State<AppState>, s: Session) -> PageResult {
    let now = st.clock.now_ms();
    let p = &s.caller.project;
    let (fns, jobs, recent) = tokio::try_join!(
        st.store.list_functions(p),
        st.store.list_jobs(p, None, 5),
        st.store.list_invocations(p, None, None, 10),
    )?;
    let workers = st.scheduler.workers();
    let alive = workers.iter().filter(|w| w.state == "alive").count();
    let running = jobs.iter().filter(|j| !j.state.is_terminal()).count();
    let body = format!(
        r#"<section class="cards"><a class="card" href="/ui/functions"><b id="count-functions">{}</b> functions</a><a class="card" href="/ui/jobs"><b>{running}</b> of the latest jobs running</a><a class="card" href="/ui/workers"><b id="count-workers">{alive}</b> workers alive, {} slots</a></section><h2>Latest jobs</h2>{}<h2>Latest invocations</h2>{}"#,
        fns.len(),
        workers.iter().filter(|w| w.state == "alive").map(|w| w.slots).sum::<usize>(),
        job_table(&jobs, now),
        invocation_table("invocations", &recent, now, true),
    );
    Ok(Html(page(&s, "/ui/", "Overview", &body)))
}

async fn functions(State(st): State<AppState>, s: Session) -> PageResult {
    let now = st.clock.now_ms();
    let p = &s.caller.project;
    let fns = st.store.list_functions(p).await?;
    let mut t = Table::new(
        "functions",
        &["Function", "Version", "Runtime", "Memory", "Timeout", "Recent", "Error rate", "p50", "p99", "Deployed"],
    );
    for f in &fns {
        let recent = st.store.list_invocations(p, Some(&f.name), None, RECENT).await?;
        let [n, rate, p50, p99] = figure_cells(&figures(&recent));
        t.row(
            &format!(r#"data-function="{}""#, esc(&f.name)),
            &[
                link(&format!("/ui/functions/{}", f.name), &f.name),
                f.version.to_string(),
                runtime(f),
                format!("{} MiB", f.spec.limits.memory_mb),
                duration(f.spec.limits.timeout_ms as i64),
                n,
                rate,
                p50,
                p99,
                when(f.created_at, now),
            ],
        );
    }
    let body = format!(
        r#"<p class="hint">Figures are over each function's last {RECENT} invocations.</p>{}"#,
        t.finish("No functions yet: deploy one with `stratus fn deploy`.")
    );
    Ok(Html(page(&s, "/ui/functions", "Functions", &body)))
}

async fn function(State(st): State<AppState>, s: Session, Path(name): Path<String>) -> PageResult {
    stratus_core::validate_name("function", &name)?;
    let now = st.clock.now_ms();
    let p = &s.caller.project;
    let f = st
        .store
        .get_function(p, &name, None)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("function '{name}' not found")))?;
    let recent = st.store.list_invocations(p, Some(&name), None, RECENT).await?;
    let [n, rate, p50, p99] = figure_cells(&figures(&recent));
    let mut versions =
        Table::new("versions", &["Version", "Runtime", "Memory", "Timeout", "Retries", "Artifact", "Deployed"]);
    for v in (f.version.saturating_sub(9).max(1)..=f.version).rev() {
        let Some(fv) =
            (if v == f.version { Some(f.clone()) } else { st.store.get_function(p, &name, Some(v)).await? })
        else {
            continue;
        };
        versions.row(
            "",
            &[
                v.to_string(),
                runtime(&fv),
                format!("{} MiB", fv.spec.limits.memory_mb),
                duration(fv.spec.limits.timeout_ms as i64),
                fv.spec.retries.to_string(),
                format!("<code>{}</code>", &fv.spec.artifact[..12]),
                when(fv.created_at, now),
            ],
        );
    }
    let cmd = match &f.spec.runtime {
        Runtime::Process { cmd, .. } => format!("<code>{}</code>", esc(cmd)),
        Runtime::Wasm => "–".into(),
    };
    let limits = &f.spec.limits;
    let body = format!(
        r#"{}<h2>Recent invocations</h2>{}<p><a href="/ui/invocations?function={name}">All of its invocations</a></p><h2>Versions</h2>{}"#,
        facts(&[
            ("Version", f.version.to_string()),
            ("Runtime", runtime(&f)),
            ("Command", cmd),
            ("Memory", format!("{} MiB", limits.memory_mb)),
            ("Timeout", duration(limits.timeout_ms as i64)),
            ("Processes", limits.max_procs.to_string()),
            (
                "CPU",
                if limits.cpu_millis == 0 {
                    "no limit".into()
                } else {
                    format!("{:.2} cores", limits.cpu_millis as f64 / 1000.0)
                }
            ),
            ("Network", if f.spec.network { "outbound".into() } else { "Stratus API only".into() }),
            ("Retries", f.spec.retries.to_string()),
            (
                "Environment",
                match f.spec.env.is_empty() {
                    true => "–".into(),
                    false => esc(&f.spec.env.keys().cloned().collect::<Vec<_>>().join(", ")),
                }
            ),
            ("Recent", format!("{n} ended, error rate {rate}, p50 {p50}, p99 {p99}")),
        ]),
        invocation_table("invocations", &recent[..recent.len().min(20)], now, false),
        versions.finish("No versions."),
    );
    Ok(Html(page(&s, "/ui/functions", &format!("Function {name}"), &body)))
}

#[derive(Deserialize)]
struct InvocationFilter {
    function: Option<String>,
    state: Option<String>,
    /// `15m`, `1h`, `24h`, …
    since: Option<String>,
    before: Option<String>,
}

async fn invocations(State(st): State<AppState>, s: Session, Query(q): Query<InvocationFilter>) -> PageResult {
    let now = st.clock.now_ms();
    let function = q.function.as_deref().filter(|f| !f.is_empty());
    if let Some(f) = function {
        stratus_core::validate_name("function", f)?;
    }
    let state = match q.state.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(v.parse::<InvocationState>()?),
        None => None,
    };
    let since = match q.since.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(
            now - stratus_core::clock::duration_ms(v)
                .map_err(|e| ApiError::BadRequest(format!("invalid since '{v}': {e}")))? as i64,
        ),
        None => None,
    };
    let before = match q.before.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(parse_id(v)?),
        None => None,
    };
    // A page of 100 matching rows from the newest 1,000 before `before`.
    let read = st.store.list_invocations(&s.caller.project, function, before, 1000).await?;
    let (read_len, last_read) = (read.len(), read.last().map(|i| i.id));
    let list: Vec<Invocation> = read
        .into_iter()
        .filter(|i| state.is_none_or(|s| i.state == s) && since.is_none_or(|t| i.queued_at >= t))
        .take(100)
        .collect();
    let mut options = String::from(r#"<option value="">any state</option>"#);
    for v in InvocationState::ALL {
        let sel = if Some(v) == state { " selected" } else { "" };
        let _ = write!(options, r#"<option{sel}>{}</option>"#, v.as_str());
    }
    // Older rows: after the last shown when the page is full, else after
    // the last read when there may be more to read.
    let older = match (list.len() == 100, read_len == 1000) {
        (true, _) => list.last().map(|i| i.id),
        (false, true) => last_read,
        _ => None,
    };
    let more = match older {
        Some(l) => {
            let mut href = format!("/ui/invocations?before={l}");
            for (k, v) in [("function", &q.function), ("state", &q.state), ("since", &q.since)] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    let _ = write!(href, "&{k}={}", query_value(v));
                }
            }
            format!(r#"<p><a href="{}" id="older">Older</a></p>"#, esc(&href))
        }
        None => String::new(),
    };
    let body = format!(
        r#"<form class="filters" method="get"><input name="function" placeholder="function" value="{}"><select name="state">{options}</select><input name="since" placeholder="since, e.g. 1h" value="{}"><button type="submit">Filter</button></form>{}{more}"#,
        esc(function.unwrap_or("")),
        esc(q.since.as_deref().unwrap_or("")),
        invocation_table("invocations", &list, now, true),
    );
    Ok(Html(page(&s, "/ui/invocations", "Invocations", &body)))
}

/// How much of an input or an output a page shows.
const PREVIEW: usize = 16 << 10;

async fn invocation(State(st): State<AppState>, s: Session, Path(id): Path<String>) -> PageResult {
    let id = parse_id(&id)?;
    let now = st.clock.now_ms();
    let p = &s.caller.project;
    let i = st
        .store
        .get_invocation(p, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("invocation '{id}' not found")))?;
    let (attempts, payloads, input) = tokio::try_join!(
        st.store.list_attempts(id),
        st.store.get_payloads(p, id),
        st.store.input_preview(p, id, PREVIEW as u32),
    )?;
    let mut t = Table::new("attempts", &["Attempt", "State", "Worker", "Started", "Duration", "Error"]);
    for a in &attempts {
        t.row(
            &format!(r#"data-state="{}""#, a.state.as_str()),
            &[
                a.attempt.to_string(),
                badge(a.state.as_str()),
                esc(&a.worker),
                when(a.started_at, now),
                duration(a.finished_at - a.started_at),
                esc(a.error.as_ref().map_or("", |e| e.message.as_str())),
            ],
        );
    }
    let gone = r#"<p class="empty">Deleted after the project's retention.</p>"#;
    let input = match input {
        _ if payloads.as_ref().is_some_and(|pl| pl.purged_at.is_some()) => gone.into(),
        Some((_, 0)) => r#"<p class="empty">Empty (a task over an object reads its range).</p>"#.into(),
        Some((head, len)) => preview_of(&head, len),
        None => String::new(),
    };
    let (output, logs) = match &payloads {
        Some(pl) if pl.purged_at.is_some() => (gone.into(), gone.into()),
        Some(pl) => (
            pl.output.as_deref().filter(|o| !o.is_empty()).map_or_else(
                || format!(r#"<p class="empty">{}</p>"#, if i.state.is_terminal() { "None." } else { "None yet." }),
                |o| preview(o, PREVIEW),
            ),
            pl.logs
                .as_deref()
                .filter(|l| !l.is_empty())
                .map_or(r#"<p class="empty">No logs.</p>"#.into(), |l| preview(l, 64 << 10)),
        ),
        None => Default::default(),
    };
    let mut info = vec![
        ("State", badge(i.state.as_str())),
        ("Function", link(&format!("/ui/functions/{}", i.function), &format!("{} v{}", i.function, i.version))),
        ("Queued", when(i.queued_at, now)),
        ("Attempts", format!("{} of at most {}", i.attempts, i.max_attempts)),
        ("Worker", esc(i.worker.as_deref().unwrap_or("–"))),
    ];
    if let (Some(st), Some(f)) = (i.started_at, i.finished_at) {
        info.push(("Duration", duration(f - st)));
    }
    if let Some(j) = i.job_id {
        let task = i.task_index.map_or("reducer".into(), |t| format!("task {t}"));
        info.push(("Job", format!("{} ({task})", link(&format!("/ui/jobs/{j}"), &j.to_string()))));
    }
    if let Some(e) = &i.error {
        info.push(("Error", format!(r#"<span class="error">{}</span>"#, esc(&e.message))));
    }
    let body = format!(
        "{}<h2>Input</h2>{input}<h2>Output</h2>{output}<h2>Logs</h2>{logs}<h2>Attempts</h2>{}",
        facts(&info),
        t.finish("Not started yet.")
    );
    Ok(Html(page(&s, "/ui/invocations", &format!("Invocation {id}"), &body)))
}

async fn jobs(State(st): State<AppState>, s: Session) -> PageResult {
    let list = st.store.list_jobs(&s.caller.project, None, 100).await?;
    Ok(Html(page(&s, "/ui/jobs", "Jobs", &job_table(&list, st.clock.now_ms()))))
}

/// Timings are read in pages of this many tasks.
const TIMINGS_PAGE: u32 = 20_000;

async fn job(State(st): State<AppState>, s: Session, Path(id): Path<String>) -> PageResult {
    let id = parse_id(&id)?;
    let now = st.clock.now_ms();
    let j = st
        .store
        .get_job(&s.caller.project, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job '{id}' not found")))?;
    let mut tasks = Vec::new();
    loop {
        let page = st.store.job_timings(id, tasks.len() as u64, TIMINGS_PAGE).await?;
        let short = page.len() < TIMINGS_PAGE as usize;
        tasks.extend(page);
        if short {
            break;
        }
    }
    let plots = plot::plots(&tasks, now);
    let sm = &plots.summary;
    let running = if j.state.is_terminal() { 0 } else { st.scheduler.job_running(id) as u64 };
    let mut slow = Table::new("slowest", &["Task", "Invocation", "Duration"]);
    for (index, inv, d) in &sm.slowest {
        slow.row("", &[index.to_string(), link(&format!("/ui/invocations/{inv}"), &inv.to_string()), duration(*d)]);
    }
    let failed: Vec<_> = tasks
        .iter()
        .filter(|t| matches!(t.state, InvocationState::Failed | InvocationState::TimedOut))
        .take(20)
        .collect();
    let mut fails = Table::new("failures", &["Task", "Invocation", "State", "Attempts"]);
    for t in &failed {
        fails.row(
            "",
            &[
                t.index.to_string(),
                link(&format!("/ui/invocations/{}", t.invocation), &t.invocation.to_string()),
                badge(t.state.as_str()),
                t.attempts.to_string(),
            ],
        );
    }
    let cancel = if j.state.is_terminal() || !s.caller.role.may(Need::Develop) {
        String::new()
    } else {
        format!(
            r#"<form method="post" action="/ui/jobs/{id}/cancel" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" class="danger" id="cancel">Cancel job</button></form>"#,
            s.csrf
        )
    };
    let reducer = match j.reduce_invocation {
        Some(r) => link(&format!("/ui/invocations/{r}"), &r.to_string()),
        None => j.reduce_function.as_deref().map_or("–".into(), |f| format!("{} (not started)", esc(f))),
    };
    let body = format!(
        r#"<div id="job" data-job="{id}" data-state="{state}" data-live="{live}">{facts}{cancel}</div>
<h2>Timeline</h2><p class="hint">One bar per task from its start to its end, grouped by worker{bucketed}. <span class="legend"><i class="s-succeeded"></i>succeeded <i class="s-failed"></i>failed <i class="s-timed_out"></i>timed out <i class="s-cancelled"></i>cancelled <i class="s-running"></i>running</span></p>{timeline}
<div class="two"><div><h2>Task durations</h2>{hist}</div><div><h2>Tasks over time</h2><p class="hint"><span class="legend"><i class="s-running"></i>running <i class="s-succeeded"></i>done</span></p>{curve}</div></div>
<h2>Slowest tasks</h2>{slow}<h2>Failed tasks</h2>{fails}"#,
        state = j.state,
        live = !j.state.is_terminal(),
        facts = facts(&[
            ("State", format!(r#"<span id="job-state">{}</span>"#, badge(j.state.as_str()))),
            ("Function", link(&format!("/ui/functions/{}", j.function), &format!("{} v{}", j.function, j.version))),
            ("Progress", format!(r#"<span id="job-progress">{}</span>"#, progress(j.done(), j.total))),
            ("Succeeded", format!(r#"<span id="job-succeeded">{}</span>"#, j.succeeded)),
            ("Failed", format!(r#"<span id="job-failed">{}</span>"#, j.failed)),
            ("Running", format!(r#"<span id="job-running">{running}</span>"#)),
            ("Reducer", reducer),
            ("Created", when(j.created_at, now)),
            ("Took", j.finished_at.map_or("–".into(), |f| duration(f - j.created_at))),
            (
                "Tasks",
                format!(
                    "{} started, {} finished; p50 {}, p99 {}",
                    sm.started,
                    sm.finished,
                    sm.p50.map_or("–".into(), duration),
                    sm.p99.map_or("–".into(), duration)
                )
            ),
            ("Error", esc(j.error.as_deref().unwrap_or("–"))),
        ]),
        bucketed = if tasks.len() > plot::MAX_BARS {
            format!("; {} tasks, so each bar is a bucket of a worker's consecutive tasks", tasks.len())
        } else {
            String::new()
        },
        timeline = plots.timeline,
        hist = plots.histogram,
        curve = plots.curve,
        slow = slow.finish("No task has finished yet."),
        fails = fails.finish("None."),
    );
    Ok(Html(page(&s, "/ui/jobs", &format!("Job {id}"), &body)))
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn cancel_job(
    State(st): State<AppState>,
    s: Session,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    s.check(&f.csrf)?;
    s.may(Need::Develop)?;
    let id = parse_id(&id)?;
    let j = st
        .store
        .get_job(&s.caller.project, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job '{id}' not found")))?;
    if !j.state.is_terminal() {
        st.scheduler.cancel_job(&j).await?;
    }
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}

async fn workers(State(st): State<AppState>, s: Session) -> PageResult {
    let now = st.clock.now_ms();
    let mut t =
        Table::new("workers", &["Worker", "Host", "State", "Slots", "Running", "Load", "Registered", "Last heartbeat"]);
    for w in st.scheduler.workers() {
        let load = if w.slots == 0 { 0.0 } else { w.running as f64 / w.slots as f64 * 100.0 };
        let kind = if w.local { " (in the server)" } else { "" };
        t.row(
            &format!(r#"data-state="{}""#, w.state),
            &[
                format!("{}{kind}", esc(&w.id)),
                esc(&w.host),
                badge(w.state),
                w.slots.to_string(),
                w.running.to_string(),
                format!(r#"<span class="progress"><span style="width:{load:.0}%"></span></span> {load:.0}%"#),
                when(w.registered_at, now),
                when(w.last_heartbeat, now),
            ],
        );
    }
    Ok(Html(page(&s, "/ui/workers", "Workers", &t.finish("No workers."))))
}

async fn events(State(st): State<AppState>, s: Session) -> PageResult {
    let now = st.clock.now_ms();
    let q = EventQuery {
        project: Some(s.caller.project.clone()),
        after: st.events.processed().saturating_sub(5000),
        limit: 5000,
        ty: None,
        subject_prefix: None,
    };
    let list = st.store.events(&q).await?;
    let last = list.last().map_or(q.after, |e| e.seq);
    let mut t = Table::new("events", &["#", "Type", "Source", "Subject", "Time", "Data"]);
    for e in list.iter().rev().take(100) {
        let data = e.data.as_deref().map(|d| esc(&String::from_utf8_lossy(&d[..d.len().min(200)]))).unwrap_or_default();
        t.row(
            &format!(r#"data-seq="{}" data-type="{}""#, e.seq, esc(&e.ty)),
            &[
                e.seq.to_string(),
                esc(&e.ty),
                esc(&e.source),
                esc(e.subject.as_deref().unwrap_or("")),
                when(e.time, now),
                format!("<code>{data}</code>"),
            ],
        );
    }
    let body = format!(
        r#"<p class="hint">The newest first; new events appear as they are stored.</p><div id="event-stream" data-after="{last}"></div>{}"#,
        t.finish_always()
    );
    Ok(Html(page(&s, "/ui/events", "Events", &body)))
}

/// A JSON value as short text for a cell.
fn json_cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "–".into(),
        serde_json::Value::String(s) => esc(s),
        other => format!("<code>{}</code>", esc(&other.to_string())),
    }
}

/// A button that switches a trigger or a schedule, for those who may.
fn switch(s: &Session, what: &str, name: &str, verb: &str) -> String {
    if !s.caller.role.may(Need::Develop) {
        return String::new();
    }
    format!(
        r#"<form method="post" action="/ui/{what}/{}/{verb}" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit" data-verb="{verb}">{verb}</button></form>"#,
        esc(name),
        s.csrf
    )
}

async fn switch_trigger(st: State<AppState>, s: Session, p: Path<(String, String)>, f: Form<CsrfForm>) -> Switched {
    flip(st, s, "triggers", p, f).await
}

async fn switch_schedule(st: State<AppState>, s: Session, p: Path<(String, String)>, f: Form<CsrfForm>) -> Switched {
    flip(st, s, "schedules", p, f).await
}

type Switched = Result<Response, PageError>;

/// A trigger's or a schedule's form: `enable` or `disable` a trigger,
/// `pause` or `resume` a schedule; then back to the list of `page`.
async fn flip(
    State(st): State<AppState>,
    s: Session,
    page: &str,
    Path((name, verb)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Switched {
    s.check(&f.csrf)?;
    s.may(Need::Develop)?;
    // What the API answers is not shown: the page goes back to the list.
    match (page, verb.as_str()) {
        ("triggers", "enable" | "disable") => {
            let _shown = crate::api::events::set_enabled(&st, &s.caller, &name, verb == "enable").await?;
        }
        ("schedules", "pause" | "resume") => {
            let _shown = crate::api::events::set_paused(&st, &s.caller, &name, verb == "pause").await?;
        }
        _ => return Err(ApiError::NotFound(format!("no action '{verb}' on {page}")).into()),
    }
    Ok(Redirect::to(&format!("/ui/{page}")).into_response())
}

/// What a trigger or a schedule does, in words, its function linked.
fn action(a: &stratus_core::events::Action) -> String {
    use stratus_core::events::Action;
    let f = |name: &str| link(&format!("/ui/functions/{name}"), name);
    match a {
        Action::Invoke { function, input, output } => {
            let input = match input {
                stratus_core::events::Input::Event => "event",
                stratus_core::events::Input::Object => "object",
            };
            let out = output.as_deref().map(|o| format!(", output to {}", esc(o))).unwrap_or_default();
            format!("invoke {} with the {input}{out}", f(function))
        }
        Action::Map { function, items } => {
            format!("map {} over {}", f(function), esc(items.as_deref().unwrap_or("data")))
        }
        Action::Emit { ty } => format!("emit {}", esc(ty)),
    }
}

async fn triggers(State(st): State<AppState>, s: Session) -> PageResult {
    let state = st.store.triggers().await?;
    let mut t = Table::new("triggers", &["Trigger", "On", "Condition", "Action", "Enabled", "", "Created"]);
    let now = st.clock.now_ms();
    for tr in state.triggers.iter().filter(|t| t.project == s.caller.project && t.spec.schedule.is_none()) {
        let v = crate::api::events::trigger_json(tr);
        t.row(
            &format!(r#"data-trigger="{}""#, esc(&tr.name)),
            &[
                esc(&tr.name),
                json_cell(&v["on"]),
                json_cell(&v["condition"]),
                action(&tr.spec.action),
                if tr.enabled { badge("enabled") } else { badge("disabled") },
                switch(&s, "triggers", &tr.name, if tr.enabled { "disable" } else { "enable" }),
                when(tr.created_at, now),
            ],
        );
    }
    Ok(Html(page(&s, "/ui/triggers", "Triggers", &t.finish("No triggers: create one with `stratus trigger create`."))))
}

async fn schedules(State(st): State<AppState>, s: Session) -> PageResult {
    let state = st.store.triggers().await?;
    let mut t = Table::new("schedules", &["Schedule", "Timing", "Action", "Next", "Last run", "State", ""]);
    for tr in state.triggers.iter().filter(|t| t.project == s.caller.project && t.spec.schedule.is_some()) {
        let v = crate::api::events::schedule_json(&state, tr);
        let last = match v["last_invocation"].as_str() {
            Some(i) => link(&format!("/ui/invocations/{i}"), i),
            None => "–".into(),
        };
        t.row(
            &format!(r#"data-schedule="{}""#, esc(&tr.name)),
            &[
                esc(&tr.name),
                tr.spec.schedule.as_ref().map_or_else(String::new, |s| match &s.timing {
                    stratus_core::schedule::Timing::Cron { expr, tz } => {
                        format!("<code>{}</code> ({})", esc(expr), esc(tz))
                    }
                    stratus_core::schedule::Timing::Every { every_ms } => {
                        format!("every {}", duration(*every_ms as i64))
                    }
                }),
                action(&tr.spec.action),
                json_cell(&v["next"]),
                last,
                if tr.enabled { badge("active") } else { badge("paused") },
                switch(&s, "schedules", &tr.name, if tr.enabled { "pause" } else { "resume" }),
            ],
        );
    }
    Ok(Html(page(
        &s,
        "/ui/schedules",
        "Schedules",
        &t.finish("No schedules: create one with `stratus schedule create`."),
    )))
}

/// The project's variables with their values, and its secrets without.
async fn settings(State(st): State<AppState>, s: Session) -> PageResult {
    let now = st.clock.now_ms();
    let mut vars = Table::new("variables", &["Variable", "Value", "Version", "Updated", "By"]);
    for v in st.store.variables(&s.caller.project).await? {
        let kind = if v.json { " (JSON)" } else { "" };
        vars.row(
            &format!(r#"data-variable="{}""#, esc(&v.name)),
            &[
                format!("<code>{}</code>{kind}", esc(&v.name)),
                preview(v.value.as_bytes(), 2000),
                v.version.to_string(),
                when(v.updated_at, now),
                esc(&v.updated_by),
            ],
        );
    }
    let mut secrets = Table::new("secrets", &["Secret", "Version", "Created", "Updated", "By", "Key"]);
    for (_, x) in st.store.secrets(Some(&s.caller.project)).await? {
        secrets.row(
            &format!(r#"data-secret="{}""#, esc(&x.name)),
            &[
                esc(&x.name),
                x.version.to_string(),
                when(x.created_at, now),
                when(x.updated_at, now),
                esc(&x.updated_by),
                format!("<code>{}</code>", esc(&x.sealed.key_id)),
            ],
        );
    }
    let mut limits = Table::new("limits", &["Tag", "Slots", "Running", "Waiting", "Updated", "By"]);
    for (_, l) in st.store.limits(Some(&s.caller.project)).await? {
        let (holders, waiting, _) = st.scheduler.limit_status(&s.caller.project, &l.tag, 0);
        let slots = if l.slots == 0 { "0 (paused)".to_string() } else { l.slots.to_string() };
        limits.row(
            &format!(r#"data-limit="{}""#, esc(&l.tag)),
            &[
                format!("<code>{}</code>", esc(&l.tag)),
                slots,
                holders.len().to_string(),
                waiting.to_string(),
                when(l.updated_at, now),
                esc(&l.updated_by),
            ],
        );
    }
    let body = format!(
        "<h2>Variables</h2>{}<h2>Secrets</h2><p>Values are never shown: <code>stratus secret set NAME</code> \
         changes one.</p>{}<h2>Concurrency limits</h2>{}",
        vars.finish("No variables: stratus var set NAME VALUE sets one."),
        secrets.finish("No secrets: stratus secret set NAME --from-file F sets one."),
        limits.finish("No limits: stratus limit set TAG N sets one.")
    );
    Ok(Html(page(&s, "/ui/settings", "Settings", &body)))
}
