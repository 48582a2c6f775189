//! `stratus invoke | wait | logs | show | invocations`.

use super::Ctx;
use anyhow::Context;
use clap::Args;
use std::io::{Read, Write};
use std::process::ExitCode;
use stratus_client::{Error, Id};

#[derive(Args)]
pub struct InvokeArgs {
    /// Function name.
    name: String,
    /// Input: literal text, @FILE for a file's bytes, or - for stdin (default: empty).
    input: Option<String>,
    /// Queue the invocation and print its id without waiting.
    #[arg(long = "async")]
    is_async: bool,
}

#[derive(Args)]
pub struct IdArg {
    /// Invocation id.
    id: String,
}

#[derive(Args)]
pub struct ListArgs {
    /// Only this function's invocations.
    #[arg(long = "fn")]
    function: Option<String>,
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

fn parse_id(s: &str) -> anyhow::Result<Id> {
    Ok(s.parse::<Id>()?)
}

fn write_output(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// Prints a failed invocation the way a user wants to see it: what failed,
/// why, and the end of its stderr. Other errors go up to `main`.
fn report(e: Error) -> anyhow::Result<ExitCode> {
    match e {
        Error::FunctionFailed { invocation, message, logs_tail } => {
            eprintln!("error: invocation {} of {} {}: {message}", invocation.id, invocation.function, invocation.state);
            if !logs_tail.is_empty() {
                eprintln!("--- stderr (last {} bytes) ---", logs_tail.len());
                eprint!("{logs_tail}");
                if !logs_tail.ends_with('\n') {
                    eprintln!();
                }
            }
            Ok(ExitCode::FAILURE)
        }
        other => Err(other.into()),
    }
}

pub async fn invoke(ctx: &Ctx, a: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(a.input.as_deref())?;
    if a.is_async {
        let id = ctx.client.call_async(&a.name, input).await?;
        if ctx.json {
            println!("{}", serde_json::json!({"id": id}));
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    match ctx.client.invoke(&a.name, input).await {
        Ok(done) => {
            write_output(&done.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => report(e),
    }
}

pub async fn wait(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    let id = parse_id(&a.id)?;
    // Ids of invocations and jobs share one space: a job id waits for the job.
    if ctx.client.get_invocation(id, None).await.is_err() && ctx.client.get_job(id, None, 0).await.is_ok() {
        return super::jobs::finish(ctx, id).await;
    }
    match ctx.client.wait(id).await {
        Ok(out) => {
            write_output(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => report(e),
    }
}

pub async fn logs(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    write_output(&ctx.client.logs(parse_id(&a.id)?).await?)?;
    Ok(ExitCode::SUCCESS)
}

fn ms(t: Option<i64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

pub async fn show(ctx: &Ctx, a: IdArg) -> anyhow::Result<ExitCode> {
    let info = ctx.client.get_invocation(parse_id(&a.id)?, None).await?;
    let inv = &info.invocation;
    if ctx.json {
        let mut v = serde_json::to_value(inv)?;
        v["attempt_history"] = serde_json::to_value(&info.attempt_history)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("id:        {}", inv.id);
    println!("function:  {} (version {})", inv.function, inv.version);
    println!("state:     {}", inv.state);
    println!("attempts:  {} of {}", inv.attempts, inv.max_attempts);
    println!("queued:    {}", inv.queued_at);
    println!("started:   {}", ms(inv.started_at));
    println!("finished:  {}", ms(inv.finished_at));
    if let Some(w) = &inv.worker {
        println!("worker:    {w}");
    }
    if let Some(e) = &inv.error {
        println!("error:     {e}");
    }
    for at in &info.attempt_history {
        println!(
            "attempt {}: {} on {} in {} ms{}",
            at.attempt,
            at.state,
            at.worker,
            at.finished_at - at.started_at,
            at.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<ExitCode> {
    let list = ctx.client.list_invocations(a.function.as_deref(), a.limit).await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<36}  {:<24} {:>4}  {:<10} {:>8}", "ID", "FUNCTION", "VER", "STATE", "MS");
    for i in list {
        let dur = match (i.started_at, i.finished_at) {
            (Some(s), Some(f)) => (f - s).to_string(),
            _ => "-".into(),
        };
        println!("{:<36}  {:<24} {:>4}  {:<10} {:>8}", i.id, i.function, i.version, i.state.as_str(), dur);
    }
    Ok(ExitCode::SUCCESS)
}
