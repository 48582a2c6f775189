//! Concurrency limits by tag against the real server and worker processes:
//! at most N attempts carrying a tag run at once across every worker, a
//! worker killed with -9 gives its slots back when its lease lapses, tasks
//! waiting for a slot hold up nobody else, and no slot is left taken. On
//! SQLite and PostgreSQL. Projects take turns for the slots.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

/// A process function that sleeps 300 ms and answers when it started and
/// ended (nanoseconds since the epoch, by the machine's one clock).
fn sleeper(dir: &Path) -> PathBuf {
    let f = dir.join("sleeper");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("run.sh"), "#!/bin/sh\ns=$(date +%s%N)\nsleep 0.3\ne=$(date +%s%N)\necho \"$s $e\"\n")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    f
}

/// The most runs that overlapped, from each run's start and end.
fn peak_overlap(runs: &[(u128, u128)]) -> usize {
    let mut edges: Vec<(u128, i32)> = runs.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // An end before a start at the same instant: touching runs do not overlap.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    peak as usize
}

/// The start and end every task of a finished job answered.
fn runs_of(s: &Server, job: &str, n: usize) -> Vec<(u128, u128)> {
    let results = s.get_json(&format!("/v1/jobs/{job}/results?limit=1000"));
    let results = results["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    results
        .iter()
        .map(|r| {
            assert_eq!(r["status"], "succeeded", "{r}");
            let out = r["output"].as_str().unwrap();
            let mut it = out.split_whitespace().map(|t| t.parse::<u128>().unwrap());
            (it.next().unwrap(), it.next().unwrap())
        })
        .collect()
}

fn occupancy(s: &Server, tag: &str) -> (u64, u64) {
    let l = json(s, &["limit", "show", tag]);
    (l["running"].as_u64().unwrap(), l["waiting"].as_u64().unwrap())
}

/// 40 tasks of a tag limited to 3, over two workers of 3 slots each: never
/// more than 3 at once, and 3 at once at some point; then a worker killed
/// with -9 while it holds slots gives them back when its lease lapses.
fn limits_hold_across_workers(s: &Server, tmp: &Path) {
    let mut a = Worker::start(&s.url, &tmp.join("wa"), 3);
    let b = Worker::start(&s.url, &tmp.join("wb"), 3);
    let set = json(s, &["limit", "set", "archive", "3"]);
    assert_eq!(
        (set["tag"].as_str(), set["slots"].as_u64(), set["running"].as_u64()),
        (Some("archive"), Some(3), Some(0))
    );
    s.ok(&["fn", "deploy", "sleeper", "--dir", path(&sleeper(tmp)), "--cmd", "./run.sh", "--tag", "archive"]);
    assert!(s.ok(&["fn", "show", "sleeper"]).contains("tags:     archive"));

    let job = s.ok(&["map", "sleeper", "--inputs", path(&inputs_file(tmp, 40)), "--detach"]).trim().to_string();
    s.ok(&["wait", &job]);
    let runs = runs_of(s, &job, 40);
    assert_eq!(peak_overlap(&runs), 3, "at most 3 at once, and 3 at once when there was work for them");
    assert_eq!(occupancy(s, "archive"), (0, 0), "every slot given back");

    // Slots held by a worker killed with -9 come back with its lease.
    s.ok(&["limit", "set", "archive", "2"]);
    let go = tmp.join("go");
    let gate = gate_function(tmp);
    let env = format!("GO={}", go.display());
    s.ok(&["fn", "deploy", "gate", "--dir", path(&gate), "--cmd", "./gate.sh", "--env", &env, "--tag", "archive"]);
    let job = s.ok(&["map", "gate", "--inputs", path(&inputs_file(tmp, 6)), "--detach"]).trim().to_string();
    s.eventually("both slots held", || occupancy(s, "archive") == (2, 4));
    let shown = json(s, &["limit", "show", "archive"]);
    let holders: Vec<String> =
        shown["holders"].as_array().unwrap().iter().map(|h| h["worker"].as_str().unwrap().to_string()).collect();
    assert_eq!(holders.len(), 2, "{shown}");
    assert_eq!(shown["waiters"].as_array().unwrap().len(), 4, "{shown}");
    let text = s.ok(&["limit", "show", "archive"]);
    assert!(text.contains("running:  2") && text.contains("waiting:  4"), "{text}");
    // Kill a worker that holds a slot (a's, or else b's: a holds none then).
    if holders.contains(&a.id) {
        a.kill9();
    } else {
        drop(b);
    }
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &job]);
    assert_all_echoed(s, &job, 6);
    assert_eq!(occupancy(s, "archive"), (0, 0), "the lost worker's slots came back");
    let limits = s.ok(&["limit", "list"]);
    assert!(limits.lines().any(|l| l.starts_with("archive") && l.contains(" 2 ")), "{limits}");
}

