//! Events, and the triggers that react to them.
//!
//! An [`Event`] is a CloudEvents 1.0 event of one project, unique by
//! `(project, source, id)`: a second event with the same key is accepted
//! and ignored. The store numbers events (`seq`) in the order their
//! commits are ordered, so a reader that follows the stream from a number
//! never skips one. Stratus itself emits the built-in events ([`builtin`])
//! in the commit of the change that causes them.
//!
//! A [`Trigger`] matches events by type, source, subject and a filter
//! (the CloudEvents Subscriptions API dialects), counts them against a
//! [`Condition`] in a context per group, and when the condition holds
//! runs its [`Action`]. What a batch of events does to the triggers is
//! decided here, purely ([`Triggers::apply`]); the server commits it, the
//! cursor that says how far it got, and the actions, in one transaction.

use crate::clock::{Millis, duration_ms, parse_rfc3339, rfc3339};
use crate::{Error, Id};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};

/// Past this causation depth an action is not run: a trigger whose action
/// causes the events it reacts to would otherwise run forever.
pub const MAX_DEPTH: u32 = 16;

/// Events are kept this long unless the project says otherwise.
pub const DEFAULT_RETENTION_MS: Millis = 7 * 86_400_000;

/// The largest `data` an event may carry.
pub const MAX_DATA: usize = 256 * 1024;

/// One event, stored or about to be.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Assigned by the store in commit order; 0 before.
    pub seq: u64,
    pub project: String,
    pub source: String,
    pub id: String,
    pub ty: String,
    pub subject: Option<String>,
    pub time: Millis,
    pub datacontenttype: Option<String>,
    pub data: Option<Vec<u8>>,
    /// How many trigger actions led to this event (0: none).
    pub depth: u32,
}

/// What the source of Stratus's own events starts with.
pub const BUILTIN_SOURCE: &str = "/stratus/";

/// Whether a content type is JSON (`application/json`, `…+json`).
fn is_json(ct: Option<&str>) -> bool {
    match ct {
        None => true,
        Some(ct) => {
            let base = ct.split(';').next().unwrap_or("").trim();
            base == "application/json" || base == "text/json" || base.ends_with("+json")
        }
    }
}

impl Event {
    /// The data as JSON, when it is JSON.
    pub fn data_json(&self) -> Option<Value> {
        let data = self.data.as_ref()?;
        if !is_json(self.datacontenttype.as_deref()) {
            return None;
        }
        serde_json::from_slice(data).ok()
    }

    /// The event in CloudEvents' structured JSON form, with the extension
    /// attributes `seq` (when stored) and `depth` (when not 0).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("specversion".into(), "1.0".into());
        m.insert("id".into(), self.id.clone().into());
        m.insert("source".into(), self.source.clone().into());
        m.insert("type".into(), self.ty.clone().into());
        if let Some(s) = &self.subject {
            m.insert("subject".into(), s.clone().into());
        }
        m.insert("time".into(), rfc3339(self.time).into());
        if let Some(ct) = &self.datacontenttype {
            m.insert("datacontenttype".into(), ct.clone().into());
        }
        if let Some(data) = &self.data {
            match self.data_json() {
                Some(v) => {
                    m.insert("data".into(), v);
                }
                None => {
                    use base64::Engine as _;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    m.insert("data_base64".into(), b64.into());
                }
            }
        }
        if self.seq > 0 {
            m.insert("seq".into(), self.seq.into());
        }
        if self.depth > 0 {
            m.insert("depth".into(), self.depth.into());
        }
        Value::Object(m)
    }

    /// An event from CloudEvents' structured JSON form, as a user publishes
    /// it to `project`; `time` defaults to `now`. Checks every attribute.
    pub fn from_json(project: &str, v: &Value, now: Millis) -> Result<Event, Error> {
        let Value::Object(m) = v else { return Err(Error::invalid("event", "an event is a JSON object")) };
        let text = |k: &str, required: bool| -> Result<Option<String>, Error> {
            match m.get(k) {
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(Error::invalid(k, format!("the event has no '{k}'"))),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid(k, format!("'{k}' must be a string"))),
            }
        };
        if let Some(v) = text("specversion", false)?
            && v != "1.0"
        {
            return Err(Error::invalid("specversion", format!("'{v}' is not supported: use 1.0")));
        }
        let time = match text("time", false)? {
            Some(t) => parse_rfc3339(&t).map_err(|e| Error::invalid("time", e))?,
            None => now,
        };
        let datacontenttype = text("datacontenttype", false)?;
        let data = match (m.get("data"), m.get("data_base64")) {
            (Some(_), Some(_)) => return Err(Error::invalid("data", "give 'data' or 'data_base64', not both")),
            (Some(Value::Null), None) | (None, None) => None,
            (Some(Value::String(s)), None) if !is_json(datacontenttype.as_deref()) => Some(s.as_bytes().to_vec()),
            (Some(v), None) => Some(serde_json::to_vec(v).expect("JSON serialises")),
            (None, Some(Value::String(b))) => {
                use base64::Engine as _;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .map_err(|e| Error::invalid("data_base64", format!("not base64: {e}")))?;
                Some(bytes)
            }
            (None, Some(_)) => return Err(Error::invalid("data_base64", "'data_base64' must be a string")),
        };
        let e = Event {
            seq: 0,
            project: project.into(),
            source: text("source", true)?.unwrap_or_default(),
            id: text("id", false)?.unwrap_or_else(|| crate::new_id().to_string()),
            ty: text("type", true)?.unwrap_or_default(),
            subject: text("subject", false)?,
            time,
            datacontenttype,
            data,
            depth: 0,
        };
        e.validate()?;
        Ok(e)
    }

    /// The rules every published event meets.
    pub fn validate(&self) -> Result<(), Error> {
        for (what, v, max) in [("id", &self.id, 256), ("source", &self.source, 1024), ("type", &self.ty, 256)] {
            if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
                return Err(Error::invalid(what, format!("'{what}' must be 1 to {max} printable characters")));
            }
        }
        if self.source.starts_with(BUILTIN_SOURCE) || self.ty.starts_with("stratus.") {
            return Err(Error::invalid(
                "type",
                "the source prefix '/stratus/' and the type prefix 'stratus.' are Stratus's own events",
            ));
        }
        if let Some(s) = &self.subject
            && (s.len() > 1024 || s.chars().any(char::is_control))
        {
            return Err(Error::invalid("subject", "'subject' must be at most 1024 printable characters"));
        }
        if self.data.as_ref().is_some_and(|d| d.len() > MAX_DATA) {
            return Err(Error::invalid("data", format!("an event's data is at most {} KiB", MAX_DATA / 1024)));
        }
        Ok(())
    }

    /// The value of an attribute a filter names: a context attribute
    /// (`type`, `source`, `subject`, `id`, `time`, `datacontenttype`) or
    /// `data.PATH` (dotted keys, array indexes as numbers) into JSON data.
    pub fn attribute(&self, name: &str) -> Option<String> {
        match name {
            "id" => Some(self.id.clone()),
            "source" => Some(self.source.clone()),
            "type" => Some(self.ty.clone()),
            "subject" => self.subject.clone(),
            "time" => Some(rfc3339(self.time)),
            "datacontenttype" => self.datacontenttype.clone(),
            "specversion" => Some("1.0".into()),
            _ => {
                let path = name.strip_prefix("data")?;
                let mut v = self.data_json()?;
                if !path.is_empty() {
                    for key in path.strip_prefix('.')?.split('.') {
                        v = match v {
                            Value::Object(mut m) => m.remove(key)?,
                            Value::Array(mut a) => {
                                let i: usize = key.parse().ok()?;
                                (i < a.len()).then(|| a.swap_remove(i))?
                            }
                            _ => return None,
                        };
                    }
                }
                match v {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    other => Some(other.to_string()),
                }
            }
        }
    }
}

