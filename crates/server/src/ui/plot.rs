//! A job's plots, drawn here in SVG from its task timings (the endpoint
//! the Python SDK's `plot()` reads), so that a page stays small whatever the
//! job's size: the timeline (one bar per task from start to end, grouped by
//! worker, coloured by state; beyond [`MAX_BARS`] tasks one bar per bucket
//! of a worker's consecutive tasks), the histogram of task durations, and
//! the tasks running and done over time — Lithops' three plots.
//!
//! Every mark carries its data in attributes (`data-task`, `data-tasks`,
//! `data-count`), so a test reads the plot from the DOM.

use super::html::esc;
use std::collections::BTreeMap;
use std::fmt::Write;
use stratus_core::InvocationState;
use stratus_core::api::TaskTiming;
use stratus_core::human::duration;

/// The most bars a timeline draws.
pub const MAX_BARS: usize = 2000;
/// Bins of the duration histogram.
const BINS: usize = 40;
/// Points of the running and done curves.
const POINTS: usize = 200;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 130.0;
const PLOT_W: f64 = WIDTH - LEFT - 20.0;
const PLOT_H: f64 = 360.0;
const TOP: f64 = 10.0;

/// What the plots show, in numbers.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub tasks: usize,
    pub started: usize,
    pub finished: usize,
    /// Of finished tasks, in ms.
    pub p50: Option<i64>,
    pub p99: Option<i64>,
    /// From the first task queued to the last one finished (or `now`).
    pub span_ms: i64,
    /// The slowest finished tasks: index, invocation, duration.
    pub slowest: Vec<(u64, stratus_core::Id, i64)>,
}

pub struct Plots {
    pub timeline: String,
    pub histogram: String,
    pub curve: String,
    pub summary: Summary,
}

/// A started task as drawn: from `start` to `end` (`now` while running).
struct Bar<'a> {
    t: &'a TaskTiming,
    start: i64,
    end: i64,
}

pub fn plots(tasks: &[TaskTiming], now: i64) -> Plots {
    let t0 = tasks.iter().map(|t| t.queued_at).min().unwrap_or(now);
    let bars: Vec<Bar> = tasks
        .iter()
        .filter_map(|t| {
            let start = t.started_at?;
            Some(Bar { t, start, end: t.finished_at.unwrap_or(now).max(start) })
        })
        .collect();
    let t1 = bars.iter().map(|b| b.end).max().unwrap_or(now).max(t0 + 1);
    let mut durations: Vec<(i64, &TaskTiming)> =
        bars.iter().filter(|b| b.t.finished_at.is_some()).map(|b| (b.end - b.start, b.t)).collect();
    durations.sort_by_key(|(d, _)| *d);
    let pct =
        |p: f64| (!durations.is_empty()).then(|| durations[((durations.len() - 1) as f64 * p).round() as usize].0);
    let summary = Summary {
        tasks: tasks.len(),
        started: bars.len(),
        finished: durations.len(),
        p50: pct(0.5),
        p99: pct(0.99),
        span_ms: t1 - t0,
        slowest: durations.iter().rev().take(5).map(|(d, t)| (t.index, t.invocation, *d)).collect(),
    };
    Plots {
        timeline: timeline(&bars, t0, t1),
        histogram: histogram(&durations.iter().map(|(d, _)| *d).collect::<Vec<_>>()),
        curve: curve(&bars, tasks.len(), t0, t1),
        summary,
    }
}

fn x_of(t: i64, t0: i64, t1: i64) -> f64 {
    LEFT + (t - t0) as f64 / (t1 - t0) as f64 * PLOT_W
}

