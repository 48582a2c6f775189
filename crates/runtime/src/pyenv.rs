//! Installs Python environments ([`stratus_core::pyenv`]) on a worker: the
//! packages of a requirements file, by pip, into a directory named by the
//! environment's digest that functions get on `PYTHONPATH`. Once per worker
//! and digest; in the background when asked ahead ([`PyEnvs::start`]), or
//! by the first attempt that needs it, which waits ([`PyEnvs::ready`]).
//!
//! Only wheels are installed (`--only-binary :all:`): a source package runs
//! its own code at install time, which would run as the worker's user,
//! outside the sandbox. The interpreter is the system's, seen by functions
//! in their sandbox as it is here; pip installs for its minor version.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stratus_core::pyenv::PyEnvSpec;

/// How long an install may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a failed install is remembered before an attempt tries again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// The end of pip's output a failure keeps.
const MESSAGE_BYTES: usize = 4096;

/// An environment's state on this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PyEnvState {
    /// Not asked for here yet.
    Absent,
    Installing,
    Ready,
    /// The install failed: the end of pip's output.
    Failed(String),
}

impl PyEnvState {
    pub fn name(&self) -> &'static str {
        match self {
            PyEnvState::Absent => "absent",
            PyEnvState::Installing => "installing",
            PyEnvState::Ready => "ready",
            PyEnvState::Failed(_) => "failed",
        }
    }
}

enum Build {
    Installing(Arc<tokio::sync::Notify>),
    Failed { at: Instant, message: String },
}

/// The environments of one worker, under one directory.
pub struct PyEnvs {
    dir: PathBuf,
    builds: Mutex<HashMap<String, Build>>,
    /// One install at a time: pip is heavy, and a worker's cores run tasks.
    installing: tokio::sync::Semaphore,
}

/// Where a worker with this cache directory installs environments.
pub fn pyenvs_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("pyenvs")
}

/// Creates the environments' directory (before the sandbox binds it):
/// functions may traverse it, not list it.
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

impl PyEnvs {
    /// Environments under `dir`, which functions may traverse but not list
    /// (mode 0711): each finds its own by digest. Leftovers of installs cut
    /// short are removed.
    pub fn new(dir: PathBuf) -> PyEnvs {
        if make_dir(&dir).is_ok()
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".partial") {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        PyEnvs { dir, builds: Mutex::new(HashMap::new()), installing: tokio::sync::Semaphore::new(1) }
    }

    /// The directory functions of `spec` get on `PYTHONPATH`.
    pub fn path(&self, spec: &PyEnvSpec) -> PathBuf {
        self.dir.join(spec.digest())
    }

    pub fn state(&self, spec: &PyEnvSpec) -> PyEnvState {
        let digest = spec.digest();
        match self.builds.lock().unwrap().get(&digest) {
            Some(Build::Installing(_)) => PyEnvState::Installing,
            Some(Build::Failed { message, .. }) => PyEnvState::Failed(message.clone()),
            None if self.dir.join(&digest).is_dir() => PyEnvState::Ready,
            None => PyEnvState::Absent,
        }
    }

    /// Starts installing `spec` in the background, unless it is installed
    /// or being installed.
    pub fn start(self: &Arc<Self>, spec: &PyEnvSpec) {
        if let Some(done) = self.begin(spec, true) {
            let (me, spec) = (self.clone(), spec.clone());
            tokio::spawn(async move { me.install(spec, done).await });
        }
    }

    /// The environment's directory once it is installed: installs it, or
    /// waits for the install in progress. An install that failed less than
    /// a minute ago is not tried again: its message is the error.
    pub async fn ready(self: &Arc<Self>, spec: &PyEnvSpec) -> Result<PathBuf, String> {
        loop {
            let waiting = {
                let builds = self.builds.lock().unwrap();
                match builds.get(&spec.digest()) {
                    Some(Build::Installing(n)) => Some(n.clone()),
                    _ => None,
                }
            };
            match waiting {
                Some(n) => {
                    let notified = n.notified();
                    // Ended between the look and the wait?
                    if matches!(self.builds.lock().unwrap().get(&spec.digest()), Some(Build::Installing(_))) {
                        notified.await;
                    }
                }
                None => {
                    if let Some(done) = self.begin(spec, false) {
                        self.install(spec.clone(), done).await;
                    }
                }
            }
            match self.state(spec) {
                PyEnvState::Ready => return Ok(self.path(spec)),
                PyEnvState::Failed(message) => return Err(message),
                PyEnvState::Installing | PyEnvState::Absent => {}
            }
        }
    }

