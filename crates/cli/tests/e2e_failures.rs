//! Functions that fail, trap, run out of time or memory, or flood their
//! output end as failed / timed_out with the reason; the node keeps serving.

mod common;
use common::*;

#[test]
fn wasm_failures_are_reported_and_contained() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--timeout", "500ms", "--memory", "64M"]);

    let fail = s.cli(&["invoke", "t", "fail"]);
    assert_eq!(fail.status.code(), Some(1));
    let err = stderr(&fail);
    assert!(err.contains("failed: exited with status 3"), "{err}");
    assert!(err.contains("boom: failing on purpose"), "the tail of stderr is shown: {err}");

    let trap = stderr(&s.cli(&["invoke", "t", "trap"]));
    assert!(trap.contains("failed: wasm trap"), "{trap}");
    assert!(trap.contains("trapping on purpose"), "{trap}");

    let spin = s.cli(&["invoke", "t", "spin"]);
    assert!(!spin.status.success());
    assert!(stderr(&spin).contains("timed_out: timed out after 500 ms"), "{}", stderr(&spin));

    let oom = stderr(&s.cli(&["invoke", "t", "alloc"]));
    assert!(oom.contains("out of memory: the limit is 64 MiB"), "{oom}");

    let flood = stderr(&s.cli(&["invoke", "t", "flood"]));
    assert!(flood.contains("output limit exceeded"), "{flood}");

    // Logs past the cap are truncated, not fatal.
    assert_eq!(s.ok(&["invoke", "t", "log:3000000"]), "logged");

    // No filesystem access.
    assert!(s.ok(&["invoke", "t", "file"]).starts_with("denied:"));

    // The node still serves.
    assert_eq!(s.ok(&["invoke", "t", "echo:still here"]), "still here");

    // States as recorded.
    let list = s.get_json("/v1/invocations?function=t&limit=100");
    let states: Vec<&str> =
        list["invocations"].as_array().unwrap().iter().map(|i| i["state"].as_str().unwrap()).collect();
    assert_eq!(states.iter().filter(|s| **s == "timed_out").count(), 1, "{states:?}");
    assert_eq!(states.iter().filter(|s| **s == "failed").count(), 4, "{states:?}");
}

#[test]
fn retries_run_again_then_fail_with_the_last_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let guest = guest_wasm();
    s.ok(&["fn", "deploy", "t", "--wasm", guest.to_str().unwrap(), "--retries", "2"]);
    let id = s.ok(&["invoke", "t", "--async", "fail"]).trim().to_string();
    let out = s.cli(&["wait", &id]);
    assert!(!out.status.success());
    let shown: serde_json::Value = serde_json::from_str(&s.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["attempts"], 3);
    assert_eq!(shown["error"]["exit_code"], 3);
    let attempts = shown["attempt_history"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a["state"] == "failed"));
}

#[test]
fn process_timeout_kills_the_whole_group_and_env_is_declared_only() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let dir = tmp.path().join("fn");
    std::fs::create_dir(&dir).unwrap();
    let marker = format!("1000.{}", std::process::id());
    std::fs::write(dir.join("hang.sh"), format!("#!/bin/sh\nsleep {marker} &\nsleep {marker}\n")).unwrap();
    std::fs::write(dir.join("env.sh"), "#!/bin/sh\nenv | sort\n").unwrap();
    std::fs::write(dir.join("big.sh"), "#!/bin/sh\nexec yes\n").unwrap();
    std::fs::write(dir.join("mem.py"), "x = bytearray(512 * 1024 * 1024)\nprint('allocated')\n").unwrap();
    for f in ["hang.sh", "env.sh", "big.sh"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let d = dir.to_str().unwrap();
    s.ok(&["fn", "deploy", "hang", "--dir", d, "--cmd", "./hang.sh", "--timeout", "300ms"]);
    let out = s.cli(&["invoke", "hang"]);
    assert!(stderr(&out).contains("timed_out"), "{}", stderr(&out));
    let left = std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output().unwrap();
    assert!(left.stdout.is_empty(), "the function's children were killed: {}", String::from_utf8_lossy(&left.stdout));

    s.ok(&["fn", "deploy", "env", "--dir", d, "--cmd", "./env.sh", "--env", "ONLY=me"]);
    let env = s.ok(&["invoke", "env"]);
    let names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    for n in &names {
        assert!(
            ["LANG", "ONLY", "PATH", "PWD", "SHLVL", "_"].contains(n) || n.starts_with("STRATUS_"),
            "unexpected variable {n} in {env}"
        );
    }
    assert!(names.contains(&"STRATUS_INVOCATION_ID") && names.contains(&"STRATUS_FUNCTION"), "{env}");

    s.ok(&["fn", "deploy", "big", "--dir", d, "--cmd", "./big.sh"]);
    assert!(stderr(&s.cli(&["invoke", "big"])).contains("output limit"));

    s.ok(&["fn", "deploy", "mem", "--dir", d, "--cmd", "python3 mem.py", "--memory", "100M"]);
    // The sandbox's cgroup holds the whole tree to the limit: the kernel
    // stops it, and the failure says why.
    let mem = s.cli(&["invoke", "mem"]);
    assert!(!mem.status.success());
    assert!(stderr(&mem).contains("out of memory: the limit is 100 MiB"), "{}", stderr(&mem));
}
