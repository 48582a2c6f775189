//! Starting a function's process without forking the server.
//!
//! The standard library forks the whole (multi-threaded, large) server when a
//! command needs set-up in the child (`pre_exec`), which made a cold process
//! function several times dearer than a bare `posix_spawn`. This module does
//! what glibc's `posix_spawn` does — `clone(CLONE_VM | CLONE_VFORK)`, so no
//! page table is copied and the caller's thread sleeps until the child has
//! called `execve` — and runs the set-up `posix_spawn` cannot express in the
//! child: its own process group, a parent death signal, and an address-space
//! limit. The exit is observed through a pidfd, so no `SIGCHLD` handling is
//! involved and no other part of the process can reap our child.

use crate::sandbox::{ChildJail, Jail, Lease, Sandbox, enter_in_child};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// What to run: program, arguments, working directory, the complete
/// environment, and the address-space limit in bytes (0 = none).
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
    pub memory_bytes: u64,
    /// The sandbox the process starts in, and what the function asks of
    /// it; `dir` is then an unpacked bundle, seen inside at
    /// [`crate::sandbox::APP_DIR`].
    pub jail: Option<(Arc<Sandbox>, Jail)>,
}

/// A running child: the leader of its own process group, with piped stdio.
pub struct Child {
    pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// The cgroup of its process tree, given back once the child is dropped.
    lease: Option<Lease>,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// Everything the child touches, prepared before `clone`: the child may not
/// allocate, lock or unwind, it only makes system calls.
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    dir: *const libc::c_char,
    fds: [RawFd; 3],
    memory_bytes: u64,
    jail: *const ChildJail,
    mask: libc::sigset_t,
    errno: libc::c_int,
    /// The sandbox step that failed, if one did.
    step: &'static str,
}

const CHILD_STACK: usize = 64 << 10;

extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the `ChildArgs` of the suspended parent thread
    // (CLONE_VFORK); only async-signal-safe system calls follow.
    unsafe {
        let a = &mut *(arg as *mut ChildArgs);
        // Every signal is blocked here (the parent blocked them before
        // `clone`), and `execve` resets caught signals to their default, so
        // the server's handlers can never run in this child: unlike glibc's
        // `posix_spawn`, no pass over all 64 signals is needed. Ignored
        // signals survive `execve`: SIGPIPE, which Rust ignores, is put back
        // to its default. The caller's mask comes back just before
        // `execve`, after `setpgid`: by then no one but the suspended parent
        // knows this pid or group, so no handler can be entered in between.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &dfl, std::ptr::null_mut());
        let fail = |a: &mut ChildArgs| -> ! {
            a.errno = *libc::__errno_location();
            libc::_exit(127)
        };
        if libc::setpgid(0, 0) != 0 {
            fail(a);
        }
        if let Some(jail) = a.jail.as_ref()
            && let Err((step, errno)) = enter_in_child(jail)
        {
            a.step = step;
            a.errno = errno;
            libc::_exit(127);
        }
        // After the credentials change, which clears it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if a.memory_bytes > 0 {
            let lim =
                libc::rlimit { rlim_cur: a.memory_bytes as libc::rlim_t, rlim_max: a.memory_bytes as libc::rlim_t };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                fail(a);
            }
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            // The parent made sure every pipe end is above 2, so these never clobber each other.
            if libc::dup2(fd, target as RawFd) < 0 {
                fail(a);
            }
        }
        if libc::chdir(a.dir) != 0 {
            fail(a);
        }
        // The caller's mask, restored last, once the child is alone in its group.
        libc::sigprocmask(libc::SIG_SETMASK, &a.mask, std::ptr::null_mut());
        libc::execve(a.path, a.argv, a.envp);
        fail(a)
    }
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a command or environment"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// A pipe whose ends are close-on-exec and above the standard descriptors;
/// `parent_reads` picks which end stays with us (made non-blocking).
fn pipe_pair(parent_reads: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: plain syscalls on descriptors we own from here on.
    unsafe {
        cvt(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC))?;
        let mut owned = fds.map(|fd| OwnedFd::from_raw_fd(fd));
        for o in owned.iter_mut() {
            if o.as_raw_fd() < 3 {
                let moved = cvt(libc::fcntl(o.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3))?;
                *o = OwnedFd::from_raw_fd(moved);
            }
        }
        let [r, w] = owned;
        let (parent, child) = if parent_reads { (r, w) } else { (w, r) };
        // A fresh pipe end has no status flag but its access mode, which
        // F_SETFL leaves alone: no need to read the flags first.
        cvt(libc::fcntl(parent.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK))?;
        Ok((parent, child))
    }
}

