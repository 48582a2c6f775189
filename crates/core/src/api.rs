//! The bodies of the HTTP API: what clients send and what the server answers,
//! declared once for both (`stratus-server` serialises them, `stratus-client`
//! reads them). Serde only; field names, and which optional fields are left
//! out or sent as `null`, are the API's contract, so each says which.

use crate::clock::Millis;
use crate::wire::{TaskResultView, WireBroker, WireCompletion, WireTask};
use crate::{Attempt, Function, Id, Invocation, InvocationState, Job, Runtime};
use serde::{Deserialize, Deserializer, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `not_found`, `function_failed`.
    pub code: String,
    pub message: String,
}

/// The answer of a synchronous invoke whose function failed or timed out:
/// the error, the invocation, and the end of its logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionError {
    pub error: ErrorDetail,
    pub invocation: Invocation,
    #[serde(default)]
    pub logs_tail: String,
}

/// The body of `PUT /v1/functions/{name}`; `artifact` is the sha256 of an
/// uploaded artifact. Limits left out take the platform's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub runtime: Runtime,
    pub artifact: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Processes the function's tree may have at once (process functions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_procs: Option<u32>,
    /// CPU cores the function may use (process functions), e.g. 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub retries: u32,
    /// Outbound network for a process function.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network: bool,
    /// The project's variables it reads, each in the environment variable
    /// of its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    /// The project's secrets it reads, each in the environment variable
    /// named with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::settings::SecretRef>,
    /// Concurrency tags of every attempt (see `PUT /v1/limits/{tag}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// A process function's Python environment: the name of one of the
    /// project's (`PUT /v1/pyenvs/{name}`), pinned at this deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyenv: Option<String>,
    /// Or the packages of its own (a bundle's `requirements.txt`), for
    /// `python` (a minor version such as 3.11; else the worker's python3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// A deployed function, as the API describes it. `cpus` is `null` when the
/// function has no CPU limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionInfo {
    pub name: String,
    pub project: String,
    pub version: u32,
    pub runtime: Runtime,
    pub artifact: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    /// Always sent; optional to read the answers of servers from before it.
    #[serde(default)]
    pub max_procs: Option<u32>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub network: bool,
    pub retries: u32,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
    /// Names and environment variables, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::settings::SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The Python environment it runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyenv: Option<crate::pyenv::PyEnvSpec>,
}

impl From<&Function> for FunctionInfo {
    fn from(f: &Function) -> Self {
        let limits = &f.spec.limits;
        FunctionInfo {
            name: f.name.clone(),
            project: f.project.clone(),
            version: f.version,
            runtime: f.spec.runtime.clone(),
            artifact: f.spec.artifact.clone(),
            env: f.spec.env.clone(),
            timeout_ms: limits.timeout_ms,
            memory_mb: limits.memory_mb,
            max_procs: Some(limits.max_procs),
            cpus: (limits.cpu_millis > 0).then(|| limits.cpu_millis as f64 / 1000.0),
            network: f.spec.network,
            retries: f.spec.retries,
            created_at: f.created_at,
            vars: f.spec.vars.clone(),
            secrets: f.spec.secrets.clone(),
            tags: f.spec.tags.clone(),
            pyenv: f.spec.pyenv.as_deref().cloned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionList {
    pub functions: Vec<FunctionInfo>,
}

/// The answer of an invoke that did not finish in the request: the
/// invocation is `queued` (asynchronous) or `running` (past the wait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    pub id: Id,
    pub state: InvocationState,
}

/// An invocation with its attempt history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvocationInfo {
    #[serde(flatten)]
    pub invocation: Invocation,
    #[serde(default)]
    pub attempt_history: Vec<Attempt>,
}

/// A page of invocations, newest first; `next_before` (`null` on the last
/// page) asks for the next one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvocationList {
    pub invocations: Vec<Invocation>,
    #[serde(default)]
    pub next_before: Option<Id>,
}

/// The JSON body of `POST /v1/jobs`: `inputs` or `objects`, not both.
/// `reduce` is sent as `null` when there is no reducer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub function: String,
    #[serde(default)]
    pub reduce: Option<String>,
    /// One task per value; its JSON text is the task's stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<serde_json::Value>>,
    /// `bucket/prefix`: one task per object, or per chunk with `chunk_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Concurrency tags of every task (and the reducer), beside the
    /// function's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A job as the API shows it: the record and its live counters, and its
/// failed tasks when they were asked for (`?failures=N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    #[serde(flatten)]
    pub job: Job,
    #[serde(default)]
    pub running: u64,
    #[serde(default)]
    pub queued: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<Vec<TaskResultView>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    pub jobs: Vec<JobInfo>,
}

