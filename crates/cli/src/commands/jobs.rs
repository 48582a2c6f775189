//! `stratus map`, `stratus job ...`, and waiting for jobs.

use super::Ctx;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use stratus_client::{Id, JobInfo, JobState, MapSource};

#[derive(Args)]
pub struct MapArgs {
    /// The function to run on every input.
    name: String,
    /// A file of inputs, one JSON value per line (- for stdin).
    #[arg(long, conflicts_with = "objects", required_unless_present = "objects")]
    inputs: Option<String>,
    /// Map over the objects under BUCKET/PREFIX.
    #[arg(long)]
    objects: Option<String>,
    /// With --objects: one task per chunk of this size (e.g. 64MiB), cut at line ends.
    #[arg(long, requires = "objects", value_parser = crate::parse::bytes)]
    chunk_size: Option<u64>,
    /// Run this function over the map outputs (one per line, in input order).
    #[arg(long)]
    reduce: Option<String>,
    /// Print the job id and return at once.
    #[arg(long)]
    detach: bool,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// Counts, timings and failures of a job.
    Show { id: String },
    /// Print a job's results in input order.
    Results { id: String },
    /// Cancel a job: queued tasks never start, running ones are killed.
    Cancel { id: String },
    /// List recent jobs.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub async fn map(ctx: &Ctx, a: MapArgs) -> anyhow::Result<ExitCode> {
    let job = match (&a.inputs, &a.objects) {
        (Some(path), None) => {
            let body = if path == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let f = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {path}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
            };
            ctx.client.map_ndjson(&a.name, a.reduce.as_deref(), body).await?
        }
        (None, Some(prefix)) => {
            let source = MapSource::Objects { prefix: prefix.clone(), chunk_size: a.chunk_size };
            ctx.client.map_job(&a.name, source, a.reduce.as_deref()).await?
        }
        _ => bail!("give --inputs FILE or --objects BUCKET/PREFIX"),
    };
    if a.detach {
        println!("{}", job.job.id);
        return Ok(ExitCode::SUCCESS);
    }
    finish(ctx, job.job.id).await
}

/// Waits for a job with a progress line on a terminal, then prints its results.
pub async fn finish(ctx: &Ctx, id: Id) -> anyhow::Result<ExitCode> {
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let job = loop {
        let j = ctx.client.get_job(id, Some(Duration::from_millis(if tty { 250 } else { 30_000 })), 0).await?;
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

async fn print_results(ctx: &Ctx, job: &JobInfo) -> anyhow::Result<ExitCode> {
    let j = &job.job;
    let mut out = std::io::stdout().lock();
    if j.reduce_function.is_some() && !ctx.json {
        if j.state == JobState::Succeeded {
            let page = ctx.client.results_page(j.id, 0, 1).await?;
            out.write_all(page.reduce_output.unwrap_or_default().as_bytes())?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
    } else {
        let mut from = 0;
        loop {
            let page = ctx.client.results_page(j.id, from, 1000).await?;
            for r in &page.results {
                if ctx.json {
                    let rec = serde_json::json!({
                        "index": r.index, "status": r.status,
                        "output": r.output, "output_base64": r.output_base64,
                        "error": r.error.as_ref().map(|e| e.message.clone()),
                    });
                    writeln!(out, "{rec}")?;
                } else {
                    let bytes = r.output_bytes().unwrap_or_default();
                    out.write_all(&bytes)?;
                    if !bytes.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                }
            }
            match page.next {
                Some(n) => from = n,
                None => break,
            }
        }
        out.flush()?;
    }
    if j.state == JobState::Succeeded {
        return Ok(ExitCode::SUCCESS);
    }
    let detail = ctx.client.get_job(j.id, None, 5).await?;
    eprintln!("error: job {} {}: {}", j.id, j.state, j.error.clone().unwrap_or_default());
    for f in &detail.failures {
        eprintln!("  task {}: {}", f.index, f.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""));
    }
    Ok(ExitCode::FAILURE)
}

fn ms(t: Option<i64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

pub async fn job(ctx: &Ctx, cmd: JobCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        JobCommand::Show { id } => {
            let j = ctx.client.get_job(id.parse()?, None, 10).await?;
            if ctx.json {
                let mut v = serde_json::to_value(&j.job)?;
                v["running"] = j.running.into();
                v["queued"] = j.queued.into();
                v["failures"] = serde_json::to_value(&j.failures)?;
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let job = &j.job;
            println!("id:         {}", job.id);
            println!("function:   {} (version {})", job.function, job.version);
            if let Some(r) = &job.reduce_function {
                println!("reduce:     {r}");
            }
            println!("state:      {}", job.state);
            println!(
                "tasks:      {} total, {} succeeded, {} failed, {} cancelled, {} running, {} queued",
                job.total, job.succeeded, job.failed, job.cancelled, j.running, j.queued
            );
            println!("created:    {}", job.created_at);
            println!("finished:   {}", ms(job.finished_at));
            if let Some(f) = job.finished_at {
                println!("duration:   {} ms", f - job.created_at);
            }
            if let Some(e) = &job.error {
                println!("error:      {e}");
            }
            for f in &j.failures {
                println!("failed task {}: {}", f.index, f.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""));
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Results { id } => {
            let j = ctx.client.get_job(id.parse()?, None, 0).await?;
            print_results(ctx, &j).await
        }
        JobCommand::Cancel { id } => {
            let n = ctx.client.cancel_job(id.parse()?).await?;
            if !ctx.json {
                println!("cancelled {id} ({n} queued tasks will not run)");
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::List { limit } => {
            let jobs = ctx.client.list_jobs(limit).await?;
            println!("{:<36}  {:<20} {:<10} {:>9} {:>9} {:>7}", "ID", "FUNCTION", "STATE", "TOTAL", "DONE", "FAILED");
            for j in jobs {
                let job = &j.job;
                println!(
                    "{:<36}  {:<20} {:<10} {:>9} {:>9} {:>7}",
                    job.id,
                    job.function,
                    job.state.as_str(),
                    job.total,
                    job.done(),
                    job.failed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
