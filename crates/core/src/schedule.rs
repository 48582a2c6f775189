//! Schedules: when a schedule fires, computed from its timing, never
//! pre-created.
//!
//! A schedule keeps one number, the next nominal time it has not handled
//! (`next_at`). [`due`] says, for the time now, which nominal times fire,
//! which are missed (older than the catch-up window: a server that was
//! down), and the next one. A fire is the event `stratus.schedule.fired`
//! whose id is its nominal time, so a nominal time fires once however many
//! servers compute it.
//!
//! Cron times are wall-clock times in the schedule's zone (jiff and the
//! system's time zone database): a local time a DST jump skips fires an
//! hour on (02:30 on the night clocks go 02:00 → 03:00 fires at 03:30),
//! and one that occurs twice fires once, at its second occurrence (see
//! the tests).

use crate::Error;
use crate::clock::Millis;
use jiff_cron::jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// How a schedule's nominal times are spaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Timing {
    /// A cron expression: 5 fields (minute hour day-of-month month
    /// day-of-week), 6 or 7 (with seconds first, years last), or
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; in a time
    /// zone (IANA name, default UTC).
    Cron { expr: String, tz: String },
    /// Every `every_ms`, from the schedule's creation.
    Every { every_ms: u64 },
}

/// What a fire does while the previous run of the schedule's action is
/// still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// It is skipped (a `stratus.schedule.missed` event says so).
    #[default]
    Skip,
    /// It waits for the running one to end; one waits at most, the others
    /// are skipped.
    BufferOne,
    /// It runs alongside.
    AllowAll,
}

impl std::str::FromStr for Overlap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "skip" => Ok(Overlap::Skip),
            "buffer_one" => Ok(Overlap::BufferOne),
            "allow_all" => Ok(Overlap::AllowAll),
            _ => Err(Error::invalid("overlap", format!("'{s}': use skip, buffer_one or allow_all"))),
        }
    }
}

/// Fires missed by less than this still run after a restart, by default.
pub const DEFAULT_CATCHUP_MS: u64 = 60_000;

/// The shortest `--every`.
pub const MIN_EVERY_MS: u64 = 1000;

fn default_catchup() -> u64 {
    DEFAULT_CATCHUP_MS
}

/// A schedule's timing and policies, as stored with its trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub timing: Timing,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default = "default_catchup")]
    pub catchup_ms: u64,
}

/// A timing ready to compute with.
#[derive(Debug, Clone)]
pub enum Clockwork {
    Cron(Box<jiff_cron::Schedule>, TimeZone),
    Every { anchor: Millis, every_ms: u64 },
}

impl ScheduleSpec {
    /// Checks the timing (the expression parses, the zone exists) and
    /// readies it; `anchor` is when an `every` schedule counts from.
    pub fn compile(&self, anchor: Millis) -> Result<Clockwork, Error> {
        match &self.timing {
            Timing::Every { every_ms } => {
                if *every_ms < MIN_EVERY_MS {
                    return Err(Error::invalid("every", "a schedule fires at most once a second"));
                }
                Ok(Clockwork::Every { anchor, every_ms: *every_ms })
            }
            Timing::Cron { expr, tz } => {
                let trimmed = expr.trim();
                let fields = trimmed.split_whitespace().count();
                let full = match fields {
                    _ if trimmed.starts_with('@') => trimmed.to_string(),
                    5 => format!("0 {trimmed}"),
                    6 | 7 => trimmed.to_string(),
                    n => {
                        return Err(Error::invalid(
                            "cron",
                            format!(
                                "'{expr}' has {n} fields: give 5 (minute hour day month weekday), or 6-7 with seconds first"
                            ),
                        ));
                    }
                };
                let schedule: jiff_cron::Schedule =
                    full.parse().map_err(|e| Error::invalid("cron", format!("'{expr}': {e}")))?;
                let zone = TimeZone::get(tz).map_err(|e| Error::invalid("tz", format!("'{tz}': {e}")))?;
                let clock = Clockwork::Cron(Box::new(schedule), zone);
                if clock.next_after(0).is_none() {
                    return Err(Error::invalid("cron", format!("'{expr}' never fires")));
                }
                Ok(clock)
            }
        }
    }
}

impl Clockwork {
    /// The first nominal time strictly after `t`, if there is one.
    pub fn next_after(&self, t: Millis) -> Option<Millis> {
        match self {
            Clockwork::Every { anchor, every_ms } => {
                let every = *every_ms as i64;
                if t < *anchor {
                    return Some(*anchor);
                }
                Some(anchor + ((t - anchor) / every + 1) * every)
            }
            Clockwork::Cron(schedule, zone) => {
                let after = Timestamp::from_millisecond(t).ok()?.to_zoned(zone.clone());
                schedule.after(after).next().map(|z| z.timestamp().as_millisecond())
            }
        }
    }
}

/// What a schedule does now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Nominal times to fire, oldest first.
    pub fires: Vec<Millis>,
    /// Nominal times missed beyond the catch-up window: the first, the last
    /// and how many.
    pub missed: Option<(Millis, Millis, u64)>,
    /// The next nominal time after these (`None`: the schedule is over).
    pub next: Option<Millis>,
}

/// Past this many nominal times in one go, the rest of a long outage is
/// counted as one missed stretch without visiting each.
const MAX_STEPS: usize = 100_000;

