//! `/healthz`: whether this server can do its work, which it cannot when
//! its state store or object store refuses writes (a full or read-only
//! disk, a database that went read-only, a bucket that went away).
//!
//! Each check writes one small record to each store; a result is reused
//! for a second, so a probe polling hard costs the stores little.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_blob::{Key, ObjectStore};
use stratus_core::Clock;
use stratus_store::StateStore;

/// How long one result is reused.
const REUSE: Duration = Duration::from_secs(1);
/// How long a store may take to answer before it counts as failing.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Health {
    store: Arc<dyn StateStore>,
    objects: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
    last: tokio::sync::Mutex<Option<(Instant, Vec<String>)>>,
    /// Problems of the last check, for the log: each is logged when it
    /// starts, not on every probe.
    logged: Mutex<Vec<String>>,
}

impl Health {
    pub fn new(store: Arc<dyn StateStore>, objects: Arc<dyn ObjectStore>, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Health { store, objects, clock, last: Default::default(), logged: Default::default() })
    }

    /// What keeps this server from working; empty when healthy.
    pub async fn problems(&self) -> Vec<String> {
        let mut last = self.last.lock().await;
        if let Some((at, problems)) = last.as_ref()
            && at.elapsed() < REUSE
        {
            return problems.clone();
        }
        let now = self.clock.now_ms();
        let key = Key::new("_stratus/health").expect("a valid key");
        let (state, objects) = tokio::join!(
            tokio::time::timeout(TIMEOUT, self.store.check_writable(now)),
            tokio::time::timeout(TIMEOUT, self.objects.put(&key, now.to_string().into())),
        );
        let mut problems = Vec::new();
        match state {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("the state store refuses writes: {e}")),
            Err(_) => problems.push(format!("the state store did not answer within {} s", TIMEOUT.as_secs())),
        }
        match objects {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("the object store refuses writes: {e}")),
            Err(_) => problems.push(format!("the object store did not answer within {} s", TIMEOUT.as_secs())),
        }
        let mut logged = self.logged.lock().unwrap();
        for p in problems.iter().filter(|p| !logged.contains(p)) {
            tracing::error!(problem = %p, "unhealthy");
        }
        *logged = problems.clone();
        *last = Some((Instant::now(), problems.clone()));
        problems
    }
}
