//! `stratus pyenv`: a project's Python environments, which process
//! functions (`fn deploy --pyenv`) and the Python SDK's runner
//! (`FunctionExecutor(runtime=NAME)`) import packages from.

use super::Ctx;
use crate::output::out;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use stratus_client::PyEnvInfo;

#[derive(Subcommand)]
pub enum PyEnvCommand {
    /// Set a Python environment (developer): the packages of a requirements
    /// file, installed by each worker (wheels only, from pip's configured
    /// index) the first time one of its functions runs there. This
    /// server's slots start installing it at once. Setting it again with
    /// other requirements makes a new environment for later deploys.
    Create {
        /// The environment's name: 1-63 characters of a-z, 0-9 and '-'.
        name: String,
        /// A requirements file: package requirements only (no pip options).
        #[arg(long, short)]
        requirements: PathBuf,
        /// The Python minor version its functions run with, e.g. 3.11
        /// [default: the workers' python3].
        #[arg(long)]
        python: Option<String>,
        /// Wait until this server's slots have installed it; a failed
        /// install is an error.
        #[arg(long)]
        wait: bool,
    },
    /// List the project's environments, with their state on the server's slots.
    List,
    /// Show an environment: its requirements, state and pip's message if it failed.
    Show {
        /// The environment's name.
        name: String,
    },
    /// Delete an environment (developer); functions deployed with it keep it.
    Delete {
        /// The environment's name.
        name: String,
    },
}

pub async fn run(ctx: &Ctx, c: PyEnvCommand) -> anyhow::Result<ExitCode> {
    match c {
        PyEnvCommand::Create { name, requirements, python, wait } => {
            stratus_core::validate_name("pyenv name", &name)?;
            if let Some(v) = &python {
                stratus_core::pyenv::validate_python(v)?;
            }
            let text = std::fs::read_to_string(&requirements)
                .with_context(|| format!("cannot read {}", requirements.display()))?;
            stratus_core::pyenv::validate_requirements(&text)?;
            let mut e = ctx.client.set_pyenv(&name, &text, python.as_deref()).await?;
            if wait {
                while e.state == "installing" || e.state == "absent" {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    e = ctx.client.get_pyenv(&name).await?;
                }
                if e.state == "failed" {
                    print_pyenv(ctx, &e)?;
                    anyhow::bail!("python environment {name} failed to install");
                }
            }
            if ctx.json {
                crate::output::json(&e)?;
            } else {
                out!("python environment {} {} ({})", e.pyenv.name, if wait { "installed" } else { "set" }, e.state)?;
            }
        }
        PyEnvCommand::List => {
            let all = ctx.client.list_pyenvs().await?;
            if ctx.json {
                crate::output::json_rows(&all)?;
            } else {
                out!("{:<24} {:<8} {:<11} {:<14} UPDATED", "NAME", "PYTHON", "STATE", "DIGEST")?;
                let now = crate::output::now_ms();
                for e in &all {
                    out!(
                        "{:<24} {:<8} {:<11} {:<14} {}",
                        e.pyenv.name,
                        e.pyenv.python.as_deref().unwrap_or("python3"),
                        e.state,
                        &e.digest[..12],
                        crate::output::age(e.pyenv.updated_at, now)
                    )?;
                }
            }
        }
        PyEnvCommand::Show { name } => print_pyenv(ctx, &ctx.client.get_pyenv(&name).await?)?,
        PyEnvCommand::Delete { name } => {
            ctx.client.delete_pyenv(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"name": name, "deleted": true}))?;
            } else {
                out!("deleted the python environment {name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_pyenv(ctx: &Ctx, e: &PyEnvInfo) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(e);
    }
    let now = crate::output::now_ms();
    out!("name:     {}", e.pyenv.name)?;
    out!("python:   {}", e.pyenv.python.as_deref().unwrap_or("the workers' python3"))?;
    out!("digest:   {}", e.digest)?;
    out!("state:    {}", e.state)?;
    out!("updated:  {} by {}", crate::output::when(e.pyenv.updated_at, now), e.pyenv.updated_by)?;
    if let Some(m) = &e.message {
        out!("message:  {m}")?;
    }
    out!("requirements:")?;
    for line in e.pyenv.requirements.lines() {
        out!("  {line}")?;
    }
    Ok(())
}
