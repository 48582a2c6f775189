//! The CLI's first hour: `--json` output, errors in one line with a hint,
//! failures that explain themselves, readable output. Each test drives the
//! real binary as a user would.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

/// Every line of `text` as JSON (NDJSON), failing on a line that is not.
fn rows(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))).collect()
}

/// The single JSON object on stdout, on a single line.
fn one(text: &str) -> Value {
    let r = rows(text);
    assert_eq!(r.len(), 1, "one object on one line: {text:?}");
    assert!(r[0].is_object(), "{text}");
    r[0].clone()
}

/// The JSON error envelope on stderr.
fn envelope(o: &std::process::Output) -> Value {
    assert!(!o.status.success(), "a failure exits non-zero");
    let e = one(&stderr(o));
    assert!(e["error"]["code"].is_string() && e["error"]["message"].is_string(), "{e}");
    e
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
    std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn every_verb_prints_json_as_one_object_or_rows_and_errors_as_an_envelope() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    let deployed = one(&s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--json"]));
    assert_eq!((deployed["name"].as_str(), deployed["version"].as_u64()), (Some("t"), Some(1)));
    let fns = rows(&s.ok(&["fn", "list", "--json"]));
    assert_eq!(fns.len(), 1);
    assert_eq!(fns[0]["name"], "t");
    assert_eq!(one(&s.ok(&["fn", "show", "t", "--json"]))["version"], 1);

    let invoked = one(&s.ok(&["invoke", "t", "echo:hi", "--json"]));
    assert_eq!(invoked["output"], "hi");
    let id = invoked["id"].as_str().unwrap().to_string();
    assert_eq!(one(&s.ok(&["show", &id, "--json"]))["state"], "succeeded");
    let queued = one(&s.ok(&["invoke", "t", "--async", "log:5", "--json"]));
    let qid = queued["id"].as_str().unwrap();
    let waited = one(&s.ok(&["wait", qid, "--json"]));
    assert_eq!((waited["id"].as_str(), waited["output"].as_str()), (Some(qid), Some("logged")));
    assert_eq!(one(&s.ok(&["logs", qid, "--json"]))["logs"], "lllll");
    let invs = rows(&s.ok(&["invocations", "--json"]));
    assert_eq!(invs.len(), 2);
    assert!(invs.iter().all(|i| i["function"] == "t"));

    // A failed function: the envelope, with the invocation beside it.
    let failed = s.cli(&["invoke", "t", "fail", "--json"]);
    assert!(stdout(&failed).is_empty());
    let e = envelope(&failed);
    assert_eq!(e["error"]["code"], "function_failed");
    assert!(e["invocation"]["id"].is_string() && e["logs_tail"].as_str().unwrap().contains("boom"), "{e}");

    let file = tmp.path().join("data.txt");
    std::fs::write(&file, "x".repeat(3000)).unwrap();
    let put = one(&s.ok(&["object", "put", "b/k.txt", file.to_str().unwrap(), "--json"]));
    assert_eq!((put["key"].as_str(), put["size"].as_u64()), (Some("b/k.txt"), Some(3000)));
    let objs = rows(&s.ok(&["object", "ls", "b", "--json"]));
    assert_eq!((objs.len(), objs[0]["size"].as_u64()), (1, Some(3000)));
    let copy = tmp.path().join("copy.txt");
    let got = one(&s.ok(&["object", "get", "b/k.txt", copy.to_str().unwrap(), "--json"]));
    assert_eq!(got["size"], 3000);
    assert_eq!(one(&s.ok(&["object", "rm", "b/k.txt", "--json"]))["deleted"], true);

    // map: one row per task; with --reduce, the reduce result is the last row.
    let inputs = inputs_file(tmp.path(), 3);
    let out = rows(&s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--reduce", "t", "--json"]));
    assert_eq!(out.len(), 4, "{out:?}");
    assert!(out[..3].iter().enumerate().all(|(i, r)| r["stage"] == "map" && r["index"] == i), "{out:?}");
    assert_eq!(out[3]["stage"], "reduce");
    assert_eq!(out[3]["status"], "succeeded");
    assert_eq!(out[3]["output"], "\"t-0\"\n\"t-1\"\n\"t-2\"\n", "the reducer echoes the map outputs");
    let detached = one(&s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach", "--json"]));
    let job = detached["id"].as_str().unwrap().to_string();
    s.ok(&["wait", &job]);
    let jobs = rows(&s.ok(&["job", "list", "--json"]));
    assert_eq!(jobs.len(), 2);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded" && j["total"] == 3), "{jobs:?}");
    assert_eq!(one(&s.ok(&["job", "show", &job, "--json"]))["succeeded"], 3);
    assert_eq!(rows(&s.ok(&["job", "results", &job, "--json"])).len(), 3);
    let _go = deploy_gate(&s, tmp.path(), "g");
    let gated = one(&s.ok(&["map", "g", "--inputs", inputs.to_str().unwrap(), "--detach", "--json"]));
    let gated = gated["id"].as_str().unwrap();
    let cancelled = one(&s.ok(&["job", "cancel", gated, "--json"]));
    assert_eq!(cancelled["id"], gated);
    assert!(cancelled["cancelled_queued"].as_u64().is_some(), "{cancelled}");
    assert_eq!(rows(&s.ok(&["workers", "--json"])).len(), 1, "the local worker");

    // Refusals by the server keep its code; usage errors are envelopes too.
    let e = envelope(&s.cli(&["invoke", "nope", "--json"]));
    assert_eq!(e["error"]["code"], "not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("function 'nope' not found"), "{e}");
    let usage = s.cli(&["map", "t", "--json"]);
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(envelope(&usage)["error"]["code"], "usage");

    assert_eq!(one(&s.ok(&["fn", "delete", "t", "--json"])), serde_json::json!({"name": "t", "deleted": true}));

    // Node roles: the first line is an object too.
    let mut node = Command::new(BIN)
        .args(["up", "--json", "--listen", "127.0.0.1:0", "--data-dir", tmp.path().join("d2").to_str().unwrap()])
        .env("STRATUS_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(node.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _ = node.kill();
    let _ = node.wait();
    assert!(one(&line)["listening"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{line}");
}

/// Answers every connection with `response`, like a server that is not Stratus.
fn foreign_server(response: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            use std::io::{Read, Write};
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(response.as_bytes());
        }
    });
    url
}

/// One line, `error: …`.
fn one_error_line(o: &std::process::Output) -> String {
    assert!(!o.status.success());
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn errors_without_a_server_are_one_line_with_a_hint() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{port}");
    let err = one_error_line(&cli(&down, &["fn", "list"], None));
    assert!(err.contains("cannot reach the Stratus server") && err.contains("start `stratus up` or set STRATUS_URL"));
    assert_eq!(envelope(&cli(&down, &["fn", "list", "--json"], None))["error"]["code"], "unreachable");

    let err = one_error_line(&cli("127.0.0.1:7878", &["fn", "list"], None));
    assert!(err.contains("not a server URL") && err.contains("http://127.0.0.1:7878"), "{err}");

    let html = foreign_server(
        "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: 9\r\nconnection: close\r\n\r\n<h1>x</h1",
    );
    let err = one_error_line(&cli(&html, &["fn", "list"], None));
    assert!(err.contains("is STRATUS_URL a Stratus server?"), "{err}");
    let text = foreign_server(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    );
    let err = one_error_line(&cli(&text, &["fn", "list"], None));
    assert!(err.contains("is STRATUS_URL a Stratus server?"), "{err}");
    assert_eq!(envelope(&cli(&text, &["invocations", "--json"], None))["error"]["code"], "not_stratus");

    // Node flags.
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["up", "--listen", "7878"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("give e.g. 127.0.0.1:7878"), "{}", stderr(&out));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let fresh = tmp.path().join("fresh");
    let out = Command::new(BIN)
        .args(["up", "--listen", &addr, "--data-dir", fresh.to_str().unwrap()])
        .env("STRATUS_LOG", "warn")
        .output()
        .unwrap();
    let err = one_error_line(&out);
    assert!(err.contains(&format!("cannot listen on {addr}: the address is in use")), "{err}");
    assert!(!fresh.exists(), "no data directory is created for a node that cannot start");

    // Sources of a map and of a function: one or the other, and say so.
    let inputs = inputs_file(tmp.path(), 1);
    let i = inputs.to_str().unwrap();
    let err = stderr(&cli(&down, &["map", "t"], None));
    assert!(err.contains("--inputs") && err.contains("--objects"), "{err}");
    let err = stderr(&cli(&down, &["map", "t", "--inputs", i, "--objects", "b/"], None));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = one_error_line(&cli(&down, &["map", "t", "--inputs", i, "--chunk-size", "1M"], None));
    assert!(err.contains("--chunk-size applies to --objects only"), "{err}");
    let err = stderr(&cli(&down, &["fn", "deploy", "x"], None));
    assert!(err.contains("--wasm") && err.contains("--dir"), "{err}");
    // STRATUS_URL is set: the global flag it fills is not shown as required.
    assert!(!err.contains("--server"), "{err}");

    // --help describes the arguments and shows defaults.
    let help = stdout(&Command::new(BIN).args(["job", "list", "--help"]).output().unwrap());
    assert!(help.contains("How many to list") && help.contains("[default: 20]"), "{help}");
    let help = stdout(&Command::new(BIN).args(["object", "put", "--help"]).output().unwrap());
    assert!(help.contains("BUCKET/KEY") && help.contains("- for stdin"), "{help}");
}

#[test]
fn errors_against_a_server_are_one_line_and_checked_before_sending() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, "x").unwrap();
    let err = one_error_line(&s.cli(&["object", "put", "bucket", file.to_str().unwrap()]));
    assert!(err.contains("'bucket' is not BUCKET/KEY"), "{err}");
    let err = one_error_line(&s.cli(&["object", "put", "b/dir", tmp.path().to_str().unwrap()]));
    assert!(err.contains("is a directory"), "{err}");
    assert!(s.get_json("/v1/objects/b")["objects"].as_array().unwrap().is_empty(), "nothing was stored");
    assert!(s.get_json("/v1/objects/bucket")["objects"].as_array().unwrap().is_empty(), "nothing was stored");

    // A method a route does not serve: 405 with the JSON envelope.
    let res = s.http().delete(format!("{}/v1/jobs", s.url)).send().unwrap();
    assert_eq!(res.status().as_u16(), 405);
    let body: Value = res.json().expect("a JSON body");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");

    // A reader that goes away early ends the command quietly.
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![b'y'; 4 << 20]).unwrap();
    s.ok(&["object", "put", "b/big", big.to_str().unwrap()]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let id = s.ok(&["invoke", "t", "--async", "log:900000"]).trim().to_string();
    s.ok(&["wait", &id]);
    for args in [vec!["object", "get", "b/big"], vec!["logs", &id]] {
        let mut child = Command::new(BIN)
            .args(&args)
            .env("STRATUS_URL", &s.url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut head = [0u8; 10];
        use std::io::Read;
        child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {:?} {}", out.status, stderr(&out));
        assert!(stderr(&out).is_empty(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn failed_tasks_and_reducers_explain_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let dir = tmp.path().join("fns");
    script(
        &dir,
        "poison.sh",
        "#!/bin/sh\nread x\nif [ \"$x\" = '\"poison\"' ]; then echo 'line one' >&2; echo 'cannot digest' >&2; exit 9; fi\necho \"ok $x\"\n",
    );
    script(&dir, "badreduce.sh", "#!/bin/sh\ncat >/dev/null\necho 'reducer broke' >&2\nexit 4\n");
    let d = dir.to_str().unwrap();
    s.ok(&["fn", "deploy", "p", "--dir", d, "--cmd", "./poison.sh"]);
    s.ok(&["fn", "deploy", "rf", "--dir", d, "--cmd", "./badreduce.sh"]);
    let inputs = tmp.path().join("in.jsonl");
    std::fs::write(&inputs, "1\n2\n\"poison\"\n4\n").unwrap();

    let out = s.cli(&["map", "p", "--inputs", inputs.to_str().unwrap()]);
    assert!(!out.status.success());
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[3], "ok 4");
    assert!(lines[2].starts_with("[task 2 failed: exited with status 9; stratus logs "), "marked: {lines:?}");
    let inv = lines[2].trim_end_matches(']').rsplit(' ').next().unwrap().to_string();
    assert!(stdout(&s.cli(&["logs", &inv])).contains("cannot digest"), "the id is the failed task's invocation");
    let err = stderr(&out);
    assert!(err.contains(&format!("task 2: exited with status 9 (stratus logs {inv})")), "{err}");
    assert!(err.contains("| line one") && err.contains("| cannot digest"), "the tail of stderr: {err}");

    let job = s.get_json("/v1/jobs")["jobs"][0]["id"].as_str().unwrap().to_string();
    let show = s.ok(&["job", "show", &job]);
    assert!(show.contains(&format!("task 2: exited with status 9 (stratus logs {inv})")), "{show}");
    assert!(show.contains("| cannot digest"), "{show}");
    let results = s.cli(&["job", "results", &job]);
    assert_eq!(stdout(&results), stdout(&out), "job results prints what map printed");
    assert!(stderr(&results).contains("| cannot digest"));

    // A reducer that fails: its error, its stderr and its invocation.
    std::fs::write(&inputs, "1\n2\n").unwrap();
    let out = s.cli(&["map", "p", "--inputs", inputs.to_str().unwrap(), "--reduce", "rf"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("reducer rf: exited with status 4 (stratus logs "), "{err}");
    assert!(err.contains("| reducer broke"), "{err}");
    let e = envelope(&s.cli(&["job", "results", s.get_json("/v1/jobs")["jobs"][0]["id"].as_str().unwrap(), "--json"]));
    assert_eq!(e["error"]["code"], "job_failed");
    assert_eq!(e["failures"][0]["reducer"], "rf", "{e}");
    assert!(e["failures"][0]["logs_tail"].as_str().unwrap().contains("reducer broke"), "{e}");

    // Too little memory, or a command that cannot start: a hint.
    std::fs::write(dir.join("mem.py"), "x = bytearray(512 * 1024 * 1024)\nprint('allocated')\n").unwrap();
    s.ok(&["fn", "deploy", "mem", "--dir", d, "--cmd", "python3 mem.py", "--memory", "100M"]);
    let err = stderr(&s.cli(&["invoke", "mem"]));
    assert!(err.contains("out of memory"), "{err}");
    assert!(err.contains("hint: mem ran out of memory under its limit of 100 MiB"), "{err}");
    assert!(err.contains("--memory 512M"), "{err}");
    script(&dir, "missing.sh", "#!/bin/sh\nexec no-such-program-anywhere\n");
    s.ok(&["fn", "deploy", "gone", "--dir", d, "--cmd", "./missing.sh"]);
    let err = stderr(&s.cli(&["invoke", "gone"]));
    assert!(err.contains("hint: exit status 127"), "{err}");
}

#[test]
fn ctrl_c_during_map_says_how_to_come_back_and_leaves_the_job_running() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let go = deploy_gate(&s, tmp.path(), "g");
    let inputs = inputs_file(tmp.path(), 2);
    let mut map = Command::new(BIN)
        .args(["map", "g", "--inputs", inputs.to_str().unwrap()])
        .env("STRATUS_URL", &s.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut job = String::new();
    s.eventually("the job is accepted", || {
        let jobs = s.get_json("/v1/jobs");
        jobs["jobs"].as_array().unwrap().first().map(|j| job = j["id"].as_str().unwrap().to_string()).is_some()
    });
    // SAFETY: signalling our own child.
    unsafe { kill(map.id() as i32, 2) };
    let status = map.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    map.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains(&format!("job {job} goes on running")), "{err}");
    assert!(
        err.contains(&format!("stratus wait {job}")) && err.contains(&format!("stratus job cancel {job}")),
        "{err}"
    );
    assert_eq!(s.get_json(&format!("/v1/jobs/{job}"))["state"], "running");
    std::fs::write(&go, "").unwrap();
    assert_eq!(s.ok(&["wait", &job]).lines().count(), 2, "re-attached");
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// `2026-12-07 00:02:35Z`: a date, not epoch milliseconds.
fn has_date(text: &str) -> bool {
    text.as_bytes().windows(20).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
    })
}

#[test]
fn output_is_readable_dates_ages_sizes_and_timelines() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let id = s.ok(&["invoke", "t", "--async", "echo:x"]).trim().to_string();
    s.ok(&["wait", &id]);
    let show = s.ok(&["show", &id]);
    assert!(has_date(&show) && show.contains("s ago)"), "{show}");
    let list = s.ok(&["invocations"]);
    assert!(list.lines().next().unwrap().contains("QUEUED"), "{list}");
    assert!(list.lines().nth(1).unwrap().ends_with("s ago"), "{list}");

    let inputs = inputs_file(tmp.path(), 5);
    let job = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    s.ok(&["wait", &job]);
    let jobs = s.ok(&["job", "list"]);
    assert!(jobs.lines().next().unwrap().contains("CREATED"), "{jobs}");
    assert!(jobs.lines().nth(1).unwrap().ends_with("s ago"), "{jobs}");
    assert!(has_date(&s.ok(&["job", "show", &job])));
    let tasks = s.ok(&["invocations", "--job", &job]);
    assert_eq!(tasks.lines().count(), 1 + 5, "{tasks}");
    let tasks = rows(&s.ok(&["invocations", "--job", &job, "--json"]));
    assert!(tasks.iter().enumerate().all(|(i, t)| t["job_id"] == job.as_str() && t["task_index"] == i), "{tasks:?}");
    let timeline = s.ok(&["job", "timeline", &job, "--slowest", "3"]);
    assert!(timeline.contains("run time:") && timeline.contains("queue wait:"), "{timeline}");
    assert_eq!(timeline.lines().filter(|l| l.trim_start().starts_with("task ")).count(), 3, "{timeline}");
    let t = one(&s.ok(&["job", "timeline", &job, "--json"]));
    assert_eq!(t["slowest"].as_array().unwrap().len(), 5);

    let file = tmp.path().join("f.bin");
    std::fs::write(&file, vec![0u8; 3 << 20]).unwrap();
    assert_eq!(s.ok(&["object", "put", "b/f", file.to_str().unwrap()]).trim(), "stored b/f (3.0 MiB)");
    assert!(s.ok(&["object", "ls", "b"]).contains("3.0 MiB"));

    // On a terminal the output ends with a newline; in a pipe it is as is.
    assert_eq!(s.ok(&["invoke", "t", "echo:bare"]), "bare");
    let tty = Command::new("script")
        .args(["-qec", &format!("{BIN} invoke t echo:bare"), "/dev/null"])
        .env("STRATUS_URL", &s.url)
        .stdin(Stdio::null())
        .output()
        .expect("script(1) from util-linux runs a command on a terminal");
    assert_eq!(stdout(&tty).replace('\r', ""), "bare\n");
}

#[test]
fn a_worker_that_stops_cleanly_leaves_and_job_ids_point_to_job_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let mut w = Worker::start(&s.url, &tmp.path().join("w"), 1);
    let listed = |id: &str| rows(&s.ok(&["workers", "--json"])).iter().any(|r| r["id"] == id);
    assert!(listed(&w.id));
    w.signal(15);
    assert!(w.child.wait().unwrap().success());
    assert!(!listed(&w.id), "deregistered before it exited, not lost a lease timeout later");

    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let inputs = inputs_file(tmp.path(), 1);
    let job = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    for verb in ["show", "logs"] {
        let err = one_error_line(&s.cli(&[verb, &job]));
        assert!(err.contains(&format!("{job} is a job")) && err.contains(&format!("stratus job show {job}")), "{err}");
    }
}

#[test]
fn metrics_count_by_function_and_the_dashboard_queries_only_exported_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    s.ok(&["invoke", "t", "echo:x"]);
    assert!(!s.cli(&["invoke", "t", "fail"]).status.success());
    let metrics = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    for line in [
        r#"stratus_invocations_total{project="default",function="t",outcome="succeeded"} 1"#,
        r#"stratus_invocations_total{project="default",function="t",outcome="failed"} 1"#,
        r#"stratus_invocation_duration_seconds_count{project="default",function="t"} 2"#,
        r#"stratus_workers{state="alive"} 1"#,
        r#"stratus_jobs{state="running"} 0"#,
        "stratus_queue_depth 0",
        "stratus_running 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing from\n{metrics}");
    }
    let exported: std::collections::HashSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("docs/grafana-dashboard.json")).unwrap())
            .unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("stratus_"))
                .collect();
            assert!(!names.is_empty(), "{expr} names no Stratus metric");
            for name in names {
                assert!(exported.contains(name), "{expr}: {name} is not exported by /metrics");
            }
            queries += 1;
        }
    }
    assert!(queries >= 9, "{queries} queries");
}

