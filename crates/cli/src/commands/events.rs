//! `stratus event publish | events | trigger | schedule`: the event
//! stream, the triggers that react to it and the schedules that fire on
//! the clock (see docs/events.md).

use super::Ctx;
use crate::output::out;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum EventCommand {
    /// Publish one event (answered once it is stored).
    Publish(PublishArgs),
}

#[derive(Args)]
pub struct PublishArgs {
    /// The event's type, e.g. com.example.photo.uploaded.
    #[arg(long = "type")]
    ty: String,
    /// Its source, e.g. /cameras/front.
    #[arg(long)]
    source: String,
    /// Its id, unique within the source: publishing the same id again is accepted and ignored [default: a new one].
    #[arg(long)]
    id: Option<String>,
    /// What it is about, e.g. uploads/photo.png.
    #[arg(long)]
    subject: Option<String>,
    /// Its data: JSON, or @FILE for a file's JSON.
    #[arg(long)]
    data: Option<String>,
}

#[derive(Args)]
pub struct EventsArgs {
    /// Only events of this type.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Only events whose subject starts with this.
    #[arg(long)]
    subject_prefix: Option<String>,
    /// Only events numbered after this (the `seq` of one printed before).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many (without --follow), 1 to 1000.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Keep printing events as they are stored, until interrupted.
    #[arg(long)]
    follow: bool,
}

#[derive(Subcommand)]
pub enum TriggerCommand {
    /// Create a trigger: on events of a type (and filters), when a condition holds, run an action.
    Create(Box<CreateArgs>),
    /// List the project's triggers.
    List,
    /// Show a trigger, its contexts and its latest firings.
    Show {
        /// The trigger's name.
        name: String,
    },
    /// Delete a trigger.
    Delete {
        /// The trigger's name.
        name: String,
    },
    /// Enable a trigger.
    Enable {
        /// The trigger's name.
        name: String,
    },
    /// Disable a trigger: events meanwhile do not fire it.
    Disable {
        /// The trigger's name.
        name: String,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    /// 1-63 characters of a-z, 0-9 and '-'.
    name: String,
    /// The event type it reacts to, e.g. stratus.object.created.
    #[arg(long)]
    on: String,
    /// Only events from this source.
    #[arg(long)]
    source: Option<String>,
    /// Only events whose subject starts with this (for object events: BUCKET/PREFIX).
    #[arg(long)]
    subject_prefix: Option<String>,
    /// Only events whose subject ends with this.
    #[arg(long)]
    subject_suffix: Option<String>,
    /// A CloudEvents subscription filter as JSON, e.g. '{"exact": {"data.size": "10"}}'.
    #[arg(long)]
    filter: Option<String>,
    /// always, join:N (once N distinct events arrived) or threshold:N/WINDOW (e.g. threshold:10/1m).
    #[arg(long, default_value = "always")]
    condition: String,
    /// Keep one condition context per value of this attribute (e.g. subject, data.batch).
    #[arg(long)]
    group_by: Option<String>,
    /// Disarm after firing once.
    #[arg(long)]
    transient: bool,
    #[command(flatten)]
    action: ActionArgs,
}

#[derive(Args)]
pub struct ActionArgs {
    /// Action: invoke this function with the event (or its object, with --input object).
    #[arg(long, group = "action")]
    invoke: Option<String>,
    /// With --invoke on object events: `object` runs the function on the object's bytes [default: event].
    #[arg(long, requires = "invoke")]
    input: Option<String>,
    /// With --invoke on object events: store the output at BUCKET/PREFIX + the object's key.
    #[arg(long, requires = "invoke")]
    output: Option<String>,
    /// Action: run a map job of this function over a JSON array in the event's data.
    #[arg(long = "map", group = "action")]
    map: Option<String>,
    /// With --map: where the array is, data (the default) or data.PATH.
    #[arg(long, requires = "map")]
    items: Option<String>,
    /// Action: publish an event of this type.
    #[arg(long, group = "action")]
    emit: Option<String>,
}

impl ActionArgs {
    fn json(&self) -> anyhow::Result<Value> {
        if let Some(f) = &self.map {
            let mut v = json!({"kind": "map", "function": f});
            if let Some(i) = &self.items {
                v["items"] = i.clone().into();
            }
            return Ok(v);
        }
        match (&self.invoke, &self.emit) {
            (Some(f), None) => {
                let mut v = json!({"kind": "invoke", "function": f});
                if let Some(i) = &self.input {
                    v["input"] = i.clone().into();
                }
                if let Some(o) = &self.output {
                    v["output"] = o.clone().into();
                }
                Ok(v)
            }
            (None, Some(t)) => Ok(json!({"kind": "emit", "type": t})),
            _ => Err(crate::errors::invalid("give one action: --invoke FUNCTION, --map FUNCTION or --emit TYPE")),
        }
    }
}

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: a cron expression or an interval, and an action.
    Create(Box<ScheduleArgs>),
    /// List the project's schedules.
    List,
    /// Show a schedule: its next time, its last run, its latest firings.
    Show {
        /// The schedule's name.
        name: String,
    },
    /// Pause a schedule (no fires, and none counted as missed, until it resumes).
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a schedule from its next time after now.
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Delete a schedule.
    Delete {
        /// The schedule's name.
        name: String,
    },
    /// Fire a schedule's times between two times now (times fired before are not again).
    Backfill {
        /// The schedule's name.
        name: String,
        /// From this time (RFC 3339, e.g. 2026-12-01T00:00:00Z).
        #[arg(long)]
        from: String,
        /// To this time, included.
        #[arg(long)]
        to: String,
    },
}

