//! Variables and secrets against the real server: a function reads their
//! values at each attempt (warm processes start again when they change), a
//! secret's value is stored only sealed, never shown, never logged, and
//! masked in a function's stored logs; rotating the key seals every secret
//! again. On SQLite with the server's own slots, and on PostgreSQL with a
//! worker of its own that takes its tasks from RabbitMQ and asks the API
//! for the values.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

const SECRET: &str = "pa55-Wörd_7c1f9e";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The SHA-256 of [`SECRET`], in hex: what a function answers to show it
/// read the secret (its output is stored, so not the secret itself).
fn secret_digest() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(SECRET.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A warm function that answers its process's own random name, API_URL and the secret's SHA-256,
/// and writes the secret to its stderr in two pieces.
fn warm_function(dir: &Path) -> PathBuf {
    let f = dir.join("warm");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::copy(repo_root().join("examples/python-warm/stratus_warm.py"), f.join("stratus_warm.py")).unwrap();
    std::fs::write(
        f.join("main.py"),
        r#"import hashlib, os, sys
from stratus_warm import serve
ME = os.urandom(8).hex()
def h(data, inv):
    s = os.environ["DB_PASSWORD"]
    sys.stderr.write("connecting with " + s[:5]); sys.stderr.flush()
    sys.stderr.write(s[5:] + " done\n"); sys.stderr.flush()
    return f"{ME} {os.environ['API_URL']} {hashlib.sha256(s.encode()).hexdigest()}".encode()
serve(h)
"#,
    )
    .unwrap();
    f
}

/// Every file under `dir` (or `dir` itself) that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                stack.push(e.path());
            }
        } else if let Ok(bytes) = std::fs::read(&p)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(p);
        }
    }
    found
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&s.ok(&all)).unwrap()
}

/// Reads variables and a secret through `s`, from a warm and a wasm
/// function; returns the ids of invocations whose logs name the secret.
fn reads_and_hides(s: &Server, tmp: &Path) -> Vec<String> {
    let guest = guest_wasm();
    s.ok(&["var", "set", "API_URL", "http://one"]);
    let set = s.cli_stdin(&["secret", "set", "db-password", "-"], format!("{SECRET}\n").as_bytes());
    assert!(set.status.success(), "{}", stderr(&set));
    assert_eq!(stdout(&set).trim(), "set secret db-password version 1");

    s.ok(&["fn", "deploy", "w", "--wasm", path(&guest), "--var", "API_URL", "--secret", "db-password=PW"]);
    assert_eq!(s.ok(&["invoke", "w", "env:API_URL"]), "http://one");

    let warm = warm_function(tmp);
    let deploy = ["fn", "deploy", "pw", "--dir", path(&warm), "--cmd", "python3 main.py", "--warm"];
    s.ok(&[&deploy[..], &["--var", "API_URL", "--secret", "db-password"]].concat());
    let first = json(s, &["invoke", "pw"]);
    let out = |v: &Value| -> Vec<String> { v["output"].as_str().unwrap().split(' ').map(String::from).collect() };
    let a = out(&first);
    assert_eq!(a[1..], ["http://one".to_string(), secret_digest()], "the secret reached it whole");
    let again = out(&json(s, &["invoke", "pw"]));
    assert_eq!(again[0], a[0], "the same warm process while nothing changes");

    // A new value is seen by the next attempt; the warm process that read
    // the old one is not used again.
    assert_eq!(s.ok(&["var", "set", "API_URL", "http://two"]).trim(), "set API_URL version 2");
    assert_eq!(s.ok(&["invoke", "w", "env:API_URL"]), "http://two");
    let b = out(&json(s, &["invoke", "pw"]));
    assert_eq!(b[1], "http://two");
    assert_ne!(b[0], a[0], "a warm process started again for the new value");

    // The logs name the secret only as ***.
    let id = first["id"].as_str().unwrap().to_string();
    let logs = s.ok(&["logs", &id]);
    assert_eq!(logs, "connecting with *** done\n", "masked across two writes");

    // Nothing shows the value: lists, the function, the audit trail.
    let listed = s.ok(&["--json", "secret", "list"]);
    let row: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!((row["name"].as_str(), row["version"].as_u64()), (Some("db-password"), Some(1)));
    let shown = s.ok(&["--json", "fn", "show", "pw"]);
    assert!(shown.contains("DB_PASSWORD") && shown.contains("db-password"), "{shown}");
    for text in [listed, shown, s.ok(&["--json", "audit"])] {
        assert!(!text.contains(SECRET), "{text}");
    }
    let audit = s.ok(&["audit"]);
    assert!(audit.contains("secret.set") && audit.contains("variable.set"), "{audit}");
    // On PostgreSQL, events are listed once the leader has numbered them.
    s.eventually("the settings' events", || {
        let events = s.ok(&["--json", "events"]);
        assert!(!events.contains(SECRET));
        events.contains("stratus.secret.set") && events.contains("stratus.variable.set")
    });

    vec![id]
}

