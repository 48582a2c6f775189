//! `stratus apply -f project.yaml` and `stratus export`: a project as a
//! file — its functions, variables, secret references, concurrency limits,
//! triggers and schedules — made true in one command, idempotently.
//!
//! `apply` reads the file and the project, prints the plan (what it
//! creates, changes, replaces, leaves and, with `--prune`, deletes), and
//! then carries it out in that order. Everything is checked before the
//! first change: a bad file, a missing path or an unset secret source
//! changes nothing. `export` writes the project in the same form, so that
//! `export` then `apply` changes nothing.

use super::Ctx;
use crate::output::out;
use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use stratus_core::api::{DeployRequest, FunctionInfo};
use stratus_core::{Limits, Runtime};

#[derive(Args)]
pub struct ApplyArgs {
    /// The project file (YAML; `stratus export` writes one).
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete what the file does not name: functions, variables,
    /// secrets, limits, triggers and schedules.
    #[arg(long)]
    prune: bool,
    /// Set every secret from its source, not only those the project lacks
    /// (a secret's value cannot be compared, so by default one that exists
    /// is left as it is).
    #[arg(long)]
    set_secrets: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Where to write it [default: stdout].
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
}

/// The file: every part optional, names unique (they are keys).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectFile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    functions: BTreeMap<String, FunctionEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    variables: BTreeMap<String, VariableEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<String, SecretSource>,
    /// Concurrency limits: slots per tag.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    limits: BTreeMap<String, u32>,
    /// A trigger's body as `POST /v1/triggers` takes it, without its name,
    /// and `enabled` (default true).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    triggers: BTreeMap<String, Value>,
    /// A schedule's body as `POST /v1/schedules` takes it, without its
    /// name, and `paused` (default false).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    schedules: BTreeMap<String, Value>,
}

/// A function: its deploy request, with its code either at `path` (a
/// `.wasm` file, or a directory for a process function), relative to the
/// file, or already uploaded (`artifact`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    runtime: Runtime,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    artifact: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_procs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpus: Option<f64>,
    #[serde(default)]
    retries: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    network: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    vars: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<stratus_core::settings::SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    /// The project's Python environment it runs with (a bundle's own
    /// requirements.txt is used without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pyenv: Option<String>,
    /// Or the packages it installs itself, as a requirements file's text
    /// (what export writes of a bundle's requirements.txt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requirements: Option<String>,
}

/// A variable: text, or `{value, json}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum VariableEntry {
    Text(String),
    Full {
        value: String,
        #[serde(default)]
        json: bool,
    },
}

impl VariableEntry {
    fn parts(&self) -> (&str, bool) {
        match self {
            VariableEntry::Text(v) => (v, false),
            VariableEntry::Full { value, json } => (value, *json),
        }
    }
}

/// Where a secret's value comes from, one of the two: never the file
/// itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Create,
    Update,
    Replace,
    Unchanged,
    Delete,
}

/// One line of the plan.
#[derive(Debug, Serialize)]
struct Step {
    kind: &'static str,
    name: String,
    change: Change,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
}

/// What carrying a step out needs beyond its line (the step says what
/// kind of thing it is done to).
enum Action {
    Deploy(Box<DeployRequest>, Option<Vec<u8>>),
    SetVariable(String, bool),
    SetSecret(String),
    SetLimit(u32),
    /// A trigger or schedule made from this body (the one of that name
    /// deleted first), then its flag set when it is not the default.
    Make(Value, bool),
    /// A trigger enabled or not; a schedule paused or not.
    SetFlag(bool),
    Delete,
    None,
}

/// Triggers and schedules, planned the same way.
struct Reactive {
    kind: &'static str,
    /// The flag beside the definition (`enabled`, `paused`), and its default.
    flag: &'static str,
    default: bool,
    /// The definition as the server reads it, defaults filled in.
    spec: fn(&Value) -> anyhow::Result<Value>,
    /// One as the API lists it, as the body that makes it (with its flag).
    body: fn(&Value) -> Value,
}

const TRIGGERS: Reactive =
    Reactive { kind: "trigger", flag: "enabled", default: true, spec: trigger_spec, body: trigger_body };
const SCHEDULES: Reactive =
    Reactive { kind: "schedule", flag: "paused", default: false, spec: schedule_spec, body: schedule_body };

