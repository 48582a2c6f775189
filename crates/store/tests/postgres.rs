//! What only the PostgreSQL engine has: URL parameters, migrations under an
//! advisory lock, and several servers writing to one database at once.
//! Needs the server named by `STRATUS_TEST_POSTGRES` (see `common`).

mod common;

use common::{PgSchema, job, job_task, postgres_url, spec, with_param};
use std::sync::Arc;
use std::time::Instant;
use stratus_core::{Id, InvocationState, Job};
use stratus_store::{AttemptEnd, EndOutcome, Error, JobRows, NewInvocation, SchemaVersion, Seat, StateStore};

fn ok_end(id: Id) -> AttemptEnd {
    AttemptEnd {
        id,
        attempt: 1,
        worker: "w".into(),
        started_at: 1,
        finished_at: 2,
        outcome: EndOutcome::Finish {
            state: InvocationState::Succeeded,
            output: Some(b"out".to_vec()),
            error: None,
            logs: vec![],
        },
    }
}

/// Creates a job of `n` tasks, sent in batches of `batch`.
async fn make_job(s: &dyn StateStore, n: u64, batch: usize) -> (Job, Vec<NewInvocation>) {
    let j = job(1);
    let tasks: Vec<_> = (0..n).map(|i| job_task(&j, i)).collect();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rows = tasks.clone();
    let sender = tokio::spawn(async move {
        for chunk in rows.chunks(batch) {
            tx.send(JobRows::Rows(chunk.to_vec())).await.unwrap();
        }
        tx.send(JobRows::Commit).await.unwrap();
    });
    let created = s.create_job(&j, rx).await.unwrap();
    sender.await.unwrap();
    assert_eq!(created.total, n);
    (created, tasks)
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_nothing_twice() {
    let schema = PgSchema::new();
    let s = schema.open().await;
    s.put_function("p", "f", &spec(), 1).await.unwrap();
    drop(s);
    let s = schema.open().await;
    assert_eq!(s.get_function("p", "f", None).await.unwrap().unwrap().version, 1);
    let versions: Vec<i32> = schema
        .client()
        .await
        .query("SELECT version FROM stratus_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let schema = PgSchema::new();
    drop(schema.open().await);
    schema.client().await.execute("INSERT INTO stratus_schema (version) VALUES (999)", &[]).await.unwrap();
    match stratus_store::open(&schema.url).await {
        Err(Error::TooNew { found: 999, known: 9 }) => {}
        Err(e) => panic!("expected TooNew, got {e}"),
        Ok(_) => panic!("a schema newer than the binary was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_starting_together_migrate_once() {
    let schema = PgSchema::new();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = schema.url.clone();
            async move { stratus_store::open(&url).await.map(|s| s.schema()) }
        })
        .collect();
    let mut versions: Vec<_> = futures_join(opens).await.into_iter().map(|s| s.unwrap()).collect();
    versions.sort_by_key(|v| v.found);
    let upgraded = SchemaVersion { found: 0, now: 9 };
    let current = SchemaVersion { found: 9, now: 9 };
    assert_eq!(versions, [upgraded, current, current, current], "one store applied the migrations, each says so");
    let n: i64 = schema.client().await.query_one("SELECT COUNT(*) FROM stratus_schema", &[]).await.unwrap().get(0);
    assert_eq!(n, 9);
}

/// Joins futures without a futures crate: each on its own task.
async fn futures_join<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn urls_are_checked_and_passwords_never_shown() {
    let base = postgres_url();
    for bad in ["schema=Upper", "schema=a-b", "pool_size=0", "pool_size=many", "nonsense=1"] {
        let url = format!("{}{}{bad}", base, if base.contains('?') { '&' } else { '?' });
        match stratus_store::open(&url).await {
            Err(Error::InvalidUrl { .. }) => {}
            Err(e) => panic!("{bad}: expected InvalidUrl, got {e}"),
            Ok(_) => panic!("{bad}: accepted"),
        }
    }
    // Port 1 on loopback: refused at once.
    let Err(e) = stratus_store::open("postgres://someone:hunter2@127.0.0.1:1/x?connect_timeout=2").await else {
        panic!("connected to port 1")
    };
    let message = e.to_string();
    assert!(message.contains("cannot connect to PostgreSQL"), "{message}");
    assert!(!message.contains("hunter2"), "the password leaked: {message}");
    assert!(matches!(stratus_store::open("postgres:/x").await, Err(Error::UnsupportedUrl(_))));
}

#[tokio::test]
async fn an_aborted_job_leaves_the_connection_usable() {
    let schema = PgSchema::new();
    // One connection: whatever runs after the abort runs on the same one.
    let s = stratus_store::open(&with_param(&schema.url, "pool_size", "1")).await.unwrap();
    let j = job(1);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(JobRows::Rows((0..100).map(|i| job_task(&j, i)).collect())).await.unwrap();
    tx.send(JobRows::Abort("bad line".into())).await.unwrap();
    assert!(matches!(s.create_job(&j, rx).await, Err(Error::Aborted(_))));
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(JobRows::Rows(vec![job_task(&j, 0)])).await.unwrap();
    drop(tx);
    assert!(matches!(s.create_job(&j, rx).await, Err(Error::Aborted(_))), "a request that ends early aborts");
    assert!(s.get_job("p", j.id).await.unwrap().is_none());
    assert!(s.queued(None, 10).await.unwrap().is_empty());
    let (again, _) = make_job(s.as_ref(), 10, 3).await;
    assert_eq!(s.get_job("p", again.id).await.unwrap().unwrap().total, 10);
}

/// Two servers on one database record the same ends at once, in opposite
/// orders, while a third cancels the job: each end applies once, and the
/// counters add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_race_on_the_same_rows() {
    let schema = PgSchema::new();
    let (a, b, c) = (schema.open().await, schema.open().await, schema.open().await);
    const N: u64 = 3_000;
    let (j, tasks) = make_job(a.as_ref(), N, 1_000).await;

    let ends: Vec<AttemptEnd> = tasks.iter().map(|t| ok_end(t.invocation.id)).collect();
    let run = |s: Arc<dyn StateStore>, mut ends: Vec<AttemptEnd>, reverse: bool| async move {
        if reverse {
            ends.reverse();
        }
        let mut applied = std::collections::HashMap::new();
        for batch in ends.chunks(32) {
            let report = s.end_attempts(batch).await.unwrap();
            for (e, ok) in batch.iter().zip(report.applied) {
                applied.insert(e.id, ok);
            }
        }
        applied
    };
    let first = tokio::spawn(run(a.clone(), ends.clone(), false));
    let second = tokio::spawn(run(b.clone(), ends.clone(), true));
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        c.cancel_job(j.id, 5).await.unwrap()
    });
    let (first, second, cancelled) = (first.await.unwrap(), second.await.unwrap(), cancel.await.unwrap());
    let applied = tasks
        .iter()
        .filter(|t| {
            let (x, y) = (first[&t.invocation.id], second[&t.invocation.id]);
            assert!(!(x && y), "an end applied twice");
            x || y
        })
        .count() as u64;
    assert_eq!(applied + cancelled, N, "every task either ended or was cancelled, once");
    let now = a.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((now.succeeded, now.cancelled, now.done()), (applied, cancelled, N));
    let attempts: i64 = schema.client().await.query_one("SELECT COUNT(*) FROM attempts", &[]).await.unwrap().get(0);
    assert_eq!(attempts as u64, applied);

    // Versions of a function added from both servers at once stay distinct.
    let puts: Vec<_> = (0..20)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move { s.put_function("p", "f", &spec(), i).await.unwrap().version }
        })
        .collect();
    let mut versions = futures_join(puts).await;
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<u32>>());
}

