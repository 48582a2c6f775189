//! What a job does next, decided from its counters alone, and the change
//! sets that carry a job from one state to the next.

use crate::change::{ChangeSet, JobMove, JobUpdate, NewInvocation};
use crate::clock::Millis;
use crate::{Invocation, InvocationState, Job, JobState};

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

/// Ends a job whose map tasks are all done (see [`on_progress`]).
pub fn finish(job: &Job, state: JobState, error: Option<String>, now: Millis) -> ChangeSet {
    let update = JobUpdate { finished_at: Some(now), error, ..Default::default() };
    ChangeSet::move_job(JobMove { id: job.id, from: vec![JobState::Running], to: state, update })
}

/// Starts a job's reducer: inserts its invocation with the job's move to
/// `reducing`, only if the job is still running.
pub fn start_reduce(job: &Job, reducer: NewInvocation) -> ChangeSet {
    let update =
        JobUpdate { reduce_invocation: Some(reducer.invocation.id), insert: Some(reducer), ..Default::default() };
    ChangeSet::move_job(JobMove { id: job.id, from: vec![JobState::Running], to: JobState::Reducing, update })
}

/// Ends a job with its reducer, which finished as `reducer` says.
pub fn on_reducer_end(job: &Job, reducer: &Invocation, now: Millis) -> ChangeSet {
    let (state, error) = match reducer.state {
        InvocationState::Succeeded => (JobState::Succeeded, None),
        InvocationState::Cancelled => (JobState::Cancelled, None),
        s => (
            JobState::Failed,
            Some(format!("the reducer {s}: {}", reducer.error.as_ref().map(|e| e.message.as_str()).unwrap_or(""))),
        ),
    };
    let update = JobUpdate { finished_at: Some(now), error, ..Default::default() };
    ChangeSet::move_job(JobMove { id: job.id, from: vec![JobState::Reducing], to: state, update })
}

/// Fails a job whose reducer could not be started.
pub fn reduce_failed(job: &Job, why: String, now: Millis) -> ChangeSet {
    finish(job, JobState::Failed, Some(format!("cannot start the reducer: {why}")), now)
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

    #[test]
    fn moves_are_guarded_on_the_state_they_leave() {
        let j = job(3, 3, 0, true);
        let done = finish(&j, JobState::Succeeded, None, 9);
        assert_eq!((done.jobs[0].from.as_slice(), done.jobs[0].to), (&[JobState::Running][..], JobState::Succeeded));
        assert_eq!(done.jobs[0].update.finished_at, Some(9));

        let spec = crate::FunctionSpec {
            runtime: crate::Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Default::default(),
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        };
        let f = crate::Function { project: "p".into(), name: "r".into(), version: 1, spec, created_at: 0 };
        let mut reducer = crate::Invocation::queued(&f, 0, Some(j.id), None);
        let row = NewInvocation { invocation: reducer.clone(), input: b"1\n".to_vec(), partition: None };
        let start = start_reduce(&j, row);
        assert_eq!(start.jobs[0].to, JobState::Reducing);
        assert_eq!(start.jobs[0].update.reduce_invocation, Some(reducer.id));
        assert!(start.new.is_empty(), "the reducer goes in only with the move");
        assert!(start.jobs[0].update.insert.is_some());

        reducer.state = InvocationState::Failed;
        reducer.error = Some(crate::Failure::new(crate::FailureKind::Exit, "boom"));
        let end = on_reducer_end(&j, &reducer, 12);
        let m = &end.jobs[0];
        assert_eq!((m.from.as_slice(), m.to), (&[JobState::Reducing][..], JobState::Failed));
        assert_eq!(m.update.error.as_deref(), Some("the reducer failed: boom"));
        reducer.state = InvocationState::Succeeded;
        assert_eq!(on_reducer_end(&j, &reducer, 12).jobs[0].to, JobState::Succeeded);
        let failed = reduce_failed(&j, "gone".into(), 1);
        assert_eq!(failed.jobs[0].update.error.as_deref(), Some("cannot start the reducer: gone"));
    }
}
