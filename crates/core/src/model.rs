//! The records Stratus keeps and passes around.

use crate::clock::Millis;
use crate::{Error, Id};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// How a function's code runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", from = "RuntimeFields")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Runtime {
    /// A WASI preview 1 command module run by wasmtime.
    Wasm,
    /// A command run in the function's unpacked bundle directory. `warm`
    /// functions keep one process per worker slot alive across invocations.
    /// A warm process with `token` gets each attempt's `STRATUS_TOKEN` as a
    /// fourth field of the request header (a field it must expect, so it is
    /// asked for: older helpers read exactly three).
    Process {
        cmd: String,
        #[serde(default)]
        warm: bool,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        token: bool,
    },
}

/// How a [`Runtime`] is read: a field it does not have is an error (a
/// misspelt `warm` must not deploy a cold function), which serde checks
/// only for struct variants.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RuntimeFields {
    Wasm {},
    Process {
        cmd: String,
        #[serde(default)]
        warm: bool,
        #[serde(default)]
        token: bool,
    },
}

impl From<RuntimeFields> for Runtime {
    fn from(r: RuntimeFields) -> Self {
        match r {
            RuntimeFields::Wasm {} => Runtime::Wasm,
            RuntimeFields::Process { cmd, warm, token } => Runtime::Process { cmd, warm, token },
        }
    }
}

impl Runtime {
    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::Wasm => "wasm",
            Runtime::Process { .. } => "process",
        }
    }
}

/// Resource limits of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub timeout_ms: u64,
    pub memory_mb: u64,
    /// Processes a process function may have at once (its whole tree).
    #[serde(default = "default_max_procs")]
    pub max_procs: u32,
    /// CPU share of a process function in thousandths of a core; 0 for no
    /// limit.
    #[serde(default)]
    pub cpu_millis: u32,
}

fn default_max_procs() -> u32 {
    DEFAULT_MAX_PROCS
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout_ms: 60_000, memory_mb: 256, max_procs: DEFAULT_MAX_PROCS, cpu_millis: 0 }
    }
}

pub const DEFAULT_MAX_PROCS: u32 = 64;
pub const MAX_PROCS: u32 = 4096;
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
pub const MAX_MEMORY_MB: u64 = 64 * 1024;
pub const MAX_RETRIES: u32 = 100;
/// Longest process command line, in bytes.
pub const MAX_CMD_BYTES: usize = 8 << 10;
/// Most variables a function may declare, and their names and values
/// together, in bytes: well inside what `execve` takes, so a function that
/// deploys can also start.
pub const MAX_ENV_VARS: usize = 1000;
pub const MAX_ENV_BYTES: usize = 256 << 10;
/// Most variables and secrets one function may read.
pub const MAX_SETTINGS: usize = 100;

/// What a user deploys, validated. The code itself is stored in the object
/// store under its content hash (`artifact`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub runtime: Runtime,
    /// sha256 (hex) of the wasm module or the bundle archive.
    pub artifact: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retries: u32,
    /// A process function may reach the network (otherwise only the
    /// Stratus API).
    #[serde(default)]
    pub network: bool,
    /// The project's variables it reads, each in the environment variable
    /// of its name, at their values when each attempt starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    /// The project's secrets it reads, at their values when each attempt
    /// starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::settings::SecretRef>,
    /// Concurrency tags: each attempt takes a slot of every tag that has a
    /// limit (`stratus limit set`) before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The Python environment a process function runs with: its packages
    /// are on `PYTHONPATH` (`stratus pyenv`, or the bundle's own
    /// `requirements.txt`), pinned when it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyenv: Option<Box<crate::pyenv::PyEnvSpec>>,
}

