//! Tokens, roles and projects, against the real server: who may do what,
//! what one project can see of another, what is kept of a token, and which
//! requests a server refuses before looking at a token at all.

mod common;
use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

/// Status and JSON body (null when the body is not JSON).
fn answer(res: reqwest::blocking::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

fn token(s: &Server, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    s.ok(&all).trim().to_string()
}

#[test]
fn requests_need_a_live_token_whose_role_allows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let u = &s.url;
    let (reader, invoker, developer, worker) = (
        token(&s, &["--role", "reader", "--name", "r1"]),
        token(&s, &["--role", "invoker"]),
        token(&s, &["--role", "developer", "--name", "dev"]),
        token(&s, &["--role", "worker"]),
    );
    assert!(reader.starts_with("stratus_") && reader.len() >= 51, "{reader}");

    // No token, a made-up one: 401 with the error envelope.
    for who in [None, Some("stratus_made-up"), Some("")] {
        let (status, body) = answer(http_with(who).get(format!("{u}/v1/functions")).send().unwrap());
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{who:?}: {body}");
    }
    // What stays open.
    for path in ["/healthz", "/metrics", "/v1/openapi.json"] {
        assert_eq!(http_with(None).get(format!("{u}{path}")).send().unwrap().status(), 200, "{path}");
    }

    let deploy_body = format!(
        r#"{{"runtime":{{"kind":"wasm"}},"artifact":"{}"}}"#,
        s.get_json("/v1/functions/t")["artifact"].as_str().unwrap()
    );
    let invoke =
        |t: &str| http_with(Some(t)).post(format!("{u}/v1/functions/t/invoke")).body("echo:hi").send().unwrap();
    let deploy =
        |t: &str| http_with(Some(t)).put(format!("{u}/v1/functions/t")).body(deploy_body.clone()).send().unwrap();
    let list_tokens = |t: &str| http_with(Some(t)).get(format!("{u}/v1/tokens")).send().unwrap();
    let list_functions = |t: &str| http_with(Some(t)).get(format!("{u}/v1/functions")).send().unwrap();
    let lease = |t: &str| {
        http_with(Some(t)).post(format!("{u}/v1/workers")).body(r#"{"name":"w","host":"h","slots":1}"#).send().unwrap()
    };

    assert_eq!(list_functions(&reader).status(), 200);
    let (status, body) = answer(invoke(&reader));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(invoke(&invoker).status(), 200);
    assert_eq!(deploy(&invoker).status(), 403);
    assert_eq!(deploy(&developer).status(), 201);
    assert_eq!(list_tokens(&developer).status(), 403);
    assert_eq!(lease(&developer).status(), 403, "the worker API is for worker tokens");
    assert_eq!(lease(&s.token).status(), 403, "even an admin's");
    assert_eq!(list_functions(&worker).status(), 403);
    assert_eq!(lease(&worker).status(), 201);

    // A revoked token is refused from the moment the revocation returns.
    s.ok(&["token", "revoke", "r1"]);
    assert_eq!(list_functions(&reader).status(), 401);
    let out = s.cli(&["token", "revoke", "r1"]);
    assert!(!out.status.success() && stderr(&out).contains("not found"), "{}", stderr(&out));

    // An expired one too.
    let brief = token(&s, &["--role", "reader", "--expires", "1s"]);
    s.eventually("the token expires", || list_functions(&brief).status() == 401);

    // Lists never show a secret, and the CLI says what it made.
    let listed = s.ok(&["token", "list", "--json"]);
    for secret in [&reader, &invoker, &developer, &worker, &brief, &s.token] {
        assert!(!listed.contains(secret.as_str()), "a secret is listed");
    }
    let rows: Vec<Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.iter().any(|r| r["name"] == "dev" && r["role"] == "developer" && r["project"] == "default"));
    assert!(!rows.iter().any(|r| r["name"] == "r1"), "revoked tokens are not listed");
    let made: Value = serde_json::from_str(&s.ok(&["token", "create", "--role", "reader", "--json"])).unwrap();
    assert!(
        made["token"].as_str().unwrap().starts_with("stratus_")
            && made["name"].as_str().unwrap().starts_with("reader-")
    );

    // Bad input changes nothing.
    for (args, says) in [
        (&["--role", "root"][..], "not a role"),
        (&["--role", "reader", "--name", "dev"][..], "exists"),
        (&["--role", "reader", "--name", "Bad Name"][..], "token name"),
    ] {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let out = s.cli(&all);
        assert!(!out.status.success() && stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }

    // The audit trail names who did what.
    let audit = s.ok(&["audit", "--json"]);
    let entries: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |actor: &str, action: &str, target: &str| {
        entries.iter().any(|e| e["actor"] == actor && e["action"] == action && e["target"] == target)
    };
    assert!(has("admin", "token.create", "r1") && has("admin", "token.revoke", "r1"), "{audit}");
    assert!(has("admin", "function.deploy", "t") && has("dev", "function.deploy", "t"), "{audit}");
    assert!(has("-", "token.create", "admin"), "the first admin token: {audit}");
    // A developer reads its project's trail; a reader none.
    assert!(cli_as(u, &developer, &["audit"], None).status.success());
    assert!(!cli_as(u, &invoker, &["audit"], None).status.success());
}

#[test]
fn projects_cannot_see_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let u = &s.url;
    let guest = guest_wasm();
    s.ok(&["project", "create", "team-a"]);
    s.ok(&["project", "create", "team-b"]);
    let a = s.ok(&["token", "create", "--project", "team-a", "--role", "developer"]).trim().to_string();
    let b = s.ok(&["token", "create", "--project", "team-b", "--role", "developer"]).trim().to_string();
    let as_a = |args: &[&str]| {
        let out = cli_as(u, &a, args, None);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    as_a(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--env", "WHO=a"]);
    as_a(&["fn", "deploy", "only-a", "--wasm", guest.to_str().unwrap()]);
    let inv = as_a(&["invoke", "t", "--async", "echo:secret of a"]).trim().to_string();
    as_a(&["wait", &inv]);
    let inputs = inputs_file(tmp.path(), 2);
    let job = as_a(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    as_a(&["wait", &job]);
    std::fs::write(tmp.path().join("obj"), "a's data").unwrap();
    as_a(&["object", "put", "bk/k", tmp.path().join("obj").to_str().unwrap()]);

    // The same name in another project is another function.
    let out = cli_as(u, &b, &["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--env", "WHO=b"], None);
    assert!(stdout(&out).contains("version 1"), "{}", stdout(&out));
    assert_eq!(stdout(&cli_as(u, &b, &["invoke", "t", "env:WHO"], None)), "b");
    assert_eq!(as_a(&["invoke", "t", "env:WHO"]), "a");

    // B sees nothing of A's, and learns nothing from trying: 404, as for ids that never existed.
    let hb = http_with(Some(&b));
    for path in [
        format!("/v1/invocations/{inv}"),
        format!("/v1/invocations/{inv}/output"),
        format!("/v1/invocations/{inv}/logs"),
        format!("/v1/jobs/{job}"),
        format!("/v1/jobs/{job}/results"),
        "/v1/functions/only-a".to_string(),
        "/v1/objects/bk/k".to_string(),
    ] {
        let (status, body) = answer(hb.get(format!("{u}{path}")).send().unwrap());
        assert_eq!(status, 404, "{path}: {body}");
    }
    assert_eq!(hb.post(format!("{u}/v1/jobs/{job}/cancel")).send().unwrap().status(), 404);
    assert_eq!(hb.post(format!("{u}/v1/functions/only-a/invoke")).body("x").send().unwrap().status(), 404);
    assert_eq!(hb.delete(format!("{u}/v1/functions/only-a")).send().unwrap().status(), 404);
    assert_eq!(hb.delete(format!("{u}/v1/objects/bk/k")).send().unwrap().status(), 404);
    let listed = |path: &str| hb.get(format!("{u}{path}")).send().unwrap().text().unwrap();
    assert!(!listed("/v1/invocations?limit=1000").contains(&inv));
    assert!(!listed("/v1/jobs").contains(&job));
    assert!(!listed("/v1/functions").contains("only-a"));
    assert!(!listed("/v1/objects/bk").contains("\"k\""));
    // Nor by naming A's project.
    let (status, body) =
        answer(hb.get(format!("{u}/v1/invocations/{inv}")).header("stratus-project", "team-a").send().unwrap());
    assert_eq!(status, 403, "{body}");
    // A map over A's objects from B finds none.
    let out = cli_as(u, &b, &["map", "t", "--objects", "bk/", "--detach"], None);
    assert!(!out.status.success() && stderr(&out).contains("no objects match"), "{}", stderr(&out));

    // An admin acts in any project it names, and A's things are all there.
    assert!(s.ok(&["--project", "team-a", "show", &inv]).contains("succeeded"));
    assert_eq!(s.ok(&["--project", "team-a", "object", "get", "bk/k"]), "a's data");
    assert!(!s.ok(&["fn", "list"]).contains("only-a"), "the admin's own project is default");

    // A project with live functions is not deleted; an empty one is, with its tokens.
    let out = s.cli(&["project", "delete", "team-b"]);
    assert!(!out.status.success() && stderr(&out).contains("live functions"), "{}", stderr(&out));
    assert!(cli_as(u, &b, &["fn", "delete", "t"], None).status.success());
    s.ok(&["project", "delete", "team-b"]);
    assert_eq!(hb.get(format!("{u}/v1/functions")).send().unwrap().status(), 401, "its tokens went with it");
    let out = s.cli(&["project", "create", "team-b"]);
    assert!(!out.status.success() && stderr(&out).contains("not reused"), "{}", stderr(&out));
    let projects = s.ok(&["project", "list"]);
    assert!(projects.contains("team-a") && !projects.contains("team-b"), "{projects}");
}

#[test]
fn a_token_is_shown_once_and_stored_only_as_a_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials.toml");
    let data = tmp.path().join("data");
    let log = tmp.path().join("node.log");
    let start = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", "1", "--data-dir", data.to_str().unwrap()])
            .env("STRATUS_CREDENTIALS", &creds);
        Server::from_command_logged(cmd, data.clone(), Some(&log))
    };
    let mut s = start();
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(data.join("admin.token")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&creds).unwrap().contains(&format!("\"{}\" = \"{admin}\"", s.url)));

    // The quick start: the CLI finds the token for this URL in its credentials file.
    let bare = |url: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("STRATUS_URL", url)
            .env_remove("STRATUS_TOKEN")
            .env("STRATUS_CREDENTIALS", &creds)
            .output()
            .unwrap()
    };
    let who = bare(&s.url, &["whoami", "--json"]);
    assert!(who.status.success(), "{}", stderr(&who));
    let who: Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!((who["name"].as_str(), who["role"].as_str()), (Some("admin"), Some("admin")));
    let reader = s.ok(&["token", "create", "--role", "reader", "--name", "r"]).trim().to_string();
    // `stratus login` stores another token for another URL (here the same server by another name).
    let other = s.url.replace("127.0.0.1", "localhost");
    let mut login = Command::new(BIN)
        .args(["login", &other])
        .env_remove("STRATUS_TOKEN")
        .env("STRATUS_CREDENTIALS", &creds)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    login.stdin.take().unwrap().write_all(format!("{reader}\n").as_bytes()).unwrap();
    let out = login.wait_with_output().unwrap();
    assert!(out.status.success() && stdout(&out).contains("as r (reader"), "{}", stderr(&out));
    let listed = Command::new(BIN)
        .args(["--server", &other, "fn", "list"])
        .env_remove("STRATUS_TOKEN")
        .env("STRATUS_CREDENTIALS", &creds)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let bad = Command::new(BIN)
        .args(["login", &other, "--token", "stratus_wrong"])
        .env("STRATUS_CREDENTIALS", &creds)
        .output()
        .unwrap();
    assert!(!bad.status.success() && stderr(&bad).contains("unknown, expired or revoked"), "{}", stderr(&bad));

    // A restart (here on another port) creates no other admin token and keeps the first.
    assert!(s.interrupt().success());
    let s = start();
    assert_eq!(std::fs::read_to_string(data.join("admin.token")).unwrap().trim(), admin);
    let tokens = s.ok(&["token", "list", "--json"]);
    assert_eq!(tokens.lines().filter(|l| l.contains("\"role\":\"admin\"")).count(), 1, "{tokens}");
    assert!(bare(&s.url, &["fn", "list"]).status.success(), "the restarted node's URL is stored too");
    drop(s);

    // The secrets are nowhere but where they were given: not in the store
    // (only their hashes), not in the log.
    let mut stored = Vec::new();
    for f in ["state.db", "state.db-wal"] {
        if let Ok(mut file) = std::fs::File::open(data.join(f)) {
            file.read_to_end(&mut stored).unwrap();
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    let logged = std::fs::read_to_string(&log).unwrap();
    for secret in [&admin, &reader] {
        assert!(!stored.contains(secret.as_str()), "a secret is in the state store");
        assert!(!logged.contains(secret.as_str()), "a secret is in the log");
    }
    assert!(stored.contains(&sha256_hex(&admin)), "the store keeps the hash");
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A request with the given `Host` and `Origin` headers, as a browser
/// page would send it; returns the status.
fn from_page(url: &str, host: &str, origin: Option<&str>) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let origin = origin.map(|o| format!("origin: {o}\r\n")).unwrap_or_default();
    write!(
        s,
        "POST /v1/functions/t/invoke HTTP/1.1\r\nhost: {host}\r\n{origin}content-type: text/plain\r\nconnection: close\r\ncontent-length: 7\r\n\r\necho:hi"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap()
}

#[test]
fn without_auth_only_loopback_and_pages_of_other_sites_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["up", "--insecure-no-auth", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("refusing to listen on 0.0.0.0"), "{}", stderr(&out));
    assert!(!tmp.path().join("refused").exists(), "nothing was created");

    let s = Server::start(
        tmp.path(),
        &["--slots", "1", "--insecure-no-auth", "--allowed-origin", "https://dash.example.com"],
    );
    assert!(!s.data_dir.join("admin.token").exists(), "no token without auth");
    let guest = guest_wasm();
    let deploy = Command::new(BIN)
        .args(["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()])
        .env("STRATUS_URL", &s.url)
        .env_remove("STRATUS_TOKEN")
        .output()
        .unwrap();
    assert!(deploy.status.success(), "{}", stderr(&deploy));
    let here = s.url.trim_start_matches("http://");
    assert_eq!(from_page(&s.url, here, None), 200, "a client that is not a browser");
    assert_eq!(from_page(&s.url, here, Some(&s.url)), 200, "the server's own pages");
    assert_eq!(from_page(&s.url, here, Some("https://dash.example.com")), 200, "an allowed origin");
    assert_eq!(from_page(&s.url, here, Some("http://evil.example")), 403, "another site's page");
    assert_eq!(from_page(&s.url, here, Some("null")), 403, "a sandboxed page");
    let port = here.rsplit(':').next().unwrap();
    assert_eq!(from_page(&s.url, &format!("rebound.evil.example:{port}"), None), 403, "DNS rebinding");
    assert_eq!(from_page(&s.url, &format!("localhost:{port}"), None), 200);
}

#[test]
fn a_worker_token_drives_only_the_workers_it_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0"]);
    let u = &s.url;
    let (one, two) = (token(&s, &["--role", "worker"]), token(&s, &["--role", "worker"]));
    let (status, reg) = answer(
        http_with(Some(&one))
            .post(format!("{u}/v1/workers"))
            .body(r#"{"name":"w","host":"h","slots":1}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201);
    let id = reg["id"].as_str().unwrap();
    let beat = |t: &str| http_with(Some(t)).post(format!("{u}/v1/workers/{id}/heartbeat")).send().unwrap().status();
    assert_eq!(beat(&one), 200);
    assert_eq!(beat(&two), 404, "another worker token is told it does not exist");
    let done = http_with(Some(&two))
        .post(format!("{u}/v1/workers/{id}/complete"))
        .body(r#"{"completions":[]}"#)
        .send()
        .unwrap();
    assert_eq!(done.status(), 404);
    assert_eq!(http_with(Some(&two)).delete(format!("{u}/v1/workers/{id}")).send().unwrap().status(), 404);
    assert_eq!(http_with(Some(&one)).delete(format!("{u}/v1/workers/{id}")).send().unwrap().status(), 204);
}

/// Two servers on one PostgreSQL database: a token made through one works
/// through the other, a revocation through either holds on both at once,
/// and both hold after the leader dies and the standby takes over.
#[test]
fn two_servers_share_tokens_and_revocations_across_a_failover() {
    let tmp = tempfile::tempdir().unwrap();
    let state = postgres_url(&format!("e2e_{}", stratus_core::new_id().as_uuid().simple()));
    let node = |name: &str| {
        let data = tmp.path().join(name);
        let args = ["server", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--state", &state];
        Server::spawn(&[&args[..], &["--lease-timeout", "1s"]].concat(), data.clone())
    };
    let mut a = node("a");
    let b = node("b");
    assert!(a.data_dir.join("admin.token").exists() && !b.data_dir.join("admin.token").exists(), "one admin token");
    let kept = b.ok(&["token", "create", "--role", "reader", "--name", "kept"]).trim().to_string();
    let gone = b.ok(&["token", "create", "--role", "reader", "--name", "gone"]).trim().to_string();
    let status = |s: &Server, t: &str| {
        http_with(Some(t)).get(format!("{}/v1/functions", s.url)).send().unwrap().status().as_u16()
    };
    assert_eq!((status(&a, &kept), status(&b, &gone)), (200, 200));
    a.ok(&["token", "revoke", "gone"]);
    assert_eq!((status(&a, &gone), status(&b, &gone)), (401, 401));

    a.kill9();
    b.eventually("the standby takes the lead", || {
        http_with(None)
            .get(format!("{}/healthz", b.url))
            .send()
            .is_ok_and(|r| r.json::<Value>().is_ok_and(|h| h["role"] == "leader"))
    });
    assert_eq!((status(&b, &kept), status(&b, &gone)), (200, 401));
    assert!(b.ok(&["token", "list"]).contains("kept"));
}

/// A worker that reports the end of an attempt another worker leased
/// changes nothing (the leader checks the holder, and the store's guard
/// the worker); the real end then stands.
#[test]
fn a_completion_forged_by_another_worker_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0"]);
    let u = &s.url;
    s.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let id = s.ok(&["invoke", "t", "--async", "echo:real"]).trim().to_string();
    let (one, two) = (token(&s, &["--role", "worker"]), token(&s, &["--role", "worker"]));
    let register = |t: &str| {
        let (status, reg) = answer(
            http_with(Some(t))
                .post(format!("{u}/v1/workers"))
                .body(r#"{"name":"w","host":"h","slots":1}"#)
                .send()
                .unwrap(),
        );
        assert_eq!(status, 201);
        reg["id"].as_str().unwrap().to_string()
    };
    let (w1, w2) = (register(&one), register(&two));
    // Queued, leased by no worker: no worker may end it.
    let body = serde_json::json!({"completions": [{
        "invocation": id, "attempt": 1, "started_at": 1, "finished_at": 2, "output": "Zm9yZ2Vk", "logs": "",
    }]});
    let r = http_with(Some(&two)).post(format!("{u}/v1/workers/{w2}/complete")).json(&body).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        s.get_json(&format!("/v1/invocations/{id}"))["state"],
        "queued",
        "an end of a queued call changes nothing"
    );
    let (status, leased) = answer(
        http_with(Some(&one))
            .post(format!("{u}/v1/workers/{w1}/lease"))
            .body(r#"{"max":1,"wait_ms":30000}"#)
            .send()
            .unwrap(),
    );
    assert_eq!(status, 200);
    let task = &leased["tasks"][0];
    assert_eq!(task["invocation"], id.as_str());
    let complete = |t: &str, w: &str, output: &str| {
        let body = serde_json::json!({"completions": [{
            "invocation": task["invocation"], "attempt": task["attempt"],
            "started_at": 1, "finished_at": 2, "output": output, "logs": "",
        }]});
        http_with(Some(t)).post(format!("{u}/v1/workers/{w}/complete")).json(&body).send().unwrap().status()
    };
    assert_eq!(complete(&two, &w2, "Zm9yZ2Vk"), 204, "answered as a late report is: ignored");
    let state = s.get_json(&format!("/v1/invocations/{id}"))["state"].clone();
    assert!(state == "running" || state == "queued", "the forged end did not apply: {state}");
    assert_eq!(complete(&two, &w1, "Zm9yZ2Vk"), 404, "nor can it report as the holder");
    assert_eq!(complete(&one, &w1, "cmVhbA=="), 204);
    assert_eq!(s.ok(&["wait", &id]), "real");
}

/// A project's quotas refuse, with a 422 naming the limit, what would
/// exceed them, and nothing is created.
#[test]
fn quotas_refuse_what_exceeds_them_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let shown: Value = serde_json::from_str(&s.ok(&["project", "show", "default", "--json"])).unwrap();
    assert_eq!(shown["quotas"]["max_tasks_per_job"], 1_000_000, "{shown}");
    assert_eq!(shown["quotas"]["min_chunk_size"], 65_536, "{shown}");
    s.ok(&["project", "set", "default", "--max-tasks-per-job", "3", "--max-object-size", "1KiB"]);
    let shown = s.ok(&["project", "show", "default"]);
    assert!(shown.contains("max tasks per job 3") && shown.contains("max object size 1.0 KiB"), "{shown}");

    // Tasks: three pass, four are refused (streamed or in one body), and no job is left.
    assert!(s.cli(&["map", "t", "--inputs", inputs_file(tmp.path(), 3).to_str().unwrap()]).status.success());
    let out = s.cli(&["map", "t", "--inputs", inputs_file(tmp.path(), 4).to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let err: Value = serde_json::from_str(stderr(&out).trim()).unwrap();
    assert_eq!(err["error"]["code"], "quota_exceeded", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("max_tasks_per_job"), "{err}");
    let body = r#"{"function":"t","inputs":[1,2,3,4]}"#;
    let res = s.http().post(format!("{}/v1/jobs", s.url)).body(body).send().unwrap();
    assert_eq!(res.status(), 422);
    assert_eq!(s.get_json("/v1/jobs")["jobs"].as_array().unwrap().len(), 1, "only the job that fit");

    // Objects: one byte over is refused, with or without a declared length, and leaves nothing.
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'x'; 1025]).unwrap();
    let out = s.cli(&["object", "put", "b/big", big.to_str().unwrap()]);
    assert!(!out.status.success() && stderr(&out).contains("max_object_size"), "{}", stderr(&out));
    let out = s.cli_stdin(&["object", "put", "b/big", "-"], &[b'x'; 5000]);
    assert!(!out.status.success() && stderr(&out).contains("max_object_size"), "{}", stderr(&out));
    assert!(!s.ok(&["object", "ls", "b"]).contains("big"));
    std::fs::write(&big, vec![b'x'; 1024]).unwrap();
    s.ok(&["object", "put", "b/big", big.to_str().unwrap()]);

    // Chunks below the minimum.
    let out = s.cli(&["map", "t", "--objects", "b/", "--chunk-size", "4KiB"]);
    assert!(!out.status.success() && stderr(&out).contains("min_chunk_size"), "{}", stderr(&out));

    // Bad values change nothing; the change is audited.
    assert!(!s.cli(&["project", "set", "default", "--max-tasks-per-job", "0"]).status.success());
    let res = s.http().put(format!("{}/v1/projects/default/quotas", s.url)).body(r#"{"max_tasks":5}"#).send().unwrap();
    assert_eq!(res.status(), 400);
    assert!(s.ok(&["project", "show", "default"]).contains("max tasks per job 3"));
    assert!(s.ok(&["audit"]).contains("project.quotas"));

    // All objects together: 1 KiB is stored; 2.5 KiB in all is the budget.
    s.ok(&["project", "set", "default", "--max-object-bytes", "2560"]);
    let shown: Value = serde_json::from_str(&s.ok(&["project", "show", "default", "--json"])).unwrap();
    assert_eq!(
        (shown["quotas"]["max_object_bytes"].as_u64(), shown["object_bytes"].as_u64()),
        (Some(2560), Some(1024))
    );
    std::fs::write(&big, vec![b'y'; 1000]).unwrap();
    s.ok(&["object", "put", "b/second", big.to_str().unwrap()]);
    let out = s.cli_stdin(&["object", "put", "b/third", "-"], &[b'z'; 600]);
    assert!(!out.status.success() && stderr(&out).contains("max_object_bytes"), "{}", stderr(&out));
    assert!(!s.ok(&["object", "ls", "b"]).contains("third"), "nothing left of it");
    std::fs::write(&big, vec![b'y'; 1020]).unwrap();
    s.ok(&["object", "put", "b/second", big.to_str().unwrap()]);
    s.ok(&["object", "rm", "b/big"]);
    std::fs::write(&big, vec![b'z'; 1000]).unwrap();
    s.ok(&["object", "put", "b/third", big.to_str().unwrap()]);
    let shown: Value = serde_json::from_str(&s.ok(&["project", "show", "default", "--json"])).unwrap();
    assert_eq!(shown["object_bytes"].as_u64(), Some(2020), "a replaced object counts once, a deleted one not");
}

/// Code inside a process function calls the API as its project with the
/// `STRATUS_TOKEN` of its attempt, sees only that project, and the token
/// is refused once the attempt is over.
#[test]
fn a_function_calls_the_api_as_its_project_while_its_attempt_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let u = &s.url;
    s.ok(&["project", "create", "team-a"]);
    s.ok(&["project", "create", "team-b"]);
    let a = s.ok(&["token", "create", "--project", "team-a", "--role", "invoker"]).trim().to_string();
    let b_inv = {
        s.ok(&["--project", "team-b", "fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
        s.ok(&["--project", "team-b", "invoke", "t", "--async", "echo:b"]).trim().to_string()
    };
    // The function asks for its project's functions, for team-b's
    // invocation, and for it by naming team-b; then prints its token.
    let f = tmp.path().join("caller");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(
        f.join("main.py"),
        r#"
import json, os, sys, urllib.request, urllib.error
url, token = os.environ["STRATUS_URL"], os.environ.get("STRATUS_TOKEN", "")
def get(path, project=None):
    req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + token})
    if project:
        req.add_header("stratus-project", project)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None
other = sys.stdin.read().strip()
status, fns = get("/v1/functions")
print(json.dumps({
    "functions": [f["name"] for f in fns["functions"]] if status == 200 else status,
    "other": get("/v1/invocations/" + other)[0],
    "named": get("/v1/invocations/" + other, "team-b")[0],
    "token": token,
}))
"#,
    )
    .unwrap();
    s.ok(&["--project", "team-a", "fn", "deploy", "caller", "--dir", f.to_str().unwrap(), "--cmd", "python3 main.py"]);
    let out = cli_as(u, &a, &["invoke", "caller", &b_inv], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(seen["functions"], serde_json::json!(["caller"]), "{seen}");
    assert_eq!((seen["other"].as_u64(), seen["named"].as_u64()), (Some(404), Some(403)), "{seen}");
    let token = seen["token"].as_str().unwrap();
    assert!(token.starts_with("stratus_a.team-a."), "{token}");
    // Its attempt is over: the token is refused.
    let res = http_with(Some(token)).get(format!("{u}/v1/functions")).send().unwrap();
    assert_eq!(res.status(), 401);
}

#[test]
fn metrics_can_take_a_token_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    let out = Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--metrics-token-file"])
        .arg(&short)
        .arg("--data-dir")
        .arg(tmp.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("fewer than 16"), "{}", stderr(&out));

    let file = tmp.path().join("metrics.token");
    let secret = "m3trics-0123456789abcdef";
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1", "--metrics-token-file", file.to_str().unwrap()]);
    let url = format!("{}/metrics", s.url);
    let plain = reqwest::blocking::Client::new();
    let (status, body) = answer(plain.get(&url).send().unwrap());
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{body}");
    let (status, _) = answer(plain.get(&url).bearer_auth("wrong-token-0123456789").send().unwrap());
    assert_eq!(status, 401);
    let (status, _) = answer(s.http().get(&url).send().unwrap());
    assert_eq!(status, 401, "an API token is not the metrics token");
    let res = plain.get(&url).bearer_auth(secret).send().unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().unwrap().contains("stratus_invocations_submitted_total"));
    assert_eq!(plain.get(format!("{}/healthz", s.url)).send().unwrap().status(), 200, "health stays open");
}
