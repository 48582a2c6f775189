//! The walls around a process function (Linux).
//!
//! Every process function (cold or warm) starts inside these layers, each
//! set up once when the node starts and only entered per call, so a call
//! pays a few system calls for them, not a container's start-up:
//!
//! - **user**: it runs as an unprivileged uid/gid that owns nothing of the
//!   server, with no supplementary groups, `no_new_privs`, and (being not
//!   root) no capabilities;
//! - **namespaces**: new PID, IPC and UTS namespaces per call: it sees its
//!   own processes only, and killing its first process takes every process
//!   it started with it (nothing outlives the call, `setsid` or not);
//! - **filesystem**: a private copy of a prepared mount namespace whose root
//!   is a read-only tmpfs holding read-only binds of the system (`/usr`,
//!   `/lib*`, `/bin`, `/sbin`, and the paths given in
//!   [`SandboxConfig::extra_paths`]), a copy of the essentials of `/etc`
//!   taken at start, and a few device nodes; per call its bundle (a
//!   detached read-only copy of its mount, made by the server) is moved to
//!   `/app`, with a size-capped tmpfs at `/tmp` and its own `/proc`. The
//!   data directory, other bundles and the host's `/proc` are never there;
//! - **network**: all functions not deployed with `network` share one
//!   prepared network namespace with only a loopback, where the node
//!   listens for the Stratus API ([`Sandbox::take_api_listener`]) and
//!   `STRATUS_URL` points;
//! - **cgroups**: the whole process tree is in a cgroup (v2, or the v1
//!   `memory`, `pids` and `cpu` controllers), pooled and reused, limited by
//!   the function's memory, process count and CPU share;
//! - **seccomp**: a filter refusing what a function never needs (mounts,
//!   namespaces, ptrace, kernel modules, kexec, keyrings, bpf, ...).
//!
//! A layer the host or the server's privileges do not allow is off;
//! [`Sandbox::layers`] says which are on, and `docs/security.md` what each
//! one stops.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Size of the per-call `/tmp`, in MiB.
pub const TMP_MB: u64 = 64;
/// Where the bundle is inside the sandbox.
pub const APP_DIR: &str = "/app";
/// Where the Python environments are inside the sandbox.
pub const PYENVS_DIR: &str = "/pyenvs";

/// How the node wants its sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The uid and gid functions run as.
    pub uid: u32,
    pub gid: u32,
    /// Where unpacked bundles live; each call sees only its own.
    pub bundles_dir: PathBuf,
    /// An empty directory the sandbox's root is mounted on (in the
    /// sandbox's own mount namespace only).
    pub root_dir: PathBuf,
    /// More host paths functions see (e.g. Python environments):
    /// read-only, or writable when `true`.
    pub extra_paths: Vec<(PathBuf, bool)>,
    /// The Python environments' directory, which functions see read-only
    /// at [`PYENVS_DIR`] (whatever the permissions of the directories
    /// above it on the host).
    pub pyenvs_dir: Option<PathBuf>,
    /// Turn the sandbox off (development on hosts that cannot have it).
    pub disabled: bool,
}

/// Which layers are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Layers {
    pub user: bool,
    pub namespaces: bool,
    pub filesystem: bool,
    pub network: bool,
    pub cgroups: bool,
    pub seccomp: bool,
}

impl Layers {
    pub fn all(&self) -> bool {
        self.user && self.namespaces && self.filesystem && self.network && self.cgroups && self.seccomp
    }

    /// The names of the layers that are off.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            ("user", self.user),
            ("namespaces", self.namespaces),
            ("filesystem", self.filesystem),
            ("network", self.network),
            ("cgroups", self.cgroups),
            ("seccomp", self.seccomp),
        ]
        .into_iter()
        .filter(|(_, on)| !on)
        .map(|(n, _)| n)
        .collect()
    }
}

/// The node's sandbox: what was prepared once, shared by every call.
pub struct Sandbox {
    layers: Layers,
    /// Why each layer that is off is off.
    reasons: Vec<String>,
    uid: u32,
    gid: u32,
    bundles_dir: PathBuf,
    mnt: Option<OwnedFd>,
    net: Option<OwnedFd>,
    api: Mutex<Option<std::net::TcpListener>>,
    api_port: Option<u16>,
    /// The API as functions with the host's network reach it.
    outside_url: std::sync::OnceLock<String>,
    cgroups: Option<Arc<CgroupPool>>,
    /// The seccomp programs, installed in order (kept alive for the child).
    filters: Vec<Vec<libc::sock_filter>>,
    /// Extra paths under `/tmp`, bound per call over the call's own `/tmp`.
    tmp_binds: Vec<TmpBind>,
    /// Functions see the Python environments at [`PYENVS_DIR`].
    pyenvs_inside: bool,
}

