//! `stratus limit`: a project's concurrency limits by tag.

use super::Ctx;
use crate::output::out;
use clap::Subcommand;
use std::process::ExitCode;
use stratus_client::LimitInfo;

#[derive(Subcommand)]
pub enum LimitCommand {
    /// Let at most N attempts carrying TAG run at once, across every worker
    /// (developer); 0 pauses the tag. Attempts take their slots when they
    /// start and give them back when they end.
    Set {
        /// The tag, as given to `fn deploy --tag`, `invoke --tag` or `map --tag`.
        #[arg(value_parser = crate::parse::tag)]
        tag: String,
        /// Slots: attempts that may run at once.
        slots: u32,
    },
    /// List the project's limits with the attempts running and waiting.
    List,
    /// Show a limit: the attempts holding its slots and those waiting.
    Show {
        /// The tag.
        tag: String,
    },
    /// Delete a limit (developer): the tag runs unlimited.
    Delete {
        /// The tag.
        tag: String,
    },
    /// Release every slot of the tag (admin, audited): the attempts holding
    /// them run on, no longer counted, and waiting ones may start.
    Reset {
        /// The tag.
        tag: String,
    },
}

pub async fn run(ctx: &Ctx, c: LimitCommand) -> anyhow::Result<ExitCode> {
    match c {
        LimitCommand::Set { tag, slots } => {
            let l = ctx.client.set_limit(&tag, slots).await?;
            if ctx.json {
                crate::output::json(&l)?;
            } else {
                out!("limit {}: {} slots ({} running, {} waiting)", l.limit.tag, l.limit.slots, l.running, l.waiting)?;
            }
        }
        LimitCommand::List => {
            let ls = ctx.client.list_limits().await?;
            if ctx.json {
                crate::output::json_rows(&ls)?;
            } else {
                out!("{:<32} {:>7} {:>8} {:>8}  UPDATED", "TAG", "SLOTS", "RUNNING", "WAITING")?;
                let now = crate::output::now_ms();
                for l in &ls {
                    out!(
                        "{:<32} {:>7} {:>8} {:>8}  {}",
                        l.limit.tag,
                        l.limit.slots,
                        l.running,
                        l.waiting,
                        crate::output::age(l.limit.updated_at, now)
                    )?;
                }
            }
        }
        LimitCommand::Show { tag } => print_limit(ctx, &ctx.client.get_limit(&tag).await?)?,
        LimitCommand::Delete { tag } => {
            ctx.client.delete_limit(&tag).await?;
            if ctx.json {
                crate::output::json(&serde_json::json!({"tag": tag, "deleted": true}))?;
            } else {
                out!("deleted the limit of {tag}")?;
            }
        }
        LimitCommand::Reset { tag } => {
            let l = ctx.client.reset_limit(&tag).await?;
            if ctx.json {
                crate::output::json(&l)?;
            } else {
                out!("released every slot of {tag}")?;
                print_limit(ctx, &l)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_limit(ctx: &Ctx, l: &LimitInfo) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(l);
    }
    let now = crate::output::now_ms();
    out!("tag:      {}", l.limit.tag)?;
    out!("slots:    {}{}", l.limit.slots, if l.limit.slots == 0 { " (paused)" } else { "" })?;
    out!("running:  {}", l.running)?;
    out!("waiting:  {}", l.waiting)?;
    out!("updated:  {} by {}", crate::output::when(l.limit.updated_at, now), l.limit.updated_by)?;
    if let Some(at) = l.limit.reset_at {
        out!("reset:    {}", crate::output::when(at, now))?;
    }
    for h in l.holders.iter().flatten() {
        out!(
            "holder:   {} attempt {} of {} on {} since {}",
            h.invocation,
            h.attempt,
            h.function,
            h.worker,
            crate::output::age(h.started_at, now)
        )?;
    }
    for id in l.waiters.iter().flatten() {
        out!("waiter:   {id}")?;
    }
    Ok(())
}
