//! How every client verb prints, in one place (see docs/api.md, "--json").
//!
//! Text is for people. With `--json`: one JSON object on one line for one
//! thing, one object per line (NDJSON) for lists and streams, and an error
//! as `{"error": {"code", "message"}}` on stderr with a non-zero exit code.
//!
//! Writes return their error instead of panicking (as `println!` does), so a
//! reader that goes away (`stratus … | head`) ends the command quietly:
//! [`is_broken_pipe`] recognises that error in `main`.

use serde::Serialize;
use std::io::Write;
pub use stratus_core::human::{age, date, duration, size, when};

/// `println!` that returns the write error instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}
pub(crate) use out;

/// One JSON value on one line of stdout.
pub fn json(v: &impl Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A list as NDJSON: one line per item.
pub fn json_rows<T: Serialize>(items: impl IntoIterator<Item = T>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for item in items {
        serde_json::to_writer(&mut out, &item)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Bytes to stdout as they are; on a terminal a missing final newline is
/// added, so the shell prompt does not run on after the output.
pub fn raw(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let mut out = stdout.lock();
    out.write_all(bytes)?;
    if tty && !bytes.is_empty() && !bytes.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Output bytes as JSON fields: `output` when they are UTF-8 text, else
/// `output_base64` (the convention of job results).
pub fn output_fields(bytes: Vec<u8>) -> serde_json::Value {
    use base64::Engine as _;
    match String::from_utf8(bytes) {
        Ok(s) => serde_json::json!({"output": s}),
        Err(e) => serde_json::json!({"output_base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes())}),
    }
}

/// Whether the error is a write to a reader that went away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Now, in milliseconds since the epoch (the unit of every API time).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
