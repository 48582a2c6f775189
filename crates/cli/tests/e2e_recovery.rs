//! Nothing accepted is lost: kill -9 of `stratus up` with invocations queued
//! and running, then a restart on the same data directory.

mod common;
use common::*;
use serde_json::Value;

fn states(s: &Server) -> Vec<(String, String, i64)> {
    let list = s.get_json("/v1/invocations?function=gate&limit=100");
    list["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
                i["attempts"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kill9_with_running_and_queued_invocations_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "echo", "--wasm", guest.to_str().unwrap()]);
    let earlier = s.ok(&["invoke", "echo", "--async", "echo:history"]).trim().to_string();
    s.ok(&["wait", &earlier]);
    // Blocks until the test opens the gate, then echoes its input.
    let gate = deploy_gate(&s, tmp.path(), "gate");
    let ids: Vec<String> =
        (0..5).map(|i| s.ok(&["invoke", "gate", "--async", &format!("input-{i}")]).trim().to_string()).collect();
    s.eventually("two invocations running", || states(&s).iter().filter(|(_, st, _)| st == "running").count() == 2);

    s.kill9();
    let data = s.data_dir.clone();
    drop(s);
    let s = Server::start_in(data, &["--slots", "2"]);
    // Functions, versions and history survived.
    assert_eq!(s.get_json("/v1/functions/gate")["version"], 1);
    assert_eq!(s.ok(&["wait", &earlier]), "history");

    std::fs::write(&gate, b"").unwrap();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(s.ok(&["wait", id]), format!("input-{i}"), "invocation {i} completed after the restart");
    }
    let after = states(&s);
    assert_eq!(after.len(), 5, "no invocation was duplicated: {after:?}");
    assert!(after.iter().all(|(_, st, _)| st == "succeeded"), "{after:?}");
    let rerun = after.iter().filter(|(_, _, attempts)| *attempts == 2).count();
    assert_eq!(rerun, 2, "the two running attempts ran again: {after:?}");
    for id in &ids {
        let inv: Value = s.get_json(&format!("/v1/invocations/{id}"));
        let history = inv["attempt_history"].as_array().unwrap();
        assert_eq!(history.len(), 1, "one recorded (finished) attempt: {inv}");
        assert_eq!(history[0]["state"], "succeeded");
    }
}

#[test]
fn ctrl_c_stops_cleanly_and_a_second_node_cannot_share_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "echo", "--wasm", guest.to_str().unwrap()]);
    let id = s.ok(&["invoke", "echo", "--async", "echo:kept"]).trim().to_string();
    s.ok(&["wait", &id]);

    let second = std::process::Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&s.data_dir)
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(stderr(&second).contains("in use by another stratus process"), "{}", stderr(&second));

    let status = s.interrupt();
    assert!(status.success(), "Ctrl-C exits 0: {status:?}");
    let data = s.data_dir.clone();
    drop(s);
    let s = Server::start_in(data, &["--slots", "1"]);
    assert_eq!(s.ok(&["wait", &id]), "kept");
    assert_eq!(s.ok(&["invoke", "echo", "echo:again"]), "again");
}