/// The README's by-hand quick start, from a fresh directory with the default
/// (relative) data directory, as a newcomer runs it.
#[test]
fn the_readme_by_hand_steps_work_with_the_default_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", "2"]).current_dir(tmp.path());
    let s = Server::from_command(cmd, tmp.path().join(".stratus"));
    assert!(s.data_dir.join("state.db").exists(), "the default data directory, relative to where `up` runs");
    let repo = repo_root();
    let ex = |p: &str| repo.join(p).to_str().unwrap().to_string();

    let hello = hello_wasm();
    s.ok(&["fn", "deploy", "hello", "--wasm", hello.to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "hello", "Ada"]), "hello, Ada!");
    s.ok(&["fn", "deploy", "wc", "--dir", &ex("examples/shell-wc"), "--cmd", "./run.sh"]);
    assert_eq!(s.ok(&["invoke", "wc", "some words here"]).trim(), "lines=0 words=3 bytes=15");
    s.ok(&["fn", "deploy", "count", "--dir", &ex("examples/python-hello"), "--cmd", "python3 main.py"]);
    assert_eq!(s.cli_stdin(&["invoke", "count", "-"], b"one two three\n").status.code(), Some(0));
    let inputs = tmp.path().join("inputs.jsonl");
    std::fs::write(&inputs, "\"a\"\n\"b\"\n\"c\"\n").unwrap();
    assert_eq!(
        s.ok(&["map", "hello", "--inputs", inputs.to_str().unwrap()]),
        "hello, \"a\"!\nhello, \"b\"!\nhello, \"c\"!\n",
        "inputs are JSON text, as the README says"
    );
    s.ok(&["object", "put", "corpus/readme.txt", &ex("README.md")]);
    s.ok(&["fn", "deploy", "wc-map", "--dir", &ex("examples/wordcount"), "--cmd", "python3 mapper.py"]);
    s.ok(&["fn", "deploy", "wc-reduce", "--dir", &ex("examples/wordcount"), "--cmd", "python3 reducer.py"]);
    let counts = s.ok(&["map", "wc-map", "--objects", "corpus/", "--chunk-size", "1MiB", "--reduce", "wc-reduce"]);
    assert!(counts.contains("stratus"), "{counts}");

    // Python dependencies shipped in the bundle, as the README shows.
    let f = tmp.path().join("py-deps");
    std::fs::create_dir_all(f.join("vendor")).unwrap();
    std::fs::write(f.join("vendor/shipped.py"), "GREETING = 'from a shipped module'\n").unwrap();
    std::fs::write(f.join("main.py"), "import shipped\nprint(shipped.GREETING, end='')\n").unwrap();
    let d = f.to_str().unwrap();
    s.ok(&["fn", "deploy", "deps", "--dir", d, "--cmd", "python3 main.py", "--env", "PYTHONPATH=vendor"]);
    assert_eq!(s.ok(&["invoke", "deps"]), "from a shipped module");
}