impl Reactive {
    fn plan(&self, current: &[Value], wanted: &BTreeMap<String, Value>) -> anyhow::Result<Vec<(Step, Action)>> {
        let mut out = Vec::new();
        for (name, body) in wanted {
            let what = || format!("{} {name}", self.kind);
            let (desired, flag) = split_flag(body, self.flag, self.default).with_context(what)?;
            let spec = (self.spec)(&desired).with_context(what)?;
            let (change, action) = match current.iter().find(|t| t["name"] == name.as_str()) {
                None => (Change::Create, Action::Make(named(&desired, name), flag)),
                Some(t) => {
                    let (now, was) = split_flag(&(self.body)(t), self.flag, self.default)?;
                    match ((self.spec)(&now)? == spec, was == flag) {
                        (true, true) => (Change::Unchanged, Action::None),
                        (true, false) => (Change::Update, Action::SetFlag(flag)),
                        (false, _) => (Change::Replace, Action::Make(named(&desired, name), flag)),
                    }
                }
            };
            out.push((step(self.kind, name, change, ""), action));
        }
        Ok(out)
    }
}

fn trigger_body(t: &Value) -> Value {
    strip(t, &["name", "created_at"])
}

pub async fn apply(ctx: &Ctx, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let file: ProjectFile = serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let base = a.file.parent().map(Path::to_path_buf).unwrap_or_default();
    let plan = plan(ctx, &file, &base, a.prune, a.set_secrets).await?;
    for (step, _) in &plan {
        if ctx.json {
            crate::output::json(step)?;
        } else {
            let sign = match step.change {
                Change::Create => '+',
                Change::Update => '~',
                Change::Replace => '!',
                Change::Unchanged => '=',
                Change::Delete => '-',
            };
            let detail = if step.detail.is_empty() { String::new() } else { format!(" ({})", step.detail) };
            out!("{sign} {} {}{detail}", step.kind, step.name)?;
        }
    }
    if a.dry_run {
        return Ok(ExitCode::SUCCESS);
    }
    for (step, action) in plan {
        carry_out(ctx, step.kind, &step.name, action).await.with_context(|| format!("{} {}", step.kind, step.name))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn step(kind: &'static str, name: &str, change: Change, detail: impl Into<String>) -> Step {
    Step { kind, name: name.to_string(), change, detail: detail.into() }
}

/// The plan, in the order it is carried out: functions before the
/// triggers and schedules that invoke them, settings before the functions
/// that read them; deletions last.
async fn plan(
    ctx: &Ctx,
    file: &ProjectFile,
    base: &Path,
    prune: bool,
    set_secrets: bool,
) -> anyhow::Result<Vec<(Step, Action)>> {
    let c = &ctx.client;
    let mut plan = Vec::new();
    let mut deletions = Vec::new();

    let vars = c.list_variables().await?;
    for (name, entry) in &file.variables {
        let (value, json) = entry.parts();
        let change = match vars.iter().find(|v| &v.name == name) {
            None => Change::Create,
            Some(v) if v.value == value && v.json == json => Change::Unchanged,
            Some(_) => Change::Update,
        };
        let action = if change == Change::Unchanged { Action::None } else { Action::SetVariable(value.into(), json) };
        plan.push((step("variable", name, change, ""), action));
    }
    for v in vars.iter().filter(|v| prune && !file.variables.contains_key(&v.name)) {
        deletions.push((step("variable", &v.name, Change::Delete, ""), Action::Delete));
    }

    let secrets = c.list_secrets().await?;
    for (name, source) in &file.secrets {
        let exists = secrets.iter().any(|s| &s.name == name);
        if exists && !set_secrets {
            let why = "present; its value is not compared (--set-secrets sets it)";
            plan.push((step("secret", name, Change::Unchanged, why), Action::None));
            continue;
        }
        let value = match (&source.from_file, &source.from_env) {
            (Some(p), None) => {
                let path = base.join(p);
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("secret {name}: {}", path.display()))?;
                text.strip_suffix('\n').map(str::to_string).unwrap_or(text)
            }
            (None, Some(var)) => std::env::var(var)
                .map_err(|_| anyhow::anyhow!("secret {name}: environment variable {var} is not set"))?,
            _ => bail!("secret {name}: give one of from_file and from_env"),
        };
        let change = if exists { Change::Update } else { Change::Create };
        plan.push((step("secret", name, change, ""), Action::SetSecret(value)));
    }
    for s in secrets.iter().filter(|s| prune && !file.secrets.contains_key(&s.name)) {
        deletions.push((step("secret", &s.name, Change::Delete, ""), Action::Delete));
    }

    let limits = c.list_limits().await?;
    for (tag, &slots) in &file.limits {
        stratus_core::validate_tag(tag)?;
        let (change, detail) = match limits.iter().find(|l| &l.limit.tag == tag) {
            None => (Change::Create, format!("{slots} slots")),
            Some(l) if l.limit.slots == slots => (Change::Unchanged, String::new()),
            Some(l) => (Change::Update, format!("{} -> {slots} slots", l.limit.slots)),
        };
        let action = if change == Change::Unchanged { Action::None } else { Action::SetLimit(slots) };
        plan.push((step("limit", tag, change, detail), action));
    }
    for l in limits.iter().filter(|l| prune && !file.limits.contains_key(&l.limit.tag)) {
        deletions.push((step("limit", &l.limit.tag, Change::Delete, ""), Action::Delete));
    }

    let functions = c.list_functions().await?;
    for (name, entry) in &file.functions {
        stratus_core::validate_name("function name", name)?;
        let (req, bytes) = deploy_request(entry, base).with_context(|| format!("function {name}"))?;
        let (change, detail) = match functions.iter().find(|f| &f.name == name) {
            None => (Change::Create, String::new()),
            Some(f) => match differences(f, &req) {
                d if d.is_empty() => (Change::Unchanged, format!("version {}", f.version)),
                d => (Change::Update, d.join(", ")),
            },
        };
        let action = if change == Change::Unchanged { Action::None } else { Action::Deploy(Box::new(req), bytes) };
        plan.push((step("function", name, change, detail), action));
    }
    for f in functions.iter().filter(|f| prune && !file.functions.contains_key(&f.name)) {
        deletions.push((step("function", &f.name, Change::Delete, ""), Action::Delete));
    }

    for r in [&TRIGGERS, &SCHEDULES] {
        let (current, wanted) = match r.kind {
            "trigger" => (c.list_triggers().await?, &file.triggers),
            _ => (c.list_schedules().await?, &file.schedules),
        };
        plan.extend(r.plan(&current, wanted)?);
        for t in &current {
            let name = t["name"].as_str().unwrap_or_default();
            if prune && !wanted.contains_key(name) {
                deletions.push((step(r.kind, name, Change::Delete, ""), Action::Delete));
            }
        }
    }

    // Triggers and schedules go before the functions they invoke.
    deletions.sort_by_key(|(s, _)| match s.kind {
        "trigger" | "schedule" => 0,
        "function" => 1,
        _ => 2,
    });
    plan.extend(deletions);
    Ok(plan)
}

/// The deploy request of an entry, and the code to upload when it has a
/// path (its digest is the request's artifact).
fn deploy_request(e: &FunctionEntry, base: &Path) -> anyhow::Result<(DeployRequest, Option<Vec<u8>>)> {
    let (artifact, bytes) = match (&e.path, e.artifact.is_empty()) {
        (Some(p), _) => {
            let path = base.join(p);
            let bytes = match &e.runtime {
                Runtime::Wasm => std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
                Runtime::Process { .. } => stratus_runtime::bundle::pack_dir(&path)
                    .with_context(|| format!("cannot bundle {}", path.display()))?,
            };
            (stratus_runtime::bundle::digest(&bytes), Some(bytes))
        }
        (None, false) => (e.artifact.clone(), None),
        (None, true) => bail!("give its code: path (a .wasm file or a directory) or artifact (a sha256)"),
    };
    let requirements = match (&e.path, &e.runtime, &e.pyenv, &e.requirements) {
        (_, _, _, Some(text)) => Some(text.clone()),
        (Some(p), Runtime::Process { .. }, None, None) => super::functions::bundle_requirements(&base.join(p))?,
        _ => None,
    };
    let req = DeployRequest {
        runtime: e.runtime.clone(),
        artifact,
        env: e.env.clone(),
        timeout_ms: e.timeout_ms,
        memory_mb: e.memory_mb,
        max_procs: e.max_procs,
        cpus: e.cpus,
        retries: e.retries,
        network: e.network,
        vars: e.vars.clone(),
        secrets: e.secrets.clone(),
        tags: e.tags.clone(),
        pyenv: e.pyenv.clone(),
        requirements,
        python: None,
    };
    Ok((req, bytes))
}

/// What a deploy of `req` would change of `f`; nothing when it would make
/// the same function again.
fn differences(f: &FunctionInfo, req: &DeployRequest) -> Vec<&'static str> {
    let d = Limits::default();
    let mut out = Vec::new();
    let checks = [
        ("runtime", f.runtime == req.runtime),
        ("code", f.artifact == req.artifact),
        ("env", f.env == req.env),
        ("timeout", f.timeout_ms == req.timeout_ms.unwrap_or(d.timeout_ms)),
        ("memory", f.memory_mb == req.memory_mb.unwrap_or(d.memory_mb)),
        ("max_procs", f.max_procs.unwrap_or(d.max_procs) == req.max_procs.unwrap_or(d.max_procs)),
        ("cpus", f.cpus == req.cpus),
        ("retries", f.retries == req.retries),
        ("network", f.network == req.network),
        ("vars", f.vars == req.vars),
        ("secrets", f.secrets == req.secrets),
        ("tags", f.tags == req.tags),
        ("pyenv", same_pyenv(f.pyenv.as_ref(), req)),
    ];
    for (what, same) in checks {
        if !same {
            out.push(what);
        }
    }
    out
}

