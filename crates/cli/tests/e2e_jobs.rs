//! Map and map_reduce jobs, objects, and jobs that survive dying workers and servers.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn map_over_inputs_in_order_with_a_poison_input_and_retries() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap()]);
    let inputs = inputs_file(tmp.path(), 300);
    let out = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap()]);
    let expected: String = (0..300).map(|i| format!("\"t-{i}\"\n")).collect();
    assert_eq!(out, expected, "outputs in input order");

    let id = s.ok(&["map", "t", "--inputs", inputs.to_str().unwrap(), "--detach"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &id]), expected);
    assert_all_echoed(&s, &id, 300);
    let show = s.ok(&["job", "show", &id]);
    assert!(show.contains("300 total, 300 succeeded, 0 failed"), "{show}");

    // A poison input fails (after its retries); the job reports it, the rest succeed.
    s.ok(&["fn", "deploy", "r", "--wasm", guest.to_str().unwrap(), "--retries", "1"]);
    let mixed = tmp.path().join("mixed.jsonl");
    std::fs::write(&mixed, "1\n2\n\"fail\"\n4\n").unwrap();
    // (stdin of the poison task is the JSON text "fail" with quotes; make it the bare word)
    std::fs::write(&mixed, "1\n2\nfail\n4\n").unwrap();
    let bad = s.cli(&["map", "r", "--inputs", mixed.to_str().unwrap()]);
    assert!(!bad.status.success(), "a bare word is not JSON");
    assert!(stderr(&bad).contains("line 3 of the inputs is not valid JSON"), "{}", stderr(&bad));
    assert!(s.get_json("/v1/jobs")["jobs"].as_array().unwrap().len() == 2, "the refused job left nothing");

    let guest_dir = tmp.path().join("poison");
    std::fs::create_dir(&guest_dir).unwrap();
    std::fs::write(
        guest_dir.join("f.sh"),
        "#!/bin/sh\nread x\nif [ \"$x\" = '\"poison\"' ]; then echo 'cannot digest' >&2; exit 9; fi\necho \"ok $x\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(guest_dir.join("f.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(&["fn", "deploy", "p", "--dir", guest_dir.to_str().unwrap(), "--cmd", "./f.sh", "--retries", "2"]);
    std::fs::write(&mixed, "1\n2\n\"poison\"\n4\n").unwrap();
    let out = s.cli(&["map", "p", "--inputs", mixed.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1 of 4 tasks failed"), "{}", stderr(&out));
    assert!(stderr(&out).contains("task 2: exited with status 9"), "{}", stderr(&out));
    let records: Vec<Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 4);
    assert_eq!(records[2]["status"], "failed");
    assert_eq!(records[3]["output"], "ok 4\n");
    let jobs = s.get_json("/v1/jobs");
    let failed = &jobs["jobs"][0];
    assert_eq!((failed["state"].as_str(), failed["failed"].as_u64()), (Some("failed"), Some(1)));
}

fn text(lines: usize) -> String {
    // Lines of varying length, some long, some empty, words from a small vocabulary.
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
    let mut out = String::new();
    for i in 0..lines {
        let n = (i * 7919) % 23;
        let line: Vec<&str> = (0..n).map(|j| words[(i * 31 + j * 17) % words.len()]).collect();
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    out
}

#[test]
fn word_count_map_reduce_over_objects_equals_a_direct_count() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let data = text(20_000);
    let file = tmp.path().join("text.txt");
    std::fs::write(&file, &data).unwrap();
    s.ok(&["object", "put", "corpus/part-1.txt", file.to_str().unwrap()]);
    std::fs::write(&file, text(3_000)).unwrap();
    s.ok(&["object", "put", "corpus/part-2.txt", file.to_str().unwrap()]);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for w in data.split_whitespace().chain(text(3_000).split_whitespace().collect::<Vec<_>>()) {
        *counts.entry(w.to_string()).or_default() += 1;
    }
    let expected = serde_json::to_string(&counts).unwrap();

    let ex = repo_root().join("examples/wordcount");
    s.ok(&["fn", "deploy", "wc-map", "--dir", ex.to_str().unwrap(), "--cmd", "python3 mapper.py"]);
    s.ok(&["fn", "deploy", "wc-reduce", "--dir", ex.to_str().unwrap(), "--cmd", "python3 reducer.py"]);
    // Chunks far below the default quota (64 KiB), to cut these small objects.
    s.ok(&["project", "set", "default", "--min-chunk-size", "1"]);
    let out = s.ok(&["map", "wc-map", "--objects", "corpus/", "--chunk-size", "7777", "--reduce", "wc-reduce"]);
    assert_eq!(out.trim(), expected);
    let jobs = s.get_json("/v1/jobs");
    let total = jobs["jobs"][0]["total"].as_u64().unwrap();
    let size = data.len() as u64 + text(3_000).len() as u64;
    assert!(total >= size / 7777, "one task per chunk: {total}");
}

#[test]
fn chunk_boundaries_read_each_line_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "cat", "--wasm", guest.to_str().unwrap()]);
    // Lines far longer and far shorter than the chunk, and no final newline.
    let mut data = String::new();
    for i in 0..200 {
        data.push_str(&format!("line-{i}-{}\n", "x".repeat((i * 37) % 90)));
    }
    data.push_str("the-end-without-newline");
    let file = tmp.path().join("lines.txt");
    std::fs::write(&file, &data).unwrap();
    s.ok(&["object", "put", "b/lines.txt", file.to_str().unwrap()]);
    // Chunks far below the default quota (64 KiB), to cut these small objects.
    s.ok(&["project", "set", "default", "--min-chunk-size", "1"]);
    for chunk in ["10", "64", "1000"] {
        let out = s.ok(&["map", "cat", "--objects", "b/lines", "--chunk-size", chunk, "--json"]);
        let joined: String = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["output"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(joined, data, "chunk size {chunk}: every line once, in order");
    }
    // Without a chunk size: one task per object, the whole object.
    let out = s.ok(&["map", "cat", "--objects", "b/", "--json"]);
    assert_eq!(out.lines().count(), 1);
    // Partitions get STRATUS_OBJECT and STRATUS_RANGE.
    let env_file = tmp.path().join("env.txt");
    std::fs::write(&env_file, "env:STRATUS_RANGE").unwrap();
    s.ok(&["object", "put", "e/one", env_file.to_str().unwrap()]);
    let out = s.ok(&["map", "cat", "--objects", "e/one"]);
    assert_eq!(out.trim(), "0-17");
}

