//! Harness for binary-level tests: spawns the real `stratus` binary with its
//! own data directory on a free port, and drives it over the CLI and HTTP.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_stratus");

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Builds a wasm32-wasip1 crate (once per test process) and returns the module.
fn build_wasm(manifest_dir: &Path, artifact: &str) -> PathBuf {
    let target = repo_root().join("target/guests");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building {} for wasm32-wasip1 failed (is the target installed? rustup target add wasm32-wasip1)",
        manifest_dir.display()
    );
    let path = target.join("wasm32-wasip1/release").join(artifact);
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// The test guest (see tests/guest/src/main.rs).
pub fn guest_wasm() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| build_wasm(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest"), "stratus-testfn.wasm"))
        .clone()
}

/// The README's Rust example.
pub fn hello_wasm() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| build_wasm(&repo_root().join("examples/hello-wasm"), "hello-wasm.wasm")).clone()
}

/// The image pipeline's filter (examples/image-pipeline/filter).
pub fn image_filter_wasm() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| build_wasm(&repo_root().join("examples/image-pipeline/filter"), "image-filter.wasm")).clone()
}

pub struct Server {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// The admin token its first start created (a standby's is the
    /// leader's: the last one any server of this test created).
    pub token: String,
}

/// Admin tokens by server URL, and the last one created; worker tokens by URL.
static TOKENS: std::sync::Mutex<Option<Tokens>> = std::sync::Mutex::new(None);

#[derive(Default)]
struct Tokens {
    admin: std::collections::HashMap<String, String>,
    last: Option<String>,
    worker: std::collections::HashMap<String, String>,
}

fn with_tokens<R>(f: impl FnOnce(&mut Tokens) -> R) -> R {
    f(TOKENS.lock().unwrap().get_or_insert_with(Default::default))
}

/// The admin token of the server at `url` (or the last one created).
pub fn admin_token(url: &str) -> String {
    with_tokens(|t| t.admin.get(url).or(t.last.as_ref()).cloned()).unwrap_or_default()
}

/// A worker token for the server at `url`, created once.
pub fn worker_token(url: &str) -> String {
    if let Some(t) = with_tokens(|t| t.worker.get(url).cloned()) {
        return t;
    }
    let out = cli(url, &["token", "create", "--role", "worker"], None);
    assert!(out.status.success(), "creating a worker token: {}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    with_tokens(|t| t.worker.insert(url.to_string(), token.clone()));
    token
}

/// Before the first server starts: the CLI commands and workers this test
/// runs, however it spawns them, use the admin token of the first server
/// (`STRATUS_TOKEN`) and a credentials file of this test process's own,
/// never the user's.
fn isolate_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let file = std::env::temp_dir().join(format!("stratus-test-credentials-{}.toml", std::process::id()));
        // SAFETY: set once, before this test spawns any process or thread
        // that reads the environment.
        unsafe { std::env::set_var("STRATUS_CREDENTIALS", file) };
    });
}

