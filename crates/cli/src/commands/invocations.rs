//! `stratus invoke | wait | logs | show | invocations`.

use super::Ctx;
use super::explain;
use crate::output::{self, out};
use anyhow::Context;
use clap::Args;
use serde_json::json;
use std::io::Read;
use std::process::ExitCode;
use stratus_client::{Error, Id, Invocation};

#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// Input: literal text, @FILE for a file's bytes, or - for stdin [default: empty].
    input: Option<String>,
    /// Queue the invocation and print its id without waiting.
    #[arg(long = "async")]
    is_async: bool,
    /// A concurrency tag of this call, beside its function's (repeatable).
    #[arg(long = "tag", value_name = "TAG", value_parser = crate::parse::tag)]
    tag: Vec<String>,
}

#[derive(Args)]
pub struct IdArg {
    /// Invocation id (as printed by `invoke --async`, `invocations` or a failure).
    id: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this function's invocations.
    #[arg(long = "fn", conflicts_with = "job")]
    function: Option<String>,
    /// Only the tasks of this job, in input order.
    #[arg(long)]
    job: Option<String>,
    /// How many to list, newest first (with --job: the first tasks).
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

fn read_input(spec: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match spec {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
            Ok(buf)
        }
        Some(s) if s.starts_with('@') => std::fs::read(&s[1..]).with_context(|| format!("cannot read {}", &s[1..])),
        Some(s) => Ok(s.as_bytes().to_vec()),
    }
}

pub fn parse_id(s: &str) -> anyhow::Result<Id> {
    s.parse::<Id>().map_err(|e| crate::errors::invalid(format!("'{s}' is not an id: {e}")))
}

