//! Sync invocations, which run on the HTTP handler's own task when a local
//! slot is free: they take a slot's place, outlive a caller that goes away,
//! are retried like any other, and survive a kill -9 once they show.

mod common;
use common::*;
use serde_json::Value;
use std::io::Write;

/// The invocations of `function`, newest first.
fn invocations(s: &Server, function: &str) -> Vec<Value> {
    s.get_json(&format!("/v1/invocations?function={function}&limit=100"))["invocations"].as_array().unwrap().clone()
}

fn sync_invoke(s: &Server, function: &str, input: &str) -> std::thread::JoinHandle<(u16, String)> {
    let (http, url) = (s.http(), format!("{}/v1/functions/{function}/invoke", s.url));
    let input = input.to_string();
    std::thread::spawn(move || {
        let res = http.post(url).body(input).send().unwrap();
        (res.status().as_u16(), res.text().unwrap())
    })
}

#[test]
fn a_sync_invocation_takes_a_slot_so_no_more_than_slots_run_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let go = deploy_gate(&s, tmp.path(), "gate");
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "echo", "--wasm", guest.to_str().unwrap()]);

    let first = sync_invoke(&s, "gate", "first");
    s.eventually("the gated invocation shows running", || {
        invocations(&s, "gate").first().is_some_and(|i| i["state"] == "running")
    });
    let second = sync_invoke(&s, "echo", "echo:second");
    s.eventually("the second invocation shows", || !invocations(&s, "echo").is_empty());
    // The one slot is taken: the second waits its turn, even though no
    // slot task runs the first.
    assert_eq!(invocations(&s, "echo")[0]["state"], "queued");
    assert_eq!(invocations(&s, "gate")[0]["state"], "running");

    std::fs::write(&go, b"").unwrap();
    assert_eq!(first.join().unwrap(), (200, "first".to_string()));
    assert_eq!(second.join().unwrap(), (200, "second".to_string()));
    let (gate, echo) = (&invocations(&s, "gate")[0], &invocations(&s, "echo")[0]);
    assert_eq!((&gate["state"], &echo["state"]), (&Value::from("succeeded"), &Value::from("succeeded")));
    assert!(
        echo["started_at"].as_i64().unwrap() >= gate["finished_at"].as_i64().unwrap(),
        "the second started once the first had ended: {gate} {echo}"
    );
    let workers = s.get_json("/v1/workers");
    assert_eq!(workers["workers"][0]["running"], 0, "{workers}");
}

#[test]
fn a_sync_invocation_whose_caller_goes_away_still_ends_and_is_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let go = deploy_gate(&s, tmp.path(), "gate");
    let addr = s.url.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /v1/functions/gate/invoke HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: 7\r\n\r\nwalkout",
        s.token
    );
    conn.write_all(head.as_bytes()).unwrap();
    s.eventually("the invocation shows running", || {
        invocations(&s, "gate").first().is_some_and(|i| i["state"] == "running")
    });
    drop(conn);
    std::fs::write(&go, b"").unwrap();
    let id = invocations(&s, "gate")[0]["id"].as_str().unwrap().to_string();
    let inv = s.get_json(&format!("/v1/invocations/{id}?wait=60"));
    assert_eq!((inv["state"].as_str(), inv["attempts"].as_i64()), (Some("succeeded"), Some(1)), "{inv}");
    assert_eq!(s.ok(&["wait", &id]), "walkout");
    // The slot it held is free again.
    assert_eq!(s.ok(&["invoke", "gate", "after"]), "after");
}

#[test]
fn a_failed_sync_invocation_is_retried_before_its_caller_is_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--retries", "2"]);
    let res = s.http().post(format!("{}/v1/functions/t/invoke", s.url)).body("fail").send().unwrap();
    assert_eq!(res.status(), 502);
    let body: Value = res.json().unwrap();
    assert_eq!(body["invocation"]["attempts"], 3, "{body}");
    let id = body["invocation"]["id"].as_str().unwrap();
    let inv = s.get_json(&format!("/v1/invocations/{id}"));
    let history = inv["attempt_history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{inv}");
    assert!(history.iter().all(|a| a["state"] == "failed"), "{inv}");
    let metrics = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    assert!(metrics.contains("stratus_invocations_submitted_total 1"), "{metrics}");
    assert!(metrics.contains("stratus_attempts_started_total 3"), "{metrics}");
}

#[test]
fn a_sync_invocation_that_shows_running_runs_again_after_a_kill9() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "1"]);
    let go = deploy_gate(&s, tmp.path(), "gate");
    let caller = sync_invoke(&s, "gate", "again");
    s.eventually("the invocation shows running", || {
        invocations(&s, "gate").first().is_some_and(|i| i["state"] == "running")
    });
    let id = invocations(&s, "gate")[0]["id"].as_str().unwrap().to_string();
    s.kill9();
    // Its caller was told nothing but that the connection broke.
    let _ = caller.join();
    let data = s.data_dir.clone();
    drop(s);
    let s = Server::start_in(data, &["--slots", "1"]);
    std::fs::write(&go, b"").unwrap();
    assert_eq!(s.ok(&["wait", &id]), "again");
    let inv = s.get_json(&format!("/v1/invocations/{id}"));
    assert_eq!((inv["state"].as_str(), inv["attempts"].as_i64()), (Some("succeeded"), Some(2)), "{inv}");
}