#[test]
fn variables_and_secrets_reach_functions_and_secrets_never_show() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", "2", "--data-dir", path(&data)]);
    cmd.args(share_with_functions(&data));
    let mut s = Server::from_command_logged(cmd, data.clone(), Some(&log));
    let key = std::fs::metadata(data.join("secret.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "the drawn key is the owner's alone");

    reads_and_hides(&s, tmp.path());

    // Bad input: a clear error, nothing changed.
    for (args, says) in [
        (&["var", "set", "1BAD", "x"][..], "not a valid environment variable name"),
        (&["var", "set", "STRATUS_X", "x"][..], "Stratus's own"),
        (&["var", "set", "--as-json", "CONF", "{not json"][..], "not JSON"),
        (&["var", "get", "MISSING"][..], "not found"),
        (&["secret", "delete", "missing"][..], "not found"),
        (&["secret", "set", "Bad_Name", "--from-env", "HOME"][..], "not a valid name"),
    ] {
        let o = s.cli(args);
        assert!(!o.status.success() && stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    let usage = s.cli(&["secret", "set", "x"]);
    assert_eq!(usage.status.code(), Some(2), "a secret needs a source: {}", stderr(&usage));
    let big = tmp.path().join("big");
    std::fs::write(&big, vec![b'a'; 64 * 1024 + 1]).unwrap();
    let o = s.cli(&["var", "set", "BIG", &format!("@{}", big.display())]);
    assert!(!o.status.success() && stderr(&o).contains("at most 65536"), "{}", stderr(&o));
    assert_eq!(s.ok(&["var", "list"]).lines().count(), 2, "the header and API_URL only");

    // A variable the function reads that is not set fails its attempt, by name.
    s.ok(&["fn", "deploy", "m", "--wasm", path(&guest_wasm()), "--var", "NOT_SET"]);
    let o = s.cli(&["invoke", "m", "env:NOT_SET"]);
    assert!(!o.status.success() && stderr(&o).contains("variable 'NOT_SET' is not set"), "{}", stderr(&o));

    // JSON values are checked and kept as given; deletes are gone.
    s.ok(&["var", "set", "--as-json", "CONF", r#"{"a": [1, 2]}"#]);
    let conf = json(&s, &["var", "get", "CONF"]);
    assert_eq!((conf["value"].as_str(), conf["json"].as_bool()), (Some(r#"{"a": [1, 2]}"#), Some(true)));
    s.ok(&["var", "delete", "CONF"]);
    assert!(!s.cli(&["var", "get", "CONF"]).status.success());

    // Rotation: restarted with a new key and the old one as previous, the
    // server seals the secret again; functions still read it.
    s.interrupt();
    let new_key = tmp.path().join("new.key");
    std::fs::write(&new_key, "a1".repeat(32)).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["up", "--listen", "127.0.0.1:0", "--slots", "2", "--data-dir", path(&data)]);
    cmd.args(["--secret-key-file", path(&new_key), "--previous-secret-key-file", path(&data.join("secret.key"))]);
    cmd.args(share_with_functions(&data));
    let s = Server::from_command(cmd, data.clone());
    let new_id = stratus_core::settings::SecretKey::parse(&std::fs::read_to_string(&new_key).unwrap()).unwrap();
    s.eventually("the secret sealed under the new key", || {
        let row: Value = serde_json::from_str(s.ok(&["--json", "secret", "list"]).lines().next().unwrap()).unwrap();
        row["key_id"].as_str() == Some(new_id.id())
    });
    assert_eq!(s.ok(&["invoke", "pw"]).split(' ').nth(2), Some(secret_digest().as_str()));
    assert!(s.ok(&["audit"]).contains("secret.reseal"));

    // The value is nowhere in the store's files, nor in the server's log.
    assert_eq!(files_holding(&data, SECRET.as_bytes()), Vec::<PathBuf>::new());
    assert!(files_holding(&log, SECRET.as_bytes()).is_empty(), "the server's log");
    assert!(files_holding(&data, &SECRET.as_bytes()[..5]).is_empty(), "not even its first bytes");
}

#[test]
fn on_postgres_a_remote_worker_asks_the_api_for_secrets_not_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = format!("e2e_{}", stratus_core::new_id().as_uuid().simple());
    let state = postgres_url(&schema);
    let queue = TestQueue::new("settings");
    let data = tmp.path().join("data");
    let key = tmp.path().join("cluster.key");
    std::fs::write(&key, "5e".repeat(32)).unwrap();
    let server_log = tmp.path().join("server.log");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir", path(&data), "--state", &state]);
    cmd.args(["--broker", &amqp(), "--broker-queue", &queue.0, "--secret-key-file", path(&key)]);
    let s = Server::from_command_logged(cmd, data.clone(), Some(&server_log));
    assert!(!data.join("secret.key").exists(), "a key file given: none drawn");
    let worker_log = tmp.path().join("worker.log");
    let _w = Worker::start_logged(&s.url, &tmp.path().join("w1"), 2, Some(&worker_log));

    let ids = reads_and_hides(&s, tmp.path());

    // A worker token cannot read another worker's attempt's settings, nor
    // one that is not running.
    let worker = worker_token(&s.url);
    let res = http_with(Some(&worker))
        .get(format!("{}/v1/workers/nobody/attempts/{}/1/settings", s.url, ids[0]))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 404);

    // The store holds the secret only sealed: a dump of its schema does not
    // have it.
    let dump = std::process::Command::new("pg_dump")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "--schema", &schema, "--data-only"])
        .output()
        .expect("pg_dump runs");
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("db-password") && !dump.contains(SECRET), "the sealed row is there, not the value");
    for log in [&server_log, &worker_log] {
        assert!(files_holding(log, SECRET.as_bytes()).is_empty(), "{}", log.display());
    }
    // RabbitMQ's own files, when this test may read them.
    let rabbit = Path::new("/var/lib/rabbitmq");
    if rabbit.is_dir() {
        assert!(files_holding(rabbit, SECRET.as_bytes()).is_empty(), "the broker's data directory");
    }
}