/// Rough figures, printed (not asserted): `cargo nextest run -p stratus-store
/// --run-ignored only --no-capture timings`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn timings() {
    let dir = tempfile::tempdir().unwrap();
    let (schema, relaxed) = (PgSchema::new(), PgSchema::new());
    // Commits that do not wait for the WAL flush: a crash of PostgreSQL may
    // lose the last fraction of a second of them.
    let relaxed_url = with_param(&relaxed.url, "options", "-c%20synchronous_commit%3Doff");
    let engines: [(&str, Arc<dyn StateStore>); 3] = [
        ("sqlite", stratus_store::open(&format!("sqlite://{}/state.db", dir.path().display())).await.unwrap()),
        ("postgres", schema.open().await),
        ("postgres, synchronous_commit=off", stratus_store::open(&relaxed_url).await.unwrap()),
    ];
    for (name, s) in engines {
        const N: u64 = 100_000;
        let j = job(1);
        let tasks: Vec<_> = (0..N).map(|i| job_task(&j, i)).collect();
        let batches: Vec<Vec<NewInvocation>> = tasks.chunks(1_000).map(|c| c.to_vec()).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let t = Instant::now();
        let sender = tokio::spawn(async move {
            for b in batches {
                tx.send(JobRows::Rows(b)).await.unwrap();
            }
            tx.send(JobRows::Commit).await.unwrap();
        });
        s.create_job(&j, rx).await.unwrap();
        sender.await.unwrap();
        let create = t.elapsed();
        println!("{name}: create_job of {N} rows in batches of 1000: {:.2} s", create.as_secs_f64());

        let ids: Vec<Id> = tasks.iter().map(|t| t.invocation.id).collect();
        let mut ids = ids.chunks(20_000);
        let mut measure = |label: &str, batch: usize, streams: usize| {
            let ends: Vec<AttemptEnd> = ids.next().unwrap().iter().map(|id| ok_end(*id)).collect();
            let s = s.clone();
            let label = label.to_string();
            async move {
                let per_stream = ends.len().div_ceil(streams);
                let t = Instant::now();
                let runs: Vec<_> = ends
                    .chunks(per_stream)
                    .map(|part| {
                        let (s, part) = (s.clone(), part.to_vec());
                        async move {
                            for b in part.chunks(batch) {
                                s.end_attempts(b).await.unwrap();
                            }
                        }
                    })
                    .collect();
                futures_join(runs).await;
                let took = t.elapsed().as_secs_f64();
                let calls = ends.len().div_ceil(batch);
                println!(
                    "{name}: end_attempts, {label}: {:.2} ms per call, {:.0} ends/s",
                    took * 1000.0 * streams as f64 / calls as f64,
                    ends.len() as f64 / took
                );
            }
        };
        measure("batches of 32, one caller", 32, 1).await;
        measure("batches of 32, 4 callers at once", 32, 4).await;
        measure("batches of 256, one caller", 256, 1).await;
        measure("batches of 1024, one caller", 1024, 1).await;
        let starts: Vec<_> = ids
            .next()
            .unwrap()
            .iter()
            .map(|id| stratus_store::AttemptStart { id: *id, attempt: 1, worker: "w".into(), started_at: 1 })
            .collect();
        let t = Instant::now();
        for b in starts.chunks(1024) {
            s.start_attempts(b).await.unwrap();
        }
        println!(
            "{name}: start_attempts, batches of 1024: {:.0} starts/s",
            starts.len() as f64 / t.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn database_errors_carry_the_servers_message() {
    let schema = PgSchema::new();
    let s = schema.open().await;
    let j = job(1);
    let mut tasks: Vec<_> = (0..3).map(|i| job_task(&j, i)).collect();
    tasks[2].invocation.id = tasks[0].invocation.id;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(JobRows::Rows(tasks)).await.unwrap();
    tx.send(JobRows::Commit).await.unwrap();
    let message = s.create_job(&j, rx).await.unwrap_err().to_string();
    assert!(message.contains("duplicate key") && message.contains("23505"), "{message}");
    assert!(s.get_job("p", j.id).await.unwrap().is_none());
}

/// Leadership among servers on one database (see `StateStore::lead`).
#[tokio::test]
async fn one_server_leads_until_it_resigns_lapses_or_is_restarted() {
    let schema = PgSchema::new();
    let s = schema.open().await;
    let lease = std::time::Duration::from_secs(60);
    let seat = |server: Id, url: &str| Seat { server, url: url.into(), incarnation: stratus_core::new_id() };
    let a = seat(stratus_core::new_id(), "http://a");
    let b = seat(stratus_core::new_id(), "http://b");
    assert_eq!(s.lead(&a, lease, true).await.unwrap(), None, "nobody led: a leads");
    assert_eq!(s.lead(&b, lease, true).await.unwrap(), Some(a.clone()), "b stands by");
    assert_eq!(s.lead(&a, lease, false).await.unwrap(), None, "a renews");

    // a restarted (same server, a new start) takes its lease back at once;
    // the earlier start, should it still run, finds it taken.
    let a2 = seat(a.server, "http://a");
    assert_eq!(s.lead(&a2, lease, false).await.unwrap(), Some(a.clone()), "only when restarting");
    assert_eq!(s.lead(&a2, lease, true).await.unwrap(), None);
    assert_eq!(s.lead(&a, lease, false).await.unwrap(), Some(a2.clone()), "the old start is fenced off");

    // A lease not renewed for its length lapses: here it is made old.
    schema.client().await.execute("UPDATE leader SET renewed_at = renewed_at - 120000", &[]).await.unwrap();
    assert_eq!(s.lead(&b, lease, false).await.unwrap(), None, "b takes over a lapsed lease");
    assert_eq!(s.lead(&a2, lease, false).await.unwrap(), Some(b.clone()));

    // Resigning frees it at once; only the holder can resign.
    s.resign(&a2).await.unwrap();
    assert_eq!(s.lead(&a2, lease, false).await.unwrap(), Some(b.clone()), "a2 did not hold it");
    s.resign(&b).await.unwrap();
    assert_eq!(s.lead(&a2, lease, false).await.unwrap(), None);
}
