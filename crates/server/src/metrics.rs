//! Prometheus metrics, kept as atomics and rendered as text on scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use stratus_core::InvocationState;

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
}

impl Metrics {
    pub fn finished(&self, state: InvocationState) {
        let c = match state {
            InvocationState::Succeeded => &self.finished_succeeded,
            InvocationState::Failed => &self.finished_failed,
            InvocationState::TimedOut => &self.finished_timed_out,
            InvocationState::Cancelled => &self.finished_cancelled,
            _ => return,
        };
        c.fetch_add(1, Relaxed);
    }

    pub fn render(&self, queued: usize, running: usize, slots: usize) -> String {
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
        gauge("stratus_queue_depth", "Invocations waiting for a worker on this server.", queued);
        gauge("stratus_running", "Attempts running on workers of this server.", running);
        gauge("stratus_worker_slots", "Local worker slots.", slots);
        s
    }
}
