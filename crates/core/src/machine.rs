//! What happens when an attempt ends: the decision is data, computed here
//! without IO; the scheduler performs it.

use crate::change::{AttemptEnd, EndOutcome};
use crate::clock::Millis;
use crate::{Completion, Failure, FailureKind, InvocationState};

/// Retry backoff: `base * 2^(attempt-1)`, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_ms: i64,
    pub max_ms: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base_ms: 100, max_ms: 30_000 }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> i64 {
        let exp = attempt.saturating_sub(1).min(30);
        self.base_ms.saturating_mul(1i64 << exp).min(self.max_ms)
    }
}

/// Extra attempts granted to invocations whose worker disappeared.
pub const LOST_GRACE: u32 = 3;

/// The effect of an attempt's end on its invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The invocation is done, in this state.
    Finish(InvocationState),
    /// Queue the invocation again, to start no earlier than `not_before`.
    Retry { not_before: Millis },
}

/// Decides what an ended attempt means. `attempt` is the number of the attempt
/// that ended (1-based), `max_attempts` the invocation's budget.
pub fn on_attempt_end(
    result: &Result<(), &Failure>,
    attempt: u32,
    max_attempts: u32,
    now: Millis,
    backoff: Backoff,
) -> Decision {
    let failure = match result {
        Ok(()) => return Decision::Finish(InvocationState::Succeeded),
        Err(f) => f,
    };
    match failure.kind {
        FailureKind::Cancelled => Decision::Finish(InvocationState::Cancelled),
        // A lost worker is usually not the function's fault, so a lost attempt
        // gets a few runs beyond the retry budget; an input that kills every
        // worker it touches still ends, as `failed`.
        FailureKind::Lost if attempt < max_attempts.saturating_add(LOST_GRACE) => Decision::Retry { not_before: now },
        FailureKind::Lost => Decision::Finish(InvocationState::Failed),
        FailureKind::Internal
        | FailureKind::Exit
        | FailureKind::Trap
        | FailureKind::OutOfMemory
        | FailureKind::OutputLimit
        | FailureKind::Timeout => {
            if attempt < max_attempts {
                Decision::Retry { not_before: now + backoff.delay(attempt) }
            } else if failure.kind == FailureKind::Timeout {
                Decision::Finish(InvocationState::TimedOut)
            } else {
                Decision::Finish(InvocationState::Failed)
            }
        }
    }
}

/// How an attempt came to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Reported by whoever ran it (or by the watchdog, for a lost worker).
    Reported,
    /// Its dispatch message kept coming back from workers and was
    /// dead-lettered: the invocation fails, whatever its retries.
    DeadLettered,
}

/// Decides an attempt's end and says what to write for it: the decision
/// (for the scheduler: finish and wake the waiters, or queue again) and the
/// end to commit. `max_attempts` is the invocation's budget.
pub fn end_attempt(
    c: &Completion,
    how: Ending,
    max_attempts: u32,
    now: Millis,
    backoff: Backoff,
) -> (Decision, AttemptEnd) {
    let decision = match how {
        Ending::DeadLettered => Decision::Finish(InvocationState::Failed),
        Ending::Reported => on_attempt_end(&c.result.as_ref().map(|_| ()), c.attempt, max_attempts, now, backoff),
    };
    let logs = c.logs.clone();
    let outcome = match (&decision, &c.result) {
        (Decision::Finish(state), Ok(out)) => {
            EndOutcome::Finish { state: *state, output: Some(out.clone()), error: None, logs }
        }
        (Decision::Finish(state), Err(f)) => {
            EndOutcome::Finish { state: *state, output: None, error: Some(f.clone()), logs }
        }
        (Decision::Retry { not_before }, Err(f)) => {
            EndOutcome::Requeue { not_before: *not_before, error: f.clone(), logs }
        }
        (Decision::Retry { .. }, Ok(_)) => unreachable!("success never retries"),
    };
    let end = AttemptEnd {
        id: c.invocation,
        attempt: c.attempt,
        worker: c.worker.clone(),
        started_at: c.started_at,
        finished_at: c.finished_at,
        outcome,
    };
    (decision, end)
}

