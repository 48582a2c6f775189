//! `stratus object put | get | ls | rm`.

use super::Ctx;
use crate::errors::invalid;
use crate::output::out;
use anyhow::Context;
use clap::Subcommand;
use futures::StreamExt;
use std::process::ExitCode;
use tokio::io::AsyncWriteExt;

#[derive(Subcommand)]
pub enum ObjectCommand {
    /// Store a file (or stdin with -) as BUCKET/KEY, streaming.
    Put {
        /// Where to store it: BUCKET/KEY, e.g. corpus/book.txt.
        key: String,
        /// The file to store, or - for stdin.
        file: String,
    },
    /// Write BUCKET/KEY to FILE (default: stdout), streaming.
    Get {
        /// The object: BUCKET/KEY.
        key: String,
        /// Where to write it [default: stdout].
        file: Option<String>,
    },
    /// List BUCKET or BUCKET/PREFIX.
    Ls {
        /// BUCKET, or BUCKET/PREFIX for the keys that start with PREFIX.
        prefix: String,
    },
    /// Delete BUCKET/KEY.
    Rm {
        /// The object: BUCKET/KEY.
        key: String,
    },
}

/// Checks a `BUCKET/KEY` before it becomes a URL (where `..` would be folded
/// away, and a bare bucket would name the bucket, not an object).
fn check(key: &str) -> anyhow::Result<()> {
    match key.split_once('/') {
        Some((_, k)) if !k.is_empty() => {}
        _ => return Err(invalid(format!("'{key}' is not BUCKET/KEY; give e.g. {key}/file.txt"))),
    }
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
                let meta = std::fs::metadata(&file).with_context(|| format!("cannot read {file}"))?;
                if meta.is_dir() {
                    return Err(invalid(format!(
                        "{file} is a directory; `object put` stores one file (put each file, or a tar of the directory)"
                    )));
                }
                let f = tokio::fs::File::open(&file).await.with_context(|| format!("cannot open {file}"))?;
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20))
            };
            let size = ctx.client.put_object(&key, body).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"key": key, "size": size}))?;
            } else {
                out!("stored {key} ({})", crate::output::size(size))?;
            }
        }
        ObjectCommand::Get { key, file } => {
            let res = ctx.client.get_object(&key).await?;
            let to_file = file.as_deref().filter(|f| *f != "-");
            let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match to_file {
                Some(f) => Box::new(tokio::fs::File::create(f).await.with_context(|| format!("cannot create {f}"))?),
                None => Box::new(tokio::io::stdout()),
            };
            let mut size = 0u64;
            let mut stream = res.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                out.write_all(&chunk).await?;
            }
            out.flush().await?;
            // The bytes are the answer on stdout; written to a file, the
            // answer is what was written.
            if let (Some(f), true) = (to_file, ctx.json) {
                crate::output::json(&serde_json::json!({"key": key, "file": f, "size": size}))?;
            }
        }
        ObjectCommand::Ls { prefix } => {
            let (bucket, p) = prefix.split_once('/').unwrap_or((&prefix, ""));
            let list = ctx.client.list_objects(bucket, p).await?;
            if ctx.json {
                crate::output::json_rows(&list)?;
            } else {
                let now = crate::output::now_ms();
                for o in list {
                    out!(
                        "{:>10}  {:<8}  {}",
                        crate::output::size(o.size),
                        crate::output::age(o.last_modified, now),
                        o.key
                    )?;
                }
            }
        }
        ObjectCommand::Rm { key } => {
            ctx.client.delete_object(&key).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"key": key, "deleted": true}))?;
            } else {
                out!("deleted {key}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
