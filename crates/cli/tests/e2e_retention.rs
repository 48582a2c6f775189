//! Retention: finished invocations lose their input, output and logs after
//! their project's retention or with their function, so a long-running
//! server's disk stays bounded.

mod common;
use common::*;
use std::path::Path;

/// Bytes of every file under `dir` but SQLite's log (and its index),
/// whose size at rest is bounded on its own (64 MiB) and depends on how
/// many writes a checkpoint overlapped, not on what the store holds.
fn size_of(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = e.metadata().unwrap();
        let name = e.file_name();
        if meta.is_dir() {
            total += size_of(&e.path());
        } else if name != "state.db-wal" && name != "state.db-shm" {
            total += meta.len();
        }
    }
    total
}

#[test]
fn deleting_a_function_drops_its_payloads_and_the_data_dir_stays_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    // A function printing 16 MiB (the outputs are what fills a store).
    let f = tmp.path().join("big");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("big.sh"), "#!/bin/sh\nhead -c 16777216 /dev/zero\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("big.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut sizes = Vec::new();
    let mut first = Vec::new();
    for cycle in 0..3 {
        s.ok(&["fn", "deploy", "big", "--dir", f.to_str().unwrap(), "--cmd", "./big.sh"]);
        let ids: Vec<String> = (0..6).map(|_| s.ok(&["invoke", "big", "--async", "x"]).trim().to_string()).collect();
        for id in &ids {
            let inv = s.get_json(&format!("/v1/invocations/{id}?wait=60"));
            assert_eq!(inv["state"], "succeeded", "{inv}");
        }
        if cycle == 0 {
            let out = s.http().get(format!("{}/v1/invocations/{}/output", s.url, ids[0])).send().unwrap();
            assert_eq!(out.bytes().unwrap().len(), 16 << 20);
            first = ids;
        }
        s.ok(&["fn", "delete", "big"]);
        // The log, at rest: copied back and started over (cut back to
        // 64 MiB), as the health probe's writes let it.
        let wal = s.data_dir.join("state.db-wal");
        s.eventually("the log starts over", || {
            s.http().get(format!("{}/healthz", s.url)).send().unwrap();
            std::fs::metadata(&wal).map_or(0, |m| m.len()) <= 64 << 20
        });
        sizes.push(size_of(&s.data_dir));
    }
    eprintln!("data directory after each cycle: {sizes:?} bytes");
    assert!(sizes[2] as f64 <= sizes[0] as f64 * 1.1, "the data directory grew: {sizes:?}");
    assert!(sizes[1] as f64 <= sizes[0] as f64 * 1.1, "the data directory grew: {sizes:?}");

    // The rows stay; their payloads are gone, and say so.
    assert!(s.ok(&["show", &first[0]]).contains("succeeded"));
    let out = s.http().get(format!("{}/v1/invocations/{}/output", s.url, first[0])).send().unwrap();
    assert_eq!(out.status(), 410);
    let err = stderr(&s.cli(&["logs", &first[0]]));
    assert!(err.contains("retention"), "{err}");
}

#[test]
fn a_projects_retention_drops_old_payloads_and_keeps_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    s.ok(&["fn", "deploy", "t", "--wasm", guest_wasm().to_str().unwrap()]);
    let old = s.ok(&["invoke", "t", "--async", "echo:old"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &old]), "old");
    let shown = s.ok(&["project", "show", "default"]);
    assert!(shown.contains("retention 7d") || shown.contains("retention 168h"), "{shown}");
    s.ok(&["project", "set", "default", "--retention", "1s"]);
    // Once a second has passed since it finished, the purge takes it.
    s.eventually("the old invocation is purged", || s.ok(&["project", "purge", "default"]).contains("of 1 "));
    let out = s.http().get(format!("{}/v1/invocations/{old}/output", s.url)).send().unwrap();
    assert_eq!(out.status(), 410);
    s.ok(&["project", "set", "default", "--retention", "30d"]);
    let new = s.ok(&["invoke", "t", "--async", "echo:new"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &new]), "new");
    assert!(s.ok(&["project", "purge", "default"]).contains("of 0 "));
    assert_eq!(s.ok(&["wait", &new]), "new", "kept");
}

/// A deleted function's code is deleted with it, unless another function
/// (of any project) still uses it.
#[test]
fn a_deleted_functions_code_goes_when_nothing_else_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let artifacts = s.data_dir.join("objects/_stratus/artifacts");
    let count = || std::fs::read_dir(&artifacts).map(|d| d.count()).unwrap_or(0);
    let wasm = guest_wasm();
    s.ok(&["fn", "deploy", "f", "--wasm", wasm.to_str().unwrap()]);
    s.ok(&["fn", "deploy", "g", "--wasm", wasm.to_str().unwrap()]);
    assert_eq!(count(), 1, "one artifact for both");
    s.ok(&["fn", "delete", "f"]);
    assert_eq!(count(), 1, "g still uses it");
    assert_eq!(s.ok(&["invoke", "g", "echo:still"]), "still");
    s.ok(&["fn", "delete", "g"]);
    assert_eq!(count(), 0, "nothing uses it now");
    s.ok(&["fn", "deploy", "g", "--wasm", wasm.to_str().unwrap()]);
    assert_eq!(s.ok(&["invoke", "g", "echo:again"]), "again", "uploaded again when deployed again");
}

/// Past the project's `retention_bytes`, the oldest finished invocations
/// are emptied however recent; the newest that fit keep their payloads.
#[test]
fn a_payload_budget_empties_the_oldest_invocations() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let f = tmp.path().join("fat");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("run.sh"), "#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\\\0' x\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(&["fn", "deploy", "fat", "--dir", f.to_str().unwrap(), "--cmd", "./run.sh"]);
    let ids: Vec<String> = (0..5)
        .map(|_| s.ok(&["--json", "invoke", "fat"]))
        .map(|o| {
            let v: serde_json::Value = serde_json::from_str(&o).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    s.ok(&["project", "set", "default", "--retention-bytes", "700000"]);
    assert!(s.ok(&["project", "show", "default"]).contains("retention bytes"));
    let purged: serde_json::Value = serde_json::from_str(&s.ok(&["--json", "project", "purge", "default"])).unwrap();
    assert_eq!(purged["purged"], 3, "{purged}");
    for (i, id) in ids.iter().enumerate() {
        let out = s.cli(&["wait", id]);
        let kept = stdout(&out).len() == 300_000;
        assert_eq!(kept, i >= 3, "invocation {i}: {}", stderr(&out));
    }
}