/// Whether a worker that last sent a heartbeat at `last_heartbeat` is to be
/// declared lost at `now`, with the lease timeout `lease_ms`; and whether a
/// worker lost already is to be forgotten (`forget_after_ms` after its last
/// heartbeat), so the registry follows live workers, not history. A worker
/// in this process (`local`) is never lost.
pub fn worker_liveness(
    local: bool,
    lost: bool,
    last_heartbeat: Millis,
    now: Millis,
    lease_ms: i64,
    forget_after_ms: i64,
) -> Liveness {
    let silent = now - last_heartbeat;
    match (local, lost) {
        (true, _) => Liveness::Alive,
        (false, true) if silent > forget_after_ms => Liveness::Forget,
        (false, true) => Liveness::Lost,
        (false, false) if silent > lease_ms => Liveness::Lost,
        (false, false) => Liveness::Alive,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Missed its heartbeats: its attempts run again elsewhere.
    Lost,
    /// Lost long enough ago to leave the registry.
    Forget,
}

/// The end of an attempt whose worker was lost.
pub fn lost_attempt(invocation: crate::Id, attempt: u32, worker: &str, started_at: Millis, now: Millis) -> Completion {
    Completion {
        invocation,
        attempt,
        worker: worker.to_string(),
        started_at,
        finished_at: now,
        result: Err(Failure::new(FailureKind::Lost, format!("worker {worker} was lost"))),
        logs: Vec::new(),
        claim: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(kind: FailureKind) -> Failure {
        Failure::new(kind, "x")
    }

    #[test]
    fn success_finishes() {
        assert_eq!(on_attempt_end(&Ok(()), 1, 1, 0, Backoff::default()), Decision::Finish(InvocationState::Succeeded));
    }

    #[test]
    fn failures_retry_until_budget_then_finish() {
        let b = Backoff { base_ms: 100, max_ms: 1000 };
        let f = fail(FailureKind::Exit);
        assert_eq!(on_attempt_end(&Err(&f), 1, 3, 10, b), Decision::Retry { not_before: 110 });
        assert_eq!(on_attempt_end(&Err(&f), 2, 3, 10, b), Decision::Retry { not_before: 210 });
        assert_eq!(on_attempt_end(&Err(&f), 3, 3, 10, b), Decision::Finish(InvocationState::Failed));
        let t = fail(FailureKind::Timeout);
        assert_eq!(on_attempt_end(&Err(&t), 1, 1, 0, b), Decision::Finish(InvocationState::TimedOut));
    }

    #[test]
    fn backoff_is_capped() {
        let b = Backoff { base_ms: 100, max_ms: 1000 };
        assert_eq!(b.delay(1), 100);
        assert_eq!(b.delay(4), 800);
        assert_eq!(b.delay(5), 1000);
        assert_eq!(b.delay(500), 1000);
    }

    #[test]
    fn cancel_and_lost() {
        let c = fail(FailureKind::Cancelled);
        assert_eq!(on_attempt_end(&Err(&c), 1, 5, 0, Backoff::default()), Decision::Finish(InvocationState::Cancelled));
        let l = fail(FailureKind::Lost);
        assert_eq!(on_attempt_end(&Err(&l), 1, 1, 7, Backoff::default()), Decision::Retry { not_before: 7 });
        assert_eq!(on_attempt_end(&Err(&l), 4, 1, 7, Backoff::default()), Decision::Finish(InvocationState::Failed));
    }

    fn completion(result: Result<Vec<u8>, Failure>) -> Completion {
        Completion {
            invocation: crate::new_id(),
            attempt: 1,
            worker: "w".into(),
            started_at: 3,
            finished_at: 4,
            result,
            logs: b"l".to_vec(),
            claim: None,
        }
    }

    #[test]
    fn an_end_says_what_to_write() {
        let b = Backoff { base_ms: 100, max_ms: 1000 };
        let (d, end) = end_attempt(&completion(Ok(b"o".to_vec())), Ending::Reported, 3, 10, b);
        assert_eq!(d, Decision::Finish(InvocationState::Succeeded));
        assert!(
            matches!(end.outcome, EndOutcome::Finish { state: InvocationState::Succeeded, output: Some(ref o), .. } if o == b"o")
        );
        assert_eq!((end.started_at, end.finished_at, end.worker.as_str()), (3, 4, "w"));

        let failed = completion(Err(fail(FailureKind::Exit)));
        let (d, end) = end_attempt(&failed, Ending::Reported, 3, 10, b);
        assert_eq!(d, Decision::Retry { not_before: 110 });
        assert!(matches!(end.outcome, EndOutcome::Requeue { not_before: 110, .. }));

        let (d, end) = end_attempt(&failed, Ending::DeadLettered, 3, 10, b);
        assert_eq!(d, Decision::Finish(InvocationState::Failed), "a dead letter fails whatever the retries");
        assert!(matches!(end.outcome, EndOutcome::Finish { state: InvocationState::Failed, error: Some(_), .. }));
    }

    #[test]
    fn workers_are_lost_after_the_lease_and_forgotten_later() {
        assert_eq!(worker_liveness(false, false, 0, 100, 100, 1000), Liveness::Alive);
        assert_eq!(worker_liveness(false, false, 0, 101, 100, 1000), Liveness::Lost);
        assert_eq!(worker_liveness(true, false, 0, 5000, 100, 1000), Liveness::Alive, "a local worker is never lost");
        assert_eq!(worker_liveness(false, true, 0, 1000, 100, 1000), Liveness::Lost);
        assert_eq!(worker_liveness(false, true, 0, 1001, 100, 1000), Liveness::Forget);
        let c = lost_attempt(crate::new_id(), 2, "w1", 5, 9);
        assert_eq!(c.result.unwrap_err().kind, FailureKind::Lost);
    }
}
