//! `stratus object put | get | ls | rm`.

use super::Ctx;
use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

#[derive(Subcommand)]
pub enum ObjectCommand {
    /// Store a file (or stdin with -) as BUCKET/KEY, streaming.
    Put { key: String, file: String },
    /// Write BUCKET/KEY to FILE (default: stdout), streaming.
    Get { key: String, file: Option<String> },
    /// List BUCKET or BUCKET/PREFIX.
    Ls { prefix: String },
    /// Delete BUCKET/KEY.
    Rm { key: String },
}

/// Checks a `BUCKET/KEY` before it becomes a URL (where `..` would be folded away).
fn check(key: &str) -> anyhow::Result<()> {
    stratus_blob::Key::new(key.to_string())?;
    let bucket = key.split('/').next().unwrap_or_default();
    stratus_core::validate_name("bucket", bucket)?;
    Ok(())
}

pub async fn run(ctx: &Ctx, cmd: ObjectCommand) -> anyhow::Result<ExitCode> {
    match &cmd {
        ObjectCommand::Put { key, .. } | ObjectCommand::Get { key, .. } | ObjectCommand::Rm { key } => check(key)?,
        ObjectCommand::Ls { prefix } => {
            stratus_core::validate_name("bucket", prefix.split('/').next().unwrap_or_default())?
        }
    }
    match cmd {
        ObjectCommand::Put { key, file } => {
            let body = if file == "-" {
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(tokio::io::stdin()))
            } else {
                let f = tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {file}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
            };
            let size = ctx.client.put_object(&key, body).await?;
            if !ctx.json {
                println!("stored {key} ({size} bytes)");
            }
        }
        ObjectCommand::Get { key, file } => {
            let res = ctx.client.get_object(&key).await?;
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &file {
                Some(f) if f != "-" => {
                    Box::new(tokio::fs::File::create(f).await.with_context(|| format!("cannot create {f}"))?)
                }
                _ => Box::new(tokio::io::stdout()),
            };
            let mut stream = res.bytes_stream();
            while let Some(chunk) = stream.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
        }
        ObjectCommand::Ls { prefix } => {
            let (bucket, p) = prefix.split_once('/').unwrap_or((&prefix, ""));
            let list = ctx.client.list_objects(bucket, p).await?;
            if ctx.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for o in list {
                    println!("{:>12}  {}", o.size, o.key);
                }
            }
        }
        ObjectCommand::Rm { key } => {
            ctx.client.delete_object(&key).await?;
            if !ctx.json {
                println!("deleted {key}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