/// Stratus's own events, built the same way wherever they are committed.
pub mod builtin {
    use super::*;
    use crate::{Function, InvocationState, Job, JobState};

    pub const INVOCATIONS: &str = "/stratus/invocations";
    pub const JOBS: &str = "/stratus/jobs";
    pub const FUNCTIONS: &str = "/stratus/functions";
    pub const OBJECTS: &str = "/stratus/objects";

    fn event(project: &str, source: &str, id: String, ty: String, subject: &str, time: Millis, data: Value) -> Event {
        Event {
            seq: 0,
            project: project.into(),
            source: source.into(),
            id,
            ty,
            subject: Some(subject.into()),
            time,
            datacontenttype: Some("application/json".into()),
            data: Some(serde_json::to_vec(&data).expect("JSON serialises")),
            depth: 0,
        }
    }

    /// `stratus.invocation.{succeeded,failed,timed_out,cancelled}` of a
    /// direct invocation (not a task of a job), subject its function; its
    /// id is the invocation's, so an invocation has one. `error` is the
    /// failure as stored (JSON).
    #[allow(clippy::too_many_arguments)]
    pub fn invocation(
        project: &str,
        function: &str,
        version: u32,
        id: Id,
        state: InvocationState,
        attempts: u32,
        error: Option<&str>,
        at: Millis,
    ) -> Event {
        // Written out rather than built as a JSON value: this is on the
        // path of every direct invocation. The function's name is validated
        // (a-z, 0-9, '-'), the error is JSON already (as stored).
        let id = id.to_string();
        let error = error.filter(|e| e.starts_with('{')).unwrap_or("null");
        let state = state.as_str();
        let data = format!(
            r#"{{"attempts":{attempts},"error":{error},"function":"{function}","invocation":"{id}","state":"{state}","version":{version}}}"#
        );
        Event {
            seq: 0,
            project: project.into(),
            source: INVOCATIONS.into(),
            id,
            ty: format!("stratus.invocation.{state}"),
            subject: Some(function.into()),
            time: at,
            datacontenttype: Some("application/json".into()),
            data: Some(data.into_bytes()),
            depth: 0,
        }
    }

    /// `stratus.job.{succeeded,failed,cancelled}`, subject the job's map
    /// function; its id is the job's.
    pub fn job(job: &Job, at: Millis) -> Option<Event> {
        if !matches!(job.state, JobState::Succeeded | JobState::Failed | JobState::Cancelled) {
            return None;
        }
        let data = json!({"job": job.id.to_string(), "function": job.function, "state": job.state.as_str(),
                          "total": job.total, "succeeded": job.succeeded, "failed": job.failed,
                          "cancelled": job.cancelled, "error": job.error,
                          "reduce_invocation": job.reduce_invocation.map(|i| i.to_string())});
        let ty = format!("stratus.job.{}", job.state.as_str());
        Some(event(&job.project, JOBS, job.id.to_string(), ty, &job.function, job.finished_at.unwrap_or(at), data))
    }

