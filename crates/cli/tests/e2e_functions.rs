//! Deploy and invoke functions through the CLI, as the README's quick start does.

mod common;
use common::*;

fn path(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn wasm_function_deploy_invoke_versions_and_env() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let hello = hello_wasm();
    assert_eq!(s.ok(&["fn", "deploy", "hello", "--wasm", path(&hello)]).trim(), "deployed hello version 1");
    assert_eq!(s.ok(&["invoke", "hello", "Bob"]), "hello, Bob!");
    assert_eq!(s.cli_stdin(&["invoke", "hello", "-"], b"Ann\n").stdout, b"hello, Ann!");
    let file = tmp.path().join("in.txt");
    std::fs::write(&file, "Cy").unwrap();
    assert_eq!(s.ok(&["invoke", "hello", &format!("@{}", file.display())]), "hello, Cy!");

    // Redeploying makes a new version; each invocation records the version it ran.
    let guest = guest_wasm();
    assert_eq!(
        s.ok(&["fn", "deploy", "hello", "--wasm", path(&guest), "--env", "GREETING=hi there"]).trim(),
        "deployed hello version 2"
    );
    assert_eq!(s.ok(&["invoke", "hello", "env:GREETING"]), "hi there");
    assert_eq!(s.ok(&["invoke", "hello", "env:STRATUS_FUNCTION"]), "hello");
    let id = s.ok(&["invoke", "hello", "--async", "env:STRATUS_INVOCATION_ID"]).trim().to_string();
    assert_eq!(s.ok(&["wait", &id]), id, "the guest sees its own invocation id");
    let shown: serde_json::Value = serde_json::from_str(&s.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["attempt_history"].as_array().unwrap().len(), 1);

    // One NDJSON row per function.
    let list: Vec<serde_json::Value> =
        s.ok(&["fn", "list", "--json"]).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["version"], 2);
    let show = s.ok(&["fn", "show", "hello"]);
    assert!(show.contains("version:  2") && show.contains("GREETING=hi there"), "{show}");
    let recent = s.ok(&["invocations", "--fn", "hello"]);
    assert_eq!(recent.lines().count(), 1 + 6, "{recent}");

    assert_eq!(s.ok(&["fn", "delete", "hello"]).trim(), "deleted hello");
    let gone = s.cli(&["invoke", "hello", "x"]);
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("function 'hello' not found"), "{}", stderr(&gone));
    // Its invocations' records outlive it; their payloads go with it.
    assert!(s.ok(&["show", &id]).contains("succeeded"));
    let out = s.cli(&["wait", &id]);
    assert!(!out.status.success() && stderr(&out).contains("no longer has its input"), "{}", stderr(&out));
}

#[test]
fn process_functions_python_shell_and_warm() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let ex = repo_root().join("examples");
    s.ok(&["fn", "deploy", "py", "--dir", path(&ex.join("python-hello")), "--cmd", "python3 main.py"]);
    let out: serde_json::Value =
        serde_json::from_slice(&s.cli_stdin(&["invoke", "py", "-"], b"a b c\n").stdout).unwrap();
    assert_eq!(out["words"], 3);

    s.ok(&["fn", "deploy", "wc", "--dir", path(&ex.join("shell-wc")), "--cmd", "./run.sh"]);
    assert_eq!(s.ok(&["invoke", "wc", "one two three"]).trim(), "lines=0 words=3 bytes=13");
    let id = s.ok(&["invoke", "wc", "--async", "x"]).trim().to_string();
    s.ok(&["wait", &id]);
    assert_eq!(s.ok(&["logs", &id]), "wc for wc\n");

    s.ok(&["fn", "deploy", "pyw", "--dir", path(&ex.join("python-warm")), "--cmd", "python3 main.py", "--warm"]);
    let a: serde_json::Value = serde_json::from_str(&s.ok(&["invoke", "pyw", "abc"])).unwrap();
    assert_eq!(a["sha256"], "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    // A warm function is one process serving many invocations.
    let dir = tmp.path().join("counter");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(ex.join("python-warm/stratus_warm.py"), dir.join("stratus_warm.py")).unwrap();
    std::fs::write(
        dir.join("main.py"),
        "import os\nfrom stratus_warm import serve\nn = 0\ndef h(data, inv):\n    global n\n    n += 1\n    return f'{os.getpid()} {n} {inv}'\nserve(h)\n",
    )
    .unwrap();
    s.ok(&["fn", "deploy", "counter", "--dir", path(&dir), "--cmd", "python3 main.py", "--warm"]);
    let mut pids = std::collections::HashSet::new();
    let mut max_n = 0;
    for _ in 0..6 {
        let out = s.ok(&["invoke", "counter"]);
        let parts: Vec<&str> = out.split(' ').collect();
        pids.insert(parts[0].to_string());
        max_n = max_n.max(parts[1].parse::<u32>().unwrap());
        assert_eq!(parts[2].len(), 36, "the framing carries the invocation id: {out}");
    }
    assert!(pids.len() <= 2, "at most one process per slot: {pids:?}");
    assert!(max_n >= 3, "processes are reused across invocations (max count {max_n})");
}