/// Programs found on a PATH, by (program, PATH): a function started many
/// times looks its program up once, not with a failed `access` for every
/// directory before the right one at each start. An entry is dropped when
/// starting what it names fails, so a program removed or moved is looked up
/// again; one installed meanwhile earlier on the PATH is seen after a
/// restart, or once the table is full and cleared.
static RESOLVED: std::sync::Mutex<Option<std::collections::HashMap<(PathBuf, String), PathBuf>>> =
    std::sync::Mutex::new(None);
const RESOLVED_MAX: usize = 1024;

fn resolve_cached(program: &Path, path: Option<&str>) -> io::Result<(PathBuf, bool)> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok((program.to_path_buf(), false));
    }
    let key = (program.to_path_buf(), path.unwrap_or(crate::process::DEFAULT_PATH).to_string());
    if let Some(found) = RESOLVED.lock().unwrap().as_ref().and_then(|m| m.get(&key)) {
        return Ok((found.clone(), true));
    }
    let found = resolve(program, path)?;
    let mut table = RESOLVED.lock().unwrap();
    let m = table.get_or_insert_with(Default::default);
    if m.len() >= RESOLVED_MAX {
        m.clear();
    }
    m.insert(key, found.clone());
    Ok((found, false))
}

fn forget_resolved(program: &Path, path: Option<&str>) {
    let key = (program.to_path_buf(), path.unwrap_or(crate::process::DEFAULT_PATH).to_string());
    if let Some(m) = RESOLVED.lock().unwrap().as_mut() {
        m.remove(&key);
    }
}

/// Finds `program` on `path` the way `execvp` would.
fn resolve(program: &Path, path: Option<&str>) -> io::Result<PathBuf> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return Ok(program.to_path_buf());
    }
    for dir in path.unwrap_or(crate::process::DEFAULT_PATH).split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        let c = cstr(candidate.as_os_str().as_bytes())?;
        // SAFETY: a valid C string.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found on PATH", program.display())))
}

/// Starts `spec` with piped stdin, stdout and stderr.
pub fn spawn(spec: &Spec) -> io::Result<Child> {
    spawn_inner(spec, None).map(|(c, _)| c)
}

/// Starts `spec` with `input` already in its stdin pipe, as much of it as
/// the pipe holds (64 KiB by default); returns how much that was. When it
/// was all of it, stdin is closed (the child reads it, then end of file)
/// and `Child::stdin` is `None`: most invocations then need no writer.
pub fn spawn_with_input(spec: &Spec, input: &[u8]) -> io::Result<(Child, usize)> {
    spawn_inner(spec, Some(input))
}

/// Writes as much of `data` as a non-blocking pipe takes now.
fn fill(fd: &OwnedFd, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: writing from a valid slice to a descriptor we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), data[done..].as_ptr().cast(), data.len() - done) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => break,
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        done += n as usize;
    }
    Ok(done)
}

fn spawn_inner(spec: &Spec, input: Option<&[u8]>) -> io::Result<(Child, usize)> {
    let path_var = spec.env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str());
    let (program, cached) = resolve_cached(&spec.program, path_var)?;
    match spawn_resolved(spec, &program, input) {
        // The child could not start what the table named (it reports that
        // before `execve` succeeds, so nothing ran): look it up afresh.
        Err(e)
            if cached
                && matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::NotADirectory
                ) =>
        {
            forget_resolved(&spec.program, path_var);
            let (program, _) = resolve_cached(&spec.program, path_var)?;
            spawn_resolved(spec, &program, input)
        }
        r => r,
    }
}