/// A host path under `/tmp` that functions see: the template holds it at
/// `source` (hidden), and each call binds it at `target` in its fresh
/// `/tmp`, after making `dirs`.
pub(crate) struct TmpBind {
    source: CString,
    dirs: Vec<CString>,
    target: CString,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("layers", &self.layers).finish()
    }
}

impl Sandbox {
    /// Prepares every layer the host allows.
    pub fn new(config: &SandboxConfig) -> Sandbox {
        let mut sb = Sandbox {
            layers: Layers::default(),
            reasons: Vec::new(),
            uid: config.uid,
            gid: config.gid,
            bundles_dir: config.bundles_dir.clone(),
            mnt: None,
            net: None,
            api: Mutex::new(None),
            api_port: None,
            outside_url: Default::default(),
            cgroups: None,
            filters: Vec::new(),
            tmp_binds: Vec::new(),
            pyenvs_inside: false,
        };
        if config.disabled {
            sb.reasons.push("the sandbox is disabled (--no-sandbox)".into());
            return sb;
        }
        // SAFETY: plain syscall.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            sb.reasons
                .push("the server does not run as root: functions run as its own user, without namespaces".into());
            return sb;
        }
        sb.layers.user = config.uid != 0;
        if !sb.layers.user {
            sb.reasons.push("the sandbox uid is 0".into());
        }
        match probe_namespaces() {
            Ok(()) => sb.layers.namespaces = true,
            Err(e) => sb.reasons.push(format!("no PID/IPC/UTS namespaces: {e}")),
        }
        match build_template(config) {
            Ok(t) => {
                sb.tmp_binds = t.tmp_binds;
                sb.mnt = Some(t.mnt);
                sb.net = Some(t.net);
                sb.api_port = Some(t.listener.local_addr().map(|a| a.port()).unwrap_or(0));
                *sb.api.lock().unwrap() = Some(t.listener);
                sb.layers.filesystem = true;
                sb.layers.network = true;
                sb.pyenvs_inside = config.pyenvs_dir.is_some();
            }
            Err(e) => sb.reasons.push(format!("no mount and network namespaces: {e}")),
        }
        match CgroupPool::open() {
            Ok(pool) => {
                sb.cgroups = Some(Arc::new(pool));
                sb.layers.cgroups = true;
            }
            Err(e) => sb.reasons.push(format!("no cgroups: {e}")),
        }
        match seccomp_filters() {
            Ok(f) => {
                sb.filters = f;
                sb.layers.seccomp = true;
            }
            Err(e) => sb.reasons.push(format!("no seccomp filter: {e}")),
        }
        sb
    }

    /// No layer at all: functions run as the server's user (tests, and
    /// hosts that cannot have a sandbox).
    pub fn off() -> Sandbox {
        Sandbox::new(&SandboxConfig {
            uid: 0,
            gid: 0,
            bundles_dir: PathBuf::new(),
            root_dir: PathBuf::new(),
            extra_paths: Vec::new(),
            pyenvs_dir: None,
            disabled: true,
        })
    }

    /// Where a function finds the Python environment installed on the host
    /// at `host` (under the configured `pyenvs_dir`).
    pub fn pyenv_path(&self, host: &Path) -> PathBuf {
        match (self.pyenvs_inside, host.file_name()) {
            (true, Some(name)) => Path::new(PYENVS_DIR).join(name),
            _ => host.to_path_buf(),
        }
    }

    pub fn layers(&self) -> Layers {
        self.layers
    }

    /// Why the layers that are off are off.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The listener inside the functions' network namespace, for the node
    /// to serve the API on (once).
    pub fn take_api_listener(&self) -> Option<std::net::TcpListener> {
        self.api.lock().unwrap().take()
    }

    /// Sets the API's URL for functions on the host's network (those
    /// deployed with `network`, and every one when that layer is off).
    pub fn set_outside_url(&self, url: String) {
        let _ = self.outside_url.set(url);
    }

    /// `STRATUS_URL` for a function: inside the shared network namespace,
    /// or the server's own URL for one on the host's network.
    pub fn api_url(&self, network: bool) -> Option<String> {
        match self.api_port {
            Some(p) if !network => Some(format!("http://127.0.0.1:{p}")),
            _ => self.outside_url.get().cloned(),
        }
    }

    /// What one call needs in its child: the cgroup it joins (held until
    /// the call's processes are gone), and the raw values `spawn` hands to
    /// the child.
    pub(crate) fn enter(&self, bundle: &Path, limits: &Jail) -> io::Result<Entry> {
        let any = self.layers.user || self.layers.namespaces || self.layers.filesystem || self.layers.cgroups;
        if !any && self.filters.is_empty() {
            return Ok(Entry { child: None, lease: None, chroot: false, _bundle: None });
        }
        let lease = match &self.cgroups {
            Some(pool) => Some(CgroupPool::lease(pool, limits)?),
            None => None,
        };
        // The bundle as a detached, read-only copy of its mount, made here
        // and moved into place by the child: nothing of other bundles is
        // ever in the child's namespace.
        let bundle_tree = match (&self.mnt, bundle.strip_prefix(&self.bundles_dir)) {
            (Some(_), Ok(rel)) if !rel.as_os_str().is_empty() => Some(detached_read_only(bundle)?),
            (Some(_), _) => {
                return Err(io::Error::other(format!(
                    "{} is not an unpacked bundle under {}",
                    bundle.display(),
                    self.bundles_dir.display()
                )));
            }
            _ => None,
        };
        let child = ChildJail {
            uid: self.layers.user.then_some((self.uid, self.gid)),
            namespaces: self.layers.namespaces,
            net: if limits.network { -1 } else { self.net.as_ref().map_or(-1, |f| f.as_raw_fd()) },
            mnt: self.mnt.as_ref().map_or(-1, |f| f.as_raw_fd()),
            bundle: bundle_tree.as_ref().map_or(-1, |f| f.as_raw_fd()),
            cgroup_procs: lease.as_ref().map(|l| l.procs()).unwrap_or([-1; 3]),
            filters: self
                .filters
                .iter()
                .map(|f| libc::sock_fprog { len: f.len() as u16, filter: f.as_ptr() as *mut libc::sock_filter })
                .collect(),
            tmp_binds: self.tmp_binds.as_slice() as *const [TmpBind],
        };
        let chroot = self.mnt.is_some();
        Ok(Entry { child: Some(child), lease, chroot, _bundle: bundle_tree })
    }
}

