//! `stratus fn deploy | list | show | delete`.

use super::Ctx;
use crate::output::out;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use stratus_client::{DeployRequest, FunctionInfo, Runtime};

#[derive(Subcommand)]
pub enum FnCommand {
    /// Deploy a new version of a function.
    Deploy(Box<DeployArgs>),
    /// List functions.
    List,
    /// Show a function's latest version.
    Show {
        /// Function name.
        name: String,
    },
    /// Delete a function: its invocations are kept, without their input, output and logs.
    Delete {
        /// Function name.
        name: String,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("code").required(true).args(["wasm", "dir"]))]
pub struct DeployArgs {
    /// Function name: 1-63 characters of a-z, 0-9 and '-'.
    name: String,
    /// A WASI (preview 1) command module.
    #[arg(long, conflicts_with_all = ["dir", "cmd", "warm"])]
    wasm: Option<PathBuf>,
    /// A directory to bundle; the command runs inside it.
    #[arg(long, requires = "cmd")]
    dir: Option<PathBuf>,
    /// The command of a process function, e.g. "python3 main.py".
    #[arg(long, requires = "dir")]
    cmd: Option<String>,
    /// Keep one process per worker slot alive across invocations
    /// (the function must speak the STRATUS/1 framing).
    #[arg(long, requires = "dir")]
    warm: bool,
    /// Send a warm process each attempt's STRATUS_TOKEN as a fourth field
    /// of the request header (`STRATUS/1 <id> <n> <token>`).
    #[arg(long, requires = "warm")]
    warm_token: bool,
    /// The project's Python environment (`stratus pyenv`) it runs with: its
    /// packages are on PYTHONPATH. Without it, a bundle's own
    /// requirements.txt is installed the same way.
    #[arg(long, requires = "dir", value_name = "NAME")]
    pyenv: Option<String>,
    /// The Python minor version a bundle's requirements.txt is installed
    /// for, e.g. 3.11 [default: the workers' python3].
    #[arg(long, requires = "dir", conflicts_with = "pyenv")]
    python: Option<String>,
    /// Timeout per attempt (e.g. 500ms, 30s, 5m) [default: 60s].
    #[arg(long, value_parser = crate::parse::duration_ms)]
    timeout: Option<u64>,
    /// Memory limit (e.g. 128M, 1G) [default: 256M].
    #[arg(long, value_parser = crate::parse::memory_mb)]
    memory: Option<u64>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = crate::parse::key_value)]
    env: Vec<(String, String)>,
    /// A project variable (`stratus var set`) it reads, in the environment
    /// variable of that name, at its value when each attempt starts
    /// (repeatable).
    #[arg(long = "var", value_name = "NAME")]
    var: Vec<String>,
    /// A project secret (`stratus secret set`) it reads, in ENV [default:
    /// NAME in capitals, '-' as '_'], at its value when each attempt
    /// starts (repeatable).
    #[arg(long = "secret", value_name = "NAME[=ENV]", value_parser = crate::parse::secret_ref)]
    secret: Vec<stratus_core::settings::SecretRef>,
    /// A concurrency tag of every attempt (repeatable): at most the tag's
    /// limit (`stratus limit set TAG N`) run at once.
    #[arg(long = "tag", value_name = "TAG", value_parser = crate::parse::tag)]
    tag: Vec<String>,
    /// Retries after a failed attempt.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Most processes a process function may have at once [default: 64].
    #[arg(long, requires = "dir")]
    max_procs: Option<u32>,
    /// CPU cores a process function may use (e.g. 0.5, 2) [default: no limit].
    #[arg(long, requires = "dir")]
    cpus: Option<f64>,
    /// Let a process function reach the network (otherwise it reaches only
    /// the Stratus API, at $STRATUS_URL).
    #[arg(long, requires = "dir")]
    network: bool,
}

