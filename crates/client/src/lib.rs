//! Rust SDK for the Stratus HTTP API. The `stratus` CLI is built on it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stratus_client::Error> {
//! let client = stratus_client::Client::new("http://127.0.0.1:7878");
//! let out = client.invoke("hello", b"world".to_vec()).await?;
//! println!("{}", String::from_utf8_lossy(&out.output));
//! let id = client.call_async("hello", b"later".to_vec()).await?;
//! let later = client.wait(id).await?;
//! # Ok(()) }
//! ```

use reqwest::{Method, StatusCode};
use std::borrow::Cow;
use std::time::Duration;
pub use stratus_core::api::LimitInfo;
pub use stratus_core::api::PyEnvInfo;
pub use stratus_core::api::{
    Accepted, DeployRequest, FunctionInfo, InvocationInfo, JobInfo, NodeInfo, ObjectInfo, Registration, ResultsPage,
    SandboxInfo, WorkerInfo,
};
pub use stratus_core::api::{
    AttemptSettingsInfo, ProjectInfo, SecretInfo, SettingValue, TokenCreated, TokenInfo, TokenRequest, VariableRequest,
};
use stratus_core::api::{AuditList, ProjectList, ProjectRequest, TokenList};
use stratus_core::api::{
    CompleteRequest, ErrorBody, FunctionError, FunctionList, Heartbeat, InvocationList, JobCancelled, JobList,
    JobRequest, LeaseRequest, Leased, ObjectList, ObjectStored, RegisterRequest, WorkerList,
};
use stratus_core::api::{LimitList, LimitRequest, PyEnvList, PyEnvRequest, SecretList, SecretRequest, VariableList};
pub use stratus_core::settings::Variable;
pub use stratus_core::trust::{AuditEntry, Quotas, Role};
pub use stratus_core::{Attempt, Failure, Id, Invocation, InvocationState, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Stratus server at {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    #[error("http error: {0}")]
    Http(#[from] reqwest::Error),
    /// The server refused the request.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    /// The function ran and did not succeed.
    #[error("invocation {} {}: {message}", invocation.id, invocation.state)]
    FunctionFailed { invocation: Box<Invocation>, message: String, logs_tail: String },
    #[error("unexpected response: {0}")]
    Protocol(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result of a successful synchronous invoke.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub id: Id,
    pub output: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base_url: &str) -> Self {
        let http = reqwest::Client::builder().tcp_nodelay(true).build().expect("http client");
        Client { base: base_url.trim_end_matches('/').to_string(), http }
    }

    /// This client, sending `token` (`Authorization: Bearer`) with every
    /// request and, for an admin token, acting in `project`.
    pub fn with_auth(self, token: Option<&str>, project: Option<&str>) -> Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .map_err(|_| Error::Protocol("the token has characters a header cannot carry".into()))?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        if let Some(p) = project {
            let v = reqwest::header::HeaderValue::from_str(p)
                .map_err(|_| Error::Protocol(format!("invalid project name '{p}'")))?;
            headers.insert("stratus-project", v);
        }
        let http = reqwest::Client::builder().tcp_nodelay(true).default_headers(headers).build()?;
        Ok(Client { base: self.base, http })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let res = req.send().await.map_err(|e| {
            if e.is_connect() { Error::Connect { url: self.base.clone(), source: e } } else { Error::Http(e) }
        })?;
        if res.status().is_success() {
            return Ok(res);
        }
        Err(error_from(res).await)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T> {
        let res = self.send(req).await?;
        let bytes = res.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{e}")))
    }

    pub async fn health(&self) -> Result<()> {
        self.send(self.http.get(self.url("/healthz"))).await.map(|_| ())
    }

    /// Uploads an artifact unless the server already has it; returns its digest.
    pub async fn upload_artifact(&self, bytes: Vec<u8>) -> Result<String> {
        let digest = stratus_core_digest(&bytes);
        let path = format!("/v1/artifacts/{digest}");
        let head = self
            .http
            .request(Method::HEAD, self.url(&path))
            .send()
            .await
            .map_err(|e| Error::Connect { url: self.base.clone(), source: e })?;
        if head.status() != StatusCode::OK {
            self.send(self.http.put(self.url(&path)).body(bytes)).await?;
        }
        Ok(digest)
    }

    pub async fn deploy(&self, name: &str, req: &DeployRequest) -> Result<FunctionInfo> {
        self.json(self.http.put(self.url(&format!("/v1/functions/{name}"))).json(req)).await
    }

    /// What the server is and runs (`GET /v1/info`): version, local slots,
    /// and which sandbox layers its process functions have.
    pub async fn info(&self) -> Result<NodeInfo> {
        self.json(self.http.get(self.url("/v1/info"))).await
    }

    /// The token's name, role and project (`GET /v1/whoami`).
    pub async fn whoami(&self) -> Result<serde_json::Value> {
        self.json(self.http.get(self.url("/v1/whoami"))).await
    }

    /// A single-use dashboard login code: `{code, path, expires_at}`, where
    /// `path` (with `next`, a dashboard page) logs a browser in.
    pub async fn dashboard_code(&self, next: Option<&str>) -> Result<serde_json::Value> {
        let mut req = self.http.post(self.url("/v1/dashboard/codes"));
        if let Some(n) = next {
            req = req.query(&[("next", n)]);
        }
        self.json(req).await
    }

    pub async fn create_project(&self, name: &str) -> Result<ProjectInfo> {
        self.json(self.http.post(self.url("/v1/projects")).json(&ProjectRequest { name: name.into() })).await
    }

    pub async fn list_projects(&self) -> Result<Vec<ProjectInfo>> {
        let l: ProjectList = self.json(self.http.get(self.url("/v1/projects"))).await?;
        Ok(l.projects)
    }

    pub async fn get_project(&self, name: &str) -> Result<ProjectInfo> {
        self.json(self.http.get(self.url(&format!("/v1/projects/{name}")))).await
    }

    /// Sets a project's quotas, all at once (a limit left out takes its default).
    pub async fn set_quotas(&self, name: &str, quotas: &Quotas) -> Result<ProjectInfo> {
        self.json(self.http.put(self.url(&format!("/v1/projects/{name}/quotas"))).json(quotas)).await
    }

    /// Applies a project's retention now; returns how many invocations were emptied.
    pub async fn purge_project(&self, name: &str) -> Result<u64> {
        let p: stratus_core::api::Purged =
            self.json(self.http.post(self.url(&format!("/v1/projects/{name}/purge")))).await?;
        Ok(p.purged)
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/projects/{name}")))).await.map(|_| ())
    }

    /// Creates a token; the answer is the only place its secret is shown.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated> {
        self.json(self.http.post(self.url("/v1/tokens")).json(req)).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let l: TokenList = self.json(self.http.get(self.url("/v1/tokens"))).await?;
        Ok(l.tokens)
    }

    pub async fn revoke_token(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/tokens/{name}")))).await.map(|_| ())
    }

    pub async fn set_variable(&self, name: &str, req: &VariableRequest) -> Result<Variable> {
        self.json(self.http.put(self.url(&format!("/v1/variables/{name}"))).json(req)).await
    }

    pub async fn get_variable(&self, name: &str) -> Result<Variable> {
        self.json(self.http.get(self.url(&format!("/v1/variables/{name}")))).await
    }

    pub async fn list_variables(&self) -> Result<Vec<Variable>> {
        let l: VariableList = self.json(self.http.get(self.url("/v1/variables"))).await?;
        Ok(l.variables)
    }

    pub async fn delete_variable(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/variables/{name}")))).await.map(|_| ())
    }

    pub async fn set_secret(&self, name: &str, value: String) -> Result<SecretInfo> {
        let req = SecretRequest { value };
        self.json(self.http.put(self.url(&format!("/v1/secrets/{name}"))).json(&req)).await
    }

    pub async fn list_secrets(&self) -> Result<Vec<SecretInfo>> {
        let l: SecretList = self.json(self.http.get(self.url("/v1/secrets"))).await?;
        Ok(l.secrets)
    }

    pub async fn delete_secret(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/secrets/{name}")))).await.map(|_| ())
    }

    /// The variables and secrets attempt `attempt` of `invocation`, running
    /// on `worker`, reads.
    pub async fn attempt_settings(&self, worker: &str, invocation: Id, attempt: u32) -> Result<AttemptSettingsInfo> {
        self.json(self.http.get(self.url(&format!("/v1/workers/{worker}/attempts/{invocation}/{attempt}/settings"))))
            .await
    }

    /// Audit entries from `since` (ms since the epoch) on, oldest first.
    pub async fn audit(&self, since: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let req =
            self.http.get(self.url("/v1/audit")).query(&[("since", since.to_string()), ("limit", limit.to_string())]);
        let l: AuditList = self.json(req).await?;
        Ok(l.entries)
    }

    pub async fn list_functions(&self) -> Result<Vec<FunctionInfo>> {
        let l: FunctionList = self.json(self.http.get(self.url("/v1/functions"))).await?;
        Ok(l.functions)
    }

    pub async fn get_function(&self, name: &str) -> Result<FunctionInfo> {
        self.json(self.http.get(self.url(&format!("/v1/functions/{name}")))).await
    }

    pub async fn delete_function(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/functions/{name}")))).await.map(|_| ())
    }

    /// Invokes and waits for the result. A function that fails or times out
    /// is [`Error::FunctionFailed`].
    pub async fn invoke(&self, name: &str, input: Vec<u8>) -> Result<Invoked> {
        self.invoke_tagged(name, input, &[]).await
    }

    /// [`Self::invoke`], the call carrying concurrency `tags`.
    pub async fn invoke_tagged(&self, name: &str, input: Vec<u8>, tags: &[String]) -> Result<Invoked> {
        let mut req = self.http.post(self.url(&format!("/v1/functions/{name}/invoke"))).body(input);
        if !tags.is_empty() {
            req = req.query(&[("tags", tags.join(","))]);
        }
        let res = self.send(req).await?;
        if res.status() == StatusCode::ACCEPTED {
            // Still running after the server's wait limit: keep waiting.
            let a: Accepted =
                serde_json::from_slice(&res.bytes().await?).map_err(|e| Error::Protocol(e.to_string()))?;
            let output = self.wait(a.id).await?;
            return Ok(Invoked { id: a.id, output });
        }
        let id = res
            .headers()
            .get("x-stratus-invocation-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Protocol("missing x-stratus-invocation-id".into()))?;
        Ok(Invoked { id, output: res.bytes().await?.to_vec() })
    }

    /// Queues an invocation; returns its id once it is durably accepted.
    pub async fn call_async(&self, name: &str, input: Vec<u8>) -> Result<Id> {
        self.call_async_tagged(name, input, &[]).await
    }

    /// [`Self::call_async`], the call carrying concurrency `tags`.
    pub async fn call_async_tagged(&self, name: &str, input: Vec<u8>, tags: &[String]) -> Result<Id> {
        let mut req = self.http.post(self.url(&format!("/v1/functions/{name}/invoke?async=true"))).body(input);
        if !tags.is_empty() {
            req = req.query(&[("tags", tags.join(","))]);
        }
        let a: Accepted = self.json(req).await?;
        Ok(a.id)
    }

    // ---- concurrency limits ----

    pub async fn set_limit(&self, tag: &str, slots: u32) -> Result<LimitInfo> {
        self.json(self.http.put(self.url(&format!("/v1/limits/{tag}"))).json(&LimitRequest { slots })).await
    }

    pub async fn list_limits(&self) -> Result<Vec<LimitInfo>> {
        let l: LimitList = self.json(self.http.get(self.url("/v1/limits"))).await?;
        Ok(l.limits)
    }

    /// A limit with the attempts holding its slots and those waiting.
    pub async fn get_limit(&self, tag: &str) -> Result<LimitInfo> {
        self.json(self.http.get(self.url(&format!("/v1/limits/{tag}")))).await
    }

    pub async fn delete_limit(&self, tag: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/limits/{tag}")))).await.map(|_| ())
    }

    /// Sets a Python environment; this server's slots start installing it.
    pub async fn set_pyenv(&self, name: &str, requirements: &str, python: Option<&str>) -> Result<PyEnvInfo> {
        let body = PyEnvRequest { requirements: requirements.to_string(), python: python.map(str::to_string) };
        self.json(self.http.put(self.url(&format!("/v1/pyenvs/{name}"))).json(&body)).await
    }

    pub async fn list_pyenvs(&self) -> Result<Vec<PyEnvInfo>> {
        let l: PyEnvList = self.json(self.http.get(self.url("/v1/pyenvs"))).await?;
        Ok(l.pyenvs)
    }

    pub async fn get_pyenv(&self, name: &str) -> Result<PyEnvInfo> {
        self.json(self.http.get(self.url(&format!("/v1/pyenvs/{name}")))).await
    }

    pub async fn delete_pyenv(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/pyenvs/{name}")))).await.map(|_| ())
    }

    /// Releases every slot of the tag (admin).
    pub async fn reset_limit(&self, tag: &str) -> Result<LimitInfo> {
        self.json(self.http.post(self.url(&format!("/v1/limits/{tag}/reset")))).await
    }

    /// The invocation, waiting up to `wait` for it to finish.
    pub async fn get_invocation(&self, id: Id, wait: Option<Duration>) -> Result<InvocationInfo> {
        let mut req = self.http.get(self.url(&format!("/v1/invocations/{id}")));
        if let Some(w) = wait {
            req = req.query(&[("wait", w.as_secs_f64().to_string())]);
        }
        self.json(req).await
    }

    pub async fn list_invocations(&self, function: Option<&str>, limit: u32) -> Result<Vec<Invocation>> {
        let mut req = self.http.get(self.url("/v1/invocations")).query(&[("limit", limit.to_string())]);
        if let Some(f) = function {
            req = req.query(&[("function", f)]);
        }
        let l: InvocationList = self.json(req).await?;
        Ok(l.invocations)
    }

    /// Waits until the invocation finishes; its output, or why it failed.
    pub async fn wait(&self, id: Id) -> Result<Vec<u8>> {
        loop {
            let info = self.get_invocation(id, Some(Duration::from_secs(60))).await?;
            let inv = info.invocation;
            match inv.state {
                InvocationState::Succeeded => return self.output(id).await,
                s if s.is_terminal() => {
                    let logs = self.logs(id).await.unwrap_or_default();
                    let tail = String::from_utf8_lossy(&logs[logs.len().saturating_sub(4096)..]).into_owned();
                    let message = inv.error.as_ref().map(|e| e.message.clone()).unwrap_or_else(|| s.to_string());
                    return Err(Error::FunctionFailed { invocation: Box::new(inv), message, logs_tail: tail });
                }
                _ => continue,
            }
        }
    }

    pub async fn output(&self, id: Id) -> Result<Vec<u8>> {
        Ok(self.send(self.http.get(self.url(&format!("/v1/invocations/{id}/output")))).await?.bytes().await?.to_vec())
    }

    pub async fn logs(&self, id: Id) -> Result<Vec<u8>> {
        Ok(self.send(self.http.get(self.url(&format!("/v1/invocations/{id}/logs")))).await?.bytes().await?.to_vec())
    }
}

async fn error_from(res: reqwest::Response) -> Error {
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap_or_default();
    if let Ok(FunctionError { error, invocation, logs_tail }) = serde_json::from_slice(&bytes) {
        return Error::FunctionFailed { invocation: Box::new(invocation), message: error.message, logs_tail };
    }
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => Error::Api { status, code: b.error.code, message: b.error.message },
        Err(_) => Error::Api {
            status,
            code: "http".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
        },
    }
}

fn stratus_core_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

pub use stratus_core::wire::{TaskResultView, WireCompletion, WireTask};
pub use stratus_core::{Job, JobState};

/// Where a map job's tasks come from.
#[derive(Debug, Clone)]
pub enum MapSource {
    /// One task per value; its JSON text is the task's stdin.
    Inputs(Vec<serde_json::Value>),
    /// One task per object under `bucket/prefix`, or per chunk of
    /// `chunk_size` bytes cut at line ends.
    Objects { prefix: String, chunk_size: Option<u64> },
}

impl Client {
    // ---- events and triggers ----

    /// Publishes CloudEvents in structured JSON (one object, or an array);
    /// answers `{"accepted", "stored", "duplicates"}` once they are committed.
    pub async fn publish_events(&self, events: &serde_json::Value) -> Result<serde_json::Value> {
        self.json(self.http.post(self.url("/v1/events")).json(events)).await
    }

    /// One page of the event stream after `after`: `{"events", "next_after"}`.
    pub async fn events(
        &self,
        after: u64,
        limit: u32,
        ty: Option<&str>,
        subject_prefix: Option<&str>,
    ) -> Result<serde_json::Value> {
        let mut q = vec![("after", after.to_string()), ("limit", limit.to_string())];
        q.extend(ty.map(|t| ("type", t.to_string())));
        q.extend(subject_prefix.map(|p| ("subject_prefix", p.to_string())));
        self.json(self.http.get(self.url("/v1/events")).query(&q)).await
    }

    /// The event stream from `after` on, as it grows: NDJSON, one event per line.
    pub async fn follow_events(
        &self,
        after: u64,
        ty: Option<&str>,
        subject_prefix: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut q = vec![("after", after.to_string()), ("follow", "true".to_string())];
        q.extend(ty.map(|t| ("type", t.to_string())));
        q.extend(subject_prefix.map(|p| ("subject_prefix", p.to_string())));
        self.send(self.http.get(self.url("/v1/events")).query(&q)).await
    }

    /// Creates a trigger from `{"name", "on", ..., "action"}`.
    pub async fn create_trigger(&self, trigger: &serde_json::Value) -> Result<serde_json::Value> {
        self.json(self.http.post(self.url("/v1/triggers")).json(trigger)).await
    }

    pub async fn list_triggers(&self) -> Result<Vec<serde_json::Value>> {
        let mut l: serde_json::Value = self.json(self.http.get(self.url("/v1/triggers"))).await?;
        Ok(match l["triggers"].take() {
            serde_json::Value::Array(a) => a,
            _ => Vec::new(),
        })
    }

    pub async fn get_trigger(&self, name: &str) -> Result<serde_json::Value> {
        self.json(self.http.get(self.url(&format!("/v1/triggers/{name}")))).await
    }

    pub async fn delete_trigger(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/triggers/{name}")))).await.map(|_| ())
    }

    /// Creates a schedule from `{"name", "timing", "action", ...}`.
    pub async fn create_schedule(&self, schedule: &serde_json::Value) -> Result<serde_json::Value> {
        self.json(self.http.post(self.url("/v1/schedules")).json(schedule)).await
    }

    pub async fn list_schedules(&self) -> Result<Vec<serde_json::Value>> {
        let mut l: serde_json::Value = self.json(self.http.get(self.url("/v1/schedules"))).await?;
        Ok(match l["schedules"].take() {
            serde_json::Value::Array(a) => a,
            _ => Vec::new(),
        })
    }

    pub async fn get_schedule(&self, name: &str) -> Result<serde_json::Value> {
        self.json(self.http.get(self.url(&format!("/v1/schedules/{name}")))).await
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/schedules/{name}")))).await.map(|_| ())
    }

    /// Pauses or resumes a schedule.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<serde_json::Value> {
        let verb = if paused { "pause" } else { "resume" };
        self.json(self.http.post(self.url(&format!("/v1/schedules/{name}/{verb}")))).await
    }

    /// Fires a schedule's nominal times from `from` to `to` (RFC 3339): `{"fired"}`.
    pub async fn backfill_schedule(&self, name: &str, from: &str, to: &str) -> Result<serde_json::Value> {
        let body = serde_json::json!({"from": from, "to": to});
        self.json(self.http.post(self.url(&format!("/v1/schedules/{name}/backfill"))).json(&body)).await
    }

    /// Enables or disables a trigger.
    pub async fn enable_trigger(&self, name: &str, enabled: bool) -> Result<serde_json::Value> {
        let verb = if enabled { "enable" } else { "disable" };
        self.json(self.http.post(self.url(&format!("/v1/triggers/{name}/{verb}")))).await
    }
}

