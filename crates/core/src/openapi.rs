//! OpenAPI schemas (utoipa) of the records the API sends as they are: ids,
//! invocations, attempts, jobs, runtimes, task results and the worker
//! protocol's tasks and completions.
//!
//! Those types live in [`crate::model`] and [`crate::wire`], which keep no
//! documentation concerns; each gets its schema here from a mirror that
//! follows its serde attributes. The tests below check every mirror against
//! what its type really serialises, so a field added to one and not the
//! other fails the build's tests, not a client.

use crate::wire::{TaskResultView, WireBroker, WireCompletion, WireTask};
use crate::{Attempt, Failure, FailureKind, Id, Invocation, InvocationState, Job, JobState, Runtime};
use std::borrow::Cow;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

/// Gives `$ty` the schema of the mirror `$doc`, under the name `$name`.
macro_rules! schema_from_mirror {
    ($($ty:ty => $doc:ty),* $(,)?) => {$(
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                <$doc as PartialSchema>::schema()
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($ty))
            }
            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <$doc as ToSchema>::schemas(schemas)
            }
        }
    )*};
}

schema_from_mirror! {
    Invocation => InvocationDoc,
    Attempt => AttemptDoc,
    Failure => FailureDoc,
    FailureKind => FailureKindDoc,
    InvocationState => InvocationStateDoc,
    Job => JobDoc,
    JobState => JobStateDoc,
    Runtime => RuntimeDoc,
    TaskResultView => TaskResultViewDoc,
    WireBroker => WireBrokerDoc,
    WireTask => WireTaskDoc,
    WireCompletion => WireCompletionDoc,
}

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uuid".into())))
            .description(Some("A UUIDv7: unique, and ordered by creation time"))
            .into()
    }
}

impl ToSchema for Id {}

/// An invocation as stored, without its payloads.
#[derive(ToSchema)]
#[allow(dead_code)]
struct InvocationDoc {
    id: Id,
    project: String,
    function: String,
    version: u32,
    state: InvocationState,
    /// Attempts started so far.
    attempts: u32,
    /// 1 + the function's retries.
    max_attempts: u32,
    /// The job whose task this is.
    job_id: Option<Id>,
    task_index: Option<u64>,
    /// Milliseconds since the epoch, as every time here.
    queued_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    worker: Option<String>,
    error: Option<Failure>,
}

/// One attempt of an invocation.
#[derive(ToSchema)]
#[allow(dead_code)]
struct AttemptDoc {
    attempt: u32,
    worker: String,
    started_at: i64,
    finished_at: i64,
    state: InvocationState,
    error: Option<Failure>,
}