#[test]
fn objects_stream_validate_keys_and_list() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let big = tmp.path().join("big.bin");
    let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    s.ok(&["object", "put", "b/dir/big.bin", big.to_str().unwrap()]);
    let back = tmp.path().join("back.bin");
    s.ok(&["object", "get", "b/dir/big.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data);
    assert_eq!(s.cli_stdin(&["object", "put", "b/small", "-"], b"hi").status.code(), Some(0));
    assert_eq!(s.ok(&["object", "get", "b/small"]), "hi");
    let ls = s.ok(&["object", "ls", "b/dir"]);
    assert!(ls.contains("20.0 MiB") && ls.contains("b/dir/big.bin") && !ls.contains("small"), "{ls}");
    let res =
        s.http().get(format!("{}/v1/objects/b/dir/big.bin", s.url)).header("range", "bytes=10-19").send().unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.bytes().unwrap().to_vec(), data[10..20].to_vec());
    for bad in ["b/../etc/passwd", "b/x/../../y", "b/%2E%2E/etc", "b//x", "B/x", "b/./x"] {
        assert_eq!(raw_status(&s.url, "PUT", &format!("/v1/objects/{bad}"), b"x"), 400, "{bad}");
    }
    let out = s.cli(&["object", "put", "b/../etc/passwd", big.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("'..' segments are not allowed"), "{}", stderr(&out));
    let out = s.cli(&["object", "get", "/etc/passwd"]);
    assert!(stderr(&out).contains("absolute paths are not allowed"), "{}", stderr(&out));
    s.ok(&["object", "rm", "b/small"]);
    assert!(!s.cli(&["object", "get", "b/small"]).status.success());
}

fn running_in(s: &Server, job: &str) -> u64 {
    s.get_json(&format!("/v1/jobs/{job}"))["running"].as_u64().unwrap()
}

#[test]
fn cancel_stops_queued_and_kills_running_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    deploy_gate(&s, tmp.path(), "g");
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 10).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("two tasks running", || running_in(&s, &id) == 2);
    s.ok(&["job", "cancel", &id]);
    let out = s.cli(&["wait", &id]);
    assert!(!out.status.success());
    s.eventually("running tasks killed", || s.get_json(&format!("/v1/jobs/{id}"))["cancelled"] == 10);
    let job = s.get_json(&format!("/v1/jobs/{id}"));
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["succeeded"], 0);
    let results = s.get_json(&format!("/v1/jobs/{id}/results"));
    assert!(results["results"].as_array().unwrap().iter().all(|r| r["status"] == "cancelled"), "{results}");
}

