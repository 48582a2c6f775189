//! What happens when an attempt ends: the decision is data, computed here
//! without IO; the scheduler performs it.

use crate::clock::Millis;
use crate::{Failure, FailureKind, InvocationState};

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
}
