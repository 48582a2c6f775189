//! Schedules through the real binary: they fire, pause, resume and
//! backfill; one run per nominal time, also on PostgreSQL when the leader
//! is killed just after a fire and the standby takes over.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The events of a type whose subject is `subject`, oldest first.
fn events_of(s: &Server, ty: &str, subject: &str) -> Vec<Value> {
    let v = s.get_json(&format!("/v1/events?type={ty}&subject_prefix={subject}&limit=1000"));
    let all = v["events"].as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|e| e["subject"] == subject).collect()
}

fn invocations_of(s: &Server, function: &str) -> Vec<Value> {
    let out = s.ok(&["invocations", "--fn", function, "--limit", "1000", "--json"]);
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The fired event each invocation of `function` got as its input, by its
/// nominal time; each must be there once.
fn runs_by_nominal(s: &Server, function: &str) -> HashMap<String, usize> {
    let mut runs = HashMap::new();
    for inv in invocations_of(s, function) {
        let input: Value = serde_json::from_str(&s.ok(&["wait", inv["id"].as_str().unwrap()])).unwrap();
        assert_eq!(input["type"], "stratus.schedule.fired", "{input}");
        *runs.entry(input["id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    runs
}

#[test]
fn a_schedule_fires_pauses_resumes_and_runs_once_per_time() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    s.ok(&["fn", "deploy", "echo", "--wasm", guest_wasm().to_str().unwrap()]);
    let created: Value =
        serde_json::from_str(&s.ok(&["schedule", "create", "tick", "--every", "1s", "--invoke", "echo", "--json"]))
            .unwrap();
    assert_eq!((created["paused"].as_bool(), created["timing"]["every_ms"].as_u64()), (Some(false), Some(1000)));
    assert!(created["next"].is_string(), "{created}");
    s.eventually("two fires", || events_of(&s, "stratus.schedule.fired", "tick").len() >= 2);

    s.ok(&["schedule", "pause", "tick"]);
    let fired = events_of(&s, "stratus.schedule.fired", "tick").len();
    // While another schedule fires twice, the paused one fires no more.
    s.ok(&["schedule", "create", "other", "--every", "1s", "--emit", "com.example.other"]);
    s.eventually("the other fires twice", || events_of(&s, "stratus.schedule.fired", "other").len() >= 2);
    assert_eq!(events_of(&s, "stratus.schedule.fired", "tick").len(), fired, "paused");
    let shown: Value = serde_json::from_str(&s.ok(&["schedule", "show", "tick", "--json"])).unwrap();
    assert_eq!(shown["paused"], true);

    s.ok(&["schedule", "resume", "tick"]);
    s.eventually("it fires again", || events_of(&s, "stratus.schedule.fired", "tick").len() > fired);
    assert!(events_of(&s, "stratus.schedule.missed", "tick").is_empty(), "a pause leaves nothing missed");
    s.ok(&["schedule", "delete", "tick"]);
    s.ok(&["schedule", "delete", "other"]);
    s.eventually("every run ends", || invocations_of(&s, "echo").iter().all(|i| i["state"] == "succeeded"));
    let fires = events_of(&s, "stratus.schedule.fired", "tick");
    let runs = runs_by_nominal(&s, "echo");
    assert_eq!(runs.len(), fires.len(), "one run per fire: {runs:?}");
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    for f in &fires {
        assert!(runs.contains_key(f["id"].as_str().unwrap()), "{f}");
    }
    assert!(s.ok(&["schedule", "list"]).trim().is_empty());
}

#[test]
fn a_backfill_fires_each_time_once_and_bad_schedules_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&[
        "schedule",
        "create",
        "hourly",
        "--cron",
        "0 * * * *",
        "--tz",
        "Europe/Berlin",
        "--emit",
        "com.example.hour",
    ]);
    let args =
        ["schedule", "backfill", "hourly", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T05:00:00Z", "--json"];
    let first: Value = serde_json::from_str(&s.ok(&args)).unwrap();
    assert_eq!(first["fired"], 6);
    let again: Value = serde_json::from_str(&s.ok(&args)).unwrap();
    assert_eq!(again["fired"], 0, "times fired before are not again");
    s.eventually("six actions", || {
        let v = s.get_json("/v1/events?type=com.example.hour&limit=100");
        v["events"].as_array().unwrap().len() == 6
    });
    let fired = events_of(&s, "stratus.schedule.fired", "hourly");
    assert_eq!(fired[0]["id"], "2026-01-01T00:00:00.000Z");
    assert_eq!(fired[0]["data"]["backfill"], true);

    let refused = |args: &[&str], says: &str| {
        let out = s.cli(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    };
    refused(&["schedule", "create", "x", "--cron", "* * *", "--emit", "y"], "fields");
    refused(&["schedule", "create", "x", "--cron", "61 * * * *", "--emit", "y"], "cron");
    refused(&["schedule", "create", "x", "--cron", "0 0 * * *", "--tz", "Mars/Olympus", "--emit", "y"], "tz");
    refused(&["schedule", "create", "x", "--every", "10ms", "--emit", "y"], "once a second");
    refused(&["schedule", "create", "x", "--every", "1s", "--overlap", "sometimes", "--emit", "y"], "overlap");
    refused(&["schedule", "create", "x", "--every", "1s", "--cron", "0 0 * * *", "--emit", "y"], "cannot be used");
    refused(&["schedule", "create", "hourly", "--every", "1s", "--emit", "y"], "exists");
    refused(
        &["schedule", "backfill", "hourly", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"],
        "after",
    );
    refused(&["schedule", "show", "nope"], "not found");
    assert_eq!(s.ok(&["schedule", "list"]).lines().count(), 1, "nothing else stored");
    assert!(s.ok(&["trigger", "list"]).trim().is_empty(), "a schedule is not listed as a trigger");
}

#[test]
fn a_fire_while_the_last_run_goes_on_is_skipped_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    // A function that runs 3 s: every second fire finds it running.
    let dir = tmp.path().join("slow");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("slow.sh"), "#!/bin/sh\nsleep 3\ncat\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("slow.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(&["fn", "deploy", "slow", "--dir", dir.to_str().unwrap(), "--cmd", "./slow.sh"]);
    s.ok(&["schedule", "create", "busy", "--every", "1s", "--invoke", "slow"]);
    s.eventually("a fire is skipped", || !events_of(&s, "stratus.schedule.missed", "busy").is_empty());
    let missed = &events_of(&s, "stratus.schedule.missed", "busy")[0];
    assert!(missed["data"]["reason"].as_str().unwrap().contains("still going"), "{missed}");
    s.ok(&["schedule", "pause", "busy"]);
    let runs = invocations_of(&s, "slow");
    assert_eq!(runs.len(), 1, "no second run while the first goes on: {runs:?}");
}

fn server(dir: &Path, name: &str, state: &str) -> Server {
    let data = dir.join(name);
    let objects = format!("file://{}", dir.join("objects").display());
    let args = [
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--state",
        state,
        "--objects",
        &objects,
        "--lease-timeout",
        "2s",
    ];
    Server::spawn(&args, data.clone())
}

#[test]
fn on_postgres_a_leader_killed_just_after_a_fire_leaves_one_run_per_time() {
    let tmp = tempfile::tempdir().unwrap();
    let state = postgres_url(&format!("sched_{}", stratus_core::new_id().as_uuid().simple()));
    let mut a = server(tmp.path(), "a", &state);
    let b = server(tmp.path(), "b", &state);
    assert_eq!(a.get_json("/healthz")["role"], "leader");
    let _w = Worker::start(&b.url, &tmp.path().join("w"), 2);
    b.ok(&["fn", "deploy", "echo", "--wasm", guest_wasm().to_str().unwrap()]);
    b.ok(&["schedule", "create", "tick", "--every", "1s", "--overlap", "allow_all", "--invoke", "echo"]);
    b.eventually("a fire", || !events_of(&b, "stratus.schedule.fired", "tick").is_empty());
    a.kill9();
    b.eventually("the standby leads", || b.get_json("/healthz")["role"] == "leader");
    let before = events_of(&b, "stratus.schedule.fired", "tick").len();
    b.eventually("it fires on under the new leader", || {
        events_of(&b, "stratus.schedule.fired", "tick").len() >= before + 2
    });
    b.ok(&["schedule", "pause", "tick"]);
    let ended = |i: &Value| i["state"] != "queued" && i["state"] != "running";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let runs = loop {
        let runs = invocations_of(&b, "echo");
        if runs.iter().all(ended) {
            break runs;
        }
        let workers = b.ok(&["workers", "--json"]);
        assert!(std::time::Instant::now() < deadline, "runs never ended: {runs:#?}\nworkers: {workers}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(runs.iter().all(|i| i["state"] == "succeeded"), "{runs:#?}");
    let fires = events_of(&b, "stratus.schedule.fired", "tick");
    let runs = runs_by_nominal(&b, "echo");
    for f in &fires {
        assert_eq!(runs.get(f["id"].as_str().unwrap()), Some(&1), "one run for {}: {runs:?}", f["id"]);
    }
    assert_eq!(runs.len(), fires.len(), "no run without its fire: {runs:?}");
    assert!(events_of(&b, "stratus.schedule.missed", "tick").is_empty(), "nothing missed within the catch-up");
}
