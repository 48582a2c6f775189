//! `stratus login | whoami | project | token | audit`: who the CLI is, the
//! projects, the tokens that act in them, and the trail of changes.

use super::Ctx;
use crate::output::out;
use clap::{Args, Subcommand};
use std::process::ExitCode;
use stratus_client::{ProjectInfo, Role, TokenRequest};

#[derive(Args)]
pub struct LoginArgs {
    /// The server's URL, e.g. https://stratus.example.com.
    url: String,
    /// The token; else STRATUS_TOKEN, else read from stdin.
    #[arg(long)]
    token: Option<String>,
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project (admin).
    Create {
        /// 1-63 characters of a-z, 0-9 and '-'.
        name: String,
    },
    /// List projects (admin).
    List,
    /// Show a project: its functions and tokens (admin).
    Show {
        /// The project.
        name: String,
    },
    /// Delete a project with no live function, revoking its tokens (admin).
    Delete {
        /// The project.
        name: String,
    },
    /// Change a project's quotas; the others keep their values (admin).
    Set(SetArgs),
    /// Apply a project's retention now, rather than at the next sweep (admin).
    Purge {
        /// The project.
        name: String,
    },
}

#[derive(Args)]
pub struct SetArgs {
    /// The project.
    name: String,
    /// Tasks one job may have [default: 1000000].
    #[arg(long)]
    max_tasks_per_job: Option<u64>,
    /// Bytes one object may have, e.g. 1G [default: no limit].
    #[arg(long, value_parser = crate::parse::bytes)]
    max_object_size: Option<u64>,
    /// The smallest --chunk-size of a map over objects, e.g. 1MiB [default: 64KiB].
    #[arg(long, value_parser = crate::parse::bytes)]
    min_chunk_size: Option<u64>,
    /// How long finished invocations keep their input, output and logs, e.g. 30d [default: 7d].
    #[arg(long, value_parser = crate::parse::duration_ms)]
    retention: Option<u64>,
    /// Attempts of the project that may run at once; more wait in the
    /// queue [default: no limit].
    #[arg(long)]
    max_running: Option<u32>,
    /// Bytes all the project's objects may have together, e.g. 100G
    /// [default: no limit].
    #[arg(long, value_parser = crate::parse::bytes)]
    max_object_bytes: Option<u64>,
    /// Bytes of inputs, outputs and logs its finished invocations keep in
    /// all, e.g. 10G; past it the oldest are emptied [default: no limit].
    #[arg(long, value_parser = crate::parse::bytes)]
    retention_bytes: Option<u64>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (its secret is shown only here) (admin).
    Create(TokenArgs),
    /// List the tokens not revoked (admin).
    List,
    /// Revoke a token: refused from the moment this returns (admin).
    Revoke {
        /// The token's name.
        name: String,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    /// admin, developer, invoker, reader or worker.
    #[arg(long)]
    role: String,
    /// It expires after this long, e.g. 12h, 30d [default: never].
    #[arg(long, value_parser = crate::parse::duration_ms)]
    expires: Option<u64>,
    /// Its name, unique among tokens not revoked [default: ROLE-RANDOM].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Args)]
pub struct AuditArgs {
    /// From this time on: a duration ago (e.g. 2h, 7d) or ms since the epoch [default: all].
    #[arg(long)]
    since: Option<String>,
    /// At most this many entries, 1 to 1000.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn login(ctx: &Ctx, a: LoginArgs) -> anyhow::Result<ExitCode> {
    let url = crate::parse::server_url(&a.url).map_err(|e| crate::errors::invalid(format!("URL: {e}")))?;
    let token = match a.token.or_else(|| std::env::var("STRATUS_TOKEN").ok().filter(|t| !t.is_empty())) {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if token.is_empty() {
        return Err(crate::errors::invalid("no token: give --token, STRATUS_TOKEN, or one line on stdin"));
    }
    let who = stratus_client::Client::new(&url).with_auth(Some(&token), None)?.whoami().await?;
    let file = crate::credentials::store(&url, &token)?;
    if ctx.json {
        crate::output::json(&serde_json::json!({"server": url, "token": who, "credentials": file}))?;
    } else {
        out!(
            "logged in to {url} as {} ({} in project '{}'); token stored in {}",
            who["name"].as_str().unwrap_or("?"),
            who["role"].as_str().unwrap_or("?"),
            who["project"].as_str().unwrap_or(""),
            file.display()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct DashboardArgs {
    /// The page to open after logging in, e.g. /ui/jobs/ID.
    #[arg(long, default_value = "/ui/")]
    pub next: String,
}

/// Prints the dashboard's login link: the token never goes into the URL,
/// a single-use code valid for a minute does.
pub async fn dashboard(ctx: &Ctx, a: DashboardArgs) -> anyhow::Result<ExitCode> {
    let code = ctx.client.dashboard_code(Some(&a.next)).await?;
    let url = format!("{}{}", ctx.client.base_url(), code["path"].as_str().unwrap_or("/ui/login"));
    if ctx.json {
        crate::output::json(&serde_json::json!({"url": url, "expires_at": code["expires_at"]}))?;
    } else {
        out!("{url}")?;
        eprintln!("Open this link within a minute to log in to the dashboard (it works once).");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn whoami(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let who = ctx.client.whoami().await?;
    if ctx.json {
        crate::output::json(&who)?;
    } else {
        out!("token:   {}", who["name"].as_str().unwrap_or("?"))?;
        out!("role:    {}", who["role"].as_str().unwrap_or("?"))?;
        out!("project: {}", who["project"].as_str().unwrap_or(""))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_project(ctx: &Ctx, p: &ProjectInfo) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(p);
    }
    out!("name:      {}", p.name)?;
    out!("created:   {}", crate::output::when(p.created_at, crate::output::now_ms()))?;
    out!("functions: {}", p.functions)?;
    out!("tokens:    {}", p.tokens)?;
    let q = &p.quotas;
    let or_none = |v: Option<u64>, f: fn(u64) -> String| v.map_or("none".to_string(), f);
    out!("quotas:    max tasks per job {}", or_none(q.max_tasks_per_job, |n| n.to_string()))?;
    out!("           max object size {}", or_none(q.max_object_size, crate::output::size))?;
    out!("           min chunk size {}", or_none(q.min_chunk_size, crate::output::size))?;
    out!("           retention {}", or_none(q.retention_s, |s| crate::output::duration(s as i64 * 1000)))?;
    out!("           max running {}", or_none(q.max_running.map(u64::from), |n| n.to_string()))?;
    out!("           max object bytes {}", or_none(q.max_object_bytes, crate::output::size))?;
    out!("           retention bytes {}", or_none(q.retention_bytes, crate::output::size))?;
    if let Some(n) = p.object_bytes {
        out!("objects:   {}", crate::output::size(n))?;
    }
    out!("running:   {}", p.running)?;
    Ok(())
}

pub async fn project(ctx: &Ctx, c: ProjectCommand) -> anyhow::Result<ExitCode> {
    match c {
        ProjectCommand::Create { name } => {
            stratus_core::validate_name("project", &name)?;
            let p = ctx.client.create_project(&name).await?;
            if ctx.json {
                crate::output::json(&p)?;
            } else {
                out!("created project {}", p.name)?;
            }
        }
        ProjectCommand::List => {
            let ps = ctx.client.list_projects().await?;
            if ctx.json {
                crate::output::json_rows(&ps)?;
            } else {
                out!("{:<24} {:>9} {:>6}  CREATED", "NAME", "FUNCTIONS", "TOKENS")?;
                let now = crate::output::now_ms();
                for p in &ps {
                    out!(
                        "{:<24} {:>9} {:>6}  {}",
                        p.name,
                        p.functions,
                        p.tokens,
                        crate::output::age(p.created_at, now)
                    )?;
                }
            }
        }
        ProjectCommand::Show { name } => print_project(ctx, &ctx.client.get_project(&name).await?)?,
        ProjectCommand::Set(a) => {
            let mut q = ctx.client.get_project(&a.name).await?.quotas;
            if a.max_tasks_per_job == Some(0) {
                return Err(crate::errors::invalid("--max-tasks-per-job: at least 1"));
            }
            q.max_tasks_per_job = a.max_tasks_per_job.or(q.max_tasks_per_job);
            q.max_object_size = a.max_object_size.or(q.max_object_size);
            q.min_chunk_size = a.min_chunk_size.or(q.min_chunk_size);
            q.retention_s = a.retention.map(|ms| ms.div_ceil(1000)).or(q.retention_s);
            if a.max_running == Some(0) {
                return Err(crate::errors::invalid("--max-running: at least 1"));
            }
            q.max_running = a.max_running.or(q.max_running);
            if a.max_object_bytes == Some(0) {
                return Err(crate::errors::invalid("--max-object-bytes: at least 1"));
            }
            q.max_object_bytes = a.max_object_bytes.or(q.max_object_bytes);
            if a.retention_bytes == Some(0) {
                return Err(crate::errors::invalid("--retention-bytes: at least 1"));
            }
            q.retention_bytes = a.retention_bytes.or(q.retention_bytes);
            print_project(ctx, &ctx.client.set_quotas(&a.name, &q).await?)?;
        }
        ProjectCommand::Purge { name } => {
            let n = ctx.client.purge_project(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"name": name, "purged": n}))?;
            } else {
                out!("dropped the payloads of {n} invocations")?;
            }
        }
        ProjectCommand::Delete { name } => {
            ctx.client.delete_project(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"name": name, "deleted": true}))?;
            } else {
                out!("deleted project {name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn token(ctx: &Ctx, c: TokenCommand) -> anyhow::Result<ExitCode> {
    match c {
        TokenCommand::Create(a) => {
            let role: Role = a.role.parse()?;
            let req = TokenRequest {
                role,
                // The project is the request's: --project, else the caller's.
                project: None,
                name: a.name,
                expires_in_s: a.expires.map(|ms| ms.div_ceil(1000)),
            };
            let t = ctx.client.create_token(&req).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({
                    "token": t.token, "name": t.name, "project": t.project, "role": t.role, "expires_at": t.expires_at,
                }))?;
            } else {
                // The token alone on stdout, for `$(stratus token create …)`.
                out!("{}", t.token)?;
            }
        }
        TokenCommand::List => {
            let ts = ctx.client.list_tokens().await?;
            if ctx.json {
                crate::output::json_rows(&ts)?;
            } else {
                out!("{:<24} {:<10} {:<20} {:<10} EXPIRES", "NAME", "ROLE", "PROJECT", "CREATED")?;
                let now = crate::output::now_ms();
                for t in &ts {
                    let expires = match t.expires_at {
                        None => "never".to_string(),
                        Some(_) if t.expired => "expired".to_string(),
                        Some(e) => crate::output::date(e),
                    };
                    out!(
                        "{:<24} {:<10} {:<20} {:<10} {expires}",
                        t.name,
                        t.role.as_str(),
                        if t.project.is_empty() { "-" } else { &t.project },
                        crate::output::age(t.created_at, now)
                    )?;
                }
            }
        }
        TokenCommand::Revoke { name } => {
            ctx.client.revoke_token(&name).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"name": name, "revoked": true}))?;
            } else {
                out!("revoked {name}")?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(ctx: &Ctx, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let since = match a.since.as_deref() {
        None => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(ms) if ms >= 0 => ms,
            _ => {
                let ago = crate::parse::duration_ms(s).map_err(|e| crate::errors::invalid(format!("--since: {e}")))?;
                crate::output::now_ms() - ago as i64
            }
        },
    };
    if !(1..=1000).contains(&a.limit) {
        return Err(crate::errors::invalid("--limit: 1 to 1000"));
    }
    let entries = ctx.client.audit(since, a.limit).await?;
    if ctx.json {
        crate::output::json_rows(&entries)?;
    } else {
        out!("{:<20} {:<16} {:<16} {:<16} TARGET", "TIME", "ACTOR", "PROJECT", "ACTION")?;
        for e in &entries {
            out!(
                "{:<20} {:<16} {:<16} {:<16} {}",
                crate::output::date(e.at),
                e.actor,
                if e.project.is_empty() { "-" } else { &e.project },
                e.action,
                e.target
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