/// Whether a function runs with the environment a deploy of `req` names:
/// the same project environment (by name), or the same requirements.
fn same_pyenv(f: Option<&stratus_core::pyenv::PyEnvSpec>, req: &DeployRequest) -> bool {
    match (f, &req.pyenv, &req.requirements) {
        (None, None, None) => true,
        (Some(p), Some(name), None) => p.name.as_ref() == Some(name),
        (Some(p), None, Some(text)) => p.name.is_none() && &p.requirements == text,
        _ => false,
    }
}

/// `body` without the flag `key`, and the flag (`default` when absent).
fn split_flag(body: &Value, key: &str, default: bool) -> anyhow::Result<(Value, bool)> {
    let Value::Object(map) = body else { bail!("expected a mapping of its fields") };
    let mut map = map.clone();
    let flag = match map.remove(key) {
        None => default,
        Some(Value::Bool(b)) => b,
        Some(other) => bail!("{key}: expected true or false, not {other}"),
    };
    Ok((Value::Object(map), flag))
}

fn strip(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

fn named(body: &Value, name: &str) -> Value {
    let mut v = body.clone();
    v["name"] = name.into();
    v
}

/// A schedule as `GET /v1/schedules` shows it, as the body that makes it.
fn schedule_body(s: &Value) -> Value {
    let mut body = serde_json::Map::new();
    for k in ["timing", "overlap", "catchup_ms", "action", "paused"] {
        if let Some(v) = s.get(k) {
            body.insert(k.into(), v.clone());
        }
    }
    Value::Object(body)
}

/// A trigger's body as the server reads it, defaults filled in: two
/// bodies that make the same trigger give the same value.
fn trigger_spec(body: &Value) -> anyhow::Result<Value> {
    let mut body = body.clone();
    if let Some(Value::String(c)) = body.get("condition") {
        let c: stratus_core::events::Condition = c.parse()?;
        body["condition"] = serde_json::to_value(c)?;
    }
    let spec: stratus_core::events::TriggerSpec = serde_json::from_value(body)?;
    spec.validate()?;
    Ok(serde_json::to_value(spec)?)
}

/// A schedule's body as the server reads it, defaults filled in.
fn schedule_spec(body: &Value) -> anyhow::Result<Value> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        timing: stratus_core::schedule::Timing,
        #[serde(default)]
        overlap: Option<String>,
        #[serde(default)]
        catchup_ms: Option<u64>,
        action: stratus_core::events::Action,
    }
    let b: Body = serde_json::from_value(body.clone())?;
    let overlap: stratus_core::schedule::Overlap = match &b.overlap {
        Some(o) => o.parse()?,
        None => Default::default(),
    };
    let catchup = b.catchup_ms.unwrap_or(stratus_core::schedule::DEFAULT_CATCHUP_MS);
    Ok(serde_json::json!({"timing": b.timing, "overlap": overlap, "catchup_ms": catchup, "action": b.action}))
}

