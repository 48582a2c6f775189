//! Process functions run in a sandbox: each escape a hostile function
//! tries works with the sandbox off (so a broken probe cannot pass) and
//! fails with it on, which the server must have whole (--require-sandbox).

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CANARY_ENV: &str = "canary-env-7c1f2e";
const CANARY_FILE: &str = "canary-file-93ab4d";

struct Node {
    server: Server,
    exchange: PathBuf,
}

/// A node with the canaries in its environment and data directory, and an
/// exchange directory its functions may write (for the setsid probe).
fn node(tmp: &Path, name: &str, sandbox: &str) -> Node {
    let data = tmp.join(name).join("data");
    let exchange = tmp.join(name).join("exchange");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&exchange).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exchange, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(data.join("canary.txt"), CANARY_FILE).unwrap();
    let share = format!("{}:rw", exchange.display());
    let args = [
        "up",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--slots",
        "2",
        sandbox,
        "--sandbox-path",
        &share,
    ];
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("STRATUS_TEST_CANARY", CANARY_ENV);
    Node { server: Server::from_command(cmd, data), exchange }
}

fn deploy_probe(s: &Server, name: &str, extra: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile");
    let mut args = vec!["fn", "deploy", name, "--dir", dir.to_str().unwrap(), "--cmd", "python3 probe.py"];
    args.extend_from_slice(&["--memory", "256Mi", "--timeout", "60s"]);
    args.extend_from_slice(extra);
    s.ok(&args);
}

/// Invokes the probe; returns its output, or the failed invocation's body.
fn run(s: &Server, function: &str, input: &str) -> (u16, Value, String) {
    let res =
        s.http().post(format!("{}/v1/functions/{function}/invoke", s.url)).body(input.to_string()).send().unwrap();
    let status = res.status().as_u16();
    let text = res.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, text)
}

fn artifact_dir(s: &Server, function: &str) -> PathBuf {
    let artifact = s.get_json(&format!("/v1/functions/{function}"))["artifact"].as_str().unwrap().to_string();
    s.data_dir.join("cache/bundles").join(artifact)
}

/// Whether someone holds the lock on `path` (a process the call left).
fn lock_held(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: flock on a descriptor we own.
    let r = unsafe { flock(f.as_raw_fd(), 2 | 4) }; // LOCK_EX | LOCK_NB
    r != 0
}

unsafe extern "C" {
    fn flock(fd: i32, op: i32) -> i32;
}

/// This host's first non-loopback IPv4 address (`ip -4 -o addr show scope
/// global`): a listener there is reached without leaving the machine.
fn host_address() -> std::net::Ipv4Addr {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text.split_whitespace().skip_while(|w| *w != "inet").nth(1).expect("a non-loopback IPv4 address");
    addr.split('/').next().unwrap().parse().unwrap()
}

/// Every probe, as `(name, input)`, for node `n`; `outside` is a listener
/// on the host's non-loopback address.
fn probes(
    n: &Node,
    other_bundle: &Path,
    listener_port: u16,
    outside: std::net::SocketAddr,
) -> Vec<(&'static str, String)> {
    let s = &n.server;
    vec![
        ("environ", format!("environ {} {CANARY_ENV}", s.child.id())),
        ("data-dir", format!("read {} {CANARY_FILE}", s.data_dir.join("canary.txt").display())),
        ("own-bundle", "write .".to_string()),
        ("other-bundle", format!("write {}", other_bundle.display())),
        ("loopback", format!("connect {listener_port}")),
        ("non-loopback", format!("connect {} {}", outside.ip(), outside.port())),
        ("mount", format!("mount {}", n.exchange.join("mnt").display())),
        ("ptrace", "ptrace".to_string()),
        ("procs", "procs".to_string()),
    ]
}