#[test]
fn a_tag_limit_holds_across_workers_and_a_killed_worker_frees_its_slots_on_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0", "--lease-timeout", "2s"]);
    limits_hold_across_workers(&s, tmp.path());
}

#[test]
fn a_tag_limit_holds_across_workers_and_a_killed_worker_frees_its_slots_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = format!("e2e_{}", stratus_core::new_id().as_uuid().simple());
    let data = tmp.path().join("data");
    let s = Server::start_in(data, &["--slots", "0", "--lease-timeout", "2s", "--state", &postgres_url(&schema)]);
    limits_hold_across_workers(&s, tmp.path());
}

/// 20,000 tasks queued on a tag limited to 1 do not hold up an untagged
/// call; a call's own tag counts like a function's; 0 pauses a tag; and
/// after the job is cancelled no slot is left taken.
#[test]
fn tasks_waiting_for_a_slot_hold_up_nobody_else() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let go = deploy_gate(&s, tmp.path(), "gate");
    s.ok(&["fn", "deploy", "hello", "--wasm", path(&guest_wasm())]);
    s.ok(&["limit", "set", "one", "1"]);
    let inputs = inputs_file(tmp.path(), 20_000);
    let job = s.ok(&["map", "gate", "--inputs", path(&inputs), "--tag", "one", "--detach"]).trim().to_string();
    s.eventually("one task holds the slot, the rest wait", || {
        let (running, waiting) = occupancy(&s, "one");
        running == 1 && waiting > 0
    });
    let started = std::time::Instant::now();
    assert_eq!(s.ok(&["invoke", "hello", "echo:through"]), "through");
    let id = s.ok(&["invoke", "hello", "echo:async", "--async"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &id]), "async");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "untagged calls answered promptly");

    // A call's tag: a paused tag holds it queued; a limit of 1 lets it run.
    s.ok(&["limit", "set", "solo", "0"]);
    let paused = s.ok(&["invoke", "hello", "echo:tagged", "--async", "--tag", "solo"]).trim().to_string();
    s.eventually("the paused call waits", || occupancy(&s, "solo") == (0, 1));
    let shown = s.get_json(&format!("/v1/invocations/{paused}"));
    assert_eq!((shown["state"].as_str(), shown["tags"][0].as_str()), (Some("queued"), Some("solo")), "{shown}");
    s.ok(&["limit", "set", "solo", "1"]);
    assert_eq!(s.ok(&["wait", &paused]), "tagged");
    assert_eq!(occupancy(&s, "solo"), (0, 0));

    // A reset releases the held slot (audited); cancelling frees the rest.
    let holder = |s: &Server| -> Option<String> {
        let l = json(s, &["limit", "show", "one"]);
        l["holders"].as_array().unwrap().first().map(|h| h["invocation"].as_str().unwrap().to_string())
    };
    let first = holder(&s).expect("a holder");
    let reset = s.ok(&["limit", "reset", "one"]);
    assert!(reset.contains("released every slot of one"), "{reset}");
    s.eventually("the next task took the released slot", || holder(&s).is_some_and(|h| h != first));
    assert!(s.ok(&["audit"]).contains("limit.reset"));
    s.ok(&["job", "cancel", &job]);
    s.eventually("no slot taken once the job is cancelled", || occupancy(&s, "one") == (0, 0));
    std::fs::write(&go, b"").unwrap();
    s.ok(&["limit", "delete", "one"]);
    let gone = s.cli(&["limit", "show", "one"]);
    assert!(!gone.status.success() && stderr(&gone).contains("no limit"), "{}", stderr(&gone));
}

/// Bad input is refused and changes nothing; only an admin resets.
#[test]
fn bad_limits_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    for (args, needle) in [
        (&["limit", "set", "a,b", "1"][..], "not a valid tag"),
        (&["limit", "set", "ok", "-1"][..], "-1"),
        (&["limit", "delete", "never-set"][..], "no limit"),
        (&["limit", "reset", "never-set"][..], "no limit"),
        (&["fn", "deploy", "f", "--wasm", "x.wasm", "--tag", "bad tag"][..], "not a valid tag"),
    ] {
        let out = s.cli(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let r =
        s.http().put(format!("{}/v1/limits/big", s.url)).json(&serde_json::json!({"slots": 2_000_000})).send().unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("slots"), "{body}");
    assert_eq!(s.ok(&["--json", "limit", "list"]), "", "nothing was set");

    s.ok(&["limit", "set", "ok", "1"]);
    let dev = s.ok(&["token", "create", "--role", "developer", "--name", "dev"]).trim().to_string();
    let refused = cli_as(&s.url, &dev, &["limit", "reset", "ok"], None);
    assert!(!refused.status.success() && stderr(&refused).contains("developer token may not"), "{}", stderr(&refused));
    assert!(cli_as(&s.url, &dev, &["limit", "set", "ok", "2"], None).status.success(), "developers set limits");
}