    /// `stratus.function.deployed`, subject the function's name; one per version.
    pub fn deployed(f: &Function) -> Event {
        let runtime = match f.spec.runtime {
            crate::Runtime::Wasm => "wasm",
            crate::Runtime::Process { .. } => "process",
        };
        let data = json!({"function": f.name, "version": f.version, "runtime": runtime, "artifact": f.spec.artifact});
        let id = format!("{}@{}", f.name, f.version);
        event(&f.project, FUNCTIONS, id, "stratus.function.deployed".into(), &f.name, f.created_at, data)
    }

    /// `stratus.object.{created,deleted}`, subject `BUCKET/KEY`.
    pub fn object(project: &str, object: &str, created: bool, size: Option<u64>, at: Millis) -> Event {
        let ty = if created { "stratus.object.created" } else { "stratus.object.deleted" };
        let (bucket, key) = object.split_once('/').unwrap_or((object, ""));
        let data = json!({"bucket": bucket, "key": key, "size": size});
        event(project, OBJECTS, crate::new_id().to_string(), ty.into(), object, at, data)
    }

    /// `stratus.variable.{set,deleted}` or `stratus.secret.{set,deleted}`,
    /// subject the name; the data says the version, never the value.
    pub fn setting(project: &str, kind: &str, name: &str, version: Option<u64>, at: Millis) -> Event {
        let ty = format!("stratus.{kind}.{}", if version.is_some() { "set" } else { "deleted" });
        let data = json!({kind: name, "version": version});
        event(project, &format!("/stratus/{kind}s"), crate::new_id().to_string(), ty, name, at, data)
    }

    /// `stratus.pyenv.set|deleted`, subject the environment's name; a set
    /// says the digest workers install it under.
    pub fn pyenv(project: &str, name: &str, digest: Option<&str>, at: Millis) -> Event {
        let ty = format!("stratus.pyenv.{}", if digest.is_some() { "set" } else { "deleted" });
        let data = json!({"pyenv": name, "digest": digest});
        event(project, "/stratus/pyenvs", crate::new_id().to_string(), ty, name, at, data)
    }

    /// `stratus.limit.set|deleted|reset`, from the audit action
    /// (`limit.set`, `limit.delete`, `limit.reset`).
    pub fn limit(project: &str, tag: &str, action: &str, at: Millis) -> Event {
        let what = match action {
            "limit.delete" => "deleted",
            "limit.reset" => "reset",
            _ => "set",
        };
        let data = json!({"tag": tag});
        let ty = format!("stratus.limit.{what}");
        event(project, "/stratus/limits", crate::new_id().to_string(), ty, tag, at, data)
    }

    /// `stratus.trigger.failed`: an action that could not run (the dead letter).
    pub fn trigger_failed(project: &str, trigger: &str, cause: &Event, why: &str, at: Millis) -> Event {
        let data = json!({"trigger": trigger, "reason": why,
                          "event": {"source": cause.source, "id": cause.id, "type": cause.ty, "seq": cause.seq}});
        let mut e = event(
            project,
            &format!("/stratus/triggers/{trigger}"),
            format!("failed-{}", cause.seq),
            "stratus.trigger.failed".into(),
            trigger,
            at,
            data,
        );
        e.depth = cause.depth;
        e
    }

    /// The source of a schedule's events.
    pub fn schedule_source(name: &str) -> String {
        format!("/stratus/schedules/{name}")
    }

    /// `stratus.schedule.fired` for one nominal time (its id: one per
    /// nominal time, however many servers fire it).
    pub fn schedule_fired(project: &str, name: &str, nominal: Millis, at: Millis, backfill: bool) -> Event {
        let data = json!({"schedule": name, "nominal": rfc3339(nominal), "nominal_ms": nominal, "backfill": backfill});
        let source = schedule_source(name);
        event(project, &source, rfc3339(nominal), "stratus.schedule.fired".into(), name, at, data)
    }

    /// `stratus.schedule.missed`: nominal times from `first` to `last`
    /// (`count` of them) that did not run, and why.
    pub fn schedule_missed(project: &str, name: &str, missed: (Millis, Millis, u64), why: &str, at: Millis) -> Event {
        let (first, last, count) = missed;
        let data = json!({"schedule": name, "first": rfc3339(first), "last": rfc3339(last), "count": count,
                          "reason": why});
        let id = format!("missed-{}", rfc3339(first));
        event(project, &schedule_source(name), id, "stratus.schedule.missed".into(), name, at, data)
    }

