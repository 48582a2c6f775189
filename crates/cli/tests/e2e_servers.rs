//! Two `stratus server` processes on one PostgreSQL database, one RabbitMQ
//! work queue and one object store: one leads, the other forwards requests
//! to it, and takes over when it dies. Real processes against the machine's
//! PostgreSQL and RabbitMQ (see e2e_postgres.rs and e2e_rabbitmq.rs); these
//! tests fail, never skip, when either cannot be reached.

mod common;
use common::*;
use std::path::Path;

/// `stratus server` with its own data directory, sharing the rest; its
/// workers take their tasks from the RabbitMQ `queue`, or lease them over
/// HTTP when there is none.
fn server(dir: &Path, name: &str, state: &str, queue: Option<&str>, lease: &str) -> Server {
    let data = dir.join(name);
    let objects = format!("file://{}", dir.join("objects").display());
    let mut args: Vec<String> = ["server", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(["--state", state, "--objects", &objects, "--lease-timeout", lease].map(String::from));
    if let Some(q) = queue {
        args.extend(["--broker".to_string(), amqp(), "--broker-queue".to_string(), q.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::spawn(&args, data.clone())
}

fn marks_in(marks: &Path) -> usize {
    std::fs::read_dir(marks).unwrap().count()
}

#[test]
fn two_servers_serve_every_request_run_each_task_once_and_the_standby_finishes_the_map_of_a_killed_leader() {
    let q = TestQueue::new("two-servers");
    leader_killed_mid_map(Some(&q.0));
}

#[test]
fn the_same_with_workers_leasing_over_http() {
    leader_killed_mid_map(None);
}

fn leader_killed_mid_map(queue: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let state = postgres_url(&format!("e2e_{}", stratus_core::new_id().as_uuid().simple()));
    let mut a = server(tmp.path(), "a", &state, queue, "2s");
    let b = server(tmp.path(), "b", &state, queue, "2s");
    assert_eq!(a.get_json("/healthz")["role"], "leader");
    let standby = b.get_json("/healthz");
    assert_eq!((standby["role"].as_str(), standby["leader"].as_str()), (Some("standby"), Some(a.url.as_str())));

    // One worker joins each server.
    let wa = Worker::start(&a.url, &tmp.path().join("wa"), 1);
    let wb = Worker::start(&b.url, &tmp.path().join("wb"), 1);
    let (pa, pb) = (wa.child.id(), wb.child.id());

    // Any request works on either server.
    b.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    assert_eq!(a.ok(&["invoke", "t", "echo:through a"]), "through a");
    assert_eq!(b.ok(&["invoke", "t", "echo:through b"]), "through b");
    let id = b.ok(&["invoke", "t", "echo:later", "--async"]).trim().to_string();
    assert_eq!(a.ok(&["wait", &id]), "later");

    // Each task of a map runs once, although two servers are up: the
    // function leaves a mark each time it runs.
    let (marks, go) = marking_gate(&b, tmp.path());
    std::fs::write(&go, b"").unwrap();
    let job = b.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 30).to_str().unwrap(), "--detach"]);
    let job = job.trim();
    a.ok(&["wait", job]);
    assert_all_echoed(&b, job, 30);
    assert_eq!(marks_in(&marks), 30, "each task ran exactly once");

    // Kill -9 the leader while both workers run tasks of a map.
    std::fs::remove_file(&go).unwrap();
    for m in std::fs::read_dir(&marks).unwrap() {
        std::fs::remove_file(m.unwrap().path()).unwrap();
    }
    let job = b.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 40).to_str().unwrap(), "--detach"]);
    let job = job.trim();
    b.eventually("both workers run tasks", || {
        let w = marked_workers(&marks);
        w.contains(&pa) && w.contains(&pb)
    });
    a.kill9();
    b.eventually("the standby takes over", || b.get_json("/healthz")["role"] == "leader");
    std::fs::write(&go, b"").unwrap();
    b.ok(&["wait", job]);
    assert_all_echoed(&b, job, 40);
    assert_eq!(b.ok(&["invoke", "t", "echo:still here"]), "still here");
}