impl FunctionSpec {
    /// Checks every field; the error names the first one that is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(p) = &self.pyenv {
            if !matches!(self.runtime, Runtime::Process { .. }) {
                return Err(Error::invalid("pyenv", "applies to process functions only"));
            }
            p.validate()?;
        }
        if let Runtime::Process { cmd, warm, token } = &self.runtime {
            if *token && !*warm {
                return Err(Error::invalid(
                    "token",
                    "applies to warm functions only: a cold one gets STRATUS_TOKEN in its environment",
                ));
            }
            if cmd.trim().is_empty() {
                return Err(Error::invalid("cmd", "a process function needs a command (--cmd)"));
            }
            if cmd.contains('\0') {
                return Err(Error::invalid("cmd", "contains a NUL byte"));
            }
            if cmd.len() > MAX_CMD_BYTES {
                return Err(Error::invalid("cmd", format!("longer than {MAX_CMD_BYTES} bytes")));
            }
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(Error::invalid("env", format!("more than {MAX_ENV_VARS} variables")));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        if env_bytes > MAX_ENV_BYTES {
            return Err(Error::invalid("env", format!("{env_bytes} bytes of variables; at most {MAX_ENV_BYTES}")));
        }
        if self.artifact.len() != 64 || !self.artifact.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("artifact", "must be a sha256 digest in hex"));
        }
        if self.limits.timeout_ms == 0 || self.limits.timeout_ms > MAX_TIMEOUT_MS {
            return Err(Error::invalid("timeout", format!("must be between 1 ms and {MAX_TIMEOUT_MS} ms")));
        }
        if self.limits.memory_mb == 0 || self.limits.memory_mb > MAX_MEMORY_MB {
            return Err(Error::invalid("memory", format!("must be between 1 and {MAX_MEMORY_MB} MiB")));
        }
        if self.limits.max_procs == 0 || self.limits.max_procs > MAX_PROCS {
            return Err(Error::invalid("max_procs", format!("must be between 1 and {MAX_PROCS}")));
        }
        if self.limits.cpu_millis > 1024 * 1000 {
            return Err(Error::invalid("cpus", "at most 1024"));
        }
        if self.retries > MAX_RETRIES {
            return Err(Error::invalid("retries", format!("at most {MAX_RETRIES}")));
        }
        if self.vars.len() + self.secrets.len() > MAX_SETTINGS {
            return Err(Error::invalid("vars", format!("more than {MAX_SETTINGS} variables and secrets")));
        }
        crate::names::validate_tags(&self.tags)?;
        let mut seen = std::collections::HashSet::new();
        for v in &self.vars {
            crate::settings::validate_env_name("var", v)?;
            if !seen.insert(v.as_str()) {
                return Err(Error::invalid("var", format!("'{v}' is named twice")));
            }
        }
        for r in &self.secrets {
            r.validate()?;
            if !seen.insert(r.env.as_str()) {
                return Err(Error::invalid("secret", format!("environment variable '{}' is named twice", r.env)));
            }
        }
        for (k, v) in &self.env {
            let valid = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(Error::invalid("env", format!("'{k}' is not a valid variable name")));
            }
            if k.starts_with("STRATUS_") {
                return Err(Error::invalid("env", format!("'{k}': the STRATUS_ prefix is reserved")));
            }
            if v.contains('\0') {
                return Err(Error::invalid("env", format!("the value of '{k}' contains a NUL byte")));
            }
        }
        Ok(())
    }

    /// Whether its attempts read the project's variables or secrets.
    pub fn uses_settings(&self) -> bool {
        !self.vars.is_empty() || !self.secrets.is_empty()
    }
}

/// One deployed version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Function {
    pub project: String,
    pub name: String,
    pub version: u32,
    pub spec: FunctionSpec,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum InvocationState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl InvocationState {
    pub const ALL: [InvocationState; 6] = [
        InvocationState::Queued,
        InvocationState::Running,
        InvocationState::Succeeded,
        InvocationState::Failed,
        InvocationState::TimedOut,
        InvocationState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        !matches!(self, InvocationState::Queued | InvocationState::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationState::Queued => "queued",
            InvocationState::Running => "running",
            InvocationState::Succeeded => "succeeded",
            InvocationState::Failed => "failed",
            InvocationState::TimedOut => "timed_out",
            InvocationState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for InvocationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InvocationState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown state '{s}'")))
    }
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FailureKind {
    /// The function exited with a non-zero status.
    Exit,
    /// The wasm guest trapped, or the process died of a signal.
    Trap,
    /// The attempt ran past the function's timeout.
    Timeout,
    /// The function went over its memory limit.
    OutOfMemory,
    /// The function wrote more output than the platform accepts.
    OutputLimit,
    /// The platform could not run the function (missing artifact, spawn error, ...).
    Internal,
    /// The worker running the attempt disappeared.
    Lost,
    /// The invocation was cancelled.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

impl Failure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into(), exit_code: None }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// An invocation as stored, without its payloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Invocation {
    pub id: Id,
    pub project: String,
    pub function: String,
    pub version: u32,
    pub state: InvocationState,
    /// Attempts started so far.
    pub attempts: u32,
    /// 1 + the function's retries, fixed when the invocation is created.
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_index: Option<u64>,
    pub queued_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Concurrency tags given with the call (its function's own come with
    /// the function version).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Invocation {
    /// A new invocation of `f`, queued at `now`: a task of `job` at `index`,
    /// or a job's reducer (`index` none), or on its own (both none).
    pub fn queued(f: &Function, now: Millis, job: Option<Id>, index: Option<u64>) -> Invocation {
        Invocation {
            id: crate::new_id(),
            project: f.project.clone(),
            function: f.name.clone(),
            version: f.version,
            state: InvocationState::Queued,
            attempts: 0,
            max_attempts: f.spec.retries + 1,
            job_id: job,
            task_index: index,
            queued_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            error: None,
            tags: Vec::new(),
        }
    }

    /// The same, carrying the call's concurrency `tags`.
    pub fn with_tags(mut self, tags: &[String]) -> Invocation {
        self.tags = tags.to_vec();
        self
    }
}

/// One attempt of an invocation, as recorded for timelines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    pub attempt: u32,
    pub worker: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub state: InvocationState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// A unit of work handed to a worker slot.
#[derive(Debug, Clone)]
pub struct Task {
    pub invocation: Id,
    pub attempt: u32,
    pub function: std::sync::Arc<Function>,
    pub input: Vec<u8>,
    /// When set, the input is this range of an object, read by the worker.
    pub partition: Option<Partition>,
    pub job: Option<Id>,
    /// The token its process gets as `STRATUS_TOKEN`, for this attempt
    /// ([`crate::trust::AttemptKey`]); set when the attempt starts.
    pub token: Option<String>,
}

/// What a worker reports when an attempt ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub invocation: Id,
    pub attempt: u32,
    pub worker: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    pub result: Result<Vec<u8>, Failure>,
    pub logs: Vec<u8>,
    /// The attempt's token as its task carried it: an attempt dispatched
    /// through the broker is ended only by a report that has it, so only
    /// a worker that took its message (not any worker token) ends it.
    pub claim: Option<String>,
}

/// A byte range of an object that one task reads as its input. The task
/// gets the lines that *start* inside `[start, end)`: a line crossing `end`
/// is read whole by this task, and skipped by the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// `bucket/key`.
    pub object: String,
    pub start: u64,
    pub end: u64,
    /// Size of the whole object when the job was created.
    pub size: u64,
    /// Whether the range is cut at line ends (false: exactly these bytes).
    #[serde(default)]
    pub lines: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    /// Map tasks are queued or running.
    Running,
    /// Every map task succeeded; the reducer runs.
    Reducing,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Reducing => "reducing",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        [JobState::Running, JobState::Reducing, JobState::Succeeded, JobState::Failed, JobState::Cancelled]
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::invalid("state", format!("unknown job state '{s}'")))
    }
}