fn spawn_resolved(spec: &Spec, program: &Path, input: Option<&[u8]>) -> io::Result<(Child, usize)> {
    let entry = match &spec.jail {
        Some((sandbox, jail)) => Some(sandbox.enter(&spec.dir, jail)?),
        None => None,
    };
    // Inside the sandbox's file system the bundle is at APP_DIR.
    let inside = |p: &Path| -> PathBuf {
        match (&entry, p.strip_prefix(&spec.dir)) {
            (Some(e), Ok(rel)) if e.chroot => Path::new(crate::sandbox::APP_DIR).join(rel),
            _ => p.to_path_buf(),
        }
    };
    let path = cstr(inside(program).as_os_str().as_bytes())?;
    let mut argv_c = vec![cstr(inside(&spec.program).as_os_str().as_bytes())?];
    for a in &spec.args {
        argv_c.push(cstr(a.as_bytes())?);
    }
    let mut env_c =
        spec.env.iter().map(|(k, v)| cstr(format!("{k}={v}").as_bytes())).collect::<io::Result<Vec<_>>>()?;
    if let Some((sandbox, jail)) = &spec.jail
        && let Some(url) = sandbox.api_url(jail.network)
    {
        env_c.push(cstr(format!("STRATUS_URL={url}").as_bytes())?);
    }
    let argv: Vec<*const libc::c_char> =
        argv_c.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let envp: Vec<*const libc::c_char> =
        env_c.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let dir = cstr(inside(&spec.dir).as_os_str().as_bytes())?;
    let child_jail = entry.as_ref().and_then(|e| e.child.as_ref());
    // A cgroup bounds the whole tree's memory: no per-process limit then.
    let memory_bytes = if entry.as_ref().is_some_and(|e| e.lease.is_some()) { 0 } else { spec.memory_bytes };
    let extra_flags = child_jail.map_or(0, crate::sandbox::clone_flags);

    let (stdin_w, stdin_r) = pipe_pair(false)?;
    let (stdout_r, stdout_w) = pipe_pair(true)?;
    let (stderr_r, stderr_w) = pipe_pair(true)?;
    let written = match input {
        Some(data) => fill(&stdin_w, data)?,
        None => 0,
    };
    let close_stdin = input.is_some_and(|data| written == data.len());

    // SAFETY: sigset and clone follow the posix_spawn recipe: every signal is
    // blocked in this thread while the child shares our memory, the child's
    // stack outlives it (we are suspended until it execs or exits), and every
    // pointer in `args` stays valid until `clone` returns.
    unsafe {
        let mut args = ChildArgs {
            path: path.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            dir: dir.as_ptr(),
            fds: [stdin_r.as_raw_fd(), stdout_w.as_raw_fd(), stderr_w.as_raw_fd()],
            memory_bytes,
            jail: child_jail.map_or(std::ptr::null(), |j| j as *const ChildJail),
            mask: std::mem::zeroed(),
            errno: 0,
            step: "",
        };
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut args.mask);
        // Not zeroed: the child writes its stack before reading it.
        let mut stack: Vec<u128> = Vec::with_capacity(CHILD_STACK / 16);
        let top = stack.as_mut_ptr().add(CHILD_STACK / 16) as *mut libc::c_void;
        let mut pidfd: libc::c_int = -1;
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD | extra_flags,
            &mut args as *mut ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        let clone_err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &args.mask, std::ptr::null_mut());
        drop(stack);
        if pid < 0 {
            return Err(clone_err);
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd);
        if args.errno != 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            let e = io::Error::from_raw_os_error(args.errno);
            if !args.step.is_empty() {
                return Err(io::Error::new(e.kind(), format!("sandbox: {}: {e}", args.step)));
            }
            return Err(io::Error::new(e.kind(), format!("{}: {e}", program.display())));
        }
        drop((stdin_r, stdout_w, stderr_w));
        let stdin = if close_stdin { None } else { Some(pipe::Sender::from_owned_fd_unchecked(stdin_w)?) };
        let child = Child {
            pid: pid as u32,
            pidfd: Some(AsyncFd::register_with_interest(pidfd, Interest::READABLE)?),
            lease: entry.and_then(|e| e.lease),
            stdin,
            stdout: Some(pipe::Receiver::from_owned_fd_unchecked(stdout_r)?),
            stderr: Some(pipe::Receiver::from_owned_fd_unchecked(stderr_r)?),
        };
        Ok((child, written))
    }
}

fn try_reap(pid: u32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: our own child.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    match r {
        0 => Ok(None),
        r if r < 0 => Err(io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(status))),
    }
}