/// What a function asks of its sandbox, from its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jail {
    pub memory_mb: u64,
    pub max_procs: u32,
    /// CPU share in thousandths of a core; 0 for no limit.
    pub cpu_millis: u32,
    /// Outbound network (the host's network namespace).
    pub network: bool,
}

/// One call's way in: what its child does, and the cgroup its owner keeps
/// until the call's processes are gone.
pub(crate) struct Entry {
    pub(crate) child: Option<ChildJail>,
    pub(crate) lease: Option<Lease>,
    /// The child sees the sandbox's file system: its bundle at [`APP_DIR`].
    pub(crate) chroot: bool,
    /// The detached bundle the child moves into place, open until the
    /// child has exec'd.
    _bundle: Option<OwnedFd>,
}

/// The raw values the child uses: descriptors and pointers only, prepared
/// before `clone` (the child may not allocate).
pub(crate) struct ChildJail {
    pub uid: Option<(u32, u32)>,
    pub namespaces: bool,
    pub net: RawFd,
    pub mnt: RawFd,
    /// A detached mount of the bundle, read-only, for `/app`.
    pub bundle: RawFd,
    pub cgroup_procs: [RawFd; 3],
    pub filters: Vec<libc::sock_fprog>,
    /// The sandbox's [`TmpBind`]s (alive as long as the sandbox).
    pub tmp_binds: *const [TmpBind],
}

/// The clone flags for a call in this jail.
pub(crate) fn clone_flags(j: &ChildJail) -> libc::c_int {
    if j.namespaces { libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS } else { 0 }
}