impl Client {
    // ---- objects ----

    /// Stores an object from a byte stream (never held whole in memory).
    pub async fn put_object(&self, key: &str, body: reqwest::Body) -> Result<u64> {
        let p: ObjectStored = self.json(self.http.put(self.url(&format!("/v1/objects/{key}"))).body(body)).await?;
        Ok(p.size)
    }

    /// The object as a streaming response (use `bytes_stream()` or `chunk()`).
    pub async fn get_object(&self, key: &str) -> Result<reqwest::Response> {
        self.send(self.http.get(self.url(&format!("/v1/objects/{key}")))).await
    }

    pub async fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let req = self.http.get(self.url(&format!("/v1/objects/{bucket}"))).query(&[("prefix", prefix)]);
        Ok(self.json::<ObjectList>(req).await?.objects)
    }

    pub async fn delete_object(&self, key: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/objects/{key}")))).await.map(|_| ())
    }

    // ---- jobs (the Lithops-style API) ----

    /// Starts a map (with `reduce`, a map_reduce) job; returns it once it is
    /// durably accepted.
    pub async fn map_job(&self, function: &str, source: MapSource, reduce: Option<&str>) -> Result<JobInfo> {
        self.map_job_tagged(function, source, reduce, &[]).await
    }

    /// [`Self::map_job`], every task carrying concurrency `tags`.
    pub async fn map_job_tagged(
        &self,
        function: &str,
        source: MapSource,
        reduce: Option<&str>,
        tags: &[String],
    ) -> Result<JobInfo> {
        let mut body = JobRequest {
            function: function.to_string(),
            reduce: reduce.map(String::from),
            inputs: None,
            objects: None,
            chunk_size: None,
            tags: tags.to_vec(),
        };
        match source {
            MapSource::Inputs(inputs) => body.inputs = Some(inputs),
            MapSource::Objects { prefix, chunk_size } => {
                body.objects = Some(prefix);
                body.chunk_size = chunk_size;
            }
        }
        self.json(self.http.post(self.url("/v1/jobs")).json(&body)).await
    }

    /// `map` over inputs sent as a stream of NDJSON lines (any number of them).
    pub async fn map_ndjson(
        &self,
        function: &str,
        reduce: Option<&str>,
        tags: &[String],
        lines: reqwest::Body,
    ) -> Result<JobInfo> {
        let mut req = self
            .http
            .post(self.url("/v1/jobs"))
            .header("content-type", "application/x-ndjson")
            .query(&[("function", function)])
            .body(lines);
        if !tags.is_empty() {
            req = req.query(&[("tags", tags.join(","))]);
        }
        if let Some(r) = reduce {
            req = req.query(&[("reduce", r)]);
        }
        self.json(req).await
    }

    /// `map` over inputs.
    pub async fn map(&self, function: &str, inputs: Vec<serde_json::Value>) -> Result<JobInfo> {
        self.map_job(function, MapSource::Inputs(inputs), None).await
    }

    /// `map_reduce` over inputs.
    pub async fn map_reduce(&self, function: &str, inputs: Vec<serde_json::Value>, reducer: &str) -> Result<JobInfo> {
        self.map_job(function, MapSource::Inputs(inputs), Some(reducer)).await
    }

    pub async fn get_job(&self, id: Id, wait: Option<Duration>, failures: usize) -> Result<JobInfo> {
        let mut req = self.http.get(self.url(&format!("/v1/jobs/{id}")));
        if let Some(w) = wait {
            req = req.query(&[("wait", w.as_secs_f64().to_string())]);
        }
        if failures > 0 {
            req = req.query(&[("failures", failures.to_string())]);
        }
        self.json(req).await
    }

    /// Waits until the job ends.
    pub async fn wait_job(&self, id: Id) -> Result<JobInfo> {
        loop {
            let j = self.get_job(id, Some(Duration::from_secs(30)), 0).await?;
            if j.job.state.is_terminal() {
                return Ok(j);
            }
        }
    }

    pub async fn list_jobs(&self, limit: u32) -> Result<Vec<JobInfo>> {
        Ok(self.json::<JobList>(self.http.get(self.url("/v1/jobs")).query(&[("limit", limit.to_string())])).await?.jobs)
    }

    pub async fn results_page(&self, id: Id, from: u64, limit: u32) -> Result<ResultsPage> {
        let req = self
            .http
            .get(self.url(&format!("/v1/jobs/{id}/results")))
            .query(&[("from", from.to_string()), ("limit", limit.to_string())]);
        self.json(req).await
    }

    /// Every task result of a job, in input order.
    pub async fn results(&self, id: Id) -> Result<Vec<TaskResultView>> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let page = self.results_page(id, from, 1000).await?;
            out.extend(page.results);
            match page.next {
                Some(n) => from = n,
                None => return Ok(out),
            }
        }
    }

    /// When each of a job's tasks was queued, started and finished, in input order.
    pub async fn job_timings(&self, id: Id) -> Result<Vec<stratus_core::api::TaskTiming>> {
        let mut out = Vec::new();
        let mut from = Some(0u64);
        while let Some(start) = from {
            let req = self
                .http
                .get(self.url(&format!("/v1/jobs/{id}/timings")))
                .query(&[("from", start.to_string()), ("limit", "10000".to_string())]);
            let page: stratus_core::api::TimingsPage = self.json(req).await?;
            out.extend(page.tasks);
            from = page.next;
        }
        Ok(out)
    }

    pub async fn cancel_job(&self, id: Id) -> Result<u64> {
        Ok(self
            .json::<JobCancelled>(self.http.post(self.url(&format!("/v1/jobs/{id}/cancel"))))
            .await?
            .cancelled_queued)
    }

    // ---- workers ----

    pub async fn list_workers(&self) -> Result<Vec<WorkerInfo>> {
        Ok(self.json::<WorkerList>(self.http.get(self.url("/v1/workers"))).await?.workers)
    }

    pub async fn register_worker(&self, name: &str, host: &str, slots: usize) -> Result<Registration> {
        let body = RegisterRequest { name: name.to_string(), host: host.to_string(), slots };
        self.json(self.http.post(self.url("/v1/workers")).json(&body)).await
    }

    /// Tells the server this worker stopped cleanly (its completions are
    /// delivered), so it leaves the list at once.
    pub async fn deregister_worker(&self, worker: &str) -> Result<()> {
        self.send(self.http.delete(self.url(&format!("/v1/workers/{worker}")))).await.map(|_| ())
    }

    /// Ids of this worker's tasks to cancel. [`Error::Api`] with status 410
    /// means the server declared the worker lost.
    pub async fn heartbeat(&self, worker: &str) -> Result<Vec<Id>> {
        Ok(self.heartbeat_lent(worker).await?.0)
    }

    /// The attempts to cancel, and the slots lent to the worker now.
    pub async fn heartbeat_lent(&self, worker: &str) -> Result<(Vec<Id>, u32)> {
        let h = self.json::<Heartbeat>(self.http.post(self.url(&format!("/v1/workers/{worker}/heartbeat")))).await?;
        Ok((h.cancel, h.lent))
    }

    pub async fn lease(&self, worker: &str, max: usize, wait: Duration) -> Result<Vec<WireTask>> {
        Ok(self.lease_lent(worker, max, wait).await?.0)
    }

    /// Tasks, and the slots lent to the worker now (as many of its
    /// attempts wait for calls of their own).
    pub async fn lease_lent(&self, worker: &str, max: usize, wait: Duration) -> Result<(Vec<WireTask>, u32)> {
        let body = LeaseRequest { max, wait_ms: wait.as_millis() as u64 };
        let l =
            self.json::<Leased>(self.http.post(self.url(&format!("/v1/workers/{worker}/lease"))).json(&body)).await?;
        Ok((l.tasks, l.lent))
    }

    pub async fn complete(&self, worker: &str, completions: &[WireCompletion]) -> Result<()> {
        let body = CompleteRequest { completions: Cow::Borrowed(completions) };
        self.send(self.http.post(self.url(&format!("/v1/workers/{worker}/complete"))).json(&body)).await.map(|_| ())
    }

    pub async fn artifact(&self, digest: &str) -> Result<bytes::Bytes> {
        Ok(self.send(self.http.get(self.url(&format!("/v1/artifacts/{digest}")))).await?.bytes().await?)
    }

    /// A byte range of an object of `project` (a worker reads any project's).
    pub async fn object_range(
        &self,
        project: &str,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<reqwest::Response> {
        let mut req = self.http.get(self.url(&format!("/v1/objects/{key}"))).header("stratus-project", project);
        if let Some(r) = range {
            if r.start >= r.end {
                return Err(Error::Protocol("empty range".into()));
            }
            req = req.header("range", format!("bytes={}-{}", r.start, r.end - 1));
        }
        self.send(req).await
    }
}