/// Seconds-since-start ticks along the time axis.
fn time_axis(out: &mut String, t0: i64, t1: i64, y: f64) {
    let span = (t1 - t0) as f64 / 1000.0;
    let step = nice_step(span / 5.0);
    let mut s = 0.0;
    while s <= span + 1e-9 {
        let x = LEFT + s / span * PLOT_W;
        let _ = write!(
            out,
            r#"<line class="tick" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{y:.1}"/><text class="axis" x="{x:.1}" y="{:.1}" text-anchor="middle">{}s</text>"#,
            y + 14.0,
            trim(s)
        );
        s += step;
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p)
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The state a bucket shows: its worst.
fn worst(a: InvocationState, b: InvocationState) -> InvocationState {
    let rank = |s| match s {
        InvocationState::Failed | InvocationState::TimedOut => 3,
        InvocationState::Running | InvocationState::Queued => 2,
        InvocationState::Cancelled => 1,
        InvocationState::Succeeded => 0,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn timeline(bars: &[Bar], t0: i64, t1: i64) -> String {
    let mut groups: BTreeMap<&str, Vec<&Bar>> = BTreeMap::new();
    for b in bars {
        groups.entry(b.t.worker.as_deref().unwrap_or("-")).or_default().push(b);
    }
    let per_bucket = bars.len().div_ceil(MAX_BARS).max(1);
    let lanes: usize = groups.values().map(|g| g.len().div_ceil(per_bucket)).sum::<usize>().max(1);
    let h = PLOT_H / lanes as f64;
    let height = TOP + PLOT_H + 24.0;
    let mut out = format!(
        r#"<svg class="plot timeline" viewBox="0 0 {WIDTH} {height}" data-tasks="{}" data-bars="{lanes}" data-per-bucket="{per_bucket}" role="img" aria-label="task timeline">"#,
        bars.len()
    );
    time_axis(&mut out, t0, t1, TOP + PLOT_H);
    let mut lane = 0usize;
    for (worker, mut group) in groups {
        group.sort_by_key(|b| (b.start, b.t.index));
        let first = lane;
        for chunk in group.chunks(per_bucket) {
            let start = chunk.iter().map(|b| b.start).min().expect("a chunk is not empty");
            let end = chunk.iter().map(|b| b.end).max().expect("a chunk is not empty");
            let state = chunk.iter().map(|b| b.t.state).reduce(worst).expect("a chunk is not empty");
            let x = x_of(start, t0, t1);
            let w = (x_of(end, t0, t1) - x).max(0.8);
            let y = TOP + lane as f64 * h;
            let class = state.as_str();
            if let [b] = chunk {
                let _ = write!(
                    out,
                    r#"<rect class="task s-{class}" x="{x:.1}" y="{y:.2}" width="{w:.1}" height="{:.2}" data-task="{}" data-worker="{}" data-state="{class}"><title>task {} · {} · {class} on {}</title></rect>"#,
                    (h * 0.85).max(0.2),
                    b.t.index,
                    esc(worker),
                    b.t.index,
                    duration(b.end - b.start),
                    esc(worker)
                );
            } else {
                let _ = write!(
                    out,
                    r#"<rect class="bucket s-{class}" x="{x:.1}" y="{y:.2}" width="{w:.1}" height="{:.2}" data-tasks="{}" data-worker="{}"><title>{} tasks from {} on {}</title></rect>"#,
                    (h * 0.85).max(0.2),
                    chunk.len(),
                    esc(worker),
                    chunk.len(),
                    chunk.iter().map(|b| b.t.index).min().expect("a chunk is not empty"),
                    esc(worker)
                );
            }
            lane += 1;
        }
        let mid = TOP + (first + lane) as f64 / 2.0 * h;
        let _ = write!(
            out,
            r#"<text class="worker" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><line class="group" x1="{LEFT}" x2="{:.1}" y1="{:.2}" y2="{:.2}"/>"#,
            LEFT - 6.0,
            mid + 4.0,
            esc(&short(worker)),
            LEFT + PLOT_W,
            TOP + lane as f64 * h,
            TOP + lane as f64 * h
        );
    }
    out.push_str("</svg>");
    out
}

/// A worker's name fit for a label.
fn short(worker: &str) -> String {
    if worker.chars().count() <= 18 {
        worker.to_string()
    } else {
        format!("{}…", worker.chars().take(17).collect::<String>())
    }
}

fn histogram(durations: &[i64]) -> String {
    let height = TOP + 200.0 + 24.0;
    let max = durations.last().copied().unwrap_or(0).max(1);
    let width = (max as f64 / BINS as f64).max(1.0);
    let mut counts = [0usize; BINS];
    for d in durations {
        counts[((*d as f64 / width) as usize).min(BINS - 1)] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut out = format!(
        r#"<svg class="plot histogram" viewBox="0 0 {WIDTH} {height}" data-tasks="{}" role="img" aria-label="task durations">"#,
        durations.len()
    );
    let bw = PLOT_W / BINS as f64;
    for (i, c) in counts.iter().enumerate() {
        let h = *c as f64 / top as f64 * 200.0;
        let from = (i as f64 * width) as i64;
        let _ = write!(
            out,
            r#"<rect class="bin" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" data-count="{c}"><title>{c} tasks of {} to {}</title></rect>"#,
            LEFT + i as f64 * bw,
            TOP + 200.0 - h,
            bw * 0.9,
            duration(from),
            duration(from + width as i64)
        );
    }
    let _ = write!(
        out,
        r#"<text class="axis" x="{LEFT}" y="{:.1}">0</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">{top} tasks</text></svg>"#,
        TOP + 214.0,
        LEFT + PLOT_W,
        TOP + 214.0,
        duration(max),
        LEFT - 6.0,
        TOP + 10.0
    );
    out
}

fn curve(bars: &[Bar], total: usize, t0: i64, t1: i64) -> String {
    let mut starts: Vec<i64> = bars.iter().map(|b| b.start).collect();
    let mut ends: Vec<i64> = bars.iter().filter(|b| b.t.finished_at.is_some()).map(|b| b.end).collect();
    starts.sort_unstable();
    ends.sort_unstable();
    let upto = |v: &[i64], t: i64| v.partition_point(|x| *x <= t);
    let total = total.max(1);
    let height = TOP + 200.0 + 24.0;
    let samples: Vec<(f64, usize, usize)> = (0..=POINTS)
        .map(|i| {
            let t = t0 + ((t1 - t0) as f64 * i as f64 / POINTS as f64) as i64;
            let (s, e) = (upto(&starts, t), upto(&ends, t));
            (x_of(t, t0, t1), s - e, e)
        })
        .collect();
    // Done is drawn against the job's size, running against its own peak
    // (a few slots' worth beside thousands of tasks would be a flat line).
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let y = |n: usize, of: usize| TOP + 200.0 - n as f64 / of.max(1) as f64 * 200.0;
    let (mut running, mut done) = (String::new(), String::new());
    for (x, r, d) in &samples {
        let _ = write!(running, "{x:.1},{:.1} ", y(*r, peak));
        let _ = write!(done, "{x:.1},{:.1} ", y(*d, total));
    }
    let mut out = format!(
        r#"<svg class="plot curve" viewBox="0 0 {WIDTH} {height}" data-peak-running="{peak}" data-done="{}" role="img" aria-label="tasks over time">"#,
        ends.len()
    );
    time_axis(&mut out, t0, t1, TOP + 200.0);
    let _ = write!(
        out,
        r#"<polyline class="done" points="{}"/><polyline class="running" points="{}"/><text class="axis done" x="{:.1}" y="{:.1}" text-anchor="end">{total}</text><text class="axis" x="{:.1}" y="{:.1}" text-anchor="end">0</text><text class="axis running" x="{:.1}" y="{:.1}" text-anchor="end">{peak} running</text></svg>"#,
        done.trim_end(),
        running.trim_end(),
        LEFT - 6.0,
        TOP + 10.0,
        LEFT - 6.0,
        TOP + 200.0,
        LEFT + PLOT_W,
        TOP + 24.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(index: u64, worker: &str, start: i64, end: Option<i64>, state: InvocationState) -> TaskTiming {
        TaskTiming {
            index,
            invocation: stratus_core::new_id(),
            state,
            attempts: 1,
            worker: Some(worker.into()),
            queued_at: 0,
            started_at: Some(start),
            finished_at: end,
        }
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn a_small_job_gets_one_bar_per_task_grouped_by_worker() {
        let mut tasks: Vec<_> = (0..10)
            .map(|i| {
                task(
                    i,
                    if i % 2 == 0 { "w-a" } else { "w-b" },
                    10 * i as i64,
                    Some(10 * i as i64 + 50),
                    InvocationState::Succeeded,
                )
            })
            .collect();
        tasks[3].state = InvocationState::Failed;
        tasks.push(TaskTiming {
            started_at: None,
            finished_at: None,
            state: InvocationState::Queued,
            ..task(10, "w-a", 0, None, InvocationState::Queued)
        });
        let p = plots(&tasks, 1000);
        assert_eq!(count(&p.timeline, "<rect class=\"task "), 10, "queued tasks have no bar");
        assert_eq!(count(&p.timeline, "data-state=\"failed\""), 1);
        assert_eq!(count(&p.timeline, "class=\"worker\""), 2);
        assert_eq!(p.summary.finished, 10);
        assert_eq!(p.summary.p50, Some(50));
        assert_eq!(p.summary.span_ms, 140);
        let bins: usize = p
            .histogram
            .split("data-count=\"")
            .skip(1)
            .map(|s| s[..s.find('"').unwrap()].parse::<usize>().unwrap())
            .sum();
        assert_eq!(bins, 10, "every finished task is in one bin");
        assert!(p.curve.contains("data-done=\"10\""));
    }

    #[test]
    fn a_large_job_is_bucketed_and_stays_small() {
        let tasks: Vec<_> = (0..100_000u64)
            .map(|i| task(i, &format!("w-{}", i % 8), i as i64, Some(i as i64 + 40), InvocationState::Succeeded))
            .collect();
        let p = plots(&tasks, 0);
        let bars = count(&p.timeline, "<rect class=\"bucket ");
        assert!(bars <= MAX_BARS + 8, "{bars} bars");
        let sum: usize = p
            .timeline
            .split("<rect class=\"bucket ")
            .skip(1)
            .map(|s| {
                let v = &s[s.find("data-tasks=\"").unwrap() + 12..];
                v[..v.find('"').unwrap()].parse::<usize>().unwrap()
            })
            .sum();
        assert_eq!(sum, 100_000, "every task is in one bucket");
        let bytes = p.timeline.len() + p.histogram.len() + p.curve.len();
        assert!(bytes < 600_000, "{bytes} bytes");
        assert_eq!(p.summary.slowest.len(), 5);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.3), 2.0);
        assert_eq!(nice_step(33.0), 50.0);
        assert_eq!(trim(2.50), "2.5");
    }
}