/// Enters the jail, in the child between `clone` and `execve`: system calls
/// only. On failure, returns the step that failed and its errno.
///
/// # Safety
/// Called only in the child of `spawn`, with every pointer of `j` alive.
pub(crate) unsafe fn enter_in_child(j: &ChildJail) -> Result<(), (&'static str, libc::c_int)> {
    macro_rules! check {
        ($step:expr, $call:expr) => {
            if $call < 0 {
                return Err(($step, *libc::__errno_location()));
            }
        };
    }
    unsafe {
        for &fd in &j.cgroup_procs {
            if fd >= 0 {
                check!("joining its cgroup", libc::write(fd, b"0".as_ptr().cast(), 1));
            }
        }
        if j.net >= 0 {
            check!("entering the network namespace", libc::setns(j.net, libc::CLONE_NEWNET));
        }
        if j.mnt >= 0 {
            check!("entering the mount namespace", libc::setns(j.mnt, libc::CLONE_NEWNS));
            // A copy of its own, so what follows is this call's alone.
            check!("copying the mount namespace", libc::unshare(libc::CLONE_NEWNS));
            let none = std::ptr::null::<libc::c_char>();
            let app = c"/app".as_ptr();
            if j.bundle >= 0 {
                let moved = libc::syscall(
                    libc::SYS_move_mount,
                    j.bundle,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    app,
                    MOVE_MOUNT_F_EMPTY_PATH,
                );
                check!("mounting the bundle", moved as libc::c_int);
            }
            check!(
                "mounting /tmp",
                libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c"size=64m,mode=1777".as_ptr().cast(),
                )
            );
            for b in &*j.tmp_binds {
                for d in &b.dirs {
                    libc::mkdir(d.as_ptr(), 0o755);
                }
                let bind = libc::MS_BIND | libc::MS_REC;
                check!(
                    "binding a shared path",
                    libc::mount(b.source.as_ptr(), b.target.as_ptr(), none, bind, std::ptr::null())
                );
            }
            if j.namespaces {
                check!(
                    "mounting /proc",
                    libc::mount(
                        c"proc".as_ptr(),
                        c"/proc".as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    )
                );
            }
        }
        if j.namespaces {
            let name = b"stratus";
            libc::sethostname(name.as_ptr().cast(), name.len());
        }
        if let Some((uid, gid)) = j.uid {
            check!("dropping groups", libc::setgroups(0, std::ptr::null()));
            check!("setting the group", libc::setresgid(gid, gid, gid));
            check!("setting the user", libc::setresuid(uid, uid, uid));
        }
        if j.uid.is_some() || !j.filters.is_empty() {
            check!("setting no_new_privs", libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
        }
        for f in &j.filters {
            check!(
                "installing the seccomp filter",
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, f as *const libc::sock_fprog)
            );
        }
    }
    Ok(())
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a path"))
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Whether new PID, IPC and UTS namespaces can be made here: one child is
/// started in them and waited for.
fn probe_namespaces() -> io::Result<()> {
    std::thread::spawn(|| {
        // SAFETY: a fork-like clone on a thread of our own; the child only
        // calls `_exit`.
        unsafe {
            let flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::SIGCHLD;
            let pid = libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0);
            if pid == 0 {
                libc::_exit(0);
            }
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut status = 0;
            libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL);
            Ok(())
        }
    })
    .join()
    .map_err(|_| io::Error::other("the probe panicked"))?
}

struct Template {
    mnt: OwnedFd,
    net: OwnedFd,
    listener: std::net::TcpListener,
    tmp_binds: Vec<TmpBind>,
}

/// System paths every function sees, read-only, when the host has them.
const SYSTEM_PATHS: &[&str] = &["/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin"];
/// What of `/etc` a program commonly needs (users, names, libraries, TLS,
/// time zones, Python's configuration).
const ETC: &[&str] = &[
    "passwd",
    "group",
    "hosts",
    "hostname",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "timezone",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "alternatives",
    "mime.types",
    "os-release",
    "debian_version",
    "python3",
    "python3.11",
    "python3.12",
    "python3.13",
];
/// The devices every function sees, with their minor numbers (major 1).
const DEVICES: &[(&str, u32)] = &[("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)];

/// `open_tree`'s flag for a detached copy, and `move_mount`'s for a source
/// given as a descriptor (linux/mount.h).
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 1;
const MOUNT_ATTR_NOSUID: u64 = 2;
const MOUNT_ATTR_NODEV: u64 = 4;

/// `struct mount_attr` (linux/mount.h).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached copy of the mount at `path`, read-only, nosuid and nodev,
/// for a child to move into its own namespace (Linux 5.12).
fn detached_read_only(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: a valid C string; the descriptor returned is ours.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) } as libc::c_int;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        // Not a peer of the host's mount: nothing mounted later under the
        // bundles directory shows in a running call.
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: a valid descriptor and attribute struct of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    } as libc::c_int;
    cvt(r)?;
    Ok(fd)
}

