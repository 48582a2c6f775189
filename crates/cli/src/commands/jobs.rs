//! `stratus map`, `stratus job ...`, and waiting for jobs.

use super::Ctx;
use super::explain;
use crate::errors::invalid;
use crate::output::{self, out};
use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use stratus_client::{Id, JobInfo, JobState, MapSource, TaskResultView};
use tokio::signal::unix::{Signal, SignalKind, signal};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["inputs", "objects"]))]
pub struct MapArgs {
    /// The function to run on every input.
    name: String,
    /// A file of inputs, one JSON value per line (- for stdin); each task's
    /// stdin is its line's JSON text (a string arrives with its quotes).
    #[arg(long)]
    inputs: Option<String>,
    /// Map over the objects under BUCKET/PREFIX: one task per object.
    #[arg(long)]
    objects: Option<String>,
    /// With --objects: one task per chunk of this size (e.g. 64MiB), cut at
    /// line ends [default: one task per object].
    #[arg(long, value_parser = crate::parse::bytes)]
    chunk_size: Option<u64>,
    /// Run this function over the map outputs (one per line, in input order).
    #[arg(long)]
    reduce: Option<String>,
    /// Print the job id and return at once.
    #[arg(long)]
    detach: bool,
    /// A concurrency tag of every task, beside its function's (repeatable).
    #[arg(long = "tag", value_name = "TAG", value_parser = crate::parse::tag)]
    tag: Vec<String>,
}

