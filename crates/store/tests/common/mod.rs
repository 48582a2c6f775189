//! What the store tests share: a fresh PostgreSQL schema per test.
//!
//! The server comes from `STRATUS_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). A test that cannot reach it
//! fails, saying so: it never skips.

#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;
use stratus_store::StateStore;

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