impl Server {
    /// `stratus up` on a fresh data directory.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_in(dir.join("data"), extra)
    }

    pub fn start_in(data_dir: PathBuf, extra: &[&str]) -> Server {
        let mut args = vec!["up", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::spawn(&args, data_dir.clone())
    }

    /// `stratus ARGS…` (a node command); waits for its first line. A node
    /// with local slots lets its sandboxed functions see (and write) the
    /// directory around its data directory, where tests keep the files
    /// functions wait for or leave.
    pub fn spawn(args: &[&str], data_dir: PathBuf) -> Server {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if args.first().is_some_and(|a| a == "up") && !args.iter().any(|a| a == "--sandbox-path") {
            args.extend(share_with_functions(&data_dir));
        }
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        Self::from_command(cmd, data_dir)
    }

    /// A node started from `cmd` (a `stratus` command with its arguments,
    /// and any environment or directory of its own); waits for its first line.
    pub fn from_command(cmd: Command, data_dir: PathBuf) -> Server {
        Self::from_command_logged(cmd, data_dir, None)
    }

    /// As [`Self::from_command`]; with `log`, the node's info-level log
    /// goes to that file.
    pub fn from_command_logged(mut cmd: Command, data_dir: PathBuf, log: Option<&Path>) -> Server {
        isolate_credentials();
        let (level, stderr) = match log {
            Some(p) => ("info", Stdio::from(std::fs::File::create(p).unwrap())),
            None => ("warn", Stdio::inherit()),
        };
        let mut child =
            cmd.env("STRATUS_LOG", level).stdout(Stdio::piped()).stderr(stderr).spawn().expect("stratus starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("stratus listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let created = std::fs::read_to_string(data_dir.join("admin.token")).ok().map(|t| t.trim().to_string());
        let token = with_tokens(|t| {
            if let Some(c) = created {
                t.admin.insert(url.clone(), c.clone());
                if t.last.is_none() {
                    // SAFETY: as in `isolate_credentials`.
                    unsafe { std::env::set_var("STRATUS_TOKEN", &c) };
                }
                t.last = Some(c);
            }
            t.admin.get(&url).or(t.last.as_ref()).cloned().unwrap_or_default()
        });
        Server { child, url, data_dir, token }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.url, args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        cli(&self.url, args, Some(stdin))
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "stratus {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// An HTTP client that sends the admin token.
    pub fn http(&self) -> reqwest::blocking::Client {
        http_with(Some(&self.token))
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let res = self.http().get(format!("{}{path}", self.url)).send().unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().unwrap()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGINT (Ctrl-C); returns the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, 2) };
        self.child.wait().unwrap()
    }

    /// Polls `cond` until it holds (a condition, not a fixed sleep), failing after 60 s.
    pub fn eventually(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that sends `token`, if any.
pub fn http_with(token: Option<&str>) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).default_headers(headers).build().unwrap()
}

/// A CLI command against `url`, with its admin token.
pub fn cli(url: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    cli_as(url, &admin_token(url), args, stdin)
}