/// A project's `max_running` quota holds its further attempts in the
/// queue (no error), and another project's run as usual.
#[test]
fn a_projects_max_running_holds_its_attempts_in_the_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "3"]);
    s.ok(&["project", "create", "other"]);
    let other = s.ok(&["token", "create", "--project", "other", "--role", "developer"]).trim().to_string();
    let shown = s.ok(&["project", "set", "default", "--max-running", "1"]);
    assert!(shown.contains("max running 1"), "{shown}");
    let go = deploy_gate(&s, tmp.path(), "gate");
    let job = s.ok(&["map", "gate", "--inputs", path(&inputs_file(tmp.path(), 4)), "--detach"]).trim().to_string();
    let running = |s: &Server| json(s, &["project", "show", "default"])["running"].as_u64().unwrap();
    s.eventually("one attempt of the project runs", || running(&s) == 1);
    let queued = s.ok(&["invoke", "gate", "held", "--async"]).trim().to_string();
    let job_now = s.get_json(&format!("/v1/jobs/{job}"));
    assert_eq!((job_now["running"].as_u64(), job_now["queued"].as_u64()), (Some(1), Some(3)), "{job_now}");

    // Another project is not held back.
    assert!(cli_as(&s.url, &other, &["fn", "deploy", "hello", "--wasm", path(&guest_wasm())], None).status.success());
    let out = cli_as(&s.url, &other, &["invoke", "hello", "echo:free"], None);
    assert_eq!(stdout(&out), "free", "{}", stderr(&out));

    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &job]);
    assert_all_echoed(&s, &job, 4);
    assert_eq!(s.ok(&["wait", &queued]), "held");
    assert_eq!(running(&s), 0);
    let bad = s.cli(&["project", "set", "default", "--max-running", "0"]);
    assert!(!bad.status.success() && stderr(&bad).contains("max-running"), "{}", stderr(&bad));
}

/// Projects share the slots: a job submitted behind another project's big
/// one runs in turns with it, not after it.
#[test]
fn projects_jobs_take_turns_for_the_slots() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&["project", "create", "other"]);
    let other = s.ok(&["token", "create", "--project", "other", "--role", "developer"]).trim().to_string();
    let go = deploy_gate(&s, tmp.path(), "gate");
    let big = s.ok(&["map", "gate", "--inputs", path(&inputs_file(tmp.path(), 30)), "--detach"]).trim().to_string();
    s.eventually("the big job's first task holds the slot", || {
        s.get_json(&format!("/v1/jobs/{big}"))["running"].as_u64() == Some(1)
    });
    let env = format!("GO={}", go.display());
    let gate_dir = gate_function(tmp.path());
    let deploy = ["fn", "deploy", "gate", "--dir", path(&gate_dir), "--cmd", "./gate.sh", "--env", &env];
    assert!(cli_as(&s.url, &other, &deploy, None).status.success());
    let out = cli_as(&s.url, &other, &["map", "gate", "--inputs", path(&inputs_file(tmp.path(), 3)), "--detach"], None);
    let small = stdout(&out).trim().to_string();
    assert!(out.status.success() && !small.is_empty(), "{}", stderr(&out));
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &big]);
    assert!(cli_as(&s.url, &other, &["wait", &small], None).status.success());

    let timings = |token: &str, job: &str| -> Vec<Value> {
        let url = format!("{}/v1/jobs/{job}/timings?limit=100", s.url);
        let body: Value = http_with(Some(token)).get(url).send().unwrap().json().unwrap();
        body["tasks"].as_array().unwrap().clone()
    };
    let small_done = timings(&other, &small).iter().map(|t| t["finished_at"].as_i64().unwrap()).max().unwrap();
    let big_after = timings(&s.token, &big).iter().filter(|t| t["started_at"].as_i64().unwrap() > small_done).count();
    // In submission order, none of the big job's tasks would start after
    // the small one ended; in turns, all but its first few do.
    assert!(big_after >= 20, "{big_after} of 30 tasks of the big job started after the small job ended");
}