fn worker_running(s: &Server) -> Vec<(String, u64, String)> {
    s.get_json("/v1/workers")["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap().to_string(),
                w["running"].as_u64().unwrap(),
                w["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_worker_killed_mid_job_loses_its_leases_and_the_job_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0", "--lease-timeout", "2s"]);
    let mut a = Worker::start(&s.url, &tmp.path().join("wa"), 2);
    let b = Worker::start(&s.url, &tmp.path().join("wb"), 2);
    let go = deploy_gate(&s, tmp.path(), "g");
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 40).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("both workers hold tasks", || {
        let alive: Vec<_> = worker_running(&s).into_iter().filter(|(_, _, st)| st == "alive").collect();
        alive.len() == 2 && alive.iter().all(|(_, n, _)| *n == 2)
    });
    a.kill9();
    s.eventually("worker a declared lost", || worker_running(&s).iter().any(|(w, _, st)| *w == a.id && st == "lost"));
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &id]);
    assert_all_echoed(&s, &id, 40);
    let listed = s.ok(&["workers"]);
    assert!(listed.contains(&b.id) && listed.contains("lost"), "{listed}");
}

#[test]
fn a_stalled_worker_is_treated_as_lost_and_its_late_results_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0", "--lease-timeout", "2s"]);
    let a = Worker::start(&s.url, &tmp.path().join("wa"), 2);
    let go = deploy_gate(&s, tmp.path(), "g");
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 6).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("worker a holds tasks", || worker_running(&s).iter().any(|(_, n, _)| *n == 2));
    a.signal(19); // SIGSTOP
    s.eventually("worker a declared lost", || worker_running(&s).iter().any(|(w, _, st)| *w == a.id && st == "lost"));
    let b = Worker::start(&s.url, &tmp.path().join("wb"), 2);
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &id]);
    a.signal(18); // SIGCONT: its results arrive late
    assert_all_echoed(&s, &id, 6);
    // A's two stale completions were ignored (counted as such), not recorded.
    s.eventually("late results reported and ignored", || {
        let m = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
        m.lines().any(|l| {
            l.starts_with("stratus_stale_completions_total ")
                && l.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 2
        })
    });
    assert_all_echoed(&s, &id, 6);
    drop(b);
}

#[test]
fn kill9_of_the_server_mid_job_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--slots", "2"]);
    let go = deploy_gate(&s, tmp.path(), "g");
    let id =
        s.ok(&["map", "g", "--inputs", inputs_file(tmp.path(), 30).to_str().unwrap(), "--detach"]).trim().to_string();
    s.eventually("two tasks running", || running_in(&s, &id) == 2);
    s.kill9();
    let data = s.data_dir.clone();
    drop(s);
    let s = Server::start_in(data, &["--slots", "2"]);
    std::fs::write(&go, b"").unwrap();
    s.ok(&["wait", &id]);
    assert_all_echoed(&s, &id, 30);
}