/// One page of a job's results, in input order; `next` (`null` on the last
/// page) is where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResultsPage {
    pub results: Vec<TaskResultView>,
    pub next: Option<u64>,
    /// Present once the job has a reducer invocation: its output, or `null`
    /// while it has none.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub reduce_output: Option<Option<String>>,
}

/// A field that is there, even as `null`, is `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCancelled {
    pub id: Id,
    /// Tasks that were still queued and now never start.
    pub cancelled_queued: u64,
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectList {
    pub objects: Vec<ObjectInfo>,
}

/// The answer of `PUT /v1/objects/{bucket}/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ObjectStored {
    pub key: String,
    pub size: u64,
}

/// The answer of `PUT /v1/artifacts/{digest}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ArtifactStored {
    pub digest: String,
    pub size: u64,
}

/// The body of `POST /v1/workers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub host: String,
    pub slots: usize,
}

/// What a worker learns when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registration {
    pub id: String,
    pub lease_timeout_ms: u64,
    pub heartbeat_ms: u64,
    /// The object store's URL, with its credentials, when workers should use
    /// it directly (S3); absent when objects are local to the server. Never
    /// print or log it unredacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<String>,
    /// Where to take tasks from when the server dispatches through a broker;
    /// absent: lease them from the server. The URL carries credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<WireBroker>,
}

/// A worker as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub slots: usize,
    pub local: bool,
    pub registered_at: i64,
    pub last_heartbeat: i64,
    pub state: String,
    pub running: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// The answer of a heartbeat: the worker's tasks to cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub cancel: Vec<Id>,
    /// Slots lent to the worker now (see [`Leased::lent`]): a worker
    /// whose slots all run waiting attempts hears of its loans here.
    #[serde(default)]
    pub lent: u32,
}

/// One value of an attempt's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingValue {
    /// The environment variable.
    pub name: String,
    pub value: String,
    /// A secret's value, to mask in the attempt's logs.
    pub secret: bool,
}

/// The answer of `GET /v1/workers/{id}/attempts/{invocation}/{attempt}/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptSettingsInfo {
    pub env: Vec<SettingValue>,
}

/// The body of `PUT /v1/variables/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariableRequest {
    pub value: String,
    /// The value is JSON, checked as such [default: false].
    #[serde(default)]
    pub json: bool,
}

/// `GET /v1/variables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VariableList {
    pub variables: Vec<crate::settings::Variable>,
}

/// The body of `PUT /v1/secrets/{name}`: the value, sent once and never
/// shown again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SecretRequest {
    pub value: String,
}

/// A secret as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    pub name: String,
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub created_at: Millis,
    pub updated_at: Millis,
    /// The token that set it last.
    pub updated_by: String,
    /// Which server key seals it (an id, not the key).
    pub key_id: String,
}

/// `GET /v1/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretList {
    pub secrets: Vec<SecretInfo>,
}

/// The body of `PUT /v1/limits/{tag}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// Attempts carrying the tag that may run at once; 0 pauses the tag.
    pub slots: u32,
}

/// An attempt that holds a slot of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitHolder {
    pub invocation: Id,
    pub attempt: u32,
    pub function: String,
    pub worker: String,
    /// Milliseconds since the Unix epoch.
    pub started_at: Millis,
}

/// A limit as the API shows it, with its live occupancy: the attempts that
/// hold one of its slots now, and the invocations the scheduler holds back
/// for want of one. `GET /v1/limits/{tag}` lists them; the list only
/// counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitInfo {
    #[serde(flatten)]
    pub limit: crate::settings::TagLimit,
    pub running: u64,
    pub waiting: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<LimitHolder>>,
    /// The first waiting invocations (at most 100), in the order they run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiters: Option<Vec<Id>>,
}

/// `GET /v1/limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitList {
    pub limits: Vec<LimitInfo>,
}

/// The body of `PUT /v1/pyenvs/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PyEnvRequest {
    /// A requirements file: package requirements only, at most 64 KiB.
    pub requirements: String,
    /// The Python minor version, e.g. "3.11" (default: the worker's python3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// A Python environment as the API shows it: with its digest (the
/// directory workers install it in) and its state on the answering
/// server's own slots: `absent` (not asked for there yet), `installing`,
/// `ready`, `failed` (with pip's `message`), or `no-slots` (that server
/// runs no functions itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PyEnvInfo {
    #[serde(flatten)]
    pub pyenv: crate::pyenv::PyEnv,
    pub digest: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /v1/pyenvs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PyEnvList {
    pub pyenvs: Vec<PyEnvInfo>,
}

/// The body of `POST /v1/workers/{id}/lease`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    pub max: usize,
    #[serde(default)]
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leased {
    pub tasks: Vec<WireTask>,
    /// Slots lent to the worker now: as many of its attempts wait through
    /// the API for calls of their own, and it runs as many more slots.
    #[serde(default)]
    pub lent: u32,
}

