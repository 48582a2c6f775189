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

/// A warm function deployed with `--warm-token` gets each attempt's token
/// in the request header, and can call the API with it as that attempt.
#[test]
fn a_warm_function_gets_each_attempts_token_in_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "1"]);
    let dir = tmp.path().join("whoami");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("main.py"),
        r#"import json, os, sys, urllib.request
out = sys.stdout.buffer
while True:
    header = sys.stdin.buffer.readline()
    if not header:
        break
    fields = header.split()
    sys.stdin.buffer.read(int(fields[2]))
    token = fields[3].decode() if len(fields) > 3 else "-"
    req = urllib.request.Request(os.environ["STRATUS_URL"] + "/v1/whoami",
                                 headers={"authorization": "Bearer " + token})
    me = json.load(urllib.request.urlopen(req))
    body = json.dumps({"fields": len(fields), "project": me["project"], "token": token[-16:]}).encode()
    out.write(b"STRATUS/1 ok %d\n" % len(body) + body)
    out.flush()
"#,
    )
    .unwrap();
    s.ok(&["fn", "deploy", "who", "--dir", path(&dir), "--cmd", "python3 main.py", "--warm", "--warm-token"]);
    assert!(s.ok(&["fn", "show", "who"]).contains("token in header"));
    let first: serde_json::Value = serde_json::from_str(&s.ok(&["invoke", "who"])).unwrap();
    let second: serde_json::Value = serde_json::from_str(&s.ok(&["invoke", "who"])).unwrap();
    assert_eq!((first["fields"].as_u64(), first["project"].as_str()), (Some(4), Some("default")), "{first}");
    assert_eq!(second["project"], "default");
    assert_ne!(first["token"], second["token"], "each attempt has a token of its own");

    let bad = s.cli(&["fn", "deploy", "x", "--dir", path(&dir), "--cmd", "python3 main.py", "--warm-token"]);
    assert!(!bad.status.success(), "--warm-token needs --warm");
}

/// A Python environment's packages are on the PYTHONPATH of the functions
/// deployed with it, or with a bundle's own requirements.txt; bad input is
/// refused, and an install that fails says why. Installs from PyPI.
#[test]
fn python_environments_give_functions_their_packages() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(tmp.path(), &["--slots", "2"]);
    let dir = tmp.path().join("tab");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("main.py"), "import tabulate\nprint(tabulate.__version__, end='')\n").unwrap();
    let req = tmp.path().join("requirements.txt");
    std::fs::write(&req, "tabulate==0.9.0\n").unwrap();

    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, "--index-url https://example.invalid/simple\ntabulate\n").unwrap();
    for (args, needle) in [
        (vec!["pyenv", "create", "x", "--requirements", path(&bad)], "only package requirements"),
        (vec!["pyenv", "create", "x", "--requirements", path(&req), "--python", "2.7"], "not a Python 3"),
        (vec!["pyenv", "create", "Bad_Name", "--requirements", path(&req)], "pyenv name"),
        (
            vec!["fn", "deploy", "t", "--dir", path(&dir), "--cmd", "python3 main.py", "--pyenv", "none"],
            "no python environment",
        ),
    ] {
        let out = s.cli(&args);
        assert!(!out.status.success() && stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(s.ok(&["--json", "pyenv", "list"]), "", "nothing was set");

    let out = s.ok(&["--json", "pyenv", "create", "tab", "--requirements", path(&req), "--wait"]);
    let env: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(env["state"], "ready", "{env}");
    s.ok(&["fn", "deploy", "t", "--dir", path(&dir), "--cmd", "python3 main.py", "--pyenv", "tab"]);
    assert!(s.ok(&["fn", "show", "t"]).contains("pyenv:    tab"));
    assert_eq!(s.ok(&["invoke", "t"]), "0.9.0");

    // Without it, the package is not there; with the bundle's own file it is.
    s.ok(&["fn", "deploy", "plain", "--dir", path(&dir), "--cmd", "python3 main.py"]);
    let failed = s.cli(&["invoke", "plain"]);
    assert!(!failed.status.success() && stderr(&failed).contains("tabulate"), "{}", stderr(&failed));
    std::fs::copy(&req, dir.join("requirements.txt")).unwrap();
    s.ok(&["fn", "deploy", "own", "--dir", path(&dir), "--cmd", "python3 main.py"]);
    assert!(s.ok(&["fn", "show", "own"]).contains("its requirements.txt"));
    assert_eq!(s.ok(&["invoke", "own"]), "0.9.0");

    // A package that does not exist: the install fails with pip's message,
    // and so do the attempts that need it.
    let missing = tmp.path().join("missing.txt");
    std::fs::write(&missing, "stratus-no-such-package-4d2f==1.0\n").unwrap();
    let out = s.cli(&["pyenv", "create", "broken", "--requirements", path(&missing), "--wait"]);
    assert!(!out.status.success() && stdout(&out).contains("No matching distribution"), "{}", stdout(&out));
    std::fs::remove_file(dir.join("requirements.txt")).unwrap();
    s.ok(&["fn", "deploy", "b", "--dir", path(&dir), "--cmd", "python3 main.py", "--pyenv", "broken"]);
    let failed = s.cli(&["invoke", "b"]);
    assert!(stderr(&failed).contains("python environment 'broken' did not install"), "{}", stderr(&failed));

    s.ok(&["pyenv", "delete", "tab"]);
    assert_eq!(s.ok(&["invoke", "t"]), "0.9.0", "a function keeps the environment it was deployed with");
    assert!(!s.cli(&["pyenv", "show", "tab"]).status.success());
}