/// Copies `src` to `dst`: files with their modes, directories whole,
/// symbolic links as links; anything missing, or named `private` (keys),
/// is left out.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(src) else { return Ok(()) };
    if src.file_name().is_some_and(|n| n == "private") {
        return Ok(());
    }
    if meta.file_type().is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(src)?, dst)
    } else if meta.is_dir() {
        std::fs::create_dir_all(dst)?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        std::fs::set_permissions(dst, meta.permissions())
    } else if meta.is_file() {
        std::fs::copy(src, dst).map(drop)
    } else {
        Ok(())
    }
}

/// Builds the template: a mount namespace whose root is the sandbox's
/// view of the system, and an empty network namespace with a loopback and
/// the API listener. Done on a thread of its own, which alone enters them;
/// the namespaces live on through their descriptors.
fn build_template(config: &SandboxConfig) -> io::Result<Template> {
    let config = config.clone();
    std::thread::Builder::new()
        .name("stratus-sandbox".into())
        .spawn(move || build_template_here(&config))?
        .join()
        .map_err(|_| io::Error::other("building the sandbox panicked"))?
}

fn mount(src: &Path, dst: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
    let src = cstr(src.as_os_str().as_bytes())?;
    let dst_c = cstr(dst.as_os_str().as_bytes())?;
    let fstype = fstype.map(|t| cstr(t.as_bytes())).transpose()?;
    let data = data.map(|d| cstr(d.as_bytes())).transpose()?;
    // SAFETY: valid C strings or null.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            dst_c.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    cvt(r).map_err(|e| io::Error::new(e.kind(), format!("mount {}: {e}", dst.display())))
}

/// Binds host `path` read-only at the same place under `root` (a symlink
/// is copied as a symlink; a missing path is skipped).
fn bind_ro(root: &Path, path: &Path) -> io::Result<()> {
    bind(root, path, false)
}

fn bind(root: &Path, path: &Path, writable: bool) -> io::Result<()> {
    bind_at(root, path, path, writable)
}

/// Binds host `path` at `target` under `root`.
fn bind_at(root: &Path, path: &Path, target: &Path, writable: bool) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    let rel = target.strip_prefix("/").unwrap_or(target);
    let dst = root.join(rel);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        if std::fs::symlink_metadata(&dst).is_err() {
            std::os::unix::fs::symlink(target, &dst)?;
        }
        return Ok(());
    }
    if meta.is_dir() {
        std::fs::create_dir_all(&dst)?;
    } else {
        std::fs::write(&dst, b"")?;
    }
    mount(path, &dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    if writable {
        return mount(
            Path::new("none"),
            &dst,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        );
    }
    let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;
    let flags = if meta.is_dir() || meta.file_type().is_file() { ro | libc::MS_NODEV } else { ro };
    mount(Path::new("none"), &dst, None, flags, None)
}

