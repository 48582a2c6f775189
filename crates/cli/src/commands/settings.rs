//! `stratus var | secret`: a project's variables and secrets, which
//! functions deployed with `--var` and `--secret` read at each attempt.

use super::Ctx;
use crate::output::out;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use stratus_client::VariableRequest;

#[derive(Subcommand)]
pub enum VarCommand {
    /// Set a variable (developer): functions read the new value from their
    /// next attempt on; warm processes that read it start again.
    Set(VarSetArgs),
    /// Print a variable's value.
    Get {
        /// The variable.
        name: String,
    },
    /// List the project's variables and their values.
    List,
    /// Delete a variable (developer).
    Delete {
        /// The variable.
        name: String,
    },
}

#[derive(Args)]
pub struct VarSetArgs {
    /// The variable, also the environment variable functions read it from:
    /// A-Z, a-z, 0-9 and '_'.
    name: String,
    /// The value, or @FILE to read it from a file (at most 64 KiB of text).
    value: String,
    /// The value is JSON: checked as such, and marked JSON.
    #[arg(long = "as-json")]
    as_json: bool,
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set a secret (developer). The value is read from a file, an
    /// environment variable or stdin, never the command line, and is never
    /// shown again.
    Set(SecretSetArgs),
    /// List the project's secrets: names, versions and dates, never values.
    List,
    /// Delete a secret (developer).
    Delete {
        /// The secret.
        name: String,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["from_file", "from_env", "stdin"]))]
pub struct SecretSetArgs {
    /// The secret: 1-63 characters of a-z, 0-9 and '-'.
    name: String,
    /// Read the value from this file (a final newline is dropped).
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// Read the value from this environment variable.
    #[arg(long)]
    from_env: Option<String>,
    /// `-`: read the value from stdin (a final newline is dropped).
    #[arg(value_name = "-", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
    stdin: Option<String>,
}

pub async fn var(ctx: &Ctx, c: VarCommand) -> anyhow::Result<ExitCode> {
    match c {
        VarCommand::Set(a) => {
            let value = match a.value.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
                None => a.value,
            };
            let v = ctx.client.set_variable(&a.name, &VariableRequest { value, json: a.as_json }).await?;
            if ctx.json {
                crate::output::json(&v)?;
            } else {
                out!("set {} version {}", v.name, v.version)?;
            }
        }
        VarCommand::Get { name } => {
            let v = ctx.client.get_variable(&name).await?;
            if ctx.json {
                crate::output::json(&v)?;
            } else {
                out!("{}", v.value)?;
            }
        }
        VarCommand::List => {
            let vs = ctx.client.list_variables().await?;
            if ctx.json {
                crate::output::json_rows(&vs)?;
            } else {
                out!("{:<24} {:<8} {:<10} {:<16} VALUE", "NAME", "VERSION", "UPDATED", "BY")?;
                let now = crate::output::now_ms();
                for v in &vs {
                    let mut shown: String =
                        v.value.chars().take(60).map(|c| if c.is_control() { ' ' } else { c }).collect();
                    if v.value.chars().count() > 60 {
                        shown.push('…');
                    }
                    out!(
                        "{:<24} {:<8} {:<10} {:<16} {shown}",
                        v.name,
                        v.version,
                        crate::output::age(v.updated_at, now),
                        v.updated_by
                    )?;
                }
            }
        }
        VarCommand::Delete { name } => {
            ctx.client.delete_variable(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"deleted": name}))?;
            } else {
                out!("deleted variable {name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A value read from a file or stdin, without the newline an editor or
/// `echo` leaves at its end.
fn without_final_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

pub async fn secret(ctx: &Ctx, c: SecretCommand) -> anyhow::Result<ExitCode> {
    match c {
        SecretCommand::Set(a) => {
            let value = if let Some(path) = &a.from_file {
                let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
                without_final_newline(text)
            } else if let Some(var) = &a.from_env {
                match std::env::var(var) {
                    Ok(v) => v,
                    Err(_) => bail!("--from-env {var}: no such environment variable (or it is not text)"),
                }
            } else {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("cannot read the secret from stdin")?;
                without_final_newline(text)
            };
            let s = ctx.client.set_secret(&a.name, value).await?;
            if ctx.json {
                crate::output::json(&s)?;
            } else {
                out!("set secret {} version {}", s.name, s.version)?;
            }
        }
        SecretCommand::List => {
            let ss = ctx.client.list_secrets().await?;
            if ctx.json {
                crate::output::json_rows(&ss)?;
            } else {
                out!("{:<24} {:<8} {:<10} {:<10} BY", "NAME", "VERSION", "CREATED", "UPDATED")?;
                let now = crate::output::now_ms();
                for s in &ss {
                    out!(
                        "{:<24} {:<8} {:<10} {:<10} {}",
                        s.name,
                        s.version,
                        crate::output::age(s.created_at, now),
                        crate::output::age(s.updated_at, now),
                        s.updated_by
                    )?;
                }
            }
        }
        SecretCommand::Delete { name } => {
            ctx.client.delete_secret(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"deleted": name}))?;
            } else {
                out!("deleted secret {name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
