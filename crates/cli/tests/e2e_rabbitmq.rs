//! Dispatch through the real RabbitMQ on this machine (`STRATUS_TEST_AMQP`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`): `stratus up --slots 0
//! --broker amqp://…` publishes tasks to a work queue that `stratus worker`
//! processes consume. Each test uses its own queue. These tests fail, never
//! skip, when RabbitMQ cannot be reached.

mod common;
use common::*;
use std::path::Path;

fn broker_args(queue: &str) -> Vec<String> {
    ["--slots", "0", "--broker", &amqp(), "--broker-queue", queue].iter().map(|s| s.to_string()).collect()
}

fn start(dir: &Path, queue: &str, extra: &[&str]) -> Server {
    let mut args = broker_args(queue);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(dir, &args)
}

#[test]
fn a_map_runs_on_two_workers_through_rabbitmq_and_survives_the_kill_of_one() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("kill-worker");
    let s = start(tmp.path(), &q.0, &[]);
    let log = tmp.path().join("worker-a.log");
    let mut a = Worker::start_logged(&s.url, &tmp.path().join("wa"), 2, Some(&log));
    let b = Worker::start(&s.url, &tmp.path().join("wb"), 2);
    let (marks, go) = marking_gate(&s, tmp.path());

    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 40).to_str().unwrap(), "--detach"]).trim().to_string();
    let (pa, pb) = (a.child.id(), b.child.id());
    s.eventually("both workers run tasks", || {
        let w = marked_workers(&marks);
        w.contains(&pa) && w.contains(&pb)
    });
    // A dies holding messages it never acknowledged: RabbitMQ gives them to B.
    a.kill9();
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &id]);
    assert_all_echoed(&s, &id, 40);

    // The worker learnt the broker from the server, and logs it without the password.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("from queue {} on amqp://guest:***@", q.0)), "{text}");
    let metrics = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    let published = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stratus_dispatch_messages_total "))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap();
    assert!(published >= 2, "the tasks went through the broker: {metrics}");
}

/// A rolling restart: a worker stopped with SIGTERM finishes the task it
/// runs and hands back the ones it holds but has not started, without that
/// counting as a delivery (the limit here is one: a message that came back
/// with the worker's connection would be dead-lettered and its tasks fail).
#[test]
fn a_worker_stopped_gracefully_hands_back_what_it_has_not_started() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("hand-back");
    let s = start(tmp.path(), &q.0, &["--delivery-limit", "1"]);
    let log = tmp.path().join("worker-a.log");
    let mut a = Worker::start_logged(&s.url, &tmp.path().join("wa"), 1, Some(&log));
    let (marks, go) = marking_gate(&s, tmp.path());
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 12).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("the worker runs a task", || !marked_workers(&marks).is_empty());
    a.signal(15); // SIGTERM
    std::fs::write(&go, b"").unwrap();
    assert!(a.child.wait().unwrap().success(), "a graceful stop");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("handed the tasks not started back to the work queue"), "{text}");

    let _b = Worker::start(&s.url, &tmp.path().join("wb"), 1);
    s.ok(&["wait", &id]);
    assert_all_echoed(&s, &id, 12);
    let metrics = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains("stratus_dead_lettered_tasks_total 0"), "{metrics}");
}

#[test]
fn a_message_that_kills_every_worker_is_dead_lettered_and_its_invocation_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("poison");
    let s = start(tmp.path(), &q.0, &["--delivery-limit", "1"]);
    let f = tmp.path().join("poison-fn");
    std::fs::create_dir_all(&f).unwrap();
    // Kills the worker running it, every time: possible only outside the
    // sandbox (inside, the function sees no process but its own).
    std::fs::write(f.join("run.sh"), "#!/bin/sh\nkill -9 $PPID\nsleep 5\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(&["fn", "deploy", "poison", "--dir", f.to_str().unwrap(), "--cmd", "./run.sh", "--retries", "3"]);
    let mut w = Worker::start_with(&s.url, &tmp.path().join("w"), 1, None, &["--no-sandbox"]);
    let id = s.ok(&["invoke", "poison", "x", "--async"]).trim().to_string();
    let status = w.child.wait().unwrap();
    assert!(!status.success(), "the function killed its worker");

    let out = s.cli(&["wait", &id]);
    assert!(!out.status.success());
    let shown: serde_json::Value = serde_json::from_str(&s.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["state"], "failed", "{shown}");
    let error = shown["error"].to_string();
    assert!(error.contains("dispatch message was delivered once without a result"), "{error}");

    // The server keeps working: a healthy worker and function still run.
    let _w2 = Worker::start(&s.url, &tmp.path().join("w2"), 1);
    s.ok(&["fn", "deploy", "cat", "--wasm", guest_wasm().to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "cat", "echo:still here"]), "still here");
}

