//! Warm process functions: one long-lived process per worker slot serves
//! many invocations, so an interpreter starts once, not per call.
//!
//! The framing (see `docs/process-functions.md`), one request at a time:
//!
//! ```text
//! stratus -> function (stdin):  STRATUS/1 <invocation-id> <n>[ <token>]\n<n bytes of input>
//! function -> stratus (stdout): STRATUS/1 ok <n>\n<n bytes of output>
//!                           or: STRATUS/1 error <n>\n<n bytes of error message>
//! ```
//!
//! The fourth field, the attempt's `STRATUS_TOKEN` (`-` when it has none),
//! is sent only to functions deployed with `token` (a helper written for
//! three fields would take it for part of the length).
//!
//! stderr is captured as the logs of the invocation in progress. A process
//! that exits, breaks the framing or overruns the timeout fails that
//! invocation and is replaced for the next one.

use crate::process::{Place, command, exit_failure, kill_group, oom_failure};
use crate::spawn::{Child, spawn};
use crate::{OutputCaps, RunOutcome, TRUNCATED_MARKER};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use stratus_core::{Failure, FailureKind, Limits};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use tokio_util::sync::CancellationToken;

pub const PROTOCOL: &str = "STRATUS/1";
const CANCELLED: &str = "\0cancelled";

/// The longest response header a warm process may send; anything longer
/// breaks the framing (it is never buffered whole).
const MAX_HEADER: u64 = 256;