async fn carry_out(ctx: &Ctx, kind: &str, name: &str, action: Action) -> anyhow::Result<()> {
    let c = &ctx.client;
    match (kind, action) {
        (_, Action::None) => {}
        (_, Action::Deploy(req, bytes)) => {
            if let Some(bytes) = bytes {
                c.upload_artifact(bytes).await?;
            }
            c.deploy(name, &req).await?;
        }
        (_, Action::SetVariable(value, json)) => {
            c.set_variable(name, &stratus_client::VariableRequest { value, json }).await?;
        }
        (_, Action::SetSecret(value)) => {
            c.set_secret(name, value).await?;
        }
        (_, Action::SetLimit(slots)) => {
            c.set_limit(name, slots).await?;
        }
        ("trigger", Action::Make(body, enabled)) => {
            if c.get_trigger(name).await.is_ok() {
                c.delete_trigger(name).await?;
            }
            c.create_trigger(&body).await?;
            if !enabled {
                c.enable_trigger(name, false).await?;
            }
        }
        (_, Action::Make(body, paused)) => {
            if c.get_schedule(name).await.is_ok() {
                c.delete_schedule(name).await?;
            }
            c.create_schedule(&body).await?;
            if paused {
                c.pause_schedule(name, true).await?;
            }
        }
        ("trigger", Action::SetFlag(on)) => {
            c.enable_trigger(name, on).await?;
        }
        (_, Action::SetFlag(paused)) => {
            c.pause_schedule(name, paused).await?;
        }
        ("function", Action::Delete) => c.delete_function(name).await?,
        ("variable", Action::Delete) => c.delete_variable(name).await?,
        ("secret", Action::Delete) => c.delete_secret(name).await?,
        ("limit", Action::Delete) => c.delete_limit(name).await?,
        ("trigger", Action::Delete) => c.delete_trigger(name).await?,
        (_, Action::Delete) => c.delete_schedule(name).await?,
    }
    Ok(())
}