/// A successful invocation's output: the bytes, or with `--json`
/// `{"id", "output" | "output_base64"}`.
fn print_output(ctx: &Ctx, id: Id, bytes: Vec<u8>) -> anyhow::Result<ExitCode> {
    if ctx.json {
        let mut v = output::output_fields(bytes);
        v["id"] = json!(id);
        output::json(&v)?;
    } else {
        output::raw(&bytes)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a failed invocation the way a user wants to see it: what failed,
/// why, the end of its stderr, where the rest is, and a hint when the cause
/// is known. Other errors go up to `main`.
async fn report(ctx: &Ctx, e: Error) -> anyhow::Result<ExitCode> {
    let (inv, message, logs_tail) = match e {
        Error::FunctionFailed { invocation, message, logs_tail } => (invocation, message, logs_tail),
        other => return Err(other.into()),
    };
    let tail = explain::tail(&logs_tail);
    let hint = explain::hint(&ctx.client, &inv.function, inv.error.as_ref(), &tail).await;
    let what = format!("invocation {} of {} {}: {message}", inv.id, inv.function, inv.state);
    if ctx.json {
        let message = match &hint {
            Some(h) => format!("{what} ({h})"),
            None => what,
        };
        let extra = json!({"invocation": inv, "logs_tail": tail});
        crate::errors::print("function_failed", &message, true, Some(extra));
    } else {
        eprintln!("error: {what}");
        if !tail.is_empty() {
            eprintln!("--- end of stderr (all of it: stratus logs {}) ---", inv.id);
            explain::print_tail(&tail, "");
        }
        if let Some(h) = hint {
            eprintln!("hint: {h}");
        }
    }
    Ok(ExitCode::FAILURE)
}

pub async fn invoke(ctx: &Ctx, a: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(a.input.as_deref())?;
    if a.is_async {
        let id = ctx.client.call_async_tagged(&a.name, input, &a.tag).await?;
        if ctx.json {
            output::json(&json!({"id": id}))?;
        } else {
            out!("{id}")?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    match ctx.client.invoke_tagged(&a.name, input, &a.tag).await {
        Ok(done) => print_output(ctx, done.id, done.output),
        Err(e) => report(ctx, e).await,
    }
}

/// When `id` is not an invocation but a job, an error that points to the
/// job commands; otherwise the original error.
async fn not_a_job(ctx: &Ctx, id: Id, e: Error) -> anyhow::Error {
    if matches!(&e, Error::Api { status: 404, .. }) && ctx.client.get_job(id, None, 0).await.is_ok() {
        return crate::errors::CliError {
            code: "not_found",
            message: format!(
                "{id} is a job, not an invocation; see `stratus job show {id}` or `stratus job results {id}`"
            ),
        }
        .into();
    }
    e.into()
}

pub async fn wait(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    let id = parse_id(&a.id)?;
    // Ids of invocations and jobs share one space: a job id waits for the job.
    if ctx.client.get_invocation(id, None).await.is_err() && ctx.client.get_job(id, None, 0).await.is_ok() {
        return super::jobs::finish(ctx, id).await;
    }
    match ctx.client.wait(id).await {
        Ok(out) => print_output(ctx, id, out),
        Err(e) => report(ctx, e).await,
    }
}

pub async fn logs(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    let id = parse_id(&a.id)?;
    let logs = match ctx.client.logs(id).await {
        Ok(l) => l,
        Err(e) => return Err(not_a_job(ctx, id, e).await),
    };
    if ctx.json {
        let text = String::from_utf8_lossy(&logs);
        output::json(&json!({"id": id, "logs": text}))?;
    } else {
        output::raw(&logs)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    let id = parse_id(&a.id)?;
    let info = match ctx.client.get_invocation(id, None).await {
        Ok(i) => i,
        Err(e) => return Err(not_a_job(ctx, id, e).await),
    };
    let inv = &info.invocation;
    if ctx.json {
        let mut v = serde_json::to_value(inv)?;
        v["attempt_history"] = serde_json::to_value(&info.attempt_history)?;
        output::json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = output::now_ms();
    out!("id:        {}", inv.id)?;
    out!("function:  {} (version {})", inv.function, inv.version)?;
    if let (Some(job), Some(task)) = (inv.job_id, inv.task_index) {
        out!("job:       {job} (task {task})")?;
    }
    out!("state:     {}", inv.state)?;
    out!("attempts:  {} of {}", inv.attempts, inv.max_attempts)?;
    out!("queued:    {}", output::when(inv.queued_at, now))?;
    if let Some(s) = inv.started_at {
        out!("started:   {} (after {} in the queue)", output::date(s), output::duration(s - inv.queued_at))?;
    }
    if let Some(f) = inv.finished_at {
        let ran = inv.started_at.map(|s| format!(" (ran {})", output::duration(f - s))).unwrap_or_default();
        out!("finished:  {}{ran}", output::date(f))?;
    }
    if let Some(w) = &inv.worker {
        out!("worker:    {w}")?;
    }
    if let Some(e) = &inv.error {
        out!("error:     {e} (stderr: stratus logs {})", inv.id)?;
    }
    for at in &info.attempt_history {
        out!(
            "attempt {}: {} on {} in {}{}",
            at.attempt,
            at.state,
            at.worker,
            output::duration(at.finished_at - at.started_at),
            at.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let list = match &a.job {
        Some(job) => job_invocations(ctx, parse_id(job)?, a.limit).await?,
        None => ctx.client.list_invocations(a.function.as_deref(), a.limit).await?,
    };
    if ctx.json {
        output::json_rows(&list)?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = output::now_ms();
    out!("{:<36}  {:<24} {:>4}  {:<10} {:>9}  {}", "ID", "FUNCTION", "VER", "STATE", "DURATION", "QUEUED")?;
    for i in list {
        let dur = match (i.started_at, i.finished_at) {
            (Some(s), Some(f)) => output::duration(f - s),
            _ => "-".into(),
        };
        out!(
            "{:<36}  {:<24} {:>4}  {:<10} {:>9}  {}",
            i.id,
            i.function,
            i.version,
            i.state.as_str(),
            dur,
            output::age(i.queued_at, now)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The first `limit` tasks of a job, in input order: the job's results name
/// their invocations, each read in turn.
async fn job_invocations(ctx: &Ctx, job: Id, limit: u32) -> anyhow::Result<Vec<Invocation>> {
    let page = ctx.client.results_page(job, 0, limit.max(1)).await?;
    let mut out = Vec::with_capacity(page.results.len());
    for r in page.results {
        out.push(ctx.client.get_invocation(r.invocation, None).await?.invocation);
    }
    Ok(out)
}
