//! Spawning `stratus up` and talking to it.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Node {
    pub child: Child,
    pub url: String,
    pub bin: PathBuf,
    _dir: TempDir,
    /// `stratus worker` processes joined to this node.
    workers: Vec<Child>,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("stratus-bench-{tag}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Node {
    pub fn up(bin: &Path, args: &[&str]) -> Result<Node> {
        let dir = TempDir::new("node")?;
        let mut child = Command::new(bin)
            .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.0.join("data"))
            .args(args)
            .env("STRATUS_LOG", "warn")
            .env("STRATUS_CREDENTIALS", dir.0.join("credentials.toml"))
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} (build it with cargo build --release)", bin.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("stratus listening on ") else {
            bail!("unexpected first line from stratus up: {line:?}");
        };
        // The first admin token, which builds from before tokens lack; a
        // standby on the store of a node started before uses that node's.
        match std::fs::read_to_string(dir.0.join("data/admin.token")) {
            Ok(token) => crate::http::use_token(url, token.trim()),
            Err(_) => {
                if let Some(last) = crate::http::last_token() {
                    crate::http::use_token(url, &last);
                }
            }
        }
        Ok(Node { child, url: url.to_string(), bin: bin.to_path_buf(), _dir: dir, workers: Vec::new() })
    }

    /// Starts `n` `stratus worker` processes with `slots` slots each, joined
    /// to this node; they stop with it.
    pub fn add_workers(&mut self, n: usize, slots: usize) -> Result<()> {
        let token = match crate::http::token_for(&self.url) {
            Some(_) => {
                vec!["--token".to_string(), self.cli(&["token", "create", "--role", "worker"])?.trim().to_string()]
            }
            None => Vec::new(),
        };
        for i in 0..n {
            let mut child = Command::new(&self.bin)
                .args(["worker", "--server", &self.url, "--slots", &slots.to_string(), "--data-dir"])
                .arg(self._dir.0.join(format!("worker-{i}")))
                .args(&token)
                .env("STRATUS_LOG", "warn")
                .stdout(Stdio::piped())
                .spawn()?;
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
            if !line.starts_with("stratus worker ") {
                bail!("unexpected first line from stratus worker: {line:?}");
            }
            self.workers.push(child);
        }
        Ok(())
    }

    /// Runs a client command against this node; it must succeed.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).env("STRATUS_URL", &self.url).env("STRATUS_CREDENTIALS", self._dir.0.join("credentials.toml"));
        if let Some(t) = crate::http::token_for(&self.url) {
            cmd.env("STRATUS_TOKEN", t);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("stratus {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    pub fn rss_mib(&self) -> Result<f64> {
        rss_mib(self.child.id())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    proc_status_mib(pid, "VmRSS")
}

/// A memory field of /proc/PID/status (`VmRSS`, `VmHWM` = peak RSS), in MiB.
pub fn proc_status_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .context("no such field")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Builds a wasm32-wasip1 guest crate and returns the module's path.
pub fn build_guest(manifest_dir: &Path, artifact: &str) -> Result<PathBuf> {
    let target = std::env::current_dir()?.join("target/guests");
    let status = Command::new("cargo")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip1", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        bail!("building {} failed", manifest_dir.display());
    }
    Ok(target.join("wasm32-wasip1/release").join(artifact))
}

/// Samples the summed resident memory of a process and all its descendants
/// every 50 ms on a background thread; [`TreeRss::stop`] gives the peak.
pub struct TreeRss {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<f64>,
}

impl TreeRss {
    pub fn start(root: u32) -> TreeRss {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(tree_rss_mib(root));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            peak.max(tree_rss_mib(root))
        });
        TreeRss { stop, handle }
    }

    pub fn stop(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0.0)
    }
}

/// The summed RSS of `root` and its descendants, in MiB.
fn tree_rss_mib(root: u32) -> f64 {
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the command name (which may hold spaces): state, ppid, ...
        let ppid = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(1)).and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let in_tree = |mut pid: u32| loop {
        if pid == root {
            return true;
        }
        match parent.get(&pid) {
            Some(&p) if p != 0 && p != pid => pid = p,
            _ => return false,
        }
    };
    parent.keys().filter(|&&p| in_tree(p)).filter_map(|&p| rss_mib(p).ok()).sum()
}