/// A CLI command against `url` with `token`.
pub fn cli_as(url: &str, token: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("STRATUS_URL", url).env("STRATUS_TOKEN", token).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A `stratus worker` process joined to a server.
pub struct Worker {
    pub child: Child,
    pub id: String,
}

/// The `--sandbox-path` that lets functions see the test's directory (the
/// parent of `dir`), which is made world-writable for them.
pub fn share_with_functions(dir: &Path) -> Vec<String> {
    let Some(shared) = dir.parent() else { return Vec::new() };
    std::fs::create_dir_all(shared).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    vec!["--sandbox-path".into(), format!("{}:rw", shared.display())]
}

impl Worker {
    pub fn start(url: &str, dir: &Path, slots: usize) -> Worker {
        Self::start_logged(url, dir, slots, None)
    }

    /// With `log`, the worker's info-level log goes to that file.
    pub fn start_logged(url: &str, dir: &Path, slots: usize, log: Option<&Path>) -> Worker {
        Self::start_with(url, dir, slots, log, &[])
    }

    /// With more arguments for `stratus worker`.
    pub fn start_with(url: &str, dir: &Path, slots: usize, log: Option<&Path>, extra: &[&str]) -> Worker {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
            None => Stdio::inherit(),
        };
        let token = worker_token(url);
        let mut child = Command::new(BIN)
            .args(["worker", "--server", url, "--token", &token, "--slots", &slots.to_string(), "--data-dir"])
            .arg(dir)
            .args(share_with_functions(dir))
            .args(extra)
            .env("STRATUS_LOG", if log.is_some() { "info" } else { "warn" })
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("worker starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let id = line
            .strip_prefix("stratus worker ")
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected worker line {line:?}"))
            .to_string();
        Worker { child, id }
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc_kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.signal(18); // SIGCONT, in case it was stopped
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process function that blocks until the file `$GO` exists, then echoes
/// its input. Returns the directory to deploy.
pub fn gate_function(dir: &Path) -> PathBuf {
    let f = dir.join("gate-fn");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::write(f.join("gate.sh"), "#!/bin/sh\nwhile [ ! -e \"$GO\" ]; do sleep 0.02; done\ncat\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.join("gate.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    f
}

/// Deploys [`gate_function`] as `name`; returns the file that opens its
/// gate (`DIR/go`), which the caller creates when it should.
pub fn deploy_gate(s: &Server, dir: &Path, name: &str) -> PathBuf {
    let f = gate_function(dir);
    let go = dir.join("go");
    let env = format!("GO={}", go.display());
    s.ok(&["fn", "deploy", name, "--dir", f.to_str().unwrap(), "--cmd", "./gate.sh", "--env", &env]);
    go
}

/// Writes `n` JSON string inputs `"t-0"` .. and returns the file.
pub fn inputs_file(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join(format!("inputs-{n}.jsonl"));
    let text: String = (0..n).map(|i| format!("\"t-{i}\"\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

/// Checks that a finished job has exactly one succeeded result per input,
/// in order, each the echo of its input.
pub fn assert_all_echoed(s: &Server, job: &str, n: usize) {
    let results = s.get_json(&format!("/v1/jobs/{job}/results?limit=1000"));
    let results = results["results"].as_array().unwrap();
    assert_eq!(results.len(), n);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["output"], format!("\"t-{i}\""), "{r}");
    }
    let job = s.get_json(&format!("/v1/jobs/{job}"));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["succeeded"], n, "counted exactly once: {job}");
}

/// Sends a request exactly as written (no URL normalisation, unlike an HTTP
/// client library); returns the status code.
pub fn raw_status(url: &str, method: &str, path: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        admin_token(url),
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad response {resp:?}"))
}

/// The PostgreSQL database of the tests (`STRATUS_TEST_POSTGRES`, default
/// postgres://postgres@127.0.0.1:5432/test), in `schema`.
pub fn postgres_url(schema: &str) -> String {
    let base =
        std::env::var("STRATUS_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// The RabbitMQ of the tests (`STRATUS_TEST_AMQP`, default the local one).
pub fn amqp() -> String {
    std::env::var("STRATUS_TEST_AMQP").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A work queue no other test (or earlier run) uses; it and its dead-letter
/// queue are deleted from RabbitMQ when this is dropped. Declare it before
/// the server and workers, so it is dropped after them.
pub struct TestQueue(pub String);

impl TestQueue {
    pub fn new(name: &str) -> TestQueue {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        TestQueue(format!("test.{name}.{}.{nanos}", std::process::id()))
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        stratus_broker::testing::delete_queue_blocking(&amqp(), &self.0);
    }
}

/// A process function that leaves a mark `$MARKS/WORKER.INVOCATION.RANDOM`
/// each time it starts (the worker's id with `/` as `_`), blocks until
/// `$GO` exists, then echoes its input.
pub fn marking_gate(s: &Server, dir: &Path) -> (PathBuf, PathBuf) {
    let f = dir.join("mark-fn");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&f).unwrap();
    std::fs::create_dir_all(&marks).unwrap();
    std::fs::write(
        f.join("gate.sh"),
        "#!/bin/sh\ntouch \"$MARKS/$(echo $STRATUS_WORKER | tr / _).$STRATUS_INVOCATION_ID.$(cat /proc/sys/kernel/random/uuid)\"\nwhile [ ! -e \"$GO\" ]; do sleep 0.02; done\ncat\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(f.join("gate.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let go = dir.join("go");
    s.ok(&[
        "fn",
        "deploy",
        "g",
        "--dir",
        f.to_str().unwrap(),
        "--cmd",
        "./gate.sh",
        "--env",
        &format!("GO={}", go.display()),
        "--env",
        &format!("MARKS={}", marks.display()),
    ]);
    (marks, go)
}

/// The worker processes that have started tasks, by pid: a node's own
/// worker is `HOST/PID`, a remote one `HOST-PID-SUFFIX` (its default name
/// and the suffix the server adds).
pub fn marked_workers(marks: &Path) -> HashSet<u32> {
    std::fs::read_dir(marks)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_str()?.to_string();
            let worker = name.split('.').next()?;
            match worker.rsplit_once('_') {
                Some((_, pid)) => pid.parse().ok(),
                None => worker.rsplit('-').nth(1)?.parse().ok(),
            }
        })
        .collect()
}