    /// Whether a job in this state has ended (its event is due).
    pub fn job_ended(state: JobState) -> bool {
        matches!(state, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

/// A filter in the CloudEvents Subscriptions API's dialects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    /// Every attribute named equals its value.
    Exact(BTreeMap<String, String>),
    Prefix(BTreeMap<String, String>),
    Suffix(BTreeMap<String, String>),
    /// Every filter matches.
    All(Vec<Filter>),
    /// At least one filter matches.
    Any(Vec<Filter>),
    Not(Box<Filter>),
}

fn valid_attribute(name: &str) -> bool {
    const CONTEXT: [&str; 7] = ["id", "source", "type", "subject", "time", "datacontenttype", "specversion"];
    CONTEXT.contains(&name)
        || name == "data"
        || name.strip_prefix("data.").is_some_and(|p| p.split('.').all(|k| !k.is_empty()))
}

impl Filter {
    /// A filter from its JSON form, checked: no empty filter, only known
    /// attributes.
    pub fn parse(v: &Value) -> Result<Filter, Error> {
        let f: Filter = serde_json::from_value(v.clone()).map_err(|e| {
            Error::invalid(
                "filter",
                format!("{e}; a filter is one of {{\"exact\"|\"prefix\"|\"suffix\": {{ATTRIBUTE: VALUE}}}}, {{\"all\"|\"any\": [FILTER, ...]}}, {{\"not\": FILTER}}"),
            )
        })?;
        f.validate()?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Filter::Exact(m) | Filter::Prefix(m) | Filter::Suffix(m) => {
                if m.is_empty() {
                    return Err(Error::invalid("filter", "an empty filter matches everything: name an attribute"));
                }
                for k in m.keys() {
                    if !valid_attribute(k) {
                        return Err(Error::invalid(
                            "filter",
                            format!(
                                "'{k}' is not an attribute: use id, source, type, subject, time, datacontenttype or data.PATH"
                            ),
                        ));
                    }
                }
                Ok(())
            }
            Filter::All(fs) | Filter::Any(fs) => {
                if fs.is_empty() {
                    return Err(Error::invalid("filter", "'all' and 'any' need at least one filter"));
                }
                fs.iter().try_for_each(Filter::validate)
            }
            Filter::Not(f) => f.validate(),
        }
    }

    pub fn matches(&self, e: &Event) -> bool {
        let each = |m: &BTreeMap<String, String>, test: fn(&str, &str) -> bool| {
            m.iter().all(|(k, v)| e.attribute(k).is_some_and(|a| test(&a, v)))
        };
        match self {
            Filter::Exact(m) => each(m, |a, v| a == v),
            Filter::Prefix(m) => each(m, |a, v| a.starts_with(v)),
            Filter::Suffix(m) => each(m, |a, v| a.ends_with(v)),
            Filter::All(fs) => fs.iter().all(|f| f.matches(e)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(e)),
            Filter::Not(f) => !f.matches(e),
        }
    }
}

/// When a trigger's action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Condition {
    /// On every matching event.
    #[default]
    Always,
    /// Once `n` distinct events have arrived; then counting starts again.
    Join { n: u32 },
    /// When `n` events arrive within one tumbling window of `window_ms`
    /// (by their `time`); once per window.
    Threshold { n: u32, window_ms: u64 },
}

impl std::str::FromStr for Condition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::invalid(
                "condition",
                format!("'{s}' {why}; use always, join:N or threshold:N/WINDOW (e.g. threshold:10/1m)"),
            )
        };
        let count = |n: &str| match n.parse::<u32>() {
            Ok(n) if (1..=100_000).contains(&n) => Ok(n),
            _ => Err(bad("needs a count from 1 to 100000")),
        };
        match s.split_once(':') {
            None if s == "always" => Ok(Condition::Always),
            Some(("join", n)) => Ok(Condition::Join { n: count(n)? }),
            Some(("threshold", rest)) => {
                let (n, w) = rest.split_once('/').ok_or_else(|| bad("has no window"))?;
                let window_ms = duration_ms(w).map_err(|e| bad(&e))?;
                Ok(Condition::Threshold { n: count(n)?, window_ms })
            }
            _ => Err(bad("is not a condition")),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Always => write!(f, "always"),
            Condition::Join { n } => write!(f, "join:{n}"),
            Condition::Threshold { n, window_ms } => write!(f, "threshold:{n}/{window_ms}ms"),
        }
    }
}

/// What a trigger's invocation takes as input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// The event (or, for a join or threshold, the array of its events) as JSON.
    #[default]
    Event,
    /// The object an object event names, read as a map task reads its partition.
    Object,
}

/// What a trigger does when its condition holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Action {
    /// Invokes a function of the project.
    Invoke {
        function: String,
        #[serde(default)]
        input: Input,
        /// `BUCKET/PREFIX`: the output is stored at `PREFIX` + the source
        /// object's key within its bucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// Runs a map job of a function of the project over a JSON array in
    /// the event's data (`items`: `data`, the default, or `data.PATH`):
    /// one task per element, whose input is the element's JSON text.
    Map {
        function: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<String>,
    },
    /// Publishes an event of this type (source `/stratus/triggers/NAME`),
    /// whose data names the events that fired it.
    Emit {
        #[serde(rename = "type")]
        ty: String,
    },
}

/// A trigger as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// The event type it reacts to.
    pub on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    #[serde(default)]
    pub condition: Condition,
    /// One context per value of this attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// Disarms (is disabled) after it fires once.
    #[serde(default)]
    pub transient: bool,
    pub action: Action,
    /// A schedule: the trigger reacts to its own `stratus.schedule.fired`
    /// events, which the event processor commits as their times come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::ScheduleSpec>,
}