fn build_template_here(config: &SandboxConfig) -> io::Result<Template> {
    // SAFETY: plain syscalls on this thread.
    unsafe { cvt(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET))? };
    // Nothing mounted here reaches the host.
    mount(Path::new("none"), Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let open_ns = |kind: &str| -> io::Result<OwnedFd> {
        let f = std::fs::File::open(format!("/proc/thread-self/ns/{kind}"))?;
        Ok(OwnedFd::from(f))
    };
    let mnt = open_ns("mnt")?;
    let net = open_ns("net")?;
    let listener = loopback_listener()?;

    // Calls get their bundle through `open_tree`: check it works here.
    std::fs::create_dir_all(&config.bundles_dir)?;
    drop(detached_read_only(&config.bundles_dir).map_err(|e| {
        io::Error::other(format!("bundles are mounted with open_tree and mount_setattr (Linux 5.12 or later): {e}"))
    })?);
    let root = &config.root_dir;
    std::fs::create_dir_all(root)?;
    // Not nodev: the root holds the few device nodes (read-only, and no
    // function may make more).
    mount(Path::new("stratus-root"), root, Some("tmpfs"), libc::MS_NOSUID, Some("mode=0755,size=16m"))?;
    for p in SYSTEM_PATHS {
        bind_ro(root, Path::new(p))?;
    }
    if let Some(p) = &config.pyenvs_dir {
        bind_at(root, p, Path::new(PYENVS_DIR), false)?;
    }
    // Paths under /tmp would be hidden by each call's own /tmp: they wait
    // under /.shared and are bound per call.
    let mut tmp_binds = Vec::new();
    for (i, (p, writable)) in config.extra_paths.iter().enumerate() {
        match p.strip_prefix("/tmp") {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                let hidden = root.join(".shared").join(i.to_string());
                std::fs::create_dir_all(&hidden)?;
                mount(p, &hidden, None, libc::MS_BIND | libc::MS_REC, None)?;
                let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
                let flags = if *writable { flags } else { flags | libc::MS_RDONLY };
                mount(Path::new("none"), &hidden, None, flags, None)?;
                let mut dirs = Vec::new();
                let mut at = PathBuf::from("/tmp");
                for part in rel.iter() {
                    at.push(part);
                    dirs.push(cstr(at.as_os_str().as_bytes())?);
                }
                tmp_binds.push(TmpBind {
                    source: cstr(Path::new("/.shared").join(i.to_string()).as_os_str().as_bytes())?,
                    dirs,
                    target: cstr(p.as_os_str().as_bytes())?,
                });
            }
            _ => bind(root, p, *writable)?,
        }
    }
    // `/etc` and `/dev` are files of the root itself, not mounts: every
    // mount here is copied into each call's namespace and torn down after
    // it, so the template keeps as few as it can. `/etc` is a copy taken
    // when the node starts.
    std::fs::create_dir_all(root.join("etc"))?;
    for name in ETC {
        copy_tree(&Path::new("/etc").join(name), &root.join("etc").join(name))?;
    }
    std::fs::create_dir_all(root.join("dev"))?;
    for (d, minor) in DEVICES {
        let dst = cstr(root.join("dev").join(d).as_os_str().as_bytes())?;
        // SAFETY: a valid C string; as root, in a tmpfs of our own.
        cvt(unsafe { libc::mknod(dst.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, *minor)) })?;
        // The umask may have taken bits off.
        cvt(unsafe { libc::chmod(dst.as_ptr(), 0o666) })?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, root.join("dev").join(link))?;
    }
    for d in ["tmp", "proc", "app", ".old", ".shared"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let root_c = cstr(root.as_os_str().as_bytes())?;
    let old_c = cstr(root.join(".old").as_os_str().as_bytes())?;
    // SAFETY: valid C strings; this thread alone is in this namespace.
    unsafe {
        cvt(libc::syscall(libc::SYS_pivot_root, root_c.as_ptr(), old_c.as_ptr()) as libc::c_int)?;
        cvt(libc::chdir(c"/".as_ptr()))?;
        cvt(libc::umount2(c"/.old".as_ptr(), libc::MNT_DETACH))?;
        cvt(libc::rmdir(c"/.old".as_ptr()))?;
    }
    mount(Path::new("none"), Path::new("/"), None, libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID, None)?;
    Ok(Template { mnt, net, listener, tmp_binds })
}

