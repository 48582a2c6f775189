//! OpenAPI schemas (utoipa): the records the API sends derive theirs where
//! they are declared ([`crate::model`], [`crate::wire`], behind the
//! `openapi` feature), from the same serde attributes that shape their
//! JSON; [`Id`]'s is written here. The tests below check each schema
//! against what its type really serialises, so a serde attribute the
//! derive does not follow fails the build's tests, not a client.

use crate::Id;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TaskResultView, WireBroker, WireCompletion, WireTask};
    use crate::{Attempt, Failure, FailureKind, Invocation, InvocationState, Job, JobState, Runtime};
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
            tags: vec!["t".into()],
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
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
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
            token: Some("stratus_a.t".into()),
        });
        same_fields(&WireCompletion {
            invocation: id,
            attempt: 1,
            started_at: 0,
            finished_at: 0,
            output: Some(vec![]),
            error: Some(failure()),
            logs: vec![],
            claim: Some("stratus_a.t".into()),
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
