//! What a job does next, decided from its counters alone.

use crate::{Job, JobState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDecision {
    /// Tasks are still queued or running.
    Wait,
    /// Every map task succeeded: start the reducer.
    StartReduce,
    /// The job is over, in this state, with this reason.
    Finish(JobState, Option<String>),
}

/// Decides from the counters of a job whose map tasks changed.
pub fn on_progress(job: &Job) -> JobDecision {
    if job.state != JobState::Running || job.done() < job.total {
        return JobDecision::Wait;
    }
    if job.cancelled > 0 {
        return JobDecision::Finish(JobState::Cancelled, None);
    }
    if job.failed > 0 {
        let why = format!("{} of {} tasks failed", job.failed, job.total);
        return JobDecision::Finish(JobState::Failed, Some(why));
    }
    if job.reduce_function.is_some() {
        JobDecision::StartReduce
    } else {
        JobDecision::Finish(JobState::Succeeded, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::new_id;

    fn job(total: u64, ok: u64, failed: u64, reduce: bool) -> Job {
        Job {
            id: new_id(),
            project: "p".into(),
            function: "f".into(),
            version: 1,
            reduce_function: reduce.then(|| "r".into()),
            reduce_version: reduce.then_some(1),
            state: JobState::Running,
            total,
            succeeded: ok,
            failed,
            cancelled: 0,
            created_at: 0,
            finished_at: None,
            reduce_invocation: None,
            error: None,
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(on_progress(&job(3, 2, 0, false)), JobDecision::Wait);
        assert_eq!(on_progress(&job(3, 3, 0, false)), JobDecision::Finish(JobState::Succeeded, None));
        assert_eq!(on_progress(&job(3, 3, 0, true)), JobDecision::StartReduce);
        assert!(matches!(on_progress(&job(3, 2, 1, true)), JobDecision::Finish(JobState::Failed, Some(_))));
        let mut reducing = job(3, 3, 0, true);
        reducing.state = JobState::Reducing;
        assert_eq!(on_progress(&reducing), JobDecision::Wait, "the reducer's end is decided elsewhere");
        let mut empty = job(0, 0, 0, false);
        empty.total = 0;
        assert_eq!(on_progress(&empty), JobDecision::Finish(JobState::Succeeded, None));
    }
}