#[derive(Args)]
pub struct JobId {
    /// Job id (as printed by `map --detach`, `job list` or an interrupted `map`).
    id: String,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Counts, timings and failures of a job.
    Show(JobId),
    /// Print a job's results in input order.
    Results(JobId),
    /// Where a job's time went: task durations and the slowest tasks.
    Timeline(TimelineArgs),
    /// Cancel a job: queued tasks never start, running ones are killed.
    Cancel(JobId),
    /// List recent jobs, newest first.
    List {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(Args)]
pub struct TimelineArgs {
    #[command(flatten)]
    job: JobId,
    /// How many of the slowest tasks to list.
    #[arg(long, default_value_t = 10)]
    slowest: usize,
}

pub async fn map(ctx: &Ctx, a: MapArgs) -> anyhow::Result<ExitCode> {
    if a.chunk_size.is_some() && a.objects.is_none() {
        return Err(invalid("--chunk-size applies to --objects only (--inputs makes one task per line)"));
    }
    // Listening from the start: a Ctrl-C once the job exists is always seen.
    let interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let job = match (&a.inputs, &a.objects) {
        (Some(path), None) => {
            let body = if path == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let f = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {path}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
            };
            ctx.client.map_ndjson(&a.name, a.reduce.as_deref(), &a.tag, body).await?
        }
        (None, Some(prefix)) => {
            let source = MapSource::Objects { prefix: prefix.clone(), chunk_size: a.chunk_size };
            ctx.client.map_job_tagged(&a.name, source, a.reduce.as_deref(), &a.tag).await?
        }
        _ => return Err(invalid("give --inputs FILE or --objects BUCKET/PREFIX")),
    };
    if a.detach {
        if ctx.json {
            output::json(&json!({"id": job.job.id}))?;
        } else {
            out!("{}", job.job.id)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    finish_with(ctx, job.job.id, interrupt).await
}

/// Waits for a job with a progress line on a terminal, then prints its results.
pub async fn finish(ctx: &Ctx, id: Id) -> anyhow::Result<ExitCode> {
    let interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    finish_with(ctx, id, interrupt).await
}

/// [`finish`]; a Ctrl-C leaves the job running and says how to come back
/// to it or cancel it.
async fn finish_with(ctx: &Ctx, id: Id, mut interrupt: Signal) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let job = loop {
        let poll = ctx.client.get_job(id, Some(Duration::from_millis(if tty { 250 } else { 30_000 })), 0);
        let j = tokio::select! {
            j = poll => j?,
            _ = interrupt.recv() => {
                if tty {
                    eprintln!();
                }
                let message = format!(
                    "interrupted; job {id} goes on running: re-attach with `stratus wait {id}`, cancel with `stratus job cancel {id}`"
                );
                crate::errors::print("interrupted", &message, ctx.json, Some(json!({"job": id})));
                return Ok(ExitCode::from(130));
            }
        };
        if tty {
            progress(&j, start.elapsed());
        }
        if j.job.state.is_terminal() {
            break j;
        }
    };
    if tty {
        eprintln!();
    }
    print_results(ctx, &job).await
}

fn progress(j: &JobInfo, elapsed: Duration) {
    let job = &j.job;
    let done = job.done();
    let width = 30;
    let filled = (done * width as u64).checked_div(job.total).map_or(width, |f| f as usize);
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    let eta = if rate > 0.0 { format!("{:.0}s", (job.total - done) as f64 / rate) } else { "-".into() };
    eprint!(
        "\r[{}{}] {done}/{} done, {} failed, {} running, {} queued, {rate:.0}/s, ETA {eta}  ",
        "#".repeat(filled),
        ".".repeat(width - filled),
        job.total,
        job.failed,
        j.running,
        j.queued
    );
    let _ = std::io::stderr().flush();
}

/// A task result as an NDJSON row (`stage` tells map rows from the reduce row).
fn row(r: &TaskResultView) -> Value {
    let mut v = serde_json::to_value(r).expect("results serialise");
    v["stage"] = json!("map");
    v
}

/// What a person sees on stdout for a failed task: a marked line, never a blank one.
fn failed_line(r: &TaskResultView) -> String {
    let why = r.error.as_ref().map(|e| e.message.as_str()).unwrap_or(r.status.as_str());
    format!("[task {} {}: {why}; stratus logs {}]", r.index, r.status, r.invocation)
}

async fn print_results(ctx: &Ctx, job: &JobInfo) -> anyhow::Result<ExitCode> {
    let j = &job.job;
    let mut out = std::io::stdout().lock();
    if j.reduce_function.is_some() && !ctx.json {
        if j.state == JobState::Succeeded {
            let page = ctx.client.results_page(j.id, 0, 1).await?;
            let reduced = page.reduce_output.flatten().unwrap_or_default();
            drop(out);
            output::raw(reduced.as_bytes())?;
            return Ok(ExitCode::SUCCESS);
        }
    } else {
        let mut from = 0;
        let mut reduce_output = None;
        loop {
            let page = ctx.client.results_page(j.id, from, 1000).await?;
            for r in &page.results {
                if ctx.json {
                    serde_json::to_writer(&mut out, &row(r))?;
                    out.write_all(b"\n")?;
                } else if r.status.is_terminal() && r.status != stratus_client::InvocationState::Succeeded {
                    writeln!(out, "{}", failed_line(r))?;
                } else {
                    let bytes = r.output_bytes().unwrap_or_default();
                    out.write_all(&bytes)?;
                    if !bytes.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                }
            }
            reduce_output = reduce_output.or(page.reduce_output.flatten());
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        if ctx.json
            && let Some(rid) = j.reduce_invocation
        {
            let inv = ctx.client.get_invocation(rid, None).await?.invocation;
            let mut v = json!({"stage": "reduce", "invocation": rid, "status": inv.state});
            if let Some(o) = reduce_output {
                v["output"] = json!(o);
            }
            if let Some(e) = inv.error {
                v["error"] = json!(e);
            }
            serde_json::to_writer(&mut out, &v)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
    }
    if j.state == JobState::Succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    let failures = explain_failures(ctx, j.id).await?;
    let mut message = format!("job {} {}: {}", j.id, j.state, j.error.clone().unwrap_or_default());
    if ctx.json {
        for f in &failures {
            message.push_str(&format!("; {}", f.headline));
        }
        let extra = json!({
            "job": j,
            "failures": failures.iter().map(|f| &f.json).collect::<Vec<_>>(),
        });
        crate::errors::print("job_failed", &message, true, Some(extra));
    } else {
        eprintln!("error: {message}");
        for f in &failures {
            f.print("  ");
        }
    }
    Ok(ExitCode::FAILURE)
}

/// One failed task or reducer, explained.
struct Explained {
    /// `task 2: exited with status 9 (stratus logs ID)`.
    headline: String,
    tail: String,
    hint: Option<String>,
    json: Value,
}

impl Explained {
    fn print(&self, indent: &str) {
        eprintln!("{indent}{}", self.headline);
        explain::print_tail(&self.tail, &format!("{indent}  "));
        if let Some(h) = &self.hint {
            eprintln!("{indent}  hint: {h}");
        }
    }
}

/// Up to five failed tasks and the failed reducer of a job, each with the
/// end of its stderr and its invocation id.
async fn explain_failures(ctx: &Ctx, id: Id) -> anyhow::Result<Vec<Explained>> {
    let detail = ctx.client.get_job(id, None, 5).await?;
    let mut out = Vec::new();
    for f in detail.failures.iter().flatten() {
        let why = f.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| f.status.to_string());
        let tail = explain::logs_tail(&ctx.client, f.invocation).await;
        let hint = explain::hint(&ctx.client, &detail.job.function, f.error.as_ref(), &tail).await;
        out.push(Explained {
            headline: format!("task {}: {why} (stratus logs {})", f.index, f.invocation),
            json: json!({"index": f.index, "invocation": f.invocation, "status": f.status, "error": f.error,
                         "logs_tail": tail, "hint": hint}),
            tail,
            hint,
        });
    }
    if let (Some(rid), Some(reducer)) = (detail.job.reduce_invocation, &detail.job.reduce_function) {
        let inv = ctx.client.get_invocation(rid, None).await?.invocation;
        if inv.state.is_terminal() && inv.state != stratus_client::InvocationState::Succeeded {
            let why = inv.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| inv.state.to_string());
            let tail = explain::logs_tail(&ctx.client, rid).await;
            let hint = explain::hint(&ctx.client, reducer, inv.error.as_ref(), &tail).await;
            out.push(Explained {
                headline: format!("reducer {reducer}: {why} (stratus logs {rid})"),
                json: json!({"reducer": reducer, "invocation": rid, "status": inv.state, "error": inv.error,
                             "logs_tail": tail, "hint": hint}),
                tail,
                hint,
            });
        }
    }
    Ok(out)
}

/// The job as one JSON object: the record and its live counters.
fn job_value(j: &JobInfo) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(&j.job)?;
    v["running"] = j.running.into();
    v["queued"] = j.queued.into();
    Ok(v)
}

