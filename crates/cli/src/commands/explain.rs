//! Why an invocation failed, told to a person: its error, the end of its
//! stderr, the id to give `stratus logs`, and a hint for failures with a
//! known cause (too little `--memory`).

use stratus_client::{Client, Failure, Id};

/// The last lines of an invocation's stderr, at most this many bytes.
const TAIL_BYTES: usize = 2048;
const TAIL_LINES: usize = 10;

/// The end of an invocation's stderr ("" when there is none or it cannot be read).
pub async fn logs_tail(client: &Client, id: Id) -> String {
    let logs = client.logs(id).await.unwrap_or_default();
    tail(&String::from_utf8_lossy(&logs[logs.len().saturating_sub(TAIL_BYTES)..]))
}

/// The last [`TAIL_LINES`] lines of `text`.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Prints a tail indented under its failure, one `| ` line each.
pub fn print_tail(tail: &str, indent: &str) {
    for line in tail.lines() {
        eprintln!("{indent}| {line}");
    }
}

/// A hint for a failure whose cause is known from its stderr or exit code,
/// naming the function's memory limit.
pub async fn hint(client: &Client, function: &str, failure: Option<&Failure>, tail: &str) -> Option<String> {
    let exit_127 = failure.and_then(|f| f.exit_code) == Some(127);
    // Out of memory: the sandbox's cgroup stopped it, or (without a
    // sandbox) the interpreter hit its address-space limit.
    let oom = failure.is_some_and(|f| f.kind == stratus_core::FailureKind::OutOfMemory);
    if !(tail.contains("MemoryError") || exit_127 || oom) {
        return None;
    }
    let mb = client.get_function(function).await.ok()?.memory_mb;
    let more = (mb * 2).max(512);
    Some(if exit_127 {
        format!(
            "exit status 127: the command was not found, or it could not start within the memory limit of {mb} MiB \
             (an interpreter such as python3 needs more); check --cmd, or deploy {function} with a larger --memory, \
             e.g. --memory {more}M"
        )
    } else {
        format!(
            "{function} ran out of memory under its limit of {mb} MiB; deploy it with a larger --memory, e.g. --memory {more}M"
        )
    })
}