#[derive(Args)]
pub struct ScheduleArgs {
    /// 1-63 characters of a-z, 0-9 and '-'.
    name: String,
    /// A cron expression: "MIN HOUR DAY MONTH WEEKDAY" (e.g. "*/15 9-17 * * MON-FRI"), or @hourly, @daily, ...
    #[arg(long, group = "timing")]
    cron: Option<String>,
    /// The cron expression's time zone (IANA, e.g. Europe/Berlin) [default: UTC].
    #[arg(long, requires = "cron")]
    tz: Option<String>,
    /// Fire every this long (e.g. 30s, 5m), from now.
    #[arg(long, group = "timing", value_parser = crate::parse::duration_ms)]
    every: Option<u64>,
    /// While the last run still goes: skip, buffer_one or allow_all [default: skip].
    #[arg(long)]
    overlap: Option<String>,
    /// Times missed by less than this (the server was down) still fire [default: 60s].
    #[arg(long, value_parser = crate::parse::duration_ms)]
    catchup: Option<u64>,
    #[command(flatten)]
    action: ActionArgs,
}

fn data_arg(data: &str) -> anyhow::Result<Value> {
    let text = match data.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| crate::errors::invalid(format!("--data: cannot read '{path}': {e}")))?,
        None => data.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| crate::errors::invalid(format!("--data is not JSON: {e}")))
}

pub async fn event(ctx: &Ctx, c: EventCommand) -> anyhow::Result<ExitCode> {
    let EventCommand::Publish(a) = c;
    let mut e = json!({"specversion": "1.0", "type": a.ty, "source": a.source});
    if let Some(id) = a.id {
        e["id"] = id.into();
    }
    if let Some(s) = a.subject {
        e["subject"] = s.into();
    }
    if let Some(d) = a.data {
        e["data"] = data_arg(&d)?;
        e["datacontenttype"] = "application/json".into();
    }
    let r = ctx.client.publish_events(&e).await?;
    if ctx.json {
        crate::output::json(&r)?;
    } else if r["duplicates"].as_u64().unwrap_or(0) > 0 {
        out!("already stored (same source and id): ignored")?;
    } else {
        out!("published")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(ctx: &Ctx, e: &Value) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(e);
    }
    let time = e["time"].as_str().unwrap_or("");
    let subject = e["subject"].as_str().unwrap_or("-");
    let data = match (&e["data"], &e["data_base64"]) {
        (Value::Null, Value::Null) => String::new(),
        (Value::Null, b) => format!("({} base64 chars)", b.as_str().map_or(0, str::len)),
        (d, _) => d.to_string().chars().take(120).collect(),
    };
    out!(
        "{:>6}  {time}  {}  {}  {subject}  {data}",
        e["seq"].as_u64().unwrap_or(0),
        e["type"].as_str().unwrap_or(""),
        e["source"].as_str().unwrap_or("")
    )?;
    Ok(())
}