pub async fn export(ctx: &Ctx, a: ExportArgs) -> anyhow::Result<ExitCode> {
    let c = &ctx.client;
    let mut file = ProjectFile::default();
    for f in c.list_functions().await? {
        let entry = FunctionEntry {
            path: None,
            runtime: f.runtime.clone(),
            artifact: f.artifact.clone(),
            env: f.env.clone(),
            timeout_ms: Some(f.timeout_ms),
            memory_mb: Some(f.memory_mb),
            max_procs: f.max_procs,
            cpus: f.cpus,
            retries: f.retries,
            network: f.network,
            vars: f.vars.clone(),
            secrets: f.secrets.clone(),
            tags: f.tags.clone(),
            pyenv: f.pyenv.as_ref().and_then(|p| p.name.clone()),
            requirements: f.pyenv.as_ref().filter(|p| p.name.is_none()).map(|p| p.requirements.clone()),
        };
        file.functions.insert(f.name.clone(), entry);
    }
    for l in c.list_limits().await? {
        file.limits.insert(l.limit.tag, l.limit.slots);
    }
    for v in c.list_variables().await? {
        let entry =
            if v.json { VariableEntry::Full { value: v.value, json: true } } else { VariableEntry::Text(v.value) };
        file.variables.insert(v.name, entry);
    }
    for s in c.list_secrets().await? {
        // The value is never shown: the file names an environment variable
        // to take it from.
        let env = s.name.to_ascii_uppercase().replace('-', "_");
        file.secrets.insert(s.name, SecretSource { from_env: Some(env), ..Default::default() });
    }
    for t in c.list_triggers().await? {
        let name = t["name"].as_str().unwrap_or_default().to_string();
        let body = drop_nothing(&strip(&t, &["name", "created_at"]));
        file.triggers.insert(name, body);
    }
    for s in c.list_schedules().await? {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        file.schedules.insert(name, drop_nothing(&schedule_body(&s)));
    }
    let text = serde_norway::to_string(&file)?;
    match a.output {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{}", text.trim_end())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `v` without the fields set to null, which the server shows for what is
/// not set.
fn drop_nothing(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), drop_nothing(v))).collect())
        }
        other => other.clone(),
    }
}
