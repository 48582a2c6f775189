//! The HTTP API as a client sees it, and the OpenAPI document against it.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn invoke_over_http_sync_async_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let http = s.http();
    let u = &s.url;

    assert_eq!(s.get_json("/healthz")["status"], "ok");

    let res = http.post(format!("{u}/v1/functions/t/invoke")).body("echo:over http").send().unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-stratus-invocation-id"].to_str().unwrap().to_string();
    assert_eq!(res.text().unwrap(), "over http");
    let inv = s.get_json(&format!("/v1/invocations/{id}"));
    assert_eq!(inv["state"], "succeeded");
    assert!(inv["queued_at"].as_i64().unwrap() <= inv["started_at"].as_i64().unwrap());
    assert!(inv["started_at"].as_i64().unwrap() <= inv["finished_at"].as_i64().unwrap());

    let res = http.post(format!("{u}/v1/functions/t/invoke?async=true")).body("log:5").send().unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().unwrap();
    let id = body["id"].as_str().unwrap();
    let done = s.get_json(&format!("/v1/invocations/{id}?wait=30"));
    assert_eq!(done["state"], "succeeded");
    assert_eq!(http.get(format!("{u}/v1/invocations/{id}/output")).send().unwrap().text().unwrap(), "logged");
    assert_eq!(http.get(format!("{u}/v1/invocations/{id}/logs")).send().unwrap().text().unwrap(), "lllll");

    let res = http.post(format!("{u}/v1/functions/t/invoke")).body("fail").send().unwrap();
    assert_eq!(res.status(), 502);
    let body: Value = res.json().unwrap();
    assert_eq!(body["error"]["code"], "function_failed");
    assert_eq!(body["invocation"]["error"]["exit_code"], 3);
    assert!(body["logs_tail"].as_str().unwrap().contains("boom"));
    let failed_id = body["invocation"]["id"].as_str().unwrap();
    let res = http.get(format!("{u}/v1/invocations/{failed_id}/output")).send().unwrap();
    assert_eq!(res.status(), 409);

    let metrics = http.get(format!("{u}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("stratus_invocations_submitted_total 3"), "{metrics}");
    assert!(metrics.contains("stratus_invocations_finished_total{state=\"succeeded\"} 2"), "{metrics}");
    assert!(metrics.contains("stratus_invocations_finished_total{state=\"failed\"} 1"), "{metrics}");
}

#[test]
fn every_documented_operation_is_served_with_a_documented_status() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "3"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let id = s.ok(&["invoke", "t", "--async", "x"]).trim().to_string();
    s.ok(&["wait", &id]);
    let digest = s.get_json("/v1/functions/t")["artifact"].as_str().unwrap().to_string();
    let job =
        s.ok(&["map", "t", "--inputs", inputs_file(tmp.path(), 3).to_str().unwrap(), "--detach"]).trim().to_string();
    s.ok(&["wait", &job]);
    deploy_gate(&s, tmp.path(), "g");
    // One task that blocks: the job stays running (and cancellable) while
    // the other slots serve the requests below.
    let running =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 1).to_str().unwrap(), "--detach"]).trim().to_string();
    s.ok(&["object", "put", "bk/some/key", guest.to_str().unwrap()]);
    s.ok(&["var", "set", "t", "v"]);
    s.cli_stdin(&["secret", "set", "t", "-"], b"v");
    s.ok(&["limit", "set", "t", "4"]);
    let nothing = tmp.path().join("requirements.txt");
    std::fs::write(&nothing, "# no packages\n").unwrap();
    s.ok(&["pyenv", "create", "t", "--requirements", nothing.to_str().unwrap()]);
    // The worker API takes worker tokens only.
    let as_worker = http_with(Some(&worker_token(&s.url)));
    let worker: serde_json::Value = as_worker
        .post(format!("{}/v1/workers", s.url))
        .body(r#"{"name":"w","host":"h","slots":1}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let worker = worker["id"].as_str().unwrap().to_string();

    let doc = s.get_json("/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    let http = s.http();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // An attempt's settings are asked for while it runs: e2e_settings.
            if method == "parameters" || path.ends_with("/settings") {
                continue;
            }
            let the_id = if path.starts_with("/v1/jobs/{id}/cancel") {
                &running
            } else if path.starts_with("/v1/jobs") {
                &job
            } else if path.starts_with("/v1/workers") {
                &worker
            } else {
                &id
            };
            let http = if path.starts_with("/v1/workers") && !(path == "/v1/workers" && method == "get") {
                &as_worker
            } else {
                &http
            };
            let name = if path.starts_with("/v1/projects") {
                "default"
            } else if path.starts_with("/v1/schedules") {
                "s"
            } else {
                "t"
            };
            let concrete = path
                .replace("{name}", name)
                .replace("{tag}", "t")
                .replace("{id}", the_id)
                .replace("{digest}", &digest)
                .replace("{bucket}", "bk")
                .replace("{key}", "some/key");
            let url = format!("{}{concrete}", s.url);
            let req = match method.as_str() {
                "get" if path.ends_with("/events") && path != "/v1/events" => {
                    // The job is over: the stream sends its state and ends.
                    let res = http.get(&url).send().unwrap();
                    assert_eq!(res.status(), 200);
                    assert!(res.text().unwrap().contains("event: progress"));
                    checked += 1;
                    continue;
                }
                "get" => http.get(&url),
                "head" => http.head(&url),
                "post" if path == "/v1/jobs" => http.post(&url).body(r#"{"function":"t","inputs":[1]}"#),
                "post" if path == "/v1/workers" => http.post(&url).body(r#"{"name":"w2","host":"h","slots":1}"#),
                "post" if path == "/v1/projects" => http.post(&url).body(r#"{"name":"another"}"#),
                "post" if path == "/v1/tokens" => http.post(&url).body(r#"{"role":"reader"}"#),
                "post" if path == "/v1/events" => http.post(&url).body(r#"{"type":"t","source":"s"}"#),
                "post" if path == "/v1/schedules" => http.post(&url).body(
                    r#"{"name":"s","timing":{"kind":"every","every_ms":3600000},"action":{"kind":"emit","type":"y"}}"#,
                ),
                "post" if path.ends_with("/backfill") => {
                    http.post(&url).body(r#"{"from":"2026-01-01T00:00:00Z","to":"2026-01-01T03:00:00Z"}"#)
                }
                "post" if path == "/v1/triggers" => {
                    http.post(&url).body(r#"{"name":"t","on":"x","action":{"kind":"emit","type":"y"}}"#)
                }
                "post" if path.ends_with("/lease") => http.post(&url).body(r#"{"max":1,"wait_ms":0}"#),
                "post" if path.ends_with("/complete") => http.post(&url).body(r#"{"completions":[]}"#),
                "post" if path.ends_with("/heartbeat") || path.ends_with("/cancel") => http.post(&url),
                "post" => http.post(&url).body("x"),
                // Re-deploy the same artifact / re-upload the same bytes: valid requests.
                "put" if path.starts_with("/v1/functions") => {
                    http.put(&url).body(format!(r#"{{"runtime":{{"kind":"wasm"}},"artifact":"{digest}"}}"#))
                }
                "put" if path.ends_with("/quotas") => http.put(&url).body("{}"),
                "put" if path.starts_with("/v1/variables") || path.starts_with("/v1/secrets") => {
                    http.put(&url).body(r#"{"value":"v2"}"#)
                }
                "put" if path.starts_with("/v1/limits") => http.put(&url).body(r#"{"slots":5}"#),
                "put" if path.starts_with("/v1/pyenvs") => http.put(&url).body(r#"{"requirements":""}"#),
                "put" => http.put(&url).body(std::fs::read(&guest).unwrap()),
                "delete" => continue, // exercised in e2e_functions
                other => panic!("undocumented method {other}"),
            };
            let res = req.send().unwrap();
            let status = res.status().as_u16().to_string();
            assert!(
                op["responses"].get(&status).is_some(),
                "{method} {path} answered {status}, which the document does not list"
            );
            assert!(res.status().is_success(), "{method} {path}: {status}");
            checked += 1;
        }
    }
    assert!(checked >= 34, "checked {checked} operations");
}