pub async fn events(ctx: &Ctx, a: EventsArgs) -> anyhow::Result<ExitCode> {
    let (ty, prefix) = (a.ty.as_deref(), a.subject_prefix.as_deref());
    if !a.follow {
        let page = ctx.client.events(a.after, a.limit, ty, prefix).await?;
        for e in page["events"].as_array().into_iter().flatten() {
            print_event(ctx, e)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    use futures::StreamExt;
    let res = ctx.client.follow_events(a.after, ty, prefix).await?;
    let mut stream = res.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let e: Value = serde_json::from_slice(&line)?;
            print_event(ctx, &e)?;
            std::io::Write::flush(&mut std::io::stdout())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_trigger(ctx: &Ctx, t: &Value) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(t);
    }
    let action = &t["action"];
    let what = match action["kind"].as_str() {
        Some("invoke") => format!("invoke {}", action["function"].as_str().unwrap_or("")),
        Some("emit") => format!("emit {}", action["type"].as_str().unwrap_or("")),
        Some("map") => format!("map {}", action["function"].as_str().unwrap_or("")),
        _ => action.to_string(),
    };
    out!(
        "{}  on {}  {}  {}{}",
        t["name"].as_str().unwrap_or(""),
        t["on"].as_str().unwrap_or(""),
        t["condition"].as_str().unwrap_or("always"),
        what,
        if t["enabled"].as_bool() == Some(false) { "  (disabled)" } else { "" }
    )?;
    Ok(())
}

pub async fn trigger(ctx: &Ctx, c: TriggerCommand) -> anyhow::Result<ExitCode> {
    match c {
        TriggerCommand::Create(a) => {
            let action = a.action.json()?;
            let mut t = json!({"name": a.name, "on": a.on, "condition": a.condition, "action": action,
                               "transient": a.transient});
            for (k, v) in [
                ("source", &a.source),
                ("subject_prefix", &a.subject_prefix),
                ("subject_suffix", &a.subject_suffix),
                ("group_by", &a.group_by),
            ] {
                if let Some(v) = v {
                    t[k] = v.clone().into();
                }
            }
            if let Some(f) = &a.filter {
                t["filter"] = serde_json::from_str::<Value>(f)
                    .map_err(|e| crate::errors::invalid(format!("--filter is not JSON: {e}")))?;
            }
            let created = ctx.client.create_trigger(&t).await?;
            print_trigger(ctx, &created)?;
        }
        TriggerCommand::List => {
            for t in ctx.client.list_triggers().await? {
                print_trigger(ctx, &t)?;
            }
        }
        TriggerCommand::Show { name } => {
            let t = ctx.client.get_trigger(&name).await?;
            if ctx.json {
                crate::output::json(&t)?;
            } else {
                print_trigger(ctx, &t)?;
                for c in t["contexts"].as_array().into_iter().flatten() {
                    out!("  context {:?}: {}", c["group"].as_str().unwrap_or(""), c["context"])?;
                }
                for f in t["firings"].as_array().into_iter().flatten() {
                    let started = f["invocation"].as_str().map(|i| format!("  invocation {i}")).unwrap_or_default();
                    out!("  fired on event {}{started}", f["seq"])?;
                }
            }
        }
        TriggerCommand::Delete { name } => {
            ctx.client.delete_trigger(&name).await?;
            if ctx.json {
                crate::output::json(&json!({"deleted": name}))?;
            } else {
                out!("deleted trigger '{name}'")?;
            }
        }
        TriggerCommand::Enable { name } => print_trigger(ctx, &ctx.client.enable_trigger(&name, true).await?)?,
        TriggerCommand::Disable { name } => print_trigger(ctx, &ctx.client.enable_trigger(&name, false).await?)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn print_schedule(ctx: &Ctx, v: &Value) -> anyhow::Result<()> {
    if ctx.json {
        return crate::output::json(v);
    }
    let timing = &v["timing"];
    let when = match timing["kind"].as_str() {
        Some("cron") => {
            format!("cron {:?} in {}", timing["expr"].as_str().unwrap_or(""), timing["tz"].as_str().unwrap_or("UTC"))
        }
        _ => format!("every {}", crate::output::duration(timing["every_ms"].as_i64().unwrap_or(0))),
    };
    let action = &v["action"];
    let what = match action["kind"].as_str() {
        Some("invoke") => format!("invoke {}", action["function"].as_str().unwrap_or("")),
        _ => format!("emit {}", action["type"].as_str().unwrap_or("")),
    };
    let state = match (v["paused"].as_bool(), v["next"].as_str()) {
        (Some(true), _) => "paused".to_string(),
        (_, Some(next)) => format!("next {next}"),
        _ => "no more times".to_string(),
    };
    out!("{}  {when}  {what}  {state}", v["name"].as_str().unwrap_or(""))?;
    Ok(())
}

pub async fn schedule(ctx: &Ctx, c: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match c {
        ScheduleCommand::Create(a) => {
            let timing = match (&a.cron, a.every) {
                (Some(expr), None) => json!({"kind": "cron", "expr": expr, "tz": a.tz.as_deref().unwrap_or("UTC")}),
                (None, Some(ms)) => json!({"kind": "every", "every_ms": ms}),
                _ => return Err(crate::errors::invalid("give one timing: --cron EXPR or --every DURATION")),
            };
            let mut v = json!({"name": a.name, "timing": timing, "action": a.action.json()?});
            if let Some(o) = &a.overlap {
                v["overlap"] = o.clone().into();
            }
            if let Some(c) = a.catchup {
                v["catchup_ms"] = c.into();
            }
            print_schedule(ctx, &ctx.client.create_schedule(&v).await?)?;
        }
        ScheduleCommand::List => {
            for v in ctx.client.list_schedules().await? {
                print_schedule(ctx, &v)?;
            }
        }
        ScheduleCommand::Show { name } => {
            let v = ctx.client.get_schedule(&name).await?;
            print_schedule(ctx, &v)?;
            if !ctx.json {
                if let Some(last) = v["last_invocation"].as_str() {
                    out!("  last run: invocation {last}")?;
                }
                for f in v["firings"].as_array().into_iter().flatten() {
                    let started = f["invocation"].as_str().map(|i| format!("  invocation {i}")).unwrap_or_default();
                    out!("  fired on event {}{started}", f["seq"])?;
                }
            }
        }
        ScheduleCommand::Pause { name } => print_schedule(ctx, &ctx.client.pause_schedule(&name, true).await?)?,
        ScheduleCommand::Resume { name } => print_schedule(ctx, &ctx.client.pause_schedule(&name, false).await?)?,
        ScheduleCommand::Delete { name } => {
            ctx.client.delete_schedule(&name).await?;
            if ctx.json {
                crate::output::json(&json!({"deleted": name}))?;
            } else {
                out!("deleted schedule '{name}'")?;
            }
        }
        ScheduleCommand::Backfill { name, from, to } => {
            let r = ctx.client.backfill_schedule(&name, &from, &to).await?;
            if ctx.json {
                crate::output::json(&r)?;
            } else {
                out!("fired {} times of '{name}' between {from} and {to}", r["fired"])?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