/// Brings the loopback of this thread's (new) network namespace up and
/// listens on it.
fn loopback_listener() -> io::Result<std::net::TcpListener> {
    // SAFETY: an ioctl on a socket we own with a zeroed, then filled, ifreq.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let s = OwnedFd::from_raw_fd(s);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The seccomp filters: what a function never needs is refused (EPERM),
/// and `clone3`, whose flags a filter cannot read, answers ENOSYS so the C
/// library falls back to `clone`, whose flags it can.
fn seccomp_filters() -> io::Result<Vec<Vec<libc::sock_filter>>> {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
        TargetArch,
    };
    let arch: TargetArch = std::env::consts::ARCH.try_into().map_err(|e| io::Error::other(format!("{e:?}")))?;
    let denied = [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_setns,
        libc::SYS_unshare,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_syslog,
        libc::SYS_quotactl,
        libc::SYS_fanotify_init,
        libc::SYS_vhangup,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_iopl,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_ioperm,
    ];
    let bad = |e: seccompiler::BackendError| io::Error::other(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = denied.iter().map(|&n| (n, vec![])).collect();
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
    ];
    let clone_rules = namespaces
        .iter()
        .map(|&flag| {
            let flag = flag as u64;
            SeccompRule::new(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(flag), flag).map_err(bad)?,
            ])
            .map_err(bad)
        })
        .collect::<io::Result<Vec<_>>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let deny = SeccompFilter::new(rules, SeccompAction::Allow, eperm, arch).map_err(bad)?;
    let prog: BpfProgram = deny.try_into().map_err(bad)?;
    // One program (each one installed costs the child a copy and a
    // compile, and every system call a run): `clone3` answers ENOSYS
    // first, then seccompiler's program, whose jumps are relative.
    let mut out = vec![
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_clone3 as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ];
    // seccompiler's instructions are the kernel's `sock_filter`.
    out.extend(prog.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }));
    Ok(vec![out])
}

// ---- cgroups ----------------------------------------------------------------

/// Which cgroup interface the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// Cgroups of this server, one per concurrent call, created as needed and
/// reused; removed when the server stops.
struct CgroupPool {
    version: Version,
    /// The server's own directory under each controller (one for v2).
    bases: Vec<PathBuf>,
    free: Mutex<Vec<Cgroup>>,
    next: std::sync::atomic::AtomicUsize,
}

struct Cgroup {
    n: usize,
    procs: Vec<std::fs::File>,
    /// The limits last written, so an unchanged limit costs nothing.
    limits: Option<Jail>,
    /// OOM kills seen in it so far.
    oom_kills: u64,
}

/// The v1 controllers the sandbox uses.
const V1: [&str; 3] = ["memory", "pids", "cpu"];
const ROOT: &str = "/sys/fs/cgroup";

impl CgroupPool {
    fn open() -> io::Result<CgroupPool> {
        let me = format!("stratus-{}", std::process::id());
        let v2_controllers = std::fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
        let (version, parents): (Version, Vec<PathBuf>) =
            if ["memory", "pids", "cpu"].iter().all(|c| v2_controllers.split_whitespace().any(|x| x == *c)) {
                (Version::V2, vec![PathBuf::from(ROOT)])
            } else if V1.iter().all(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists()) {
                (Version::V1, V1.iter().map(|c| Path::new(ROOT).join(c)).collect())
            } else {
                return Err(io::Error::other("neither cgroup v2 with memory, pids and cpu nor those v1 controllers"));
            };
        let mut bases = Vec::new();
        for parent in &parents {
            remove_stale(parent);
            let base = parent.join(&me);
            std::fs::create_dir_all(&base)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", base.display())))?;
            if version == Version::V2 {
                std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu").ok();
                std::fs::write(base.join("cgroup.subtree_control"), "+memory +pids +cpu")?;
            }
            bases.push(base);
        }
        let pool = CgroupPool { version, bases, free: Mutex::new(Vec::new()), next: Default::default() };
        // One made now, so a host that lets us create but not use them says so at start.
        let probe = pool.create()?;
        pool.free.lock().unwrap().push(probe);
        Ok(pool)
    }

