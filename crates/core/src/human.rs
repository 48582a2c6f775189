//! Times, durations and sizes as people read them, for the CLI and the
//! dashboard alike.

/// `2026-12-07 00:02:35Z` (UTC) for milliseconds since the epoch.
pub fn date(ms: i64) -> String {
    let (year, month, day, secs) = crate::clock::civil(ms);
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