/// The body of `POST /v1/workers/{id}/complete`; borrowed when sent, so a
/// worker does not copy its outputs to report them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest<'a> {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<WireCompletion>))]
    pub completions: Cow<'a, [WireCompletion]>,
}

/// What a node is and runs: `GET /v1/info`. `sandbox` is `null` on a node
/// without local slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub version: String,
    pub slots: usize,
    pub sandbox: Option<SandboxInfo>,
}

/// The sandbox layers of a node's process functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxInfo {
    /// Each layer by name, and whether it is on.
    pub layers: BTreeMap<String, bool>,
    /// Whether every layer is on.
    pub all: bool,
    /// The names of the layers that are off.
    pub off: Vec<String>,
    /// Why those layers are off.
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_fields_are_left_out_or_null_as_the_api_says() {
        let page = ResultsPage { results: vec![], next: None, reduce_output: None };
        assert_eq!(serde_json::to_string(&page).unwrap(), r#"{"results":[],"next":null}"#);
        let page = ResultsPage { reduce_output: Some(None), ..page };
        let text = serde_json::to_string(&page).unwrap();
        assert_eq!(text, r#"{"results":[],"next":null,"reduce_output":null}"#);
        assert_eq!(serde_json::from_str::<ResultsPage>(&text).unwrap(), page, "a null output stays present");
        let read: ResultsPage = serde_json::from_str(r#"{"results":[],"next":null}"#).unwrap();
        assert_eq!(read.reduce_output, None);

        let job = JobRequest {
            function: "f".into(),
            reduce: None,
            inputs: Some(vec![1.into()]),
            objects: None,
            chunk_size: None,
            tags: vec![],
        };
        assert_eq!(serde_json::to_string(&job).unwrap(), r#"{"function":"f","reduce":null,"inputs":[1]}"#);

        let deploy = DeployRequest {
            runtime: Runtime::Wasm,
            artifact: "a".into(),
            env: BTreeMap::new(),
            timeout_ms: None,
            memory_mb: None,
            max_procs: None,
            cpus: None,
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
            requirements: None,
            python: None,
        };
        let text = serde_json::to_string(&deploy).unwrap();
        assert_eq!(text, r#"{"runtime":{"kind":"wasm"},"artifact":"a","env":{},"retries":0}"#);
        assert_eq!(
            serde_json::from_str::<DeployRequest>(r#"{"runtime":{"kind":"wasm"},"artifact":"a"}"#).unwrap(),
            deploy
        );
        let typo = serde_json::from_str::<DeployRequest>(r#"{"runtime":{"kind":"wasm"},"artifact":"a","retry":1}"#);
        assert!(typo.unwrap_err().to_string().contains("unknown field"));

        let info = NodeInfo { version: "1".into(), slots: 0, sandbox: None };
        assert_eq!(serde_json::to_string(&info).unwrap(), r#"{"version":"1","slots":0,"sandbox":null}"#);
    }
}

/// The body of `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProjectRequest {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectInfo {
    pub name: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Live functions.
    pub functions: u64,
    /// Tokens not revoked (expired ones included).
    pub tokens: u64,
    /// The limits in force, defaults filled in (`max_object_size` and
    /// `max_running` absent: none).
    pub quotas: crate::trust::Quotas,
    /// Its attempts running now (on the leading server's count).
    #[serde(default)]
    pub running: u64,
    /// The bytes of its objects, when it has a `max_object_bytes` quota
    /// (counted at most a minute ago, and moved by each put and delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_bytes: Option<u64>,
}

/// What `POST /v1/projects/{name}/purge` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Purged {
    /// Invocations whose input, output and logs were dropped.
    pub purged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProjectList {
    pub projects: Vec<ProjectInfo>,
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: crate::trust::Role,
    /// The project it acts in; by default the caller's. Not for a worker token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Unique among tokens not revoked; by default `ROLE-` and 8 random characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// It expires this many seconds after its creation; by default never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
}

/// A token just created: the only answer that ever holds its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub token: String,
    pub name: String,
    /// Empty for a worker token.
    pub project: String,
    pub role: crate::trust::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub name: String,
    pub project: String,
    pub role: crate::trust::Role,
    pub created_at: i64,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    pub entries: Vec<crate::trust::AuditEntry>,
}

/// When one task of a job was queued, started and finished, and where: the
/// rows of a job's timeline (`GET /v1/jobs/{id}/timings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskTiming {
    pub index: u64,
    pub invocation: Id,
    pub state: crate::InvocationState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub queued_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
}

/// A page of a job's task timings, in input order; `next` asks for the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimingsPage {
    pub tasks: Vec<TaskTiming>,
    pub next: Option<u64>,
}