    fn create(&self) -> io::Result<Cgroup> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut procs = Vec::new();
        for base in &self.bases {
            let dir = base.join(n.to_string());
            std::fs::create_dir_all(&dir)?;
            procs.push(std::fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?);
        }
        Ok(Cgroup { n, procs, limits: None, oom_kills: 0 })
    }

    fn dir(&self, controller: usize, n: usize) -> PathBuf {
        self.bases[controller].join(n.to_string())
    }

    fn lease(pool: &Arc<CgroupPool>, jail: &Jail) -> io::Result<Lease> {
        let taken = pool.free.lock().unwrap().pop();
        let mut cg = match taken {
            Some(cg) => cg,
            None => pool.create()?,
        };
        if cg.limits.as_ref() != Some(jail) {
            if let Err(e) = pool.write_limits(cg.n, jail, cg.limits.as_ref()) {
                pool.free.lock().unwrap().push(cg);
                return Err(e);
            }
            cg.limits = Some(*jail);
        }
        Ok(Lease { pool: pool.clone(), cg: Some(cg), counted: false })
    }

    fn write_limits(&self, n: usize, j: &Jail, old: Option<&Jail>) -> io::Result<()> {
        let memory = (j.memory_mb << 20).to_string();
        let pids = j.max_procs.max(1).to_string();
        let period = 100_000u64;
        let quota = (j.cpu_millis > 0).then(|| (j.cpu_millis as u64 * period / 1000).max(1000));
        let write = |dir: PathBuf, file: &str, value: &str| {
            std::fs::write(dir.join(file), value)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot write {file} of {}: {e}", dir.display())))
        };
        match self.version {
            Version::V2 => {
                let d = self.dir(0, n);
                write(d.clone(), "memory.max", &memory)?;
                // No swap beyond the limit, where the host has swap accounting.
                std::fs::write(d.join("memory.swap.max"), "0").ok();
                write(d.clone(), "pids.max", &pids)?;
                let cpu = quota.map_or(format!("max {period}"), |q| format!("{q} {period}"));
                write(d, "cpu.max", &cpu)?;
            }
            Version::V1 => {
                // Memory and swap together never below memory alone: when
                // the limit rises, that one moves first.
                let memsw = self.dir(0, n).join("memory.memsw.limit_in_bytes");
                let rising = old.is_some_and(|o| j.memory_mb > o.memory_mb);
                if rising {
                    std::fs::write(&memsw, &memory).ok();
                }
                write(self.dir(0, n), "memory.limit_in_bytes", &memory)?;
                if !rising {
                    std::fs::write(&memsw, &memory).ok();
                }
                write(self.dir(1, n), "pids.max", &pids)?;
                write(self.dir(2, n), "cpu.cfs_period_us", &period.to_string())?;
                write(self.dir(2, n), "cpu.cfs_quota_us", &quota.map_or("-1".to_string(), |q| q.to_string()))?;
            }
        }
        Ok(())
    }

    /// OOM kills in cgroup `n` since it was made.
    fn oom_kills(&self, n: usize) -> u64 {
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        let text = std::fs::read_to_string(self.dir(0, n).join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for CgroupPool {
    fn drop(&mut self) {
        for cg in self.free.lock().unwrap().drain(..) {
            for c in 0..self.bases.len() {
                let _ = std::fs::remove_dir(self.dir(c, cg.n));
            }
        }
        for base in &self.bases {
            let _ = std::fs::remove_dir(base);
        }
    }
}

/// Removes the (empty) cgroups servers that are gone left under `parent`.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("stratus-").and_then(|p| p.parse::<u32>().ok()) else { continue };
        if Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(e.path()) {
            for c in children.flatten() {
                if c.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
}

/// A cgroup lent to one call; back to the pool when dropped (once the
/// call's processes are gone).
pub(crate) struct Lease {
    pool: Arc<CgroupPool>,
    cg: Option<Cgroup>,
    /// The OOM count was read since the lease began.
    counted: bool,
}

impl Lease {
    /// The `cgroup.procs` the child joins: on v1 the `cpu` controller only
    /// when the function has a CPU limit (each join costs the child tens of
    /// microseconds).
    fn procs(&self) -> [RawFd; 3] {
        let mut out = [-1; 3];
        if let Some(cg) = &self.cg {
            let cpu_limited = cg.limits.is_some_and(|j| j.cpu_millis > 0);
            for (i, f) in cg.procs.iter().enumerate().take(3) {
                let unlimited_cpu = self.pool.version == Version::V1 && i == 2 && !cpu_limited;
                if !unlimited_cpu {
                    out[i] = f.as_raw_fd();
                }
            }
        }
        out
    }

    /// Whether the kernel killed a process of this call for memory.
    pub(crate) fn oom_killed(&mut self) -> bool {
        let Some(cg) = self.cg.as_mut() else { return false };
        let now = self.pool.oom_kills(cg.n);
        let killed = now > cg.oom_kills;
        cg.oom_kills = now;
        self.counted = true;
        killed
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(mut cg) = self.cg.take() {
            // Counted (once per call), so the next call sees only its own.
            if !self.counted {
                cg.oom_kills = self.pool.oom_kills(cg.n);
            }
            self.pool.free.lock().unwrap().push(cg);
        }
    }
}