/// Which nominal times from `next_at` on are due at `now`: those within
/// `catchup_ms` of now fire, older ones are missed.
pub fn due(clock: &Clockwork, next_at: Millis, now: Millis, catchup_ms: u64) -> Due {
    let mut out = Due { next: Some(next_at), ..Default::default() };
    let horizon = now - catchup_ms as i64;
    let mut steps = 0;
    while let Some(n) = out.next.filter(|n| *n <= now) {
        if n < horizon {
            let (first, _, count) = out.missed.unwrap_or((n, n, 0));
            out.missed = Some((first, n, count + 1));
            steps += 1;
            out.next = if steps >= MAX_STEPS {
                // The stretch up to the window, at once: its end and size
                // as far as counted.
                clock.next_after(horizon - 1)
            } else {
                clock.next_after(n)
            };
            continue;
        }
        out.fires.push(n);
        out.next = clock.next_after(n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn at(s: &str) -> Millis {
        parse_rfc3339(s).unwrap()
    }

    fn cron(expr: &str, tz: &str) -> Clockwork {
        let spec = ScheduleSpec {
            timing: Timing::Cron { expr: expr.into(), tz: tz.into() },
            overlap: Overlap::Skip,
            catchup_ms: DEFAULT_CATCHUP_MS,
        };
        spec.compile(0).unwrap()
    }

    fn times(c: &Clockwork, from: &str, n: usize) -> Vec<String> {
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = c.next_after(t).unwrap();
                crate::clock::rfc3339(t)
            })
            .collect()
    }

    #[test]
    fn five_field_cron_fires_at_its_minutes_in_utc() {
        let c = cron("*/15 9 * * MON-FRI", "UTC");
        assert_eq!(
            times(&c, "2026-12-04T09:40:00Z", 3), // a Friday
            ["2026-12-04T09:45:00.000Z", "2026-12-07T09:00:00.000Z", "2026-12-07T09:15:00.000Z"]
        );
        assert_eq!(times(&cron("@daily", "UTC"), "2026-12-07T09:00:00Z", 1), ["2026-12-08T00:00:00.000Z"]);
    }

    #[test]
    fn a_local_time_skipped_by_dst_fires_at_the_shifted_instant() {
        // Berlin springs forward on 2026-03-29 at 02:00 CET to 03:00 CEST:
        // 02:30 does not exist that day.
        let c = cron("30 2 * * *", "Europe/Berlin");
        let got = times(&c, "2026-03-27T12:00:00Z", 3);
        assert_eq!(got[0], "2026-03-28T01:30:00.000Z", "02:30 CET");
        assert_eq!(got[2], "2026-03-30T00:30:00.000Z", "02:30 CEST");
        assert_eq!(got[1], "2026-03-29T01:30:00.000Z", "on the day of the jump, 03:30 CEST: an hour on");
    }

    #[test]
    fn a_local_time_that_occurs_twice_fires_once() {
        // Berlin falls back on 2026-10-25 at 03:00 CEST to 02:00 CET: 02:30
        // occurs twice that day (00:30Z and 01:30Z).
        let c = cron("30 2 * * *", "Europe/Berlin");
        let got = times(&c, "2026-10-24T12:00:00Z", 2);
        assert_eq!(got[1], "2026-10-26T01:30:00.000Z", "the next day's 02:30 CET");
        assert_eq!(got[0], "2026-10-25T01:30:00.000Z", "once, at its second occurrence (02:30 CET)");
        // Hourly in the zone: the repeated hour is still one per hour of time.
        let hourly = cron("0 * * * *", "Europe/Berlin");
        let h = times(&hourly, "2026-10-24T23:30:00Z", 4);
        assert_eq!(
            h,
            [
                "2026-10-25T00:00:00.000Z",
                "2026-10-25T01:00:00.000Z",
                "2026-10-25T02:00:00.000Z",
                "2026-10-25T03:00:00.000Z"
            ]
        );
    }

    #[test]
    fn every_counts_from_its_anchor() {
        let spec = ScheduleSpec { timing: Timing::Every { every_ms: 30_000 }, overlap: Overlap::Skip, catchup_ms: 0 };
        let c = spec.compile(1_000).unwrap();
        assert_eq!(c.next_after(0), Some(1_000));
        assert_eq!(c.next_after(1_000), Some(31_000));
        assert_eq!(c.next_after(45_000), Some(61_000));
        let fast = ScheduleSpec { timing: Timing::Every { every_ms: 10 }, ..spec };
        assert!(fast.compile(0).is_err());
    }

    #[test]
    fn due_fires_within_the_catchup_and_counts_older_fires_as_missed() {
        let spec = ScheduleSpec { timing: Timing::Every { every_ms: 1000 }, overlap: Overlap::Skip, catchup_ms: 2500 };
        let c = spec.compile(0).unwrap();
        // Nothing due yet.
        assert_eq!(due(&c, 5000, 4999, 2500), Due { fires: vec![], missed: None, next: Some(5000) });
        // Down from 1 s to 10 s: 1..=7 s are older than the window.
        let d = due(&c, 1000, 10_000, 2500);
        assert_eq!(d.missed, Some((1000, 7000, 7)));
        assert_eq!(d.fires, [8000, 9000, 10_000]);
        assert_eq!(d.next, Some(11_000));
        // A very long outage is one missed stretch, counted in bounded steps.
        let d = due(&c, 0, 1_000_000_000, 2500);
        assert_eq!(d.fires.len(), 3);
        assert!(d.missed.unwrap().2 >= MAX_STEPS as u64);
    }

    #[test]
    fn bad_timings_are_refused() {
        let bad = |expr: &str, tz: &str| {
            let spec = ScheduleSpec {
                timing: Timing::Cron { expr: expr.into(), tz: tz.into() },
                overlap: Overlap::Skip,
                catchup_ms: 0,
            };
            spec.compile(0).unwrap_err().to_string()
        };
        assert!(bad("* * *", "UTC").contains("3 fields"));
        assert!(bad("61 * * * *", "UTC").contains("cron"));
        assert!(bad("0 0 * * *", "Mars/Olympus").contains("tz"));
        assert!("sometimes".parse::<Overlap>().is_err());
    }
}