#[test]
fn a_leader_stopped_cleanly_hands_over_at_once_and_a_restarted_server_takes_its_lead_back() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("handover");
    let state = postgres_url(&format!("e2e_{}", stratus_core::new_id().as_uuid().simple()));
    // A lease far longer than the test may wait: nothing here waits one out.
    let lease = "10m";
    let mut a = server(tmp.path(), "a", &state, Some(&q.0), lease);
    a.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let id = a.ok(&["invoke", "t", "echo:kept", "--async"]).trim().to_string();

    // Killed and started again on the same data directory: the lease held
    // under its name is its own, so it leads again without waiting it out.
    a.kill9();
    drop(a);
    let mut a = server(tmp.path(), "a", &state, Some(&q.0), lease);
    assert_eq!(a.get_json("/healthz")["role"], "leader");
    let b = server(tmp.path(), "b", &state, Some(&q.0), lease);
    assert_eq!(b.get_json("/healthz")["role"], "standby");
    let _w = Worker::start(&b.url, &tmp.path().join("w"), 1);
    assert_eq!(b.ok(&["wait", &id]), "kept");

    // Ctrl-C: the leader gives its lease up as it stops.
    assert!(a.interrupt().success());
    b.eventually("the standby takes over", || b.get_json("/healthz")["role"] == "leader");
    assert_eq!(b.ok(&["invoke", "t", "echo:on b"]), "on b");
}

/// A worker joined through the standby, its slots idle, whose heartbeats
/// fail while nobody leads: it stops taking dispatch messages, and takes
/// them again once the standby has taken over.
#[test]
fn a_worker_cut_off_while_nobody_leads_stops_taking_tasks_and_resumes_under_the_new_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("cut-off");
    let state = postgres_url(&format!("e2e_{}", stratus_core::new_id().as_uuid().simple()));
    let mut a = server(tmp.path(), "a", &state, Some(&q.0), "2s");
    let b = server(tmp.path(), "b", &state, Some(&q.0), "2s");
    let log = tmp.path().join("worker.log");
    let _w = Worker::start_logged(&b.url, &tmp.path().join("w"), 2, Some(&log));
    b.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    assert_eq!(b.ok(&["invoke", "t", "echo:before"]), "before");

    // Heartbeats every half second; the lease lapses two seconds after the
    // leader's last renewal: several fail in between.
    a.kill9();
    b.eventually("the standby takes over", || b.get_json("/healthz")["role"] == "leader");
    assert_eq!(b.ok(&["invoke", "t", "echo:after"]), "after");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("taking no more tasks until it can"), "{text}");
    assert!(text.contains("the server answers again: taking tasks"), "{text}");
}

/// A leader that finds its lease taken (here by another server's row
/// written straight into the database) stops at once, with exit code 3, so
/// two servers never drive the queue together.
#[test]
fn a_leader_whose_lease_is_taken_stops_at_once_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = format!("e2e_{}", stratus_core::new_id().as_uuid().simple());
    let state = postgres_url(&schema);
    let mut a = server(tmp.path(), "a", &state, None, "2s");
    assert_eq!(a.get_json("/healthz")["role"], "leader");
    let base =
        std::env::var("STRATUS_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let steal = format!(
        "UPDATE {schema}.leader SET server = gen_random_uuid(), incarnation = gen_random_uuid(), \
         url = 'http://elsewhere:7878', renewed_at = (extract(epoch from clock_timestamp()) * 1000)::bigint + 600000"
    );
    let out = std::process::Command::new("psql").args([base.as_str(), "-v", "ON_ERROR_STOP=1", "-c", &steal]).output();
    let out = out.expect("psql runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = a.child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status}");
}
