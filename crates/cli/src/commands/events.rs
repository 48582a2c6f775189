//! `stratus event publish | events | trigger`: the event stream and the
//! triggers that react to it (see docs/events.md).

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
    /// Action: invoke this function with the event (or its object, with --input object).
    #[arg(long, group = "action")]
    invoke: Option<String>,
    /// With --invoke on object events: `object` runs the function on the object's bytes [default: event].
    #[arg(long, requires = "invoke")]
    input: Option<String>,
    /// With --invoke on object events: store the output at BUCKET/PREFIX + the object's key.
    #[arg(long, requires = "invoke")]
    output: Option<String>,
    /// Action: publish an event of this type.
    #[arg(long, group = "action")]
    emit: Option<String>,
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
            let action = match (&a.invoke, &a.emit) {
                (Some(f), None) => {
                    let mut v = json!({"kind": "invoke", "function": f});
                    if let Some(i) = &a.input {
                        v["input"] = i.clone().into();
                    }
                    if let Some(o) = &a.output {
                        v["output"] = o.clone().into();
                    }
                    v
                }
                (None, Some(t)) => json!({"kind": "emit", "type": t}),
                _ => return Err(crate::errors::invalid("give one action: --invoke FUNCTION or --emit TYPE")),
            };
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
