//! The server cannot be exhausted or crashed by a function or a request:
//! wasm sleeps end at the timeout, parameters are range-checked, waits and
//! lost workers do not pile up, object keys and file system errors are
//! handled, and `/healthz` says when a store refuses writes.

mod common;
use common::*;
use serde_json::{Value, json};

fn metric(s: &Server, name: &str) -> f64 {
    let text = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_wasm_guest_asleep_in_a_host_call_ends_at_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "sleepy", "--wasm", guest.to_str().unwrap(), "--timeout", "1s"]);
    // Ten minutes asked for; the test client's own bound (120 s) would fail first without the fix.
    let res = s.http().post(format!("{}/v1/functions/sleepy/invoke", s.url)).body("sleep:600000").send().unwrap();
    assert_eq!(res.status().as_u16(), 504);
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "function_timed_out", "{body}");
    // The slot is free again: a short sleep answers.
    assert_eq!(s.ok(&["invoke", "sleepy", "sleep:1"]).trim(), "slept");
}

#[test]
fn numeric_parameters_are_range_checked_and_waits_do_not_pile_up() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "echo", "--wasm", guest.to_str().unwrap()]);
    let id = s.ok(&["invoke", "echo", "--async", "x"]).trim().to_string();
    let http = s.http();
    let u = &s.url;
    let status = |path: &str| http.get(format!("{u}{path}")).send().unwrap().status().as_u16();
    // Out of range: clamped (a huge wait) or refused, never a panic.
    assert_eq!(status(&format!("/v1/invocations/{id}?wait=1e30")), 200);
    for bad in ["-1", "NaN", "inf", "soon"] {
        assert_eq!(status(&format!("/v1/invocations/{id}?wait={bad}")), 400, "wait={bad}");
    }
    let job_inputs = tmp.path().join("in.jsonl");
    std::fs::write(&job_inputs, "\"a\"\n").unwrap();
    let job = s.ok(&["map", "echo", "--inputs", job_inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    assert_eq!(status(&format!("/v1/jobs/{job}?wait=1e300")), 200);
    assert_eq!(status(&format!("/v1/jobs/{job}?failures=100000000")), 400);
    s.ok(&["object", "put", "b/k", job_inputs.to_str().unwrap()]);
    let res = http.get(format!("{u}/v1/objects/b/k")).header("range", "bytes=0-18446744073709551615").send().unwrap();
    assert_eq!(res.status().as_u16(), 400);

    // Waits on ids that do not exist (here) end with their requests.
    for _ in 0..200 {
        let unknown = uuid_like();
        assert_eq!(status(&format!("/v1/invocations/{unknown}?wait=0")), 404);
        assert_eq!(status(&format!("/v1/jobs/{unknown}?wait=0")), 404);
    }
    assert_eq!(metric(&s, "stratus_waiters"), 0.0);
    assert_eq!(status("/healthz"), 200, "the server is still healthy");
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("0190f000-0000-7000-8000-{:012x}", N.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn lost_workers_are_forgotten_after_ten_lease_timeouts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0", "--lease-timeout", "200ms"]);
    let http = http_with(Some(&worker_token(&s.url)));
    for i in 0..20 {
        let res = http
            .post(format!("{}/v1/workers", s.url))
            .json(&json!({"name": format!("w{i}"), "host": "h", "slots": 1}))
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
    }
    let count = |state: &str| {
        s.get_json("/v1/workers")["workers"].as_array().unwrap().iter().filter(|w| w["state"] == state).count()
    };
    s.eventually("the silent workers are declared lost", || count("lost") == 20);
    s.eventually("lost workers leave the registry", || count("lost") == 0);
    assert_eq!(count("alive"), 0);
}

#[test]
fn object_keys_round_trip_and_clashes_are_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let http = s.http();
    let u = &s.url;
    let key = "caf\u{e9} #1.txt";
    let encoded = "caf%C3%A9%20%231.txt";
    let res = http.put(format!("{u}/v1/objects/b/{encoded}")).body("hello").send().unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let listed = s.get_json("/v1/objects/b");
    let keys: Vec<&str> = listed["objects"].as_array().unwrap().iter().map(|o| o["key"].as_str().unwrap()).collect();
    assert_eq!(keys, [format!("b/{key}")], "{listed}");
    assert_eq!(http.get(format!("{u}/v1/objects/b/{encoded}")).send().unwrap().text().unwrap(), "hello");

    assert_eq!(http.put(format!("{u}/v1/objects/b/file")).body("x").send().unwrap().status().as_u16(), 201);
    let res = http.put(format!("{u}/v1/objects/b/file/under")).body("y").send().unwrap();
    assert_eq!(res.status().as_u16(), 409);
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    let long = "x".repeat(300);
    assert_eq!(http.put(format!("{u}/v1/objects/b/{long}")).body("y").send().unwrap().status().as_u16(), 400);
}

#[test]
fn deploys_that_could_never_start_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let bundle = tmp.path().join("b");
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("run.sh"), "cat").unwrap();
    s.ok(&["fn", "deploy", "ok", "--dir", bundle.to_str().unwrap(), "--cmd", "sh run.sh"]);
    let artifact = s.get_json("/v1/functions/ok")["artifact"].as_str().unwrap().to_string();
    let http = s.http();
    let deploy = |runtime: Value, env: Value| {
        let res = http
            .put(format!("{}/v1/functions/bad", s.url))
            .json(&json!({"runtime": runtime, "artifact": artifact, "env": env}))
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<Value>().unwrap()["error"]["message"].as_str().unwrap_or_default().to_string())
    };
    let (st, msg) = deploy(json!({"kind": "process", "cmd": "sh run.sh", "wram": true}), json!({}));
    assert_eq!(st, 400);
    assert!(msg.contains("unknown field"), "{msg}");
    let (st, msg) = deploy(json!({"kind": "process", "cmd": "sh\u{0}run.sh"}), json!({}));
    assert!(st == 400 && msg.contains("NUL"), "{st} {msg}");
    let (st, msg) = deploy(json!({"kind": "process", "cmd": "x".repeat(10_000)}), json!({}));
    assert!(st == 400 && msg.contains("longer than"), "{st} {msg}");
    let big: serde_json::Map<String, Value> = (0..300).map(|i| (format!("V{i}"), json!("y".repeat(1000)))).collect();
    let (st, msg) = deploy(json!({"kind": "process", "cmd": "sh run.sh"}), Value::Object(big));
    assert!(st == 400 && msg.contains("bytes of variables"), "{st} {msg}");
    assert_eq!(http.get(format!("{}/v1/functions/bad", s.url)).send().unwrap().status().as_u16(), 404);
}

#[test]
fn healthz_says_when_the_object_store_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let http = s.http();
    let health = || {
        let res = http.get(format!("{}/healthz", s.url)).send().unwrap();
        (res.status().as_u16(), res.json::<Value>().unwrap())
    };
    assert_eq!(health().0, 200);
    // The objects directory becomes a file: nothing can be written under it.
    let objects = s.data_dir.join("objects");
    std::fs::rename(&objects, s.data_dir.join("objects.moved")).unwrap();
    std::fs::write(&objects, b"not a directory").unwrap();
    s.eventually("healthz reports the object store", || {
        let (status, body) = health();
        status == 503 && body["problems"].to_string().contains("object store")
    });
    std::fs::remove_file(&objects).unwrap();
    std::fs::rename(s.data_dir.join("objects.moved"), &objects).unwrap();
    s.eventually("healthz recovers", || health().0 == 200);
}