impl Child {
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Whether the kernel killed one of its processes for memory (its
    /// cgroup's limit), since it started.
    pub fn oom_killed(&mut self) -> bool {
        self.lease.as_mut().is_some_and(|l| l.oom_killed())
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let Some(fd) = self.pidfd.as_ref() else {
            return Err(io::Error::other("the child was already reaped"));
        };
        let status = reap(self.pid, fd).await?;
        self.pidfd = None;
        Ok(status)
    }
}

async fn reap(pid: u32, pidfd: &AsyncFd<OwnedFd>) -> io::Result<ExitStatus> {
    loop {
        let mut guard = pidfd.readable().await?;
        if let Some(status) = try_reap(pid)? {
            return Ok(status);
        }
        guard.clear_ready();
    }
}

impl Drop for Child {
    /// A child dropped while running is killed (with its group) and reaped
    /// in the background, never left as a zombie.
    fn drop(&mut self) {
        let Some(fd) = self.pidfd.take() else { return };
        crate::process::kill_group(Some(self.pid));
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                // If the runtime is shutting down this future is dropped
                // unrun; the process is dead and the kernel reaps it when
                // the server exits.
                h.spawn(async move {
                    let _ = reap(pid, &fd).await;
                });
            }
            Err(_) => {
                // SAFETY: our own child, already sent SIGKILL.
                unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn spec(program: &str, args: &[&str], memory_bytes: u64) -> Spec {
        Spec {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: "/".into(),
            env: vec![("PATH".into(), crate::process::DEFAULT_PATH.into())],
            memory_bytes,
            jail: None,
        }
    }

    async fn output(s: &Spec) -> (String, ExitStatus) {
        let mut c = spawn(s).unwrap();
        drop(c.stdin.take());
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        (out, c.wait().await.unwrap())
    }

    #[tokio::test]
    async fn child_leads_its_group_with_the_memory_limit_and_clean_signal_state() {
        let (stat, status) = output(&spec("cat", &["/proc/self/stat"], 0)).await;
        assert!(status.success());
        let f: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
        let pid = stat.split(' ').next().unwrap();
        assert_eq!(f[2], pid, "process group id = pid: {stat}");

        let (limit, _) = output(&spec("sh", &["-c", "ulimit -v"], 256 << 20)).await;
        assert_eq!(limit.trim(), (256 * 1024).to_string(), "RLIMIT_AS in KiB");

        let (status, _) = output(&spec("cat", &["/proc/self/status"], 0)).await;
        let field = |name: &str| {
            let v = status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim();
            u64::from_str_radix(v, 16).unwrap()
        };
        assert_eq!(field("SigBlk:"), 0, "no signal blocked");
        assert_eq!(field("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE not ignored");
    }

    #[tokio::test]
    async fn unknown_program_and_bad_directory_are_errors_and_exit_codes_are_kept() {
        let e = spawn(&spec("no-such-program-xyz", &[], 0)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let mut s = spec("true", &[], 0);
        s.dir = "/no/such/dir".into();
        assert!(spawn(&s).is_err());
        let (_, status) = output(&spec("sh", &["-c", "exit 5"], 0)).await;
        assert_eq!(status.code(), Some(5));
    }

    #[tokio::test]
    async fn input_is_put_in_the_pipe_and_the_rest_left_to_write() {
        let mut c = spawn_with_input(&spec("cat", &[], 0), b"small input")
            .map(|(c, n)| {
                assert_eq!(n, 11);
                c
            })
            .unwrap();
        assert!(c.stdin.is_none(), "all of it fit: stdin closed");
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "small input");
        assert!(c.wait().await.unwrap().success());

        // More than a pipe holds: the rest goes through the writer.
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut c, n) = spawn_with_input(&spec("cat", &[], 0), &big).unwrap();
        assert!(n > 0 && n < big.len(), "{n}");
        let mut stdin = c.stdin.take().expect("left open for the rest");
        let rest = big[n..].to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(&rest).await.unwrap();
        });
        let mut out = Vec::new();
        c.stdout.take().unwrap().read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        assert_eq!(out, big);
        assert!(c.wait().await.unwrap().success());
    }

    /// A program found on the PATH once is started from there again; when
    /// it moves to another directory of the PATH, it is found there.
    #[tokio::test]
    async fn a_program_moved_along_the_path_is_found_again() {
        use std::os::unix::fs::PermissionsExt;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let name = format!("stratus-moved-{}", std::process::id());
        let path = format!("{}:{}:/usr/bin:/bin", dirs[0].path().display(), dirs[1].path().display());
        let mut s = spec(&name, &[], 0);
        s.env = vec![("PATH".into(), path)];
        for (i, dir) in dirs.iter().enumerate() {
            let script = dir.path().join(&name);
            std::fs::write(&script, format!("#!/bin/sh\necho from-{i}\n")).unwrap();
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            assert_eq!(output(&s).await.0, format!("from-{i}\n"));
            assert_eq!(output(&s).await.0, format!("from-{i}\n"), "again, from the table");
            std::fs::remove_file(&script).unwrap();
        }
        assert_eq!(spawn(&s).err().unwrap().kind(), io::ErrorKind::NotFound, "gone from every directory");
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed() {
        let c = spawn(&spec("sleep", &["300"], 0)).unwrap();
        // SAFETY: plain syscalls; our own pidfd to watch the child's end.
        unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, c.id() as libc::pid_t, 0) as libc::c_int;
            assert!(fd >= 0);
            drop(c);
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            assert_eq!(libc::poll(&mut p, 1, 30_000), 1, "the dropped child exits (long before sleep 300 ends)");
            libc::close(fd);
        }
    }
}