/// A map (and optional reduce) over many inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    pub id: Id,
    pub project: String,
    pub function: String,
    pub version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_version: Option<u32>,
    pub state: JobState,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub created_at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Millis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_invocation: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Job {
    /// A new running job of `function` (and `reduce`), of `total` tasks so far.
    pub fn running(function: &Function, reduce: Option<&Function>, total: u64, now: Millis) -> Job {
        Job {
            id: crate::new_id(),
            project: function.project.clone(),
            function: function.name.clone(),
            version: function.version,
            reduce_function: reduce.map(|r| r.name.clone()),
            reduce_version: reduce.map(|r| r.version),
            state: JobState::Running,
            total,
            succeeded: 0,
            failed: 0,
            cancelled: 0,
            created_at: now,
            finished_at: None,
            reduce_invocation: None,
            error: None,
        }
    }

    pub fn done(&self) -> u64 {
        self.succeeded + self.failed + self.cancelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(runtime: Runtime) -> FunctionSpec {
        FunctionSpec {
            runtime,
            artifact: "a".repeat(64),
            env: BTreeMap::new(),
            limits: Limits::default(),
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        }
    }

    #[test]
    fn unknown_runtime_fields_are_refused() {
        let ok: Runtime = serde_json::from_str(r#"{"kind":"process","cmd":"x","warm":true}"#).unwrap();
        assert_eq!(ok, Runtime::Process { cmd: "x".into(), warm: true, token: false });
        let with: Runtime = serde_json::from_str(r#"{"kind":"process","cmd":"x","warm":true,"token":true}"#).unwrap();
        assert_eq!(with, Runtime::Process { cmd: "x".into(), warm: true, token: true });
        // Without it, a runtime is written as before (function versions compare by it).
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"kind":"process","cmd":"x","warm":true}"#);
        assert!(spec(Runtime::Process { cmd: "x".into(), warm: false, token: true }).validate().is_err());
        for bad in [r#"{"kind":"process","cmd":"x","wram":true}"#, r#"{"kind":"wasm","cmd":"x"}"#] {
            let err = serde_json::from_str::<Runtime>(bad).expect_err(bad).to_string();
            assert!(err.contains("unknown field"), "{bad}: {err}");
        }
    }

    #[test]
    fn commands_and_environments_that_cannot_start_are_refused_at_deploy() {
        let process = |cmd: &str| Runtime::Process { cmd: cmd.into(), warm: false, token: false };
        assert!(spec(process("python3 main.py")).validate().is_ok());
        for (cmd, says) in [("a\0b", "NUL"), (&"x".repeat(MAX_CMD_BYTES + 1), "longer than")] {
            let err = spec(process(cmd)).validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let mut big = spec(process("x"));
        big.env = (0..300).map(|i| (format!("V{i}"), "y".repeat(1000))).collect();
        assert!(big.validate().unwrap_err().to_string().contains("bytes of variables"));
        let mut many = spec(process("x"));
        many.env = (0..=MAX_ENV_VARS).map(|i| (format!("V{i}"), String::new())).collect();
        assert!(many.validate().unwrap_err().to_string().contains("variables"));
    }
}