struct LogBuf {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl LogBuf {
    fn push(&mut self, data: &[u8]) {
        let room = self.cap.saturating_sub(self.buf.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn take(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        if std::mem::take(&mut self.truncated) {
            out.extend_from_slice(TRUNCATED_MARKER);
        }
        out
    }
}

/// A warm process. Its stderr is read only while an invocation is in
/// progress and belongs to that invocation: what the process writes
/// between invocations is dropped when the next one starts, never added to
/// another caller's logs.
pub struct WarmProcess {
    child: Child,
    stdin: pipe::Sender,
    stdout: BufReader<pipe::Receiver>,
    stderr: pipe::Receiver,
    logs: LogBuf,
}

impl WarmProcess {
    pub fn spawn(
        dir: &Path,
        cmd: &str,
        env: &[(String, String)],
        limits: Limits,
        caps: OutputCaps,
        place: Place<'_>,
    ) -> std::io::Result<Self> {
        let mut env = env.to_vec();
        env.push(("STRATUS_WARM".into(), "1".into()));
        let mut child = spawn(&command(dir, cmd, &env, limits, place))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        let logs = LogBuf { buf: Vec::new(), cap: caps.max_logs, truncated: false };
        Ok(WarmProcess { child, stdin, stdout, stderr, logs })
    }

    /// Reads what stderr holds right now, without waiting; `keep` says
    /// whether it goes to the logs or is dropped. Read from the descriptor
    /// itself: the reactor may not have seen the bytes yet.
    fn drain_stderr(&mut self, keep: bool) {
        let fd = self.stderr.as_raw_fd();
        let mut chunk = [0u8; 16 << 10];
        loop {
            // SAFETY: reads into a live buffer of the given length from a
            // descriptor this process owns (non-blocking, as tokio set it).
            let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n <= 0 {
                return;
            }
            if keep {
                self.logs.push(&chunk[..n as usize]);
            }
        }
    }

    /// The logs of the invocation that just ended: what is in the stderr
    /// pipe now is part of them (written before the answer).
    fn take_logs(&mut self) -> Vec<u8> {
        self.drain_stderr(true);
        self.logs.take()
    }

    /// Serves one invocation; `token`, when given, goes in the header.
    /// Returns the outcome and whether the process can serve another.
    pub async fn invoke(
        &mut self,
        id: &str,
        token: Option<&str>,
        input: &[u8],
        limits: Limits,
        caps: OutputCaps,
        cancel: &CancellationToken,
    ) -> (RunOutcome, bool) {
        // Not this invocation's: written while none was in progress.
        self.drain_stderr(false);
        self.logs.take();
        let WarmProcess { stdin, stdout, stderr, logs, .. } = self;
        let exchange = async {
            let header = match token {
                Some(t) => format!("{PROTOCOL} {id} {} {t}\n", input.len()),
                None => format!("{PROTOCOL} {id} {}\n", input.len()),
            };
            stdin.write_all(header.as_bytes()).await?;
            stdin.write_all(input).await?;
            stdin.flush().await?;
            let mut line = Vec::new();
            let n = (&mut *stdout).take(MAX_HEADER).read_until(b'\n', &mut line).await?;
            if n == 0 {
                return Ok(Err(None));
            }
            if !line.ends_with(b"\n") {
                if (n as u64) < MAX_HEADER {
                    // The process ended in the middle of a header.
                    return Ok(Err(None));
                }
                return Ok(Err(Some(format!("response header longer than {MAX_HEADER} bytes"))));
            }
            let line = String::from_utf8_lossy(&line);
            let parts: Vec<&str> = line.trim_end().split(' ').collect();
            let (ok, len) = match parts.as_slice() {
                [p, status @ ("ok" | "error"), n] if *p == PROTOCOL => match n.parse::<usize>() {
                    Ok(n) => (*status == "ok", n),
                    Err(_) => return Ok(Err(Some(format!("bad response length in {line:?}")))),
                },
                _ => {
                    return Ok(Err(Some(format!(
                        "expected '{PROTOCOL} ok|error <length>', got {:?}",
                        truncate(&line)
                    ))));
                }
            };
            if len > caps.max_output {
                return Ok(Ok((
                    Err(Failure::new(
                        FailureKind::OutputLimit,
                        format!("output limit of {} bytes exceeded", caps.max_output),
                    )),
                    false,
                )));
            }
            let mut body = vec![0u8; len];
            stdout.read_exact(&mut body).await?;
            let result = if ok {
                Ok(body)
            } else {
                Err(Failure::new(FailureKind::Exit, String::from_utf8_lossy(&body).into_owned()))
            };
            Ok::<_, std::io::Error>(Ok((result, true)))
        };
        // stderr is collected while the exchange goes on, so a chatty
        // function never blocks on a full pipe.
        let collect = async {
            let mut chunk = vec![0u8; 16 << 10];
            loop {
                match stderr.read(&mut chunk).await {
                    Ok(0) | Err(_) => std::future::pending::<()>().await,
                    Ok(n) => logs.push(&chunk[..n]),
                }
            }
        };
        let timed = tokio::select! {
            r = tokio::time::timeout(Duration::from_millis(limits.timeout_ms), exchange) => r,
            _ = cancel.cancelled() => Ok(Ok(Err(Some(CANCELLED.to_string())))),
            _ = collect => unreachable!("collecting stderr never ends"),
        };
        match timed {
            Ok(Ok(Ok((result, alive)))) => {
                if !alive {
                    self.kill().await;
                }
                (RunOutcome { result, logs: self.take_logs() }, alive)
            }
            Ok(Ok(Err(Some(msg)))) if msg == CANCELLED => {
                self.kill().await;
                (
                    RunOutcome {
                        result: Err(Failure::new(FailureKind::Cancelled, "cancelled")),
                        logs: self.take_logs(),
                    },
                    false,
                )
            }
            Ok(Ok(Err(Some(msg)))) => {
                self.kill().await;
                (
                    RunOutcome {
                        result: Err(Failure::new(FailureKind::Internal, format!("warm protocol error: {msg}"))),
                        logs: self.take_logs(),
                    },
                    false,
                )
            }
            Ok(Ok(Err(None))) | Ok(Err(_)) => {
                // The process went away: report how it ended.
                let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                self.kill().await;
                let mut failure = match status {
                    Ok(Ok(_)) if self.child.oom_killed() => oom_failure(limits),
                    Ok(Ok(s)) => exit_failure(s),
                    _ => Failure::new(FailureKind::Trap, "the warm process stopped answering"),
                };
                failure.message = format!("warm process ended before answering: {}", failure.message);
                (RunOutcome { result: Err(failure), logs: self.take_logs() }, false)
            }
            Err(_) => {
                self.kill().await;
                (
                    RunOutcome {
                        result: Err(Failure::new(
                            FailureKind::Timeout,
                            format!("timed out after {} ms", limits.timeout_ms),
                        )),
                        logs: self.take_logs(),
                    },
                    false,
                )
            }
        }
    }

    pub async fn kill(&mut self) {
        kill_group(Some(self.child.id()));
        let _ = self.child.wait().await;
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

/// One invocation for [`WarmPool::run`].
pub struct WarmRequest<'a> {
    /// Which function version, with which environment, the process serves.
    pub key: &'a str,
    /// The prefix of the keys of the same function: when a process for a
    /// new key starts, idle ones of the family under other keys (an older
    /// version, older values of its variables) are stopped.
    pub family: &'a str,
    pub dir: &'a Path,
    pub cmd: &'a str,
    pub env: &'a [(String, String)],
    pub id: &'a str,
    /// The attempt's token, for a function that asked for it in the header.
    pub token: Option<&'a str>,
    pub input: &'a [u8],
    pub limits: Limits,
    pub caps: OutputCaps,
    pub cancel: &'a CancellationToken,
    pub place: Place<'a>,
}

/// Idle warm processes by key (function version). A slot takes one out, uses
/// it, and puts it back; at most `max_idle` are kept per key.
pub struct WarmPool {
    idle: Mutex<HashMap<String, Vec<WarmProcess>>>,
    max_idle: usize,
}

impl WarmPool {
    pub fn new(max_idle: usize) -> Self {
        WarmPool { idle: Mutex::new(HashMap::new()), max_idle: max_idle.max(1) }
    }

    pub async fn run(&self, r: WarmRequest<'_>) -> RunOutcome {
        let WarmRequest { key, family, dir, cmd, env, id, token, input, limits, caps, cancel, place } = r;
        let taken = self.idle.lock().unwrap().get_mut(key).and_then(Vec::pop);
        let mut proc = match taken {
            Some(p) => p,
            None => {
                self.retire_family(family, key);
                match WarmProcess::spawn(dir, cmd, env, limits, caps, place) {
                    Ok(p) => p,
                    Err(e) => {
                        return RunOutcome {
                            result: Err(Failure::new(FailureKind::Internal, format!("cannot start '{cmd}': {e}"))),
                            logs: Vec::new(),
                        };
                    }
                }
            }
        };
        let (outcome, alive) = proc.invoke(id, token, input, limits, caps, cancel).await;
        if alive {
            let mut idle = self.idle.lock().unwrap();
            let list = idle.entry(key.to_string()).or_default();
            if list.len() < self.max_idle {
                list.push(proc);
                return outcome;
            }
        }
        drop(proc);
        outcome
    }

    /// Stops the idle processes of `family` kept under another key than
    /// `key` (outside the lock: dropping one kills and reaps it).
    fn retire_family(&self, family: &str, key: &str) {
        let retired: Vec<Vec<WarmProcess>> = {
            let mut idle = self.idle.lock().unwrap();
            let old: Vec<String> =
                idle.keys().filter(|k| k.starts_with(family) && k.as_str() != key).cloned().collect();
            old.iter().filter_map(|k| idle.remove(k)).collect()
        };
        drop(retired);
    }

    /// Stops the idle processes of every key not in `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.idle.lock().unwrap().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO_SERVER: &str = r#"
import sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
count = 0
while True:
    line = inp.readline()
    if not line:
        break
    _, inv, n = line.split()
    data = inp.read(int(n))
    count += 1
    if data == b"die":
        sys.exit(7)
    if data == b"hang":
        import time; time.sleep(60)
    sys.stderr.write("log %d\n" % count); sys.stderr.flush()
    body = b"%d:" % count + data
    out.write(b"STRATUS/1 ok %d\n" % len(body) + body)
    out.flush()
"#;

    /// What a warm process writes to stderr after its answer, before the
    /// next request, is nobody's logs; a header without an end is refused
    /// once it passes the cap, never buffered whole.
    #[tokio::test]
    async fn stderr_between_invocations_is_dropped_and_headers_are_capped() {
        const SERVER: &str = r#"
import os, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    line = inp.readline()
    if not line:
        break
    _, inv, n = line.split()
    data = inp.read(int(n))
    if data == b"huge":
        out.write(b"STRATUS/1 ok " + b"1" * (1 << 20)); out.flush()
        continue
    sys.stderr.write("during %s\n" % data.decode()); sys.stderr.flush()
    out.write(b"STRATUS/1 ok %d\n" % len(data) + data); out.flush()
    sys.stderr.write("after %s\n" % data.decode()); sys.stderr.flush()
    open("after-" + data.decode(), "w").close()
"#;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("srv.py"), SERVER).unwrap();
        let limits = Limits { timeout_ms: 20_000, memory_mb: 512, ..Limits::default() };
        let caps = OutputCaps::default();
        let cancel = CancellationToken::new();
        let mut p = WarmProcess::spawn(d.path(), "python3 srv.py", &[], limits, caps, None).unwrap();
        let (first, alive) = p.invoke("1", None, b"secret", limits, caps, &cancel).await;
        assert!(alive);
        assert_eq!(first.result, Ok(b"secret".to_vec()));
        assert!(first.logs.starts_with(b"during secret\n"), "{:?}", String::from_utf8_lossy(&first.logs));
        // The process has written its after-answer line before the next call.
        while !d.path().join("after-secret").exists() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (second, alive) = p.invoke("2", None, b"other", limits, caps, &cancel).await;
        assert!(alive);
        let logs = String::from_utf8_lossy(&second.logs);
        assert!(logs.starts_with("during other\n"), "{logs}");
        assert!(!logs.contains("secret"), "the first caller's line must not show here: {logs}");

        let (huge, alive) = p.invoke("3", None, b"huge", limits, caps, &cancel).await;
        assert!(!alive);
        let f = huge.result.unwrap_err();
        assert!(f.message.contains("longer than"), "{f:?}");
    }

    #[tokio::test]
    async fn serves_many_invocations_from_one_process_and_recovers() {
        if std::process::Command::new("python3").arg("-c").arg("pass").status().is_err() {
            panic!("python3 is required for this test");
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("srv.py"), ECHO_SERVER).unwrap();
        let pool = WarmPool::new(2);
        let caps = OutputCaps::default();
        let limits = Limits { timeout_ms: 2000, memory_mb: 512, ..Limits::default() };
        let cancel = CancellationToken::new();
        let run = |input: &'static [u8]| {
            pool.run(WarmRequest {
                key: "f/1",
                family: "f/",
                dir: d.path(),
                cmd: "python3 srv.py",
                env: &[],
                id: "id",
                token: None,
                input,
                limits,
                caps,
                cancel: &cancel,
                place: None,
            })
        };
        assert_eq!(run(b"a").await.result, Ok(b"1:a".to_vec()));
        let second = run(b"b").await;
        assert_eq!(second.result, Ok(b"2:b".to_vec()), "the same process serves the second call");
        assert_eq!(second.logs, b"log 2\n");
        let died = run(b"die").await;
        let f = died.result.unwrap_err();
        assert!(f.message.contains("status 7"), "{}", f.message);
        assert_eq!(run(b"c").await.result, Ok(b"1:c".to_vec()), "a fresh process replaces the dead one");
        let hung = run(b"hang").await;
        assert_eq!(hung.result.unwrap_err().kind, FailureKind::Timeout);
        assert_eq!(run(b"d").await.result, Ok(b"1:d".to_vec()));
        assert_eq!(pool.idle.lock().unwrap()["f/1"].len(), 1);

        // A process for another key of the family retires the idle ones.
        let next = pool.run(WarmRequest {
            key: "f/2",
            family: "f/",
            dir: d.path(),
            cmd: "python3 srv.py",
            env: &[],
            id: "id",
            token: None,
            input: b"e",
            limits,
            caps,
            cancel: &cancel,
            place: None,
        });
        assert_eq!(next.await.result, Ok(b"1:e".to_vec()));
        let idle = pool.idle.lock().unwrap();
        assert!(!idle.contains_key("f/1") && idle["f/2"].len() == 1, "{:?}", idle.keys().collect::<Vec<_>>());
    }
}