pub async fn run(ctx: &Ctx, cmd: FnCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FnCommand::Deploy(a) => deploy(ctx, *a).await,
        FnCommand::List => {
            let fs = ctx.client.list_functions().await?;
            if ctx.json {
                crate::output::json_rows(&fs)?;
            } else {
                let now = crate::output::now_ms();
                out!(
                    "{:<32} {:>7} {:<8} {:>10} {:>8}  {}",
                    "NAME",
                    "VERSION",
                    "RUNTIME",
                    "TIMEOUT",
                    "MEMORY",
                    "DEPLOYED"
                )?;
                for f in fs {
                    out!(
                        "{:<32} {:>7} {:<8} {:>10} {:>6}Mi  {}",
                        f.name,
                        f.version,
                        f.runtime.kind(),
                        crate::output::duration(f.timeout_ms as i64),
                        f.memory_mb,
                        crate::output::age(f.created_at, now)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        FnCommand::Show { name } => {
            let f = ctx.client.get_function(&name).await?;
            print_function(ctx, &f)?;
            Ok(ExitCode::SUCCESS)
        }
        FnCommand::Delete { name } => {
            ctx.client.delete_function(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"name": name, "deleted": true}))?;
            } else {
                out!("deleted {name}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_function(ctx: &Ctx, f: &FunctionInfo) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(f);
    }
    out!("name:     {}", f.name)?;
    out!("version:  {}", f.version)?;
    match &f.runtime {
        Runtime::Wasm => out!("runtime:  wasm")?,
        Runtime::Process { cmd, warm, token } => {
            let how = match (warm, token) {
                (true, true) => " (warm, token in header)",
                (true, false) => " (warm)",
                _ => "",
            };
            out!("runtime:  process{how}\ncommand:  {cmd}")?
        }
    }
    out!("artifact: {}", f.artifact)?;
    out!("timeout:  {}", crate::output::duration(f.timeout_ms as i64))?;
    out!("memory:   {}Mi", f.memory_mb)?;
    out!("retries:  {}", f.retries)?;
    out!("deployed: {}", crate::output::when(f.created_at, crate::output::now_ms()))?;
    for (k, v) in &f.env {
        out!("env:      {k}={v}")?;
    }
    for v in &f.vars {
        out!("var:      {v}")?;
    }
    for r in &f.secrets {
        out!("secret:   {} as {}", r.name, r.env)?;
    }
    if !f.tags.is_empty() {
        out!("tags:     {}", f.tags.join(", "))?;
    }
    if let Some(p) = &f.pyenv {
        let python = p.python.as_deref().unwrap_or("python3");
        match &p.name {
            Some(n) => out!("pyenv:    {n} ({python}, {})", &p.digest()[..12])?,
            None => out!("pyenv:    its requirements.txt ({python}, {})", &p.digest()[..12])?,
        }
    }
    Ok(())
}

async fn deploy(ctx: &Ctx, a: DeployArgs) -> anyhow::Result<ExitCode> {
    stratus_core::validate_name("function name", &a.name)?;
    let (runtime, bytes) = match (&a.wasm, &a.dir, &a.cmd) {
        (Some(path), None, None) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (Runtime::Wasm, bytes)
        }
        (None, Some(dir), Some(cmd)) => {
            if cmd.trim().is_empty() {
                bail!("--cmd is empty: give the command to run, e.g. --cmd \"python3 main.py\"");
            }
            let bytes =
                stratus_runtime::bundle::pack_dir(dir).with_context(|| format!("cannot bundle {}", dir.display()))?;
            (Runtime::Process { cmd: cmd.clone(), warm: a.warm, token: a.warm_token }, bytes)
        }
        (None, Some(_), None) => bail!("a process function needs --cmd"),
        _ => bail!("give either --wasm FILE or --dir DIR --cmd CMD"),
    };
    // A bundle's own requirements.txt is its environment, unless it names one.
    let requirements = match (&a.dir, &a.pyenv) {
        (Some(dir), None) => bundle_requirements(dir)?,
        _ => None,
    };
    if a.python.is_some() && requirements.is_none() {
        bail!("--python applies to a bundle with a requirements.txt (or give --pyenv)");
    }
    let artifact = ctx.client.upload_artifact(bytes).await?;
    let req = DeployRequest {
        runtime,
        artifact,
        env: a.env.into_iter().collect(),
        timeout_ms: a.timeout,
        memory_mb: a.memory,
        max_procs: a.max_procs,
        cpus: a.cpus,
        retries: a.retries,
        network: a.network,
        vars: a.var,
        secrets: a.secret,
        tags: a.tag,
        pyenv: a.pyenv,
        requirements,
        python: a.python,
    };
    let f = ctx.client.deploy(&a.name, &req).await?;
    if ctx.json {
        crate::output::json(&f)?;
    } else {
        out!("deployed {} version {}", f.name, f.version)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The requirements.txt at the top of a bundle's directory, if it has one.
pub fn bundle_requirements(dir: &std::path::Path) -> anyhow::Result<Option<String>> {
    let path = dir.join("requirements.txt");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    stratus_core::pyenv::validate_requirements(&text).with_context(|| format!("{}", path.display()))?;
    Ok(Some(text))
}