pub async fn job(ctx: &Ctx, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Show(JobId { id }) => show(ctx, super::invocations::parse_id(&id)?).await,
        JobCommand::Results(JobId { id }) => {
            let j = ctx.client.get_job(super::invocations::parse_id(&id)?, None, 0).await?;
            print_results(ctx, &j).await
        }
        JobCommand::Timeline(a) => timeline(ctx, super::invocations::parse_id(&a.job.id)?, a.slowest).await,
        JobCommand::Cancel(JobId { id }) => {
            let id = super::invocations::parse_id(&id)?;
            let n = ctx.client.cancel_job(id).await?;
            if ctx.json {
                output::json(&json!({"id": id, "cancelled_queued": n}))?;
            } else {
                out!("cancelled {id} ({n} queued tasks will not run)")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { limit } => {
            let jobs = ctx.client.list_jobs(limit).await?;
            if ctx.json {
                let rows = jobs.iter().map(job_value).collect::<anyhow::Result<Vec<_>>>()?;
                output::json_rows(&rows)?;
                return Ok(ExitCode::SUCCESS);
            }
            let now = output::now_ms();
            out!(
                "{:<36}  {:<20} {:<10} {:>9} {:>9} {:>7} {:>9}  {}",
                "ID",
                "FUNCTION",
                "STATE",
                "TOTAL",
                "DONE",
                "FAILED",
                "DURATION",
                "CREATED"
            )?;
            for j in jobs {
                let job = &j.job;
                let took = job.finished_at.map(|f| output::duration(f - job.created_at)).unwrap_or_else(|| "-".into());
                out!(
                    "{:<36}  {:<20} {:<10} {:>9} {:>9} {:>7} {:>9}  {}",
                    job.id,
                    job.function,
                    job.state.as_str(),
                    job.total,
                    job.done(),
                    job.failed,
                    took,
                    output::age(job.created_at, now)
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn show(ctx: &Ctx, id: Id) -> anyhow::Result<ExitCode> {
    let j = ctx.client.get_job(id, None, 10).await?;
    if ctx.json {
        let mut v = job_value(&j)?;
        v["failures"] = serde_json::to_value(j.failures.as_deref().unwrap_or_default())?;
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job = &j.job;
    let now = output::now_ms();
    out!("id:         {}", job.id)?;
    out!("function:   {} (version {})", job.function, job.version)?;
    if let Some(r) = &job.reduce_function {
        out!("reduce:     {r}")?;
    }
    out!("state:      {}", job.state)?;
    out!(
        "tasks:      {} total, {} succeeded, {} failed, {} cancelled, {} running, {} queued",
        job.total,
        job.succeeded,
        job.failed,
        job.cancelled,
        j.running,
        j.queued
    )?;
    out!("created:    {}", output::when(job.created_at, now))?;
    if let Some(f) = job.finished_at {
        out!("finished:   {} (took {})", output::date(f), output::duration(f - job.created_at))?;
    }
    if let Some(e) = &job.error {
        out!("error:      {e}")?;
    }
    std::io::stdout().flush()?;
    if job.failed > 0 || job.state == JobState::Failed {
        for f in explain_failures(ctx, id).await? {
            // The explanation goes with the rest of `show`, on stdout.
            out!("failed {}", f.headline)?;
            for line in f.tail.lines() {
                out!("    | {line}")?;
            }
            if let Some(h) = &f.hint {
                out!("    hint: {h}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a job's time went, from its tasks' invocations: queue waits, run
/// times, and the slowest tasks.
async fn timeline(ctx: &Ctx, id: Id, slowest: usize) -> anyhow::Result<ExitCode> {
    let j = ctx.client.get_job(id, None, 0).await?;
    let tasks = ctx.client.job_timings(id).await?;
    let mut ran: Vec<(u64, i64, &stratus_core::api::TaskTiming)> =
        tasks.iter().filter_map(|t| Some((t.index, t.finished_at? - t.started_at?, t))).collect();
    let mut runs: Vec<i64> = ran.iter().map(|r| r.1).collect();
    runs.sort_unstable();
    let mut waits: Vec<i64> = tasks.iter().filter_map(|t| Some(t.started_at? - t.queued_at)).collect();
    waits.sort_unstable();
    ran.sort_by_key(|r| std::cmp::Reverse(r.1));
    let job = &j.job;
    if ctx.json {
        let pct = |v: &[i64]| json!({"p50": quantile(v, 0.5), "p90": quantile(v, 0.9), "max": v.last()});
        let slow: Vec<Value> = ran
            .iter()
            .take(slowest)
            .map(|(i, ms, t)| json!({"index": i, "invocation": t.invocation, "run_ms": ms, "worker": t.worker}))
            .collect();
        output::json(&json!({
            "id": job.id, "state": job.state, "total": job.total,
            "took_ms": job.finished_at.map(|f| f - job.created_at),
            "run_ms": pct(&runs), "queue_ms": pct(&waits), "slowest": slow,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let took = job.finished_at.map(|f| output::duration(f - job.created_at)).unwrap_or_else(|| "still running".into());
    out!("job {} ({}, {} tasks): {took}", job.id, job.state, job.total)?;
    let fmt = |v: &[i64]| match (quantile(v, 0.5), quantile(v, 0.9), v.last()) {
        (Some(a), Some(b), Some(c)) => {
            format!("p50 {}, p90 {}, max {}", output::duration(a), output::duration(b), output::duration(*c))
        }
        _ => "-".into(),
    };
    out!("run time:   {} ({} tasks ran)", fmt(&runs), runs.len())?;
    out!("queue wait: {}", fmt(&waits))?;
    let longest = ran.first().map_or(1, |r| r.1.max(1));
    if !ran.is_empty() {
        out!("slowest tasks:")?;
    }
    for (i, ms, t) in ran.iter().take(slowest) {
        let bar = "#".repeat(((ms * 30) / longest).max(1) as usize);
        out!(
            "  task {i:<6} {:>9}  {bar:<30}  {} on {}",
            output::duration(*ms),
            t.invocation,
            t.worker.as_deref().unwrap_or("-")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `q` quantile of sorted values (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}
