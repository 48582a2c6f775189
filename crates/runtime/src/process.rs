//! Process functions: a command run in the function's bundle directory.
//!
//! Each run gets its own process group (so a timeout kills every process the
//! function started), an address-space rlimit for its memory limit, a parent
//! death signal (a killed worker takes its functions with it), and only the
//! environment the platform and the function declare.

use crate::sandbox::{Jail, Sandbox};
use crate::spawn::{Spec, spawn_with_input};
use crate::{OutputCaps, RunOutcome, TRUNCATED_MARKER};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use stratus_core::{Failure, FailureKind, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How long a function's pipes may stay open after its process is gone and
/// its group killed (a process that left the group may hold them).
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The PATH a process function gets unless it declares its own.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Splits a command line into words. Single and double quotes group words;
/// a command that needs a shell (pipes, redirections, variables, globs...)
/// returns `None` and is run with `/bin/sh -c`.
pub fn split_command(cmd: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in cmd.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, '|' | '&' | ';' | '<' | '>' | '$' | '`' | '*' | '?' | '(' | ')' | '\\' | '~' | '#' | '[' | '{') => {
                return None;
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        words.push(cur);
    }
    (!words.is_empty()).then_some(words)
}

/// Where a process function runs: the node's sandbox, and whether the
/// function was deployed with outbound network.
pub type Place<'a> = Option<(&'a Arc<Sandbox>, bool)>;

/// The spawn spec for `cmd` in `dir` with exactly `env` (plus a default
/// PATH when `env` has none, and `LANG`), in the sandbox of `place`.
pub fn command(dir: &Path, cmd: &str, env: &[(String, String)], limits: Limits, place: Place<'_>) -> Spec {
    let mut argv = split_command(cmd).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), cmd.into()]);
    let program =
        if argv[0].contains('/') && !argv[0].starts_with('/') { dir.join(&argv[0]) } else { argv[0].clone().into() };
    let mut full = Vec::with_capacity(env.len() + 2);
    if !env.iter().any(|(k, _)| k == "PATH") {
        full.push(("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    full.push(("LANG".to_string(), "C.UTF-8".to_string()));
    full.extend(env.iter().cloned());
    Spec {
        program,
        args: argv.split_off(1),
        dir: dir.to_path_buf(),
        env: full,
        memory_bytes: limits.memory_mb.saturating_mul(1 << 20),
        jail: place.map(|(sandbox, network)| {
            let jail = Jail {
                memory_mb: limits.memory_mb,
                max_procs: limits.max_procs,
                cpu_millis: limits.cpu_millis,
                network,
            };
            (sandbox.clone(), jail)
        }),
    }
}

/// Kills the whole process group led by `pid`.
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: plain syscall; the group was created for this function.
        unsafe {
            libc::killpg(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Reads into `buf` up to `cap` bytes; returns whether there was more.
/// Reads straight into the growing buffer (nothing zeroed, nothing copied).
async fn read_capped<R: AsyncRead + Unpin>(mut r: R, cap: usize, buf: &mut Vec<u8>) -> bool {
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(buf.len().clamp(4 << 10, 1 << 20));
        }
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => return false,
            Ok(_) if buf.len() > cap => {
                buf.truncate(cap);
                return true;
            }
            Ok(_) => {}
        }
    }
}

/// Logs: keeps the first `cap` bytes in `buf`, drains (and drops) the rest
/// so the function never blocks on a full stderr pipe; returns whether any
/// were dropped.
async fn read_logs<R: AsyncRead + Unpin>(mut r: R, cap: usize, buf: &mut Vec<u8>) -> bool {
    let more = read_capped(&mut r, cap, buf).await;
    if more {
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    }
    more
}

/// A call one of whose processes the kernel killed at its memory limit.
pub(crate) fn oom_failure(limits: Limits) -> Failure {
    Failure::new(FailureKind::OutOfMemory, format!("out of memory: the limit is {} MiB", limits.memory_mb))
}

pub(crate) fn exit_failure(status: std::process::ExitStatus) -> Failure {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        let mut f = Failure::new(FailureKind::Exit, format!("exited with status {code}"));
        f.exit_code = Some(code);
        f
    } else {
        let sig = status.signal().unwrap_or(0);
        Failure::new(FailureKind::Trap, format!("killed by signal {sig}"))
    }
}