/// Why an attempt did not succeed.
#[derive(ToSchema)]
#[allow(dead_code)]
struct FailureDoc {
    kind: FailureKind,
    message: String,
    exit_code: Option<i32>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum FailureKindDoc {
    Exit,
    Trap,
    Timeout,
    OutOfMemory,
    OutputLimit,
    Internal,
    Lost,
    Cancelled,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum InvocationStateDoc {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

/// A map (and optional reduce) over many inputs.
#[derive(ToSchema)]
#[allow(dead_code)]
struct JobDoc {
    id: Id,
    project: String,
    function: String,
    version: u32,
    reduce_function: Option<String>,
    reduce_version: Option<u32>,
    state: JobState,
    total: u64,
    succeeded: u64,
    failed: u64,
    cancelled: u64,
    created_at: i64,
    finished_at: Option<i64>,
    reduce_invocation: Option<Id>,
    error: Option<String>,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum JobStateDoc {
    Running,
    Reducing,
    Succeeded,
    Failed,
    Cancelled,
}

/// How a function's code runs: a WASI module, or a command in its bundle.
#[derive(ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)]
enum RuntimeDoc {
    Wasm,
    Process {
        cmd: String,
        /// Keep one process per worker slot alive across invocations.
        #[serde(default)]
        warm: bool,
    },
}

/// One task's result in a job: the output as text when it is UTF-8, else
/// as base64.
#[derive(ToSchema)]
#[allow(dead_code)]
struct TaskResultViewDoc {
    index: u64,
    invocation: Id,
    status: InvocationState,
    output: Option<String>,
    output_base64: Option<String>,
    error: Option<Failure>,
}

/// Where workers take their tasks from when the server dispatches through a
/// message broker. The URL carries credentials.
#[derive(ToSchema)]
#[allow(dead_code)]
struct WireBrokerDoc {
    url: String,
    queue: String,
}

/// An attempt leased to a worker.
#[derive(ToSchema)]
#[allow(dead_code)]
struct WireTaskDoc {
    invocation: Id,
    attempt: u32,
    /// The function version to run, as stored.
    #[schema(value_type = Object)]
    function: (),
    /// The input, base64.
    input: String,
    /// A byte range of an object to read as the input instead.
    #[schema(value_type = Option<Object>)]
    partition: (),
    job: Option<Id>,
}

/// How an attempt ended, as a worker reports it.
#[derive(ToSchema)]
#[allow(dead_code)]
struct WireCompletionDoc {
    invocation: Id,
    attempt: u32,
    started_at: i64,
    finished_at: i64,
    /// The output, base64, when the attempt succeeded.
    output: Option<String>,
    error: Option<Failure>,
    /// The captured stderr, base64.
    logs: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Function, FunctionSpec, Limits, Partition, new_id};
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    }

    /// The property names of `T`'s schema and the keys of `sample`, which
    /// has every optional field set, must be the same.
    fn same_fields<T: ToSchema + serde::Serialize>(sample: &T) {
        let schema = serde_json::to_value(T::schema()).unwrap();
        let value = serde_json::to_value(sample).unwrap();
        assert_eq!(keys(&schema["properties"]), keys(&value), "{} and its schema differ", T::name());
    }

    fn failure() -> Failure {
        Failure { kind: FailureKind::Exit, message: "m".into(), exit_code: Some(1) }
    }

    #[test]
    fn every_mirror_has_the_fields_its_type_serialises() {
        let id = new_id();
        same_fields(&Invocation {
            id,
            project: "p".into(),
            function: "f".into(),
            version: 1,
            state: InvocationState::Failed,
            attempts: 1,
            max_attempts: 1,
            job_id: Some(id),
            task_index: Some(0),
            queued_at: 0,
            started_at: Some(0),
            finished_at: Some(0),
            worker: Some("w".into()),
            error: Some(failure()),
        });
        same_fields(&Attempt {
            attempt: 1,
            worker: "w".into(),
            started_at: 0,
            finished_at: 0,
            state: InvocationState::Failed,
            error: Some(failure()),
        });
        same_fields(&failure());
        same_fields(&Job {
            id,
            project: "p".into(),
            function: "f".into(),
            version: 1,
            reduce_function: Some("r".into()),
            reduce_version: Some(1),
            state: JobState::Failed,
            total: 1,
            succeeded: 0,
            failed: 1,
            cancelled: 0,
            created_at: 0,
            finished_at: Some(0),
            reduce_invocation: Some(id),
            error: Some("e".into()),
        });
        let mut view = TaskResultView::new(0, id, InvocationState::Failed, Some(vec![0xff]), Some(failure()));
        view.output = Some("o".into());
        same_fields(&view);
        same_fields(&WireBroker { url: "u".into(), queue: "q".into() });
        let spec = FunctionSpec {
            runtime: Runtime::Wasm,
            artifact: "a".into(),
            env: Default::default(),
            limits: Limits::default(),
            retries: 0,
            network: false,
        };
        let function = Function { project: "p".into(), name: "f".into(), version: 1, spec, created_at: 0 };
        let partition = Partition { object: "b/k".into(), start: 0, end: 1, size: 1, lines: true };
        same_fields(&WireTask {
            invocation: id,
            attempt: 1,
            function,
            input: vec![],
            partition: Some(partition),
            job: Some(id),
        });
        same_fields(&WireCompletion {
            invocation: id,
            attempt: 1,
            started_at: 0,
            finished_at: 0,
            output: Some(vec![]),
            error: Some(failure()),
            logs: vec![],
        });
    }

    #[test]
    fn every_enum_mirror_has_the_values_its_type_serialises() {
        fn values<T: ToSchema>() -> Value {
            serde_json::to_value(T::schema()).unwrap()["enum"].clone()
        }
        fn all<T: serde::Serialize>(values: &[T]) -> Value {
            serde_json::to_value(values).unwrap()
        }
        assert_eq!(values::<InvocationState>(), all(&InvocationState::ALL));
        use JobState as J;
        assert_eq!(values::<JobState>(), all(&[J::Running, J::Reducing, J::Succeeded, J::Failed, J::Cancelled]));
        use FailureKind::*;
        let kinds = [Exit, Trap, Timeout, OutOfMemory, OutputLimit, Internal, Lost, Cancelled];
        assert_eq!(values::<FailureKind>(), all(&kinds));
        let runtime = serde_json::to_string(&Runtime::schema()).unwrap();
        for field in ["\"kind\"", "\"wasm\"", "\"process\"", "\"cmd\"", "\"warm\""] {
            assert!(runtime.contains(field), "{field} missing from {runtime}");
        }
    }

    #[test]
    fn ids_are_uuid_strings() {
        let schema = serde_json::to_value(Id::schema()).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["format"], "uuid");
    }
}
