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

/// `2026-12-07 00:02:35Z` (UTC) for milliseconds since the epoch.
pub fn date(ms: i64) -> String {
    let (year, month, day, secs) = stratus_core::clock::civil(ms);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// How long ago: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn age(ms: i64, now: i64) -> String {
    let s = (now - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// A date and its age: `2026-12-07 00:02:35Z (5m ago)`.
pub fn when(ms: i64, now: i64) -> String {
    format!("{} ({})", date(ms), age(ms, now))
}

/// A duration: `850 ms`, `1.2 s`, `2m 03s`, `1h 05m`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{}h {:02}m", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A size in binary units: `512 B`, `1.5 KiB`, `64.0 MiB`, `1.2 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_ages_durations_and_sizes() {
        assert_eq!(date(0), "1970-01-01 00:00:00Z");
        assert_eq!(date(951_782_400_000), "2000-02-29 00:00:00Z");
        assert_eq!(date(1_796_601_755_999), "2026-12-07 00:02:35Z");
        assert_eq!(age(1_000, 13_500), "12s ago");
        assert_eq!(age(0, 301_000), "5m ago");
        assert_eq!(age(0, 2 * 86_400_000 + 5), "2d ago");
        assert_eq!(age(10_000, 0), "0s ago", "a clock behind the server's is not a negative age");
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_240), "1.2 s");
        assert_eq!(duration(123_000), "2m 03s");
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(64 << 20), "64.0 MiB");
    }
}