/// Runs `cmd` once on `input`.
#[allow(clippy::too_many_arguments)] // each is one part of the call; a struct would only rename them
pub async fn run(
    dir: &Path,
    cmd: &str,
    env: &[(String, String)],
    input: Vec<u8>,
    limits: Limits,
    caps: OutputCaps,
    cancel: &CancellationToken,
    place: Place<'_>,
) -> RunOutcome {
    let (mut child, written) = match spawn_with_input(&command(dir, cmd, env, limits, place), &input) {
        Ok(c) => c,
        Err(e) => {
            return RunOutcome {
                result: Err(Failure::new(FailureKind::Internal, format!("cannot start '{cmd}': {e}"))),
                logs: Vec::new(),
            };
        }
    };
    let pid = Some(child.id());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    // What did not fit in the pipe is written on the side: a function that
    // does not read its input must not block us.
    let writer = child.stdin.take().map(|mut stdin| {
        tokio::spawn(async move {
            let _ = stdin.write_all(&input[written..]).await;
        })
    });
    let (mut out, mut logs) = (Vec::new(), Vec::new());
    let (mut over, mut logs_over) = (false, false);
    let mut status = None;
    let mut stopped = None;
    {
        let reading_out = read_capped(stdout, caps.max_output, &mut out);
        let reading_logs = read_logs(stderr, caps.max_logs, &mut logs);
        let deadline = tokio::time::sleep(Duration::from_millis(limits.timeout_ms));
        // Armed once the process is gone: how long its pipes may stay open.
        let grace = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
        tokio::pin!(reading_out, reading_logs, deadline, grace);
        let (mut out_done, mut logs_done) = (false, false);
        while status.is_none() || !out_done || !logs_done {
            tokio::select! {
                biased;
                s = child.wait(), if status.is_none() => {
                    // The function ends when its process does: whatever it
                    // left running goes with it, and so do the pipes those
                    // held open.
                    kill_group(pid);
                    status = Some(s);
                    grace.as_mut().reset(tokio::time::Instant::now() + PIPE_GRACE);
                }
                o = &mut reading_out, if !out_done => {
                    out_done = true;
                    over = o;
                    if over {
                        kill_group(pid);
                    }
                }
                l = &mut reading_logs, if !logs_done => {
                    logs_done = true;
                    logs_over = l;
                }
                _ = &mut deadline, if status.is_none() && stopped.is_none() => {
                    stopped = Some(Failure::new(FailureKind::Timeout, format!("timed out after {} ms", limits.timeout_ms)));
                    kill_group(pid);
                }
                _ = cancel.cancelled(), if status.is_none() && stopped.is_none() => {
                    stopped = Some(Failure::new(FailureKind::Cancelled, "cancelled"));
                    kill_group(pid);
                }
                // Only a process that left the group can hold them this long.
                _ = &mut grace, if status.is_some() => break,
            }
        }
    }
    if let Some(w) = writer {
        w.abort();
    }
    if logs_over {
        logs.extend_from_slice(TRUNCATED_MARKER);
    }
    let result = match (stopped, status) {
        (Some(failure), _) => Err(failure),
        _ if over => {
            Err(Failure::new(FailureKind::OutputLimit, format!("output limit of {} bytes exceeded", caps.max_output)))
        }
        // The tree went over its memory limit: the call failed, even when
        // its first process carried on after losing a child to it.
        (None, Some(Ok(_))) if child.oom_killed() => Err(oom_failure(limits)),
        (None, Some(Ok(s))) if s.success() => Ok(out),
        (None, Some(Ok(s))) => Err(exit_failure(s)),
        (None, Some(Err(e))) => Err(Failure::new(FailureKind::Internal, format!("waiting for the process: {e}"))),
        (None, None) => unreachable!("the loop ends once the process is gone"),
    };
    RunOutcome { result, logs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_simple_commands_and_defers_shell_syntax() {
        assert_eq!(split_command("python3 main.py"), Some(vec!["python3".into(), "main.py".into()]));
        assert_eq!(split_command("  sh 'a b'  \"c\" "), Some(vec!["sh".into(), "a b".into(), "c".into()]));
        assert_eq!(split_command("cat | wc"), None);
        assert_eq!(split_command("echo $HOME"), None);
        assert_eq!(split_command("'unterminated"), None);
        assert_eq!(split_command("   "), None);
    }

    fn caps() -> OutputCaps {
        OutputCaps { max_output: 1 << 20, max_logs: 1 << 10 }
    }

    #[tokio::test]
    async fn runs_with_stdin_stdout_stderr_and_env() {
        let d = tempfile::tempdir().unwrap();
        let env = vec![("GREETING".to_string(), "hi".to_string())];
        let o = run(
            d.path(),
            "sh -c 'read x; echo \"$GREETING $x\"; echo log >&2'",
            &env,
            b"bob\n".to_vec(),
            Limits::default(),
            caps(),
            &CancellationToken::new(),
            None,
        )
        .await;
        assert_eq!(o.result, Ok(b"hi bob\n".to_vec()));
        assert_eq!(o.logs, b"log\n");
    }

    #[tokio::test]
    async fn only_declared_environment_is_visible() {
        let d = tempfile::tempdir().unwrap();
        // SAFETY: test-only; no other thread reads this variable.
        unsafe { std::env::set_var("STRATUS_TEST_SECRET", "leak") };
        let o = run(d.path(), "env", &[], vec![], Limits::default(), caps(), &CancellationToken::new(), None).await;
        let out = String::from_utf8(o.result.unwrap()).unwrap();
        assert!(!out.contains("STRATUS_TEST_SECRET"), "{out}");
        assert!(out.contains("PATH="), "{out}");
    }

    #[tokio::test]
    async fn exit_status_timeout_and_output_limit() {
        let d = tempfile::tempdir().unwrap();
        let o = run(
            d.path(),
            "sh -c 'echo bad >&2; exit 3'",
            &[],
            vec![],
            Limits::default(),
            caps(),
            &CancellationToken::new(),
            None,
        )
        .await;
        let f = o.result.unwrap_err();
        assert_eq!((f.kind, f.exit_code), (FailureKind::Exit, Some(3)));
        assert_eq!(o.logs, b"bad\n");

        let limits = Limits { timeout_ms: 200, memory_mb: 256, ..Limits::default() };
        let o =
            run(d.path(), "sh -c 'sleep 30 & sleep 30'", &[], vec![], limits, caps(), &CancellationToken::new(), None)
                .await;
        assert_eq!(o.result.unwrap_err().kind, FailureKind::Timeout);

        let o = run(d.path(), "yes", &[], vec![], Limits::default(), caps(), &CancellationToken::new(), None).await;
        assert_eq!(o.result.unwrap_err().kind, FailureKind::OutputLimit);

        let o = run(
            d.path(),
            "sh -c 'head -c 5000 /dev/zero >&2'",
            &[],
            vec![],
            Limits::default(),
            caps(),
            &CancellationToken::new(),
            None,
        )
        .await;
        assert!(o.result.is_ok());
        assert!(o.logs.ends_with(TRUNCATED_MARKER));
        assert_eq!(o.logs.len(), 1024 + TRUNCATED_MARKER.len());
    }

    /// A background child that keeps stdout open does not hold the
    /// invocation: it ends when the function's process does, and the child
    /// goes with it (also one that left the group with `setsid`).
    #[tokio::test]
    async fn ends_when_the_process_exits_even_if_a_child_holds_stdout() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits { timeout_ms: 60_000, memory_mb: 256, ..Limits::default() };
        for cmd in ["sh -c 'sleep 120 & echo done'", "sh -c 'setsid sleep 120 & echo done'"] {
            let o = run(d.path(), cmd, &[], vec![], limits, caps(), &CancellationToken::new(), None).await;
            assert_eq!(o.result, Ok(b"done\n".to_vec()), "{cmd}");
        }
    }

    #[tokio::test]
    async fn logs_written_before_a_timeout_or_cancel_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let limits = Limits { timeout_ms: 300, memory_mb: 256, ..Limits::default() };
        let cmd = "sh -c 'echo early >&2; exec sleep 30'";
        let o = run(d.path(), cmd, &[], vec![], limits, caps(), &CancellationToken::new(), None).await;
        assert_eq!(o.result.unwrap_err().kind, FailureKind::Timeout);
        assert_eq!(o.logs, b"early\n");
    }

    #[tokio::test]
    async fn cancel_kills_the_group() {
        let d = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move { c2.cancel() });
        let o = run(d.path(), "sleep 30", &[], vec![], Limits::default(), caps(), &cancel, None).await;
        assert_eq!(o.result.unwrap_err().kind, FailureKind::Cancelled);
    }

    #[tokio::test]
    async fn missing_program_is_an_internal_failure() {
        let d = tempfile::tempdir().unwrap();
        let o = run(
            d.path(),
            "no-such-program-xyz",
            &[],
            vec![],
            Limits::default(),
            caps(),
            &CancellationToken::new(),
            None,
        )
        .await;
        let f = o.result.unwrap_err();
        assert_eq!(f.kind, FailureKind::Internal);
        assert!(f.message.contains("no-such-program-xyz"), "{}", f.message);
    }
}
