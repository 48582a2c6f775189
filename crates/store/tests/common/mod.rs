//! What the store tests share: a fresh PostgreSQL schema per test.
//!
//! The server comes from `STRATUS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). A test that cannot reach it
//! fails, saying so: it never skips.

#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use stratus_core::{FunctionSpec, Invocation, InvocationState, Job, JobState, Limits, Runtime, new_id};
use stratus_store::{NewInvocation, StateStore};

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn postgres_url() -> String {
    std::env::var("STRATUS_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_string())
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// A schema of its own for one test, dropped when the test passes (kept,
/// and named, when it fails, to look at).
pub struct PgSchema {
    pub name: String,
    /// The store URL that uses the schema.
    pub url: String,
}

impl PgSchema {
    pub fn new() -> Self {
        let name = format!("t_{}", stratus_core::new_id().to_string().replace('-', ""));
        let url = with_param(&postgres_url(), "schema", &name);
        PgSchema { name, url }
    }

    /// Opens a store on the schema, failing loudly when PostgreSQL is not there.
    pub async fn open(&self) -> Arc<dyn StateStore> {
        stratus_store::open(&self.url).await.unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL at {} ({e}); start it, or point STRATUS_TEST_POSTGRES at one",
                postgres_url()
            )
        })
    }

    /// A plain connection to the test database, with the schema on its path.
    pub async fn client(&self) -> tokio_postgres::Client {
        let config: tokio_postgres::Config = postgres_url().parse().expect("STRATUS_TEST_POSTGRES is a postgres URL");
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| {
            panic!(
                "this test needs PostgreSQL at {} ({e}); start it, or point STRATUS_TEST_POSTGRES at one",
                postgres_url()
            )
        });
        tokio::spawn(conn);
        client.batch_execute(&format!("SET search_path TO \"{}\"", self.name)).await.unwrap();
        client
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept PostgreSQL schema {} of the failed test", self.name);
            return;
        }
        // Drop runs inside the test's runtime, which cannot block on itself:
        // a thread with a runtime of its own does the dropping.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let config: tokio_postgres::Config = postgres_url().parse().ok()?;
                let (client, conn) = config.connect(tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop PostgreSQL schema {}", self.name);
        }
    }
}

/// A store on a fresh schema, for the conformance suite.
pub async fn postgres() -> (PgSchema, Arc<dyn StateStore>) {
    let schema = PgSchema::new();
    let store = schema.open().await;
    (schema, store)
}

// ---- fixtures shared by the conformance suite and the PostgreSQL tests ----

pub fn spec() -> FunctionSpec {
    FunctionSpec {
        runtime: Runtime::Wasm,
        artifact: "a".repeat(64),
        env: Default::default(),
        limits: Limits::default(),
        retries: 0,
        network: false,
        vars: vec![],
        secrets: vec![],
        tags: vec![],
        pyenv: None,
    }
}

/// A queued invocation of `f` in project `p`, queued at `now`.
pub fn new_inv(f: &str, max_attempts: u32, now: i64) -> NewInvocation {
    NewInvocation {
        invocation: Invocation {
            id: new_id(),
            project: "p".into(),
            function: f.into(),
            version: 1,
            state: InvocationState::Queued,
            attempts: 0,
            max_attempts,
            job_id: None,
            task_index: None,
            queued_at: now,
            started_at: None,
            finished_at: None,
            worker: None,
            error: None,
            tags: Vec::new(),
        },
        input: format!("input-{now}").into_bytes(),
        partition: None,
    }
}

/// A running job of `f` in project `p`, with no tasks yet.
pub fn job(now: i64) -> Job {
    Job {
        id: new_id(),
        project: "p".into(),
        function: "f".into(),
        version: 1,
        reduce_function: None,
        reduce_version: None,
        state: JobState::Running,
        total: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        created_at: now,
        finished_at: None,
        reduce_invocation: None,
        error: None,
    }
}

/// Task `index` of job `j`.
pub fn job_task(j: &Job, index: u64) -> NewInvocation {
    let mut n = new_inv("f", 1, index as i64);
    n.invocation.job_id = Some(j.id);
    n.invocation.task_index = Some(index);
    n
}