    /// Marks `spec` as installing, unless it is installed, being installed,
    /// or (but when `retry`) failed recently; the notice its end sends.
    fn begin(&self, spec: &PyEnvSpec, retry: bool) -> Option<Arc<tokio::sync::Notify>> {
        let digest = spec.digest();
        let mut builds = self.builds.lock().unwrap();
        match builds.get(&digest) {
            Some(Build::Installing(_)) => return None,
            Some(Build::Failed { at, .. }) if !retry && at.elapsed() < RETRY_AFTER => return None,
            _ => {}
        }
        if self.dir.join(&digest).is_dir() {
            builds.remove(&digest);
            return None;
        }
        let done = Arc::new(tokio::sync::Notify::new());
        builds.insert(digest, Build::Installing(done.clone()));
        Some(done)
    }

    async fn install(self: &Arc<Self>, spec: PyEnvSpec, done: Arc<tokio::sync::Notify>) {
        let digest = spec.digest();
        let me = self.clone();
        let s = spec.clone();
        let result = match self.installing.acquire().await {
            Ok(_one) => tokio::task::spawn_blocking(move || me.install_now(&s))
                .await
                .unwrap_or_else(|e| Err(format!("the install stopped: {e}"))),
            Err(e) => Err(format!("the install stopped: {e}")),
        };
        {
            let mut builds = self.builds.lock().unwrap();
            match result {
                Ok(()) => {
                    builds.remove(&digest);
                    tracing::info!(pyenv = spec.name.as_deref().unwrap_or("(bundle)"), %digest, "python environment installed");
                }
                Err(message) => {
                    tracing::warn!(pyenv = spec.name.as_deref().unwrap_or("(bundle)"), %digest, "python environment failed to install");
                    builds.insert(digest, Build::Failed { at: Instant::now(), message });
                }
            }
        }
        done.notify_waiters();
    }

    /// Runs pip into a partial directory, then renames it into place: a
    /// directory named by a digest is always a whole install.
    fn install_now(&self, spec: &PyEnvSpec) -> Result<(), String> {
        let digest = spec.digest();
        let partial = self.dir.join(format!("{digest}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial).map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        let requirements = partial.join(".requirements.txt");
        std::fs::write(&requirements, &spec.requirements).map_err(|e| e.to_string())?;
        let any = spec.requirements.lines().any(|l| !l.split('#').next().unwrap_or("").trim().is_empty());
        if !any {
            // Nothing to install (pip refuses an empty file): an empty environment.
            return std::fs::rename(&partial, self.dir.join(&digest)).map_err(|e| e.to_string());
        }
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--only-binary", ":all:"])
            .arg("--target")
            .arg(&partial)
            .arg("-r")
            .arg(&requirements);
        if let Some(v) = &spec.python {
            cmd.args(["--python-version", v]);
        }
        cmd.stdin(std::process::Stdio::null());
        let out = run_with_timeout(cmd, BUILD_TIMEOUT)?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&partial);
            let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
            if text.trim().is_empty() {
                text = String::from_utf8_lossy(&out.stdout).into_owned();
            }
            let tail = text.len().saturating_sub(MESSAGE_BYTES);
            let tail = text.char_indices().map(|(i, _)| i).find(|i| *i >= tail).unwrap_or(0);
            return Err(format!("pip install failed ({}): {}", out.status, text[tail..].trim()));
        }
        std::fs::rename(&partial, self.dir.join(&digest))
            .map_err(|e| format!("cannot move the install into place: {e}"))
    }
}

fn run_with_timeout(mut cmd: std::process::Command, timeout: Duration) -> Result<std::process::Output, String> {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
    let (mut so, mut se) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let out_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let err_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("pip install ran past {} s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(std::process::Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}
