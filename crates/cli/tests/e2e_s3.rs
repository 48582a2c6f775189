//! Objects in a real S3 server (`s3s-fs`, started by the test; `.ci/run`
//! installs it): `stratus up --objects s3://…` keeps bundles, modules and
//! user objects there, and a `stratus worker` learns the store from the
//! server when it registers and reads it directly.

mod common;
use common::*;
use stratus_blob::testing::S3Server;

#[test]
fn bundles_modules_and_job_inputs_live_in_s3_and_workers_read_them_directly() {
    let s3 = S3Server::start(&["stratus"]);
    let objects = s3.url("stratus/cluster-a");
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "0", "--objects", &objects]);
    let log = tmp.path().join("worker.log");
    let _w = Worker::start_logged(&s.url, &tmp.path().join("w1"), 2, Some(&log));

    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "cat", "--wasm", guest.to_str().unwrap()]);
    let ex = repo_root().join("examples/wordcount");
    s.ok(&["fn", "deploy", "wc-map", "--dir", ex.to_str().unwrap(), "--cmd", "python3 mapper.py"]);
    s.ok(&["fn", "deploy", "wc-reduce", "--dir", ex.to_str().unwrap(), "--cmd", "python3 reducer.py"]);
    assert_eq!(s.ok(&["invoke", "cat", "echo:through s3"]), "through s3");

    let mut data = String::new();
    for i in 0..3000 {
        data.push_str(&format!("w{} w{} line-{i}\n", i % 7, i % 11));
    }
    let file = tmp.path().join("corpus.txt");
    std::fs::write(&file, &data).unwrap();
    s.ok(&["object", "put", "corpus/part-1.txt", file.to_str().unwrap()]);

    // Chunks cut at line ends, read by the worker with ranged GETs.
    // Chunks far below the default quota (64 KiB), to cut these small objects.
    s.ok(&["project", "set", "default", "--min-chunk-size", "1"]);
    let out = s.ok(&["map", "cat", "--objects", "corpus/", "--chunk-size", "4096", "--json"]);
    let joined: String = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["output"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(joined, data, "every line once, in order");
    assert!(out.lines().count() >= data.len() / 4096, "one task per chunk");

    let mut counts = std::collections::BTreeMap::<&str, u64>::new();
    for w in data.split_whitespace() {
        *counts.entry(w).or_default() += 1;
    }
    let out = s.ok(&["map", "wc-map", "--objects", "corpus/", "--chunk-size", "10000", "--reduce", "wc-reduce"]);
    assert_eq!(out.trim(), serde_json::to_string(&counts).unwrap());

    // The S3 server holds them, under the URL's prefix.
    let root = s3.root().join("stratus/cluster-a");
    assert!(root.join("p/default/corpus/part-1.txt").is_file());
    let artifacts = std::fs::read_dir(root.join("_stratus/artifacts")).unwrap().count();
    assert_eq!(artifacts, 2, "the wasm module and the bundle (deployed twice, stored once)");
    assert!(!tmp.path().join("data/objects").exists(), "nothing in the local object directory");

    // The worker was told where the store is; its log shows it without the secret.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("objects=s3://stratus/cluster-a?endpoint="), "{text}");
    assert!(text.contains("secret_access_key=***"), "{text}");
    assert!(!text.contains("stratus-test-secret"), "the secret leaked into the worker's log:\n{text}");
}

#[test]
fn an_unusable_object_store_url_stops_the_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("d"))
        .args(["--objects", "s3://b?endpoint=http://127.0.0.1:1&secret_access_key=hunter2&colour=blue"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown parameter 'colour'"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