#[test]
fn a_hostile_function_escapes_without_the_sandbox_and_not_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let outside_listener = std::net::TcpListener::bind((host_address(), 0)).unwrap();
    let outside = outside_listener.local_addr().unwrap();
    let guest = guest_wasm();

    for (mode, flag) in [("off", "--no-sandbox"), ("on", "--require-sandbox")] {
        let n = node(tmp.path(), mode, flag);
        let s = &n.server;
        let info = s.get_json("/v1/info");
        assert_eq!(info["sandbox"]["all"], mode == "on", "{info}");
        let shown = s.ok(&["info"]);
        let says = if mode == "on" { "every layer on" } else { "off:" };
        assert!(shown.contains(says), "{shown}");
        deploy_probe(s, "hostile", &[]);
        let other = tmp.path().join(format!("victim-{mode}"));
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("run.sh"), "cat").unwrap();
        s.ok(&["fn", "deploy", "victim", "--dir", other.to_str().unwrap(), "--cmd", "sh run.sh"]);
        // Runs once, so its bundle is unpacked.
        s.ok(&["invoke", "victim", "x"]);
        let victim = artifact_dir(s, "victim");
        assert!(victim.is_dir());

        let mut outputs = String::new();
        for (name, input) in probes(&n, &victim, port, outside) {
            let (status, body, text) = run(s, "hostile", &input);
            outputs.push_str(&text);
            if mode == "off" {
                assert_eq!(
                    (status, text.trim()),
                    (200, "escaped"),
                    "probe {name} must work without the sandbox: {body}"
                );
            } else {
                assert_eq!(status, 200, "probe {name}: {text}");
                assert!(text.starts_with("blocked"), "probe {name} escaped the sandbox: {text}");
            }
        }
        // Nothing was written where the probes aimed, with the sandbox on.
        let written = victim.join("written-by-a-function").exists();
        assert_eq!(written, mode == "off", "another function's bundle written: {written}");

        // setsid + fork: a process left running after the call ends.
        let lock = n.exchange.join(format!("lock-{mode}"));
        let (status, _, text) = run(s, "hostile", &format!("setsid {}", lock.display()));
        assert_eq!(status, 200, "{text}");
        assert_eq!(text.trim(), "escaped", "{mode}: the grandchild started and took its lock");
        assert_eq!(lock_held(&lock), mode == "off", "a process outlived its call: {mode}");

        // Memory: 8 x 100 MiB under a 256 MiB limit; meanwhile another
        // invocation answers.
        s.ok(&["fn", "deploy", "echo", "--wasm", guest.to_str().unwrap()]);
        let (status, body, text) = std::thread::scope(|scope| {
            let memory = scope.spawn(|| run(s, "hostile", "memory"));
            assert_eq!(s.ok(&["invoke", "echo", "meanwhile"]).trim(), "meanwhile");
            memory.join().unwrap()
        });
        outputs.push_str(&text);
        if mode == "off" {
            assert_eq!((status, text.trim()), (200, "escaped"), "{body}");
        } else {
            assert_eq!(status, 502, "{text}");
            assert!(body["error"]["message"].as_str().unwrap().contains("out of memory"), "{body}");
            let id = body["invocation"]["id"].as_str().unwrap();
            let logs = s.ok(&["logs", id]);
            outputs.push_str(&logs);
        }

        if mode == "on" {
            // With --network, the same function reaches the host's loopback.
            deploy_probe(s, "networked", &["--network"]);
            let (_, _, text) = run(s, "networked", &format!("connect {port}"));
            assert_eq!(text.trim(), "escaped");
            let (_, _, text) = run(s, "networked", &format!("connect {} {}", outside.ip(), outside.port()));
            assert_eq!(text.trim(), "escaped", "a --network function reaches the host's address");
            for canary in [CANARY_ENV, CANARY_FILE] {
                assert!(!outputs.contains(canary), "a canary shows in an output or log");
            }
            // The server is healthy and still answers.
            assert_eq!(s.ok(&["invoke", "echo", "still here"]).trim(), "still here");
            assert_eq!(s.get_json("/healthz")["status"], "ok");
        }
    }
}

/// The sandbox's view: its own processes, a read-only bundle and system, a
/// writable /tmp, the API at STRATUS_URL, and no server environment.
#[test]
fn a_sandboxed_function_sees_its_own_small_world() {
    let tmp = tempfile::tempdir().unwrap();
    let n = node(tmp.path(), "view", "--require-sandbox");
    let s = &n.server;
    let f = tmp.path().join("view-fn");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(
        f.join("view.sh"),
        "#!/bin/sh\necho \"uid=$(id -u)\"\necho \"procs=$(ls /proc | grep -c '^[0-9]')\"\n\
         touch /tmp/ok && echo tmp=rw\ntouch /usr/x 2>/dev/null || echo usr=ro\n\
         touch ./x 2>/dev/null || echo app=ro\n[ -e /etc/shadow ] || echo shadow=absent\n\
         [ -e /etc/ssl/private ] || echo keys=absent\necho \"dev=$(head -c 8 /dev/urandom | wc -c)\"\n\
         python3 -c \"import os,urllib.request;print('api=' + urllib.request.urlopen(os.environ['STRATUS_URL'] + '/healthz').read().decode())\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("view.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    s.ok(&["fn", "deploy", "view", "--dir", f.to_str().unwrap(), "--cmd", "./view.sh"]);
    let out = s.ok(&["invoke", "view", ""]);
    assert!(out.contains("uid=64123"), "{out}");
    assert!(
        out.contains("procs=2") || out.contains("procs=3") || out.contains("procs=4"),
        "only its own processes: {out}"
    );
    for line in [
        "tmp=rw",
        "usr=ro",
        "app=ro",
        "shadow=absent",
        "keys=absent",
        "dev=8",
        "api={\"role\":\"leader\",\"status\":\"ok\"}",
    ] {
        assert!(out.contains(line), "{line} in {out}");
    }
}

/// A cached bundle changed on disk while the node was down is not reused:
/// its digest is checked at the first use after a restart.
#[test]
fn a_bundle_changed_on_disk_is_unpacked_again_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let f = tmp.path().join("fn");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("run.sh"), "echo original").unwrap();
    let mut s = Server::start_in(data.clone(), &["--slots", "1"]);
    s.ok(&["fn", "deploy", "f", "--dir", f.to_str().unwrap(), "--cmd", "sh run.sh"]);
    assert_eq!(s.ok(&["invoke", "f", ""]).trim(), "original");
    let cached = artifact_dir(&s, "f").join("run.sh");
    s.kill9();
    drop(s);
    std::fs::write(&cached, "echo tampered").unwrap();
    let s = Server::start_in(data, &["--slots", "1"]);
    assert_eq!(s.ok(&["invoke", "f", ""]).trim(), "original");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), "echo original");
}
