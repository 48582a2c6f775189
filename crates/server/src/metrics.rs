//! Prometheus metrics, kept as atomics and rendered as text on scrape.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use stratus_core::InvocationState;

/// Upper bounds (seconds) of the invocation duration histogram's buckets.
const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];

/// The outcomes of finished invocations, in the order [`FunctionStats`] counts them.
const OUTCOMES: [InvocationState; 4] =
    [InvocationState::Succeeded, InvocationState::Failed, InvocationState::TimedOut, InvocationState::Cancelled];

/// Finished invocations of one function: by outcome, and how long they ran.
#[derive(Default)]
struct FunctionStats {
    outcomes: [u64; OUTCOMES.len()],
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_ms: u64,
}

/// What a scrape shows beside the counters: gauges read at scrape time.
pub struct Gauges {
    pub queued: usize,
    pub running: usize,
    pub slots: usize,
    /// Workers by state (`alive`, `lost`).
    pub workers: BTreeMap<String, usize>,
    /// Jobs not yet ended, by state (`running`, `reducing`).
    pub jobs: BTreeMap<String, usize>,
}

#[derive(Default)]
pub struct Metrics {
    pub invocations_submitted: AtomicU64,
    pub attempts_started: AtomicU64,
    pub attempts_retried: AtomicU64,
    pub finished_succeeded: AtomicU64,
    pub finished_failed: AtomicU64,
    pub finished_timed_out: AtomicU64,
    pub finished_cancelled: AtomicU64,
    pub stale_completions: AtomicU64,
    pub dispatch_messages: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub http_requests: AtomicU64,
    pub http_errors: AtomicU64,
    /// By (project, function). Functions are few (they are deployed), so
    /// the label sets stay few.
    by_function: Mutex<BTreeMap<(String, String), FunctionStats>>,
}

impl Metrics {
    /// Counts a finished invocation of `function` that ran `run_ms` (its last attempt).
    pub fn finished(&self, project: &str, function: &str, state: InvocationState, run_ms: i64) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == state) {
            let mut by = self.by_function.lock().unwrap();
            let stats = by.entry((project.to_string(), function.to_string())).or_default();
            stats.outcomes[i] += 1;
            let secs = run_ms.max(0) as f64 / 1000.0;
            for (b, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
                if secs <= bound {
                    *b += 1;
                }
            }
            stats.count += 1;
            stats.sum_ms += run_ms.max(0) as u64;
        }
        let c = match state {
            InvocationState::Succeeded => &self.finished_succeeded,
            InvocationState::Failed => &self.finished_failed,
            InvocationState::TimedOut => &self.finished_timed_out,
            InvocationState::Cancelled => &self.finished_cancelled,
            _ => return,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn render(&self, g: &Gauges) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "stratus_invocations_submitted_total",
            "Invocations accepted.",
            self.invocations_submitted.load(Relaxed),
        );
        counter("stratus_attempts_started_total", "Attempts started by workers.", self.attempts_started.load(Relaxed));
        counter("stratus_attempts_retried_total", "Failed attempts queued again.", self.attempts_retried.load(Relaxed));
        counter(
            "stratus_stale_completions_total",
            "Duplicate or late completions ignored.",
            self.stale_completions.load(Relaxed),
        );
        counter(
            "stratus_dispatch_messages_total",
            "Dispatch messages published to the broker.",
            self.dispatch_messages.load(Relaxed),
        );
        counter(
            "stratus_dead_lettered_tasks_total",
            "Tasks of dispatch messages dead-lettered by the broker.",
            self.dead_lettered.load(Relaxed),
        );
        counter("stratus_http_requests_total", "HTTP requests served.", self.http_requests.load(Relaxed));
        counter("stratus_http_errors_total", "HTTP requests answered with 4xx or 5xx.", self.http_errors.load(Relaxed));
        let _ = writeln!(
            s,
            "# HELP stratus_invocations_finished_total Invocations finished, by state.\n# TYPE stratus_invocations_finished_total counter"
        );
        for (state, c) in [
            ("succeeded", &self.finished_succeeded),
            ("failed", &self.finished_failed),
            ("timed_out", &self.finished_timed_out),
            ("cancelled", &self.finished_cancelled),
        ] {
            let _ = writeln!(s, "stratus_invocations_finished_total{{state=\"{state}\"}} {}", c.load(Relaxed));
        }
        let mut gauge = |name: &str, help: &str, v: usize| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("stratus_queue_depth", "Invocations waiting for a worker on this server.", g.queued);
        gauge("stratus_running", "Attempts running on workers of this server.", g.running);
        gauge("stratus_worker_slots", "Local worker slots.", g.slots);
        let _ =
            writeln!(s, "# HELP stratus_workers Workers this server knows, by state.\n# TYPE stratus_workers gauge");
        for (state, n) in &g.workers {
            let _ = writeln!(s, "stratus_workers{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(s, "# HELP stratus_jobs Jobs not yet ended, by state.\n# TYPE stratus_jobs gauge");
        for state in ["running", "reducing"] {
            let _ = writeln!(s, "stratus_jobs{{state=\"{state}\"}} {}", g.jobs.get(state).copied().unwrap_or(0));
        }
        self.render_functions(&mut s);
        s
    }

    fn render_functions(&self, s: &mut String) {
        let by = self.by_function.lock().unwrap();
        let _ = writeln!(
            s,
            "# HELP stratus_invocations_total Invocations finished, by project, function and outcome.\n# TYPE stratus_invocations_total counter"
        );
        for ((project, function), st) in by.iter() {
            let (p, f) = (escape(project), escape(function));
            for (state, n) in OUTCOMES.iter().zip(st.outcomes) {
                let _ = writeln!(
                    s,
                    "stratus_invocations_total{{project=\"{p}\",function=\"{f}\",outcome=\"{state}\"}} {n}"
                );
            }
        }
        let name = "stratus_invocation_duration_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} How long finished invocations ran (their last attempt), by function.\n# TYPE {name} histogram"
        );
        for ((project, function), st) in by.iter() {
            let labels = format!("project=\"{}\",function=\"{}\"", escape(project), escape(function));
            for (bound, n) in BUCKETS.iter().zip(st.buckets) {
                let _ = writeln!(s, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(s, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", st.count);
            let _ = writeln!(s, "{name}_sum{{{labels}}} {}", st.sum_ms as f64 / 1000.0);
            let _ = writeln!(s, "{name}_count{{{labels}}} {}", st.count);
        }
    }
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_function_and_outcome_with_a_cumulative_histogram() {
        let m = Metrics::default();
        m.finished("default", "f", InvocationState::Succeeded, 30);
        m.finished("default", "f", InvocationState::Failed, 2000);
        let g = Gauges { queued: 0, running: 0, slots: 1, workers: BTreeMap::new(), jobs: BTreeMap::new() };
        let text = m.render(&g);
        for line in [
            r#"stratus_invocations_total{project="default",function="f",outcome="succeeded"} 1"#,
            r#"stratus_invocations_total{project="default",function="f",outcome="failed"} 1"#,
            r#"stratus_invocation_duration_seconds_bucket{project="default",function="f",le="0.05"} 1"#,
            r#"stratus_invocation_duration_seconds_bucket{project="default",function="f",le="2.5"} 2"#,
            r#"stratus_invocation_duration_seconds_bucket{project="default",function="f",le="+Inf"} 2"#,
            r#"stratus_invocation_duration_seconds_sum{project="default",function="f"} 2.03"#,
            r#"stratus_jobs{state="running"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
    }
}
