//! A real S3 server for tests: `s3s-fs` (installed by `.ci/run` with
//! `cargo install s3s-fs@0.14.1 --features binary`) started on a free port
//! over a temporary directory, and killed when dropped. Tests that claim the
//! S3 backend works run against it; there is no mock.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
    root: tempfile::TempDir,
}

const ACCESS_KEY: &str = "stratus-test";
const SECRET_KEY: &str = "stratus-test-secret";

/// Where the `s3s-fs` binary is: `$STRATUS_TEST_S3FS`, else on `PATH`, else
/// in cargo's bin directory.
fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRATUS_TEST_S3FS") {
        return Some(p.into());
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path.into_iter().chain(cargo_home.map(|c| c.join("bin/s3s-fs"))).find(|p| p.is_file())
}

impl S3Server {
    /// Starts a server with the given buckets. Panics — failing the test,
    /// never skipping it — when `s3s-fs` is missing or does not start.
    pub fn start(buckets: &[&str]) -> S3Server {
        let bin = binary().expect(
            "s3s-fs not found (set STRATUS_TEST_S3FS or install it: cargo install s3s-fs@0.14.1 --features binary)",
        );
        let root = tempfile::tempdir().expect("temporary directory");
        for b in buckets {
            std::fs::create_dir_all(root.path().join(b)).expect("bucket directory");
        }
        // A free port: bind, read, release. Another process could take it in
        // between; the readiness check below would then fail loudly.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = S3Server { child, addr, root };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// The endpoint, e.g. `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A Stratus object store URL for `bucket` (and an optional prefix).
    pub fn url(&self, bucket_and_prefix: &str) -> String {
        format!(
            "s3://{bucket_and_prefix}?endpoint={}&access_key_id={ACCESS_KEY}&secret_access_key={SECRET_KEY}",
            self.endpoint()
        )
    }

    /// The directory the server keeps its buckets in.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
