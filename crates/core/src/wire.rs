//! What crosses the wire between the server and remote workers, and how job
//! results look to clients. Bytes travel as base64.

use crate::{Completion, Failure, Function, Id, Partition, Task};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

pub mod b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WireTask {
    pub invocation: Id,
    pub attempt: u32,
    /// The function version to run, as stored.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub function: Function,
    /// The input, base64.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub input: Vec<u8>,
    /// A byte range of an object to read as the input instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub partition: Option<Partition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Id>,
    /// The attempt's API token, for a process function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<&Task> for WireTask {
    fn from(t: &Task) -> Self {
        WireTask {
            invocation: t.invocation,
            attempt: t.attempt,
            function: (*t.function).clone(),
            input: t.input.clone(),
            partition: t.partition.clone(),
            job: t.job,
            token: t.token.clone(),
        }
    }
}

impl From<WireTask> for Task {
    fn from(w: WireTask) -> Self {
        Task {
            invocation: w.invocation,
            attempt: w.attempt,
            function: Arc::new(w.function),
            input: w.input,
            partition: w.partition,
            job: w.job,
            token: w.token,
        }
    }
}

/// A dispatch message on the broker's work queue: tasks a server hands to
/// whichever worker takes the message. The worker acknowledges it once the
/// server has recorded the results of all of them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireDispatch {
    pub tasks: Vec<WireTask>,
}

/// Where workers take their tasks from when the server dispatches through a
/// message broker; part of the registration answer. The URL carries
/// credentials: never print or log it unredacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WireBroker {
    pub url: String,
    pub queue: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WireCompletion {
    pub invocation: Id,
    pub attempt: u32,
    pub started_at: i64,
    pub finished_at: i64,
    /// The output, base64, when the attempt succeeded.
    #[serde(default, with = "opt_b64", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub output: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The captured stderr, base64.
    #[serde(with = "b64")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub logs: Vec<u8>,
    /// The attempt's token as its task carried it (required of the end of
    /// an attempt dispatched through the broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
}

mod opt_b64 {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom)).transpose()
    }
}

impl WireCompletion {
    pub fn from_completion(c: &Completion) -> Self {
        let (output, error) = match &c.result {
            Ok(o) => (Some(o.clone()), None),
            Err(f) => (None, Some(f.clone())),
        };
        WireCompletion {
            invocation: c.invocation,
            attempt: c.attempt,
            started_at: c.started_at,
            finished_at: c.finished_at,
            output,
            error,
            logs: c.logs.clone(),
            claim: c.claim.clone(),
        }
    }

    /// The completion, as reported by `worker`. One with neither an output
    /// nor an error counts as an empty output.
    pub fn into_completion(self, worker: &str) -> Completion {
        let result = match (self.output, self.error) {
            (_, Some(e)) => Err(e),
            (o, None) => Ok(o.unwrap_or_default()),
        };
        Completion {
            invocation: self.invocation,
            attempt: self.attempt,
            worker: worker.to_string(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            result,
            logs: self.logs,
            claim: self.claim,
        }
    }
}

/// One task's result in a job, as clients read it: the output as text when
/// it is UTF-8, else as base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskResultView {
    pub index: u64,
    pub invocation: Id,
    pub status: crate::InvocationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl TaskResultView {
    pub fn new(
        index: u64,
        invocation: Id,
        status: crate::InvocationState,
        output: Option<Vec<u8>>,
        error: Option<Failure>,
    ) -> Self {
        let (output, output_base64) = match output {
            None => (None, None),
            Some(b) => match String::from_utf8(b) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(STANDARD.encode(e.into_bytes()))),
            },
        };
        TaskResultView { index, invocation, status, output, output_base64, error }
    }

    /// The output bytes, whichever way they travelled.
    pub fn output_bytes(&self) -> Option<Vec<u8>> {
        match (&self.output, &self.output_base64) {
            (Some(s), _) => Some(s.clone().into_bytes()),
            (None, Some(b)) => STANDARD.decode(b).ok(),
            _ => None,
        }
    }
}