#[test]
fn the_server_restarts_under_running_workers_and_the_map_completes_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("restart");
    let mut s = start(tmp.path(), &q.0, &["--lease-timeout", "2s"]);
    let _a = Worker::start(&s.url, &tmp.path().join("wa"), 1);
    let _b = Worker::start(&s.url, &tmp.path().join("wb"), 1);
    let (marks, go) = marking_gate(&s, tmp.path());
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 60).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("both workers run tasks", || marked_workers(&marks).len() == 2);

    s.kill9();
    let (data, url) = (s.data_dir.clone(), s.url.clone());
    drop(s);
    let listen = url.trim_start_matches("http://").to_string();
    let mut args: Vec<String> =
        ["up", "--listen", &listen, "--data-dir", data.to_str().unwrap(), "--lease-timeout", "2s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(broker_args(&q.0));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = Server::spawn(&args, data);
    assert_eq!(s.url, url);
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &id]);
    assert_all_echoed(&s, &id, 60);
    s.eventually("both workers joined the new server", || {
        let workers = s.get_json("/v1/workers");
        workers["workers"].as_array().unwrap().iter().filter(|w| w["state"] == "alive").count() == 2
    });
}

#[test]
fn a_bad_broker_is_refused_at_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    for (url, says) in [
        ("memory://", "the in-process queue is the default"),
        ("amqp://guest:hunter2@127.0.0.1:1/%2f", "cannot connect to the message broker"),
        ("kafka://x", "unsupported broker URL"),
    ] {
        let out = std::process::Command::new(BIN)
            .args(["up", "--listen", "127.0.0.1:0", "--slots", "0", "--data-dir"])
            .arg(tmp.path().join("d"))
            .args(["--broker", url])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url}");
        let err = stderr(&out);
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

/// A worker that did not take an attempt's message cannot end it: the end
/// of an attempt dispatched through the broker must show the claim its
/// task carried.
#[test]
fn an_end_forged_for_a_brokered_attempt_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let q = TestQueue::new("forged");
    let s = start(tmp.path(), &q.0, &[]);
    let _w = Worker::start(&s.url, &tmp.path().join("w"), 1);
    let go = deploy_gate(&s, tmp.path(), "g");
    let id = s.ok(&["invoke", "g", "real", "--async"]).trim().to_string();
    s.eventually("the worker runs it", || s.get_json(&format!("/v1/invocations/{id}"))["state"] == "running");

    let other = s.ok(&["token", "create", "--role", "worker"]).trim().to_string();
    let http = http_with(Some(&other));
    let reg: serde_json::Value = http
        .post(format!("{}/v1/workers", s.url))
        .body(r#"{"name":"intruder","host":"h","slots":1}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let me = reg["id"].as_str().unwrap();
    let forge = |claim: Option<&str>| {
        let mut c = serde_json::json!({"invocation": id, "attempt": 1, "started_at": 1, "finished_at": 2,
                                       "output": "Zm9yZ2Vk", "logs": ""});
        if let Some(t) = claim {
            c["claim"] = t.into();
        }
        let body = serde_json::json!({"completions": [c]});
        http.post(format!("{}/v1/workers/{me}/complete", s.url)).json(&body).send().unwrap().status().as_u16()
    };
    assert_eq!(forge(None), 204, "accepted, as a late report is");
    assert_eq!(forge(Some("stratus_a.default.x.1.9.bad")), 204);
    assert_eq!(s.get_json(&format!("/v1/invocations/{id}"))["state"], "running", "neither end applied");
    std::fs::write(&go, b"").unwrap();
    assert_eq!(s.ok(&["wait", &id]), "real", "the real end stands");
    let metrics = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    let stale = metrics.lines().find_map(|l| l.strip_prefix("stratus_stale_completions_total ")).unwrap();
    assert!(stale.trim().parse::<u64>().unwrap() >= 2, "{metrics}");
}