impl TriggerSpec {
    pub fn validate(&self) -> Result<(), Error> {
        if self.on.is_empty() || self.on.len() > 256 || self.on.chars().any(char::is_control) {
            return Err(Error::invalid("on", "the event type must be 1 to 256 printable characters"));
        }
        if let Some(f) = &self.filter {
            f.validate()?;
        }
        match self.condition {
            Condition::Always => {}
            Condition::Join { n } | Condition::Threshold { n, .. } if n == 0 || n > 100_000 => {
                return Err(Error::invalid("condition", "the count must be 1 to 100000"));
            }
            _ => {}
        }
        if let Some(sched) = &self.schedule {
            sched.compile(0)?;
            if self.condition != Condition::Always || self.group_by.is_some() || self.transient {
                return Err(Error::invalid("schedule", "a schedule has no condition, grouping or --transient"));
            }
        }
        if let Some(g) = &self.group_by
            && !valid_attribute(g)
        {
            return Err(Error::invalid("group_by", format!("'{g}' is not an attribute")));
        }
        match &self.action {
            Action::Invoke { function, input, output } => {
                crate::validate_name("function", function)?;
                if *input == Input::Object || output.is_some() {
                    let object_events = self.on.starts_with("stratus.object.");
                    if !object_events {
                        return Err(Error::invalid(
                            "action",
                            "--input object and --output need object events (--on stratus.object.created)",
                        ));
                    }
                }
                if let Some(o) = output {
                    let (bucket, _) = o.split_once('/').unwrap_or((o, ""));
                    if bucket.is_empty() || o.contains("//") {
                        return Err(Error::invalid("output", format!("'{o}' is not BUCKET/PREFIX")));
                    }
                }
            }
            Action::Map { function, items } => {
                crate::validate_name("function", function)?;
                if let Some(path) = items
                    && !(path == "data"
                        || path.strip_prefix("data.").is_some_and(|p| p.split('.').all(|k| !k.is_empty())))
                {
                    return Err(Error::invalid("items", format!("'{path}' is not data or data.PATH")));
                }
            }
            Action::Emit { ty } => {
                if ty.is_empty() || ty.starts_with("stratus.") || ty.chars().any(char::is_control) {
                    return Err(Error::invalid(
                        "emit",
                        "the type to emit must be printable and not start with 'stratus.'",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether `e` is an event this trigger reacts to (before its condition).
    pub fn matches(&self, e: &Event) -> bool {
        e.ty == self.on
            && self.source.as_ref().is_none_or(|s| *s == e.source)
            && self.subject_prefix.as_ref().is_none_or(|p| e.subject.as_ref().is_some_and(|s| s.starts_with(p)))
            && self.subject_suffix.as_ref().is_none_or(|p| e.subject.as_ref().is_some_and(|s| s.ends_with(p)))
            && self.filter.as_ref().is_none_or(|f| f.matches(e))
    }
}

/// A trigger of a project.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub project: String,
    pub name: String,
    pub spec: TriggerSpec,
    pub enabled: bool,
    pub created_at: Millis,
    /// It reacts only to events numbered after this (those stored before it
    /// was created are not its).
    pub from_seq: u64,
}

/// What a trigger remembers between events, per group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Context {
    /// The events of a join so far, by `source` and `id`, with their numbers.
    Join { seen: Vec<(String, String, u64)> },
    /// The current window of a threshold.
    Window { start: Millis, count: u32, fired: bool },
    /// A schedule's next nominal time not handled, the last invocation its
    /// action started, and the nominal time waiting for it to end
    /// (`buffer_one`).
    Schedule {
        next_at: Option<Millis>,
        #[serde(default)]
        last: Option<Id>,
        #[serde(default)]
        buffered: Option<Millis>,
    },
}

/// The key of a trigger's context: project, trigger, group.
pub type ContextKey = (String, String, String);

/// A change to triggers and to what events left behind, committed with the
/// rest of a change set.
#[derive(Debug, Clone, PartialEq)]
pub enum EventChange {
    /// Creates the trigger; does not apply if one of that name exists.
    Create(Box<Trigger>),
    /// Deletes it and its contexts.
    Delete {
        project: String,
        name: String,
    },
    SetEnabled {
        project: String,
        name: String,
        enabled: bool,
    },
    /// Sets (or with `None` drops) one context.
    Context {
        key: ContextKey,
        context: Option<Context>,
    },
    /// Moves the event processor's cursor from `from` to `to`; if it is not
    /// at `from` (another server processed these events), the whole commit
    /// is refused.
    Cursor {
        from: u64,
        to: u64,
    },
    /// Records that a trigger fired on an event, and what it started.
    Fired(Firing),
    /// Drops events stored before this time (retention), and the firings
    /// of that age.
    Expire {
        before: Millis,
    },
}

/// One firing of a trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub project: String,
    pub trigger: String,
    /// The event that completed the condition.
    pub seq: u64,
    pub at: Millis,
    /// The invocation it started, if any.
    pub invocation: Option<Id>,
    /// Where the invocation's output goes (`BUCKET/KEY`), if anywhere.
    pub output: Option<String>,
    /// The causation depth of what the action causes.
    pub depth: u32,
}

/// A trigger's condition held: run its action for these events.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub project: String,
    pub trigger: String,
    pub action: Action,
    /// The events that fired it, the last one completing the condition.
    pub events: Vec<Event>,
    pub group: String,
}

/// The triggers a server holds in memory, with their contexts.
#[derive(Debug, Clone, Default)]
pub struct Triggers {
    pub triggers: BTreeMap<(String, String), Trigger>,
    pub contexts: HashMap<ContextKey, Context>,
}

/// What a batch of events does to the triggers: contexts to write, triggers
/// disarmed, actions to run.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changes: Vec<EventChange>,
    pub fires: Vec<Fire>,
}

impl Triggers {
    /// Runs `events` (in order) through the triggers of their projects:
    /// updates the contexts here and returns what to commit. The caller
    /// commits `changes` with the actions, or, if that fails, reloads.
    pub fn apply(&mut self, events: &[Event]) -> Outcome {
        let mut out = Outcome::default();
        for e in events {
            let project = e.project.clone();
            let names: Vec<String> = self
                .triggers
                .range((project.clone(), String::new())..)
                .take_while(|((p, _), _)| *p == project)
                .filter(|(_, t)| t.enabled && e.seq > t.from_seq && t.spec.matches(e))
                .map(|((_, n), _)| n.clone())
                .collect();
            for name in names {
                let t = &self.triggers[&(project.clone(), name.clone())];
                let group = t.spec.group_by.as_ref().and_then(|g| e.attribute(g)).unwrap_or_default();
                let key = (project.clone(), name.clone(), group.clone());
                let (context, fired) = step(t.spec.condition, self.contexts.get(&key), e);
                let spec_action = t.spec.action.clone();
                let transient = t.spec.transient;
                if let Some(events) = fired {
                    out.fires.push(Fire {
                        project: project.clone(),
                        trigger: name.clone(),
                        action: spec_action,
                        events,
                        group,
                    });
                    if transient {
                        if let Some(t) = self.triggers.get_mut(&(project.clone(), name.clone())) {
                            t.enabled = false;
                        }
                        out.changes.push(EventChange::SetEnabled { project: project.clone(), name, enabled: false });
                    }
                }
                match context {
                    Step::Keep => {}
                    Step::Set(c) => {
                        self.contexts.insert(key.clone(), c.clone());
                        out.changes.push(EventChange::Context { key, context: Some(c) });
                    }
                    Step::Clear => {
                        if self.contexts.remove(&key).is_some() {
                            out.changes.push(EventChange::Context { key, context: None });
                        }
                    }
                }
            }
        }
        out
    }
}

enum Step {
    Keep,
    Set(Context),
    Clear,
}

/// One event through one condition: the new context, and the events that
/// fire the action if it holds (a join's earlier events as their keys and
/// numbers only: the context keeps no more).
fn step(c: Condition, ctx: Option<&Context>, e: &Event) -> (Step, Option<Vec<Event>>) {
    match c {
        Condition::Always => (Step::Keep, Some(vec![e.clone()])),
        Condition::Join { n } => {
            let mut seen = match ctx {
                Some(Context::Join { seen }) => seen.clone(),
                _ => Vec::new(),
            };
            if seen.iter().any(|(s, i, _)| *s == e.source && *i == e.id) {
                return (Step::Keep, None);
            }
            seen.push((e.source.clone(), e.id.clone(), e.seq));
            if seen.len() as u32 >= n {
                let events = seen[..seen.len() - 1]
                    .iter()
                    .map(|(source, id, seq)| Event {
                        seq: *seq,
                        project: e.project.clone(),
                        source: source.clone(),
                        id: id.clone(),
                        ty: e.ty.clone(),
                        subject: None,
                        time: e.time,
                        datacontenttype: None,
                        data: None,
                        depth: 0,
                    })
                    .chain([e.clone()])
                    .collect();
                (Step::Clear, Some(events))
            } else {
                (Step::Set(Context::Join { seen }), None)
            }
        }
        Condition::Threshold { n, window_ms } => {
            let (mut start, mut count, mut fired) = match ctx {
                Some(Context::Window { start, count, fired }) => (*start, *count, *fired),
                _ => (e.time, 0, false),
            };
            if e.time >= start.saturating_add(window_ms as i64) || e.time < start {
                (start, count, fired) = (e.time, 0, false);
            }
            count += 1;
            let fire = count >= n && !fired;
            fired |= fire;
            (Step::Set(Context::Window { start, count, fired }), fire.then(|| vec![e.clone()]))
        }
    }
}

/// The input of an invocation a trigger starts with [`Input::Event`]: the
/// event, or the array of events of a join or threshold.
pub fn action_input(events: &[Event]) -> Vec<u8> {
    let v = match events {
        [one] => one.to_json(),
        many => Value::Array(many.iter().map(Event::to_json).collect()),
    };
    serde_json::to_vec(&v).expect("JSON serialises")
}

/// The most tasks a `--map` action makes of one event.
pub const MAX_MAP_ITEMS: usize = 100_000;

/// The inputs of a `--map` action's tasks: each element of the array at
/// `items` (`data` by default) in the event's data, as JSON text.
pub fn map_items(e: &Event, items: Option<&str>) -> Result<Vec<Vec<u8>>, String> {
    let data = e.data_json().ok_or("the event has no JSON data")?;
    let path = items.unwrap_or("data");
    let mut v = &data;
    if let Some(rest) = path.strip_prefix("data.") {
        for key in rest.split('.') {
            v = match v {
                Value::Object(m) => m.get(key),
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                _ => None,
            }
            .ok_or_else(|| format!("the event's data has no '{path}'"))?;
        }
    }
    let Value::Array(elements) = v else { return Err(format!("'{path}' in the event is not a JSON array")) };
    if elements.is_empty() || elements.len() > MAX_MAP_ITEMS {
        return Err(format!("'{path}' has {} elements: a map takes 1 to {MAX_MAP_ITEMS}", elements.len()));
    }
    Ok(elements.iter().map(|x| serde_json::to_vec(x).expect("JSON serialises")).collect())
}

/// Where an `--output BUCKET/PREFIX` action stores the output for the
/// object `BUCKET/KEY`: `BUCKET/PREFIX` + `KEY`.
pub fn output_key(output: &str, object: &str) -> String {
    let key = object.split_once('/').map(|(_, k)| k).unwrap_or(object);
    format!("{output}{key}")
}

/// The event an `--emit TYPE` action publishes.
pub fn emitted(trigger: &str, ty: &str, fire: &Fire, at: Millis) -> Event {
    let last = fire.events.last().expect("a fire has an event");
    let ids: Vec<Value> = fire.events.iter().map(|e| json!({"source": e.source, "id": e.id})).collect();
    Event {
        seq: 0,
        project: fire.project.clone(),
        source: format!("/stratus/triggers/{trigger}"),
        id: format!("{}", last.seq),
        ty: ty.into(),
        subject: if fire.group.is_empty() { last.subject.clone() } else { Some(fire.group.clone()) },
        time: at,
        datacontenttype: Some("application/json".into()),
        data: Some(serde_json::to_vec(&json!({"trigger": trigger, "events": ids})).expect("JSON serialises")),
        depth: fire.events.iter().map(|e| e.depth).max().unwrap_or(0) + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, ty: &str, id: &str, subject: &str, data: Value) -> Event {
        Event {
            seq,
            project: "p".into(),
            source: "s".into(),
            id: id.into(),
            ty: ty.into(),
            subject: Some(subject.into()),
            time: 1000 * seq as i64,
            datacontenttype: None,
            data: Some(serde_json::to_vec(&data).unwrap()),
            depth: 0,
        }
    }

    fn trigger(name: &str, spec: TriggerSpec) -> Triggers {
        let mut t = Triggers::default();
        t.triggers.insert(
            ("p".into(), name.into()),
            Trigger { project: "p".into(), name: name.into(), spec, enabled: true, created_at: 0, from_seq: 0 },
        );
        t
    }

    fn spec(on: &str, condition: Condition) -> TriggerSpec {
        TriggerSpec {
            on: on.into(),
            source: None,
            subject_prefix: None,
            subject_suffix: None,
            filter: None,
            condition,
            group_by: None,
            transient: false,
            action: Action::Emit { ty: "done".into() },
            schedule: None,
        }
    }

    #[test]
    fn structured_json_round_trips_and_bad_events_are_refused() {
        let v = json!({"specversion": "1.0", "id": "1", "source": "cam", "type": "photo", "subject": "a.png",
                       "time": "2026-12-07T09:14:07.123Z", "data": {"w": 3}});
        let e = Event::from_json("p", &v, 5).unwrap();
        assert_eq!((e.time, e.data_json()), (1_796_634_847_123, Some(json!({"w": 3}))));
        assert_eq!(e.to_json(), v);
        let bin =
            json!({"id": "2", "source": "cam", "type": "raw", "datacontenttype": "image/png", "data_base64": "AAE="});
        let b = Event::from_json("p", &bin, 5).unwrap();
        assert_eq!((b.data.as_deref(), b.time), (Some(&[0u8, 1][..]), 5));
        assert_eq!(b.to_json()["data_base64"], "AAE=");
        for bad in [
            json!({"source": "s"}),
            json!({"type": "t"}),
            json!({"type": "t", "source": "s", "specversion": "0.3"}),
            json!({"type": "t", "source": "s", "time": "yesterday"}),
            json!({"type": "stratus.job.succeeded", "source": "s"}),
            json!({"type": "t", "source": "s", "data": 1, "data_base64": "AA=="}),
            json!([1]),
        ] {
            assert!(Event::from_json("p", &bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_invocation_event_s_data_is_json() {
        let id = crate::new_id();
        let e =
            builtin::invocation("p", "f-1", 3, id, crate::InvocationState::Failed, 2, Some(r#"{"kind":"exit"}"#), 7);
        assert_eq!(
            e.data_json().unwrap(),
            json!({"attempts": 2, "error": {"kind": "exit"}, "function": "f-1", "invocation": id.to_string(),
                   "state": "failed", "version": 3})
        );
        let ok = builtin::invocation("p", "f", 1, id, crate::InvocationState::Succeeded, 1, None, 7);
        assert_eq!(ok.data_json().unwrap()["error"], Value::Null);
        assert_eq!((ok.ty.as_str(), ok.subject.as_deref()), ("stratus.invocation.succeeded", Some("f")));
    }

    #[test]
    fn filters_match_attributes_and_data_paths() {
        let e = ev(1, "t", "1", "uploads/a.png", json!({"size": 10, "tags": ["x", "y"], "who": {"name": "ana"}}));
        let f = |v: Value| Filter::parse(&v).unwrap().matches(&e);
        assert!(f(json!({"exact": {"type": "t", "data.who.name": "ana"}})));
        assert!(f(json!({"prefix": {"subject": "uploads/"}})));
        assert!(f(json!({"suffix": {"subject": ".png"}})));
        assert!(f(json!({"exact": {"data.size": "10", "data.tags.1": "y"}})));
        assert!(!f(json!({"exact": {"data.missing": "x"}})));
        assert!(f(json!({"all": [{"prefix": {"subject": "up"}}, {"not": {"suffix": {"subject": ".jpg"}}}]})));
        assert!(f(json!({"any": [{"exact": {"type": "u"}}, {"exact": {"id": "1"}}]})));
        for bad in [
            json!({}),
            json!({"exact": {}}),
            json!({"all": []}),
            json!({"exact": {"colour": "x"}}),
            json!({"like": {}}),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn conditions_parse_and_print() {
        assert_eq!("join:3".parse::<Condition>().unwrap(), Condition::Join { n: 3 });
        assert_eq!("threshold:10/1m".parse::<Condition>().unwrap(), Condition::Threshold { n: 10, window_ms: 60_000 });
        assert_eq!("always".parse::<Condition>().unwrap(), Condition::Always);
        for bad in ["join:0", "join:x", "threshold:3", "threshold:3/soon", "sometimes"] {
            assert!(bad.parse::<Condition>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_join_fires_once_per_n_distinct_events_and_groups_keep_apart() {
        let mut s = spec("t", Condition::Join { n: 3 });
        s.group_by = Some("subject".into());
        let mut t = trigger("j", s);
        let out =
            t.apply(&[ev(1, "t", "a", "x", json!(1)), ev(2, "t", "a", "x", json!(1)), ev(3, "t", "b", "x", json!(1))]);
        assert!(out.fires.is_empty(), "a duplicate does not count");
        let out = t.apply(&[ev(4, "t", "c", "y", json!(1)), ev(5, "t", "d", "x", json!(1))]);
        assert_eq!(out.fires.len(), 1);
        let fire = &out.fires[0];
        assert_eq!(fire.group, "x");
        assert_eq!(fire.events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b", "d"]);
        assert!(t.contexts.contains_key(&("p".into(), "j".into(), "y".into())), "the other group keeps its count");
        assert!(!t.contexts.contains_key(&("p".into(), "j".into(), "x".into())), "the fired group starts again");
        let out =
            t.apply(&[ev(6, "t", "e", "x", json!(1)), ev(7, "t", "f", "x", json!(1)), ev(8, "t", "g", "x", json!(1))]);
        assert_eq!(out.fires.len(), 1, "counting starts again");
    }

    #[test]
    fn a_transient_trigger_disarms_after_firing() {
        let mut s = spec("t", Condition::Always);
        s.transient = true;
        let mut t = trigger("once", s);
        let out = t.apply(&[ev(1, "t", "a", "x", json!(1)), ev(2, "t", "b", "x", json!(1))]);
        assert_eq!(out.fires.len(), 1);
        assert!(out.changes.contains(&EventChange::SetEnabled {
            project: "p".into(),
            name: "once".into(),
            enabled: false
        }));
    }

    #[test]
    fn a_threshold_fires_once_per_window() {
        let mut t = trigger("th", spec("t", Condition::Threshold { n: 2, window_ms: 2500 }));
        // times: 1 s, 2 s (fires), 3 s (same window), 4 s (new window), 5 s (fires)
        let evs: Vec<Event> = (1..=5).map(|i| ev(i, "t", &i.to_string(), "x", json!(1))).collect();
        let out = t.apply(&evs);
        assert_eq!(out.fires.iter().map(|f| f.events[0].seq).collect::<Vec<_>>(), [2, 5]);
    }

    #[test]
    fn triggers_see_only_their_project_their_type_and_later_events() {
        let mut t = trigger("a", spec("t", Condition::Always));
        t.triggers.get_mut(&("p".into(), "a".into())).unwrap().from_seq = 1;
        let mut other = ev(2, "t", "o", "x", json!(1));
        other.project = "q".into();
        let out = t.apply(&[
            ev(1, "t", "old", "x", json!(1)),
            other,
            ev(3, "u", "u", "x", json!(1)),
            ev(4, "t", "n", "x", json!(1)),
        ]);
        assert_eq!(out.fires.iter().map(|f| f.events[0].id.as_str()).collect::<Vec<_>>(), ["n"]);
    }

    #[test]
    fn a_map_takes_the_elements_of_an_array_in_the_data() {
        let e = ev(1, "t", "1", "x", json!({"batch": {"items": [1, "two", {"k": 3}]}}));
        let got = map_items(&e, Some("data.batch.items")).unwrap();
        assert_eq!(got, [b"1".to_vec(), br#""two""#.to_vec(), br#"{"k":3}"#.to_vec()]);
        assert!(map_items(&e, None).unwrap_err().contains("not a JSON array"));
        assert!(map_items(&e, Some("data.nope")).unwrap_err().contains("no 'data.nope'"));
        let empty = ev(2, "t", "2", "x", json!([]));
        assert!(map_items(&empty, None).is_err());
        let mut s = spec("t", Condition::Always);
        s.action = Action::Map { function: "f".into(), items: Some("items".into()) };
        assert!(s.validate().is_err());
    }

    #[test]
    fn object_actions_need_object_events_and_outputs_keep_the_key() {
        let mut s = spec("photo", Condition::Always);
        s.action = Action::Invoke { function: "f".into(), input: Input::Object, output: None };
        assert!(s.validate().is_err());
        s.on = "stratus.object.created".into();
        s.action = Action::Invoke { function: "f".into(), input: Input::Object, output: Some("out/processed/".into()) };
        s.validate().unwrap();
        assert_eq!(output_key("out/processed/", "in/uploads/a.png"), "out/processed/uploads/a.png");
    }
}
