//! The state store conformance suite. Every engine runs the same checks:
//! SQLite on a temporary file, PostgreSQL on a fresh schema of the server
//! named by `STRATUS_TEST_POSTGRES` (see `common`), which must be reachable.

mod common;
use common::{job, job_task, new_inv, spec};

use std::sync::Arc;
use stratus_core::{Failure, FailureKind, InvocationState};
use stratus_core::{Job, JobState};
use stratus_store::{
    AttemptEnd, AttemptStart, ChangeSet, EndOutcome, Event, EventChange, EventQuery, Firing, FunctionChange, JobMove,
    JobRows, JobUpdate, Lane, NewInvocation, Purge, StateStore, Trigger,
};

fn end(id: stratus_core::Id, attempt: u32, outcome: EndOutcome) -> AttemptEnd {
    AttemptEnd { id, attempt, worker: "w1".into(), started_at: 10, finished_at: 20, outcome }
}

fn finish_ok(out: &[u8]) -> EndOutcome {
    EndOutcome::Finish {
        state: InvocationState::Succeeded,
        output: Some(out.to_vec()),
        error: None,
        logs: b"log".to_vec(),
    }
}

async fn functions_are_versioned_and_deleted(s: Arc<dyn StateStore>) {
    let v1 = s.put_function("p", "f", &spec(), 1).await.unwrap();
    let v2 = s.put_function("p", "f", &spec(), 2).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    assert_eq!(s.get_function("p", "f", None).await.unwrap().unwrap().version, 2);
    assert_eq!(s.get_function("p", "f", Some(1)).await.unwrap().unwrap(), v1);
    assert!(s.get_function("other", "f", None).await.unwrap().is_none(), "projects are separate");
    s.put_function("p", "g", &spec(), 3).await.unwrap();
    let names: Vec<_> = s.list_functions("p").await.unwrap().into_iter().map(|f| (f.name, f.version)).collect();
    assert_eq!(names, [("f".to_string(), 2), ("g".to_string(), 1)]);
    assert!(s.delete_function("p", "f", 4).await.unwrap());
    assert!(!s.delete_function("p", "f", 5).await.unwrap());
    assert!(s.get_function("p", "f", None).await.unwrap().is_none());
    assert!(s.get_function("p", "f", Some(2)).await.unwrap().is_some(), "old versions stay readable");
    assert_eq!(s.put_function("p", "f", &spec(), 6).await.unwrap().version, 3, "versions are never reused");
}

/// An artifact is in use while a live function uses it, or a queued or
/// running invocation's function version does.
async fn artifacts_in_use_are_those_of_live_functions_and_pending_work(s: Arc<dyn StateStore>) {
    let with = |c: char| stratus_core::FunctionSpec { artifact: c.to_string().repeat(64), ..spec() };
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    s.put_function("p", "f", &with('a'), 1).await.unwrap();
    s.put_function("p", "g", &with('b'), 1).await.unwrap();
    assert_eq!(s.artifacts_in_use().await.unwrap(), [a.clone(), b.clone()].into_iter().collect());
    let pending = new_inv("g", 1, 1);
    s.insert_invocations(std::slice::from_ref(&pending)).await.unwrap();
    assert!(s.delete_function("p", "f", 2).await.unwrap());
    assert!(s.delete_function("p", "g", 2).await.unwrap());
    assert_eq!(s.artifacts_in_use().await.unwrap(), [b.clone()].into_iter().collect(), "g's invocation waits");
    let id = pending.invocation.id;
    let start = AttemptStart { id, attempt: 1, worker: "w1".into(), started_at: 10 };
    s.record(&[], &[start], &[end(id, 1, finish_ok(b"done"))]).await.unwrap();
    assert!(s.artifacts_in_use().await.unwrap().is_empty(), "nothing uses them now");
}

/// The payload budget's cutoff keeps the newest finished invocations whose
/// payloads fit, and empties the rest with an ordinary purge.
async fn payload_cutoffs_keep_the_newest_that_fit(s: Arc<dyn StateStore>) {
    // Ids are times: the ends come after the invocations were made.
    let news: Vec<NewInvocation> = (0..3).map(|i| new_inv("f", 1, i)).collect();
    s.insert_invocations(&news).await.unwrap();
    let t0 = stratus_core::Clock::now_ms(&stratus_core::SystemClock) + 1000;
    let ids: Vec<_> = news.iter().map(|n| n.invocation.id).collect();
    for (i, id) in ids.iter().enumerate() {
        let start = AttemptStart { id: *id, attempt: 1, worker: "w1".into(), started_at: 10 };
        let end = AttemptEnd { finished_at: t0 + i as i64, ..end(*id, 1, finish_ok(&[b'x'; 1000])) };
        s.record(&[], &[start], &[end]).await.unwrap();
    }
    // Each keeps 1000 bytes of output, 3 of logs and 7 of input.
    assert_eq!(s.payload_cutoff("p", 1_000_000).await.unwrap(), None, "all fit");
    assert_eq!(s.payload_cutoff("p", 2100).await.unwrap(), Some(t0 + 1), "the two newest fit");
    assert_eq!(s.payload_cutoff("p", 1500).await.unwrap(), Some(t0 + 2), "only the newest");
    assert_eq!(s.payload_cutoff("other", 1).await.unwrap(), None);
    let purge = Purge { project: "p".into(), function: None, finished_before: t0 + 2, made_since: None, at: t0 + 9 };
    s.commit(ChangeSet { purges: vec![purge], ..Default::default() }).await.unwrap();
    assert!(s.get_payloads("p", ids[1]).await.unwrap().unwrap().output.is_none(), "emptied");
    assert!(s.get_payloads("p", ids[2]).await.unwrap().unwrap().output.is_some(), "kept");
    assert_eq!(s.payload_cutoff("p", 1500).await.unwrap(), None, "what is emptied no longer counts");
}

async fn completions_are_recorded_once(s: Arc<dyn StateStore>) {
    let a = new_inv("f", 1, 100);
    let b = new_inv("f", 2, 101);
    s.insert_invocations(&[a.clone(), b.clone()]).await.unwrap();
    let (ia, ib) = (a.invocation.id, b.invocation.id);
    assert_eq!(s.get_invocation("p", ia).await.unwrap().unwrap().state, InvocationState::Queued);
    assert!(s.get_invocation("q", ia).await.unwrap().is_none(), "projects are separate");
    let mut limits = s.max_attempts(&[ib, stratus_core::new_id(), ia]).await.unwrap();
    limits.sort_by_key(|(id, _)| *id != ia);
    assert_eq!(limits, [(ia, 1), (ib, 2)], "unknown ids are left out");

    s.start_attempts(&[AttemptStart { id: ia, attempt: 1, worker: "w1".into(), started_at: 10 }]).await.unwrap();
    let running = s.get_invocation("p", ia).await.unwrap().unwrap();
    assert_eq!((running.state, running.attempts), (InvocationState::Running, 1));

    // Another worker's report of the attempt changes nothing.
    let forged = AttemptEnd { worker: "w2".into(), ..end(ia, 1, finish_ok(b"forged")) };
    assert_eq!(s.end_attempts(&[forged]).await.unwrap().applied, [false], "w1 holds the attempt");
    // First completion applies; a duplicate and a late one change nothing.
    assert_eq!(s.end_attempts(&[end(ia, 1, finish_ok(b"out"))]).await.unwrap().applied, [true]);
    assert_eq!(s.end_attempts(&[end(ia, 1, finish_ok(b"other"))]).await.unwrap().applied, [false]);
    let done = s.get_invocation("p", ia).await.unwrap().unwrap();
    assert_eq!(done.state, InvocationState::Succeeded);
    let p = s.get_payloads("p", ia).await.unwrap().unwrap();
    assert_eq!(p.output.as_deref(), Some(&b"out"[..]));
    assert_eq!(p.logs.as_deref(), Some(&b"log"[..]));
    let input = a.input.clone();
    assert_eq!(s.input_preview("p", ia, 3).await.unwrap(), Some((input[..3].to_vec(), input.len() as u64)));
    assert_eq!(s.input_preview("p", ia, 1000).await.unwrap(), Some((input.clone(), input.len() as u64)));
    assert_eq!(s.input_preview("q", ia, 3).await.unwrap(), None, "projects are separate");

    // An attempt started on the broker's pseudo-worker ends by whichever worker took it.
    let c = new_inv("f", 1, 102);
    s.insert_invocations(std::slice::from_ref(&c)).await.unwrap();
    let ic = c.invocation.id;
    let start = AttemptStart { id: ic, attempt: 1, worker: stratus_core::change::BROKER_WORKER.into(), started_at: 10 };
    s.start_attempts(&[start]).await.unwrap();
    let taken = AttemptEnd { worker: "w9".into(), ..end(ic, 1, finish_ok(b"brokered")) };
    assert_eq!(s.end_attempts(&[taken]).await.unwrap().applied, [true]);

    // Requeue, then a stale report of the first attempt, then the second attempt.
    let fail = Failure::new(FailureKind::Exit, "exit 1");
    let requeue = EndOutcome::Requeue { not_before: 500, error: fail.clone(), logs: vec![] };
    assert_eq!(
        s.end_attempts(&[end(ib, 1, requeue.clone())]).await.unwrap().applied,
        [true],
        "an end without a recorded start applies"
    );
    assert_eq!(
        s.end_attempts(&[end(ib, 1, requeue)]).await.unwrap().applied,
        [false],
        "the same attempt cannot end twice"
    );
    let q = s.queued(None, 10).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].invocation.id, q[0].not_before, q[0].invocation.attempts), (ib, 500, 1));
    let last = EndOutcome::Finish { state: InvocationState::Failed, output: None, error: Some(fail), logs: vec![] };
    assert_eq!(s.end_attempts(&[end(ib, 2, last)]).await.unwrap().applied, [true]);
    let failed = s.get_invocation("p", ib).await.unwrap().unwrap();
    assert_eq!((failed.state, failed.attempts), (InvocationState::Failed, 2));
    assert_eq!(failed.error.unwrap().message, "exit 1");
    let history = s.list_attempts(ib).await.unwrap();
    assert_eq!(
        history.iter().map(|a| (a.attempt, a.state)).collect::<Vec<_>>(),
        [(1, InvocationState::Failed), (2, InvocationState::Failed)]
    );
}

/// Writes made after an ordered insert returns apply to its rows, whether
/// or not the insert has committed yet; the commit then resolves.
async fn ordered_inserts_come_before_later_writes(s: Arc<dyn StateStore>) {
    let batch: Vec<_> = (0..50).map(|i| new_inv("f", 1, 1000 + i)).collect();
    let ids: Vec<_> = batch.iter().map(|n| n.invocation.id).collect();
    let committed = s.insert_invocations_ordered(batch).await.unwrap();
    let starts: Vec<_> =
        ids.iter().map(|&id| AttemptStart { id, attempt: 1, worker: "w1".into(), started_at: 5 }).collect();
    s.start_attempts(&starts).await.unwrap();
    let ends: Vec<_> = ids.iter().map(|&id| end(id, 1, finish_ok(b"early"))).collect();
    let report = s.end_attempts(&ends).await.unwrap();
    committed.await.unwrap();
    assert_eq!(report.applied, vec![true; 50], "every end found its row");
    for id in ids {
        assert_eq!(s.get_invocation("p", id).await.unwrap().unwrap().state, InvocationState::Succeeded);
    }
    // An empty batch is fine too.
    s.insert_invocations_ordered(Vec::new()).await.unwrap().await.unwrap();
}

/// An invocation written with its start and end in one call reads back as
/// if each had been written on its own; the call can be made again.
async fn inserts_starts_and_ends_are_recorded_together(s: Arc<dyn StateStore>) {
    let a = new_inv("f", 1, 100);
    let b = new_inv("f", 2, 101);
    let (ia, ib) = (a.invocation.id, b.invocation.id);
    let start = |id| AttemptStart { id, attempt: 1, worker: "w1".into(), started_at: 10 };
    let report = s.record(&[a.clone(), b.clone()], &[start(ia), start(ib)], &[end(ia, 1, finish_ok(b"out"))]).await;
    assert_eq!(report.unwrap().applied, [true]);
    let done = s.get_invocation("p", ia).await.unwrap().unwrap();
    assert_eq!((done.state, done.attempts, done.worker.as_deref()), (InvocationState::Succeeded, 1, Some("w1")));
    assert_eq!(s.get_payloads("p", ia).await.unwrap().unwrap().output.as_deref(), Some(&b"out"[..]));
    assert_eq!(s.list_attempts(ia).await.unwrap().len(), 1);
    let running = s.get_invocation("p", ib).await.unwrap().unwrap();
    assert_eq!((running.state, running.attempts), (InvocationState::Running, 1));

    // Made again (as after a failure whose commit went through): the rows
    // stored are kept, not reset to queued, and the end does not apply twice.
    let again = s.record(std::slice::from_ref(&a), &[start(ia)], &[end(ia, 1, finish_ok(b"again"))]).await.unwrap();
    assert_eq!(again.applied, [false]);
    assert_eq!(s.get_invocation("p", ia).await.unwrap().unwrap().state, InvocationState::Succeeded);
    assert_eq!(s.get_payloads("p", ia).await.unwrap().unwrap().output.as_deref(), Some(&b"out"[..]));

    // Nothing to write is fine, and so is an end alone.
    assert!(s.record(&[], &[], &[]).await.unwrap().applied.is_empty());
    assert_eq!(s.record(&[], &[], &[end(ib, 1, finish_ok(b"b"))]).await.unwrap().applied, [true]);
    assert!(s.queued(None, 10).await.unwrap().is_empty(), "nothing is left queued");

    // An invocation written with its end (no start) reads back exactly as
    // one written in three steps: the same row, payloads and attempt.
    let (c, d) = (new_inv("f", 1, 102), new_inv("f", 1, 102));
    let (ic, id) = (c.invocation.id, d.invocation.id);
    let failed = EndOutcome::Finish {
        state: InvocationState::Failed,
        output: None,
        error: Some(Failure::new(FailureKind::Exit, "exited with status 3")),
        logs: b"bad".to_vec(),
    };
    s.insert_invocations(std::slice::from_ref(&c)).await.unwrap();
    s.start_attempts(&[start(ic)]).await.unwrap();
    assert_eq!(s.end_attempts(&[end(ic, 1, failed.clone())]).await.unwrap().applied, [true]);
    let twice = [end(id, 1, failed), end(id, 1, finish_ok(b"late"))];
    let report = s.record(std::slice::from_ref(&d), &[], &twice).await.unwrap();
    assert_eq!(report.applied, [true, false], "the same end twice in one batch applies once");
    let (step, once) =
        (s.get_invocation("p", ic).await.unwrap().unwrap(), s.get_invocation("p", id).await.unwrap().unwrap());
    assert_eq!(stratus_core::Invocation { id: ic, ..once }, step);
    let (pc, pd) = (s.get_payloads("p", ic).await.unwrap().unwrap(), s.get_payloads("p", id).await.unwrap().unwrap());
    assert_eq!((pd.output, pd.logs.as_deref()), (pc.output, Some(&b"bad"[..])));
    assert_eq!(s.list_attempts(id).await.unwrap(), s.list_attempts(ic).await.unwrap());

    // A failed attempt that will be retried leaves its new row queued.
    let e = new_inv("f", 2, 103);
    let retry = EndOutcome::Requeue { not_before: 50, error: Failure::new(FailureKind::Exit, "x"), logs: Vec::new() };
    assert_eq!(
        s.record(std::slice::from_ref(&e), &[], &[end(e.invocation.id, 1, retry)]).await.unwrap().applied,
        [true]
    );
    let back = s.get_invocation("p", e.invocation.id).await.unwrap().unwrap();
    assert_eq!((back.state, back.attempts, back.finished_at), (InvocationState::Queued, 1, None));
    let queued: Vec<_> = s.queued(None, 10).await.unwrap().into_iter().map(|p| p.invocation.id).collect();
    assert_eq!(queued, [e.invocation.id]);
}

async fn restart_requeues_running_and_pages_the_queue(s: Arc<dyn StateStore>) {
    let news: Vec<_> = (0..25).map(|i| new_inv("f", 1, i)).collect();
    s.insert_invocations(&news).await.unwrap();
    let starts: Vec<_> = news[..3]
        .iter()
        .map(|n| AttemptStart { id: n.invocation.id, attempt: 1, worker: "w".into(), started_at: 1 })
        .collect();
    s.start_attempts(&starts).await.unwrap();
    assert_eq!(s.queued(None, 100).await.unwrap().len(), 22);
    assert_eq!(s.requeue_running().await.unwrap(), 3);
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.queued(after, 10).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.invocation.id);
        seen.extend(page.into_iter().map(|p| (p.invocation.id, p.input)));
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(
        seen,
        news.iter().map(|n| (n.invocation.id, n.input.clone())).collect::<Vec<_>>(),
        "id order, inputs intact"
    );
    let listed = s.list_invocations("p", Some("f"), None, 5).await.unwrap();
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[0].id, news[24].invocation.id, "newest first");
    let next = s.list_invocations("p", Some("f"), Some(listed[4].id), 100).await.unwrap();
    assert_eq!(next.len(), 20);
    let counts = s.count_by_state().await.unwrap();
    assert_eq!(counts, [(InvocationState::Queued, 25)]);
}

async fn jobs_count_results_and_cancel(s: Arc<dyn StateStore>) {
    // A job streamed in batches; nothing is visible before the commit.
    let j = job(1);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let tasks: Vec<_> = (0..10).map(|i| job_task(&j, i)).collect();
    let sender = {
        let tasks = tasks.clone();
        tokio::spawn(async move {
            for chunk in tasks.chunks(4) {
                tx.send(JobRows::Rows(chunk.to_vec())).await.unwrap();
            }
            tx.send(JobRows::Commit).await.unwrap();
        })
    };
    let created = s.create_job(&j, rx).await.unwrap();
    sender.await.unwrap();
    assert_eq!(created.total, 10);
    assert_eq!(s.get_job("p", j.id).await.unwrap().unwrap().total, 10);
    assert!(s.get_job("other", j.id).await.unwrap().is_none());

    // An aborted job leaves nothing.
    let k = job(2);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tx.send(JobRows::Rows(vec![job_task(&k, 0)])).await.unwrap();
    tx.send(JobRows::Abort("bad line 2".into())).await.unwrap();
    assert!(s.create_job(&k, rx).await.is_err());
    assert!(s.get_job("p", k.id).await.unwrap().is_none());
    assert_eq!(s.queued(None, 100).await.unwrap().len(), 10);

    // Counters move exactly once per task.
    let ok = |i: usize| end(tasks[i].invocation.id, 1, finish_ok(format!("out-{i}").as_bytes()));
    let report = s.end_attempts(&[ok(3), ok(1), ok(3)]).await.unwrap();
    assert_eq!(report.applied, [true, true, false]);
    assert_eq!(report.jobs.len(), 1);
    assert_eq!((report.jobs[0].succeeded, report.jobs[0].failed), (2, 0));
    let failed = EndOutcome::Finish {
        state: InvocationState::Failed,
        output: None,
        error: Some(Failure::new(FailureKind::Exit, "x")),
        logs: vec![],
    };
    let report = s.end_attempts(&[end(tasks[0].invocation.id, 1, failed)]).await.unwrap();
    assert_eq!((report.jobs[0].succeeded, report.jobs[0].failed), (2, 1));

    let results = s.job_results(j.id, 0, 3).await.unwrap();
    assert_eq!(results.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2], "input order");
    assert_eq!(results[1].output.as_deref(), Some(&b"out-1"[..]));
    assert_eq!(results[0].state, InvocationState::Failed);
    assert_eq!(results[2].state, InvocationState::Queued);
    assert_eq!(s.job_results(j.id, 8, 100).await.unwrap().len(), 2);

    // Cancel: the 7 queued tasks are cancelled, the finished ones stay.
    assert_eq!(s.cancel_job(j.id, 9).await.unwrap(), 7);
    let after = s.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((after.state, after.cancelled, after.done()), (JobState::Cancelled, 7, 10));
    assert!(s.queued(None, 100).await.unwrap().is_empty());

    // State moves are guarded.
    let update = JobUpdate { finished_at: Some(10), ..Default::default() };
    assert!(!s.set_job_state(j.id, &[JobState::Running], JobState::Succeeded, update.clone()).await.unwrap());
    assert!(s.set_job_state(j.id, &[JobState::Cancelled], JobState::Cancelled, update).await.unwrap());
}

/// Sends `tasks` to `create_job` in batches of the given sizes, then commits.
async fn stream_job(s: &Arc<dyn StateStore>, j: &Job, tasks: Vec<NewInvocation>, sizes: &[usize]) -> Job {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sizes = sizes.to_vec();
    let sender = tokio::spawn(async move {
        let mut rest = tasks;
        for size in sizes.into_iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let tail = rest.split_off(size.min(rest.len()));
            tx.send(JobRows::Rows(std::mem::replace(&mut rest, tail))).await.unwrap();
        }
        tx.send(JobRows::Commit).await.unwrap();
    });
    let created = s.create_job(j, rx).await.unwrap();
    sender.await.unwrap();
    created
}

async fn large_jobs_stream_and_reduce(s: Arc<dyn StateStore>) {
    const N: u64 = 20_000;
    let mut j = job(1);
    j.reduce_function = Some("r".into());
    j.reduce_version = Some(1);
    let tasks: Vec<_> = (0..N).map(|i| job_task(&j, i)).collect();
    let created = stream_job(&s, &j, tasks.clone(), &[1, 999, 5_000, 3_000]).await;
    assert_eq!(created.total, N);
    assert_eq!(s.count_by_state().await.unwrap(), [(InvocationState::Queued, N)]);
    assert!(s.queued_in(Some(Lane::Direct), None, None, 10).await.unwrap().is_empty(), "tasks are not direct work");
    assert_eq!(s.queued_projects(Lane::Tasks).await.unwrap(), [j.project.clone()]);
    assert!(s.queued_projects(Lane::Direct).await.unwrap().is_empty());
    let other = s.queued_in(Some(Lane::Tasks), Some("another-project"), None, 10).await.unwrap();
    assert!(other.is_empty(), "a project's page holds only its rows");

    // Page the tasks lane; inputs come back intact, in id (= index) order.
    let (mut after, mut seen) = (None, 0u64);
    loop {
        let page = s.queued_in(Some(Lane::Tasks), Some(&j.project), after, 4_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.invocation.id);
        for p in &page {
            assert_eq!(p.invocation.task_index, Some(seen));
            assert_eq!(p.input, tasks[seen as usize].input);
            seen += 1;
        }
    }
    assert_eq!(seen, N);

    // Every task ends in batches of 32 (a tenth fail); the counters follow.
    let fail = Failure::new(FailureKind::Exit, "x");
    let mut last = None;
    for chunk in tasks.chunks(32) {
        let ends: Vec<_> = chunk
            .iter()
            .map(|t| {
                let i = t.invocation.task_index.unwrap();
                let outcome = if i % 10 == 0 {
                    EndOutcome::Finish {
                        state: InvocationState::Failed,
                        output: None,
                        error: Some(fail.clone()),
                        logs: vec![],
                    }
                } else {
                    finish_ok(&i.to_be_bytes())
                };
                end(t.invocation.id, 1, outcome)
            })
            .collect();
        let report = s.end_attempts(&ends).await.unwrap();
        assert!(report.applied.iter().all(|a| *a));
        last = report.jobs.into_iter().next();
    }
    let last = last.unwrap();
    assert_eq!((last.succeeded, last.failed, last.done()), (N - N / 10, N / 10, N));
    let results = s.job_results(j.id, N - 2, 10).await.unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1].output.as_deref(), Some(&(N - 1).to_be_bytes()[..]));

    // The reducer is inserted with the move to reducing, and only once.
    let reducer = new_inv("r", 1, 2);
    let update = JobUpdate {
        reduce_invocation: Some(reducer.invocation.id),
        insert: Some(reducer.clone()),
        ..Default::default()
    };
    assert!(s.set_job_state(j.id, &[JobState::Running], JobState::Reducing, update.clone()).await.unwrap());
    assert!(!s.set_job_state(j.id, &[JobState::Running], JobState::Reducing, update).await.unwrap());
    let direct = s.queued_in(Some(Lane::Direct), None, None, 10).await.unwrap();
    assert_eq!(direct.iter().map(|p| p.invocation.id).collect::<Vec<_>>(), [reducer.invocation.id]);
    let now = s.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((now.state, now.reduce_invocation), (JobState::Reducing, Some(reducer.invocation.id)));
    assert_eq!(s.active_jobs().await.unwrap().len(), 1);
    let done = JobUpdate { finished_at: Some(3), ..Default::default() };
    assert!(s.set_job_state(j.id, &[JobState::Reducing], JobState::Succeeded, done).await.unwrap());
    assert!(s.active_jobs().await.unwrap().is_empty());
    let listed = s.list_jobs("p", None, 10).await.unwrap();
    assert_eq!((listed.len(), listed[0].finished_at), (1, Some(3)));
}

async fn end_batches_apply_in_order(s: Arc<dyn StateStore>) {
    // Two jobs and a direct invocation ended in one batch, with the same
    // invocation twice: a requeue and then its next attempt.
    let (j1, j2) = (job(1), job(2));
    let t1: Vec<_> = (0..3).map(|i| job_task(&j1, i)).collect();
    let t2: Vec<_> = (0..2).map(|i| job_task(&j2, i)).collect();
    stream_job(&s, &j1, t1.clone(), &[3]).await;
    stream_job(&s, &j2, t2.clone(), &[2]).await;
    let direct = new_inv("f", 2, 5);
    s.insert_invocations(std::slice::from_ref(&direct)).await.unwrap();
    let d = direct.invocation.id;
    s.start_attempts(&[
        AttemptStart { id: d, attempt: 1, worker: "w1".into(), started_at: 1 },
        AttemptStart { id: d, attempt: 7, worker: "w2".into(), started_at: 2 },
    ])
    .await
    .unwrap();
    let started = s.get_invocation("p", d).await.unwrap().unwrap();
    assert_eq!((started.attempts, started.worker.as_deref()), (1, Some("w1")), "the first start of a batch counts");

    let requeue =
        EndOutcome::Requeue { not_before: 50, error: Failure::new(FailureKind::Timeout, "slow"), logs: vec![] };
    let cancelled = EndOutcome::Finish {
        state: InvocationState::Cancelled,
        output: None,
        error: Some(Failure::new(FailureKind::Cancelled, "c")),
        logs: vec![],
    };
    let report = s
        .end_attempts(&[
            end(t2[0].invocation.id, 1, finish_ok(b"a")),
            end(d, 1, requeue),
            end(t1[0].invocation.id, 1, cancelled),
            end(d, 2, finish_ok(b"d")),
            end(t2[0].invocation.id, 1, finish_ok(b"again")),
            end(t1[1].invocation.id, 1, finish_ok(b"b")),
            end(d, 2, finish_ok(b"late")),
        ])
        .await
        .unwrap();
    assert_eq!(report.applied, [true, true, true, true, false, true, false]);
    let jobs: Vec<_> = report.jobs.iter().map(|j| (j.id, j.succeeded, j.failed, j.cancelled)).collect();
    assert_eq!(jobs, [(j2.id, 1, 0, 0), (j1.id, 1, 0, 1)], "jobs in the order the batch first touched them");
    let inv = s.get_invocation("p", d).await.unwrap().unwrap();
    assert_eq!((inv.state, inv.attempts), (InvocationState::Succeeded, 2));
    assert_eq!(s.get_payloads("p", d).await.unwrap().unwrap().output.as_deref(), Some(&b"d"[..]));
    let history: Vec<_> = s.list_attempts(d).await.unwrap().into_iter().map(|a| (a.attempt, a.state)).collect();
    assert_eq!(history, [(1, InvocationState::TimedOut), (2, InvocationState::Succeeded)]);
    assert_eq!(s.get_payloads("p", t2[0].invocation.id).await.unwrap().unwrap().output.as_deref(), Some(&b"a"[..]));
    assert!(s.end_attempts(&[]).await.unwrap().applied.is_empty());
    s.start_attempts(&[]).await.unwrap();
    s.insert_invocations(&[]).await.unwrap();
}

/// A change set is one transaction: when one of its parts fails, none of
/// it is kept; when all apply, the ends, their job's counters and the job's
/// move land together. Also the guard: ends and moves applied once only.
async fn change_sets_commit_whole_or_not_at_all(s: Arc<dyn StateStore>) {
    let j = job(1);
    let task = job_task(&j, 0);
    let j = stream_job(&s, &j, vec![task.clone()], &[1]).await;
    let other = new_inv("f", 1, 2);
    let start = |id| AttemptStart { id, attempt: 1, worker: "w1".into(), started_at: 10 };
    s.commit(ChangeSet { new: vec![other.clone()], starts: vec![start(task.invocation.id)], ..Default::default() })
        .await
        .unwrap();
    let (it, io) = (task.invocation.id, other.invocation.id);

    // The task's end and the job's move, with an insert that cannot be
    // made (its id is taken): the whole set fails, the end included.
    let mut clash = new_inv("f", 1, 3);
    clash.invocation.id = io;
    let finish = |insert| JobMove {
        id: j.id,
        from: vec![JobState::Running],
        to: JobState::Reducing,
        update: JobUpdate { reduce_invocation: Some(io), insert, ..Default::default() },
    };
    let put = FunctionChange::Put { project: "p".into(), name: "g".into(), spec: spec(), at: 5 };
    let failing = ChangeSet {
        functions: vec![put],
        starts: vec![start(io)],
        ends: vec![end(it, 1, finish_ok(b"out"))],
        jobs: vec![finish(Some(clash))],
        ..Default::default()
    };
    assert!(s.commit(failing).await.is_err(), "an insert over a stored id fails the set");
    let task_now = s.get_invocation("p", it).await.unwrap().unwrap();
    assert_eq!(task_now.state, InvocationState::Running, "the end was rolled back");
    assert_eq!(s.get_invocation("p", io).await.unwrap().unwrap().state, InvocationState::Queued, "so was the start");
    let job_now = s.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((job_now.state, job_now.succeeded), (JobState::Running, 0), "and the counters");
    assert!(s.get_function("p", "g", None).await.unwrap().is_none(), "and the function's version");

    // The same without the clash: everything lands, once.
    let ok = ChangeSet {
        starts: vec![start(io)],
        ends: vec![end(it, 1, finish_ok(b"out"))],
        jobs: vec![finish(None)],
        ..Default::default()
    };
    let report = s.commit(ok.clone()).await.unwrap();
    assert_eq!((report.applied, report.moved), (vec![true], vec![true]));
    assert_eq!(report.jobs.iter().map(|j| j.succeeded).collect::<Vec<_>>(), [1], "counters as after the commit");
    let job_now = s.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((job_now.state, job_now.succeeded, job_now.reduce_invocation), (JobState::Reducing, 1, Some(io)));
    assert_eq!(s.get_invocation("p", io).await.unwrap().unwrap().state, InvocationState::Running);
    let again = s.commit(ok).await.unwrap();
    assert_eq!((again.applied, again.moved), (vec![false], vec![false]), "a second commit changes nothing");
    assert_eq!(s.get_job("p", j.id).await.unwrap().unwrap().succeeded, 1);
    assert!(s.commit(ChangeSet::default()).await.unwrap().applied.is_empty());
}

/// What every engine answers about leadership: a server leads and renews;
/// once it resigns, another leads. (Only PostgreSQL can be shared, so a
/// second server standing by is checked in `tests/postgres.rs`.)
async fn a_server_leads_renews_and_resigns(s: Arc<dyn StateStore>) {
    use stratus_store::Seat;
    let seat =
        |url: &str| Seat { server: stratus_core::new_id(), url: url.into(), incarnation: stratus_core::new_id() };
    let (a, b) = (seat("http://a"), seat("http://b"));
    let lease = std::time::Duration::from_secs(30);
    assert_eq!(s.lead(&a, lease, true).await.unwrap(), None, "nobody led: a leads");
    assert_eq!(s.lead(&a, lease, false).await.unwrap(), None, "a renews");
    s.resign(&a).await.unwrap();
    assert_eq!(s.lead(&b, lease, false).await.unwrap(), None, "after a resigned, b leads at once");
    s.resign(&a).await.unwrap();
    assert_eq!(s.lead(&b, lease, false).await.unwrap(), None, "a resigning again does not unseat b");
}

/// Variables and secrets: versions count up, a secret's put is guarded by
/// the version it was sealed for, a reseal keeps the version, and deleting
/// the project deletes both. The stored secret is only what was sealed.
async fn variables_and_secrets_are_versioned(s: Arc<dyn StateStore>) {
    use stratus_core::settings::{SecretKey, StoredSecret, Variable};
    use stratus_core::trust::{Project, TrustChange};
    let apply = |changes: Vec<TrustChange>| {
        let s = s.clone();
        async move { s.commit(ChangeSet { trust: changes, ..Default::default() }).await.unwrap().trust }
    };
    let p = TrustChange::CreateProject(Project { name: "p".into(), created_at: 1, quotas: Default::default() });
    apply(vec![p]).await;
    let var = |value: &str, at: i64| Variable {
        name: "API_URL".into(),
        value: value.into(),
        json: false,
        version: 0,
        updated_at: at,
        updated_by: "dev".into(),
    };
    let put = |project: &str, v: Variable| TrustChange::PutVariable { project: project.into(), variable: v };
    assert_eq!(
        apply(vec![put("p", var("a", 2)), put("p", var("b", 3)), put("gone", var("x", 3))]).await,
        [true, true, false]
    );
    let vars = s.variables("p").await.unwrap();
    assert_eq!((vars.len(), vars[0].value.as_str(), vars[0].version, vars[0].updated_at), (1, "b", 2, 3));
    assert!(s.variables("other").await.unwrap().is_empty());

    let key = SecretKey::random();
    let secret = |version: u64, value: &[u8]| StoredSecret {
        name: "db".into(),
        version,
        created_at: 4,
        updated_at: 4 + version as i64,
        updated_by: "dev".into(),
        sealed: key.seal("p", "db", version, value),
    };
    let put = |v: u64, value: &[u8]| TrustChange::PutSecret { project: "p".into(), secret: secret(v, value) };
    assert_eq!(
        apply(vec![put(1, b"one"), put(1, b"uno"), put(3, b"three"), put(2, b"two")]).await,
        [true, false, false, true]
    );
    let stored = s.secrets(Some("p")).await.unwrap();
    assert_eq!(stored.len(), 1);
    let (project, got) = &stored[0];
    assert_eq!((project.as_str(), got.version, got.created_at, got.updated_at), ("p", 2, 4, 6));
    assert_eq!(key.open("p", "db", 2, &got.sealed).unwrap(), b"two");

    let new_key = SecretKey::random();
    let reseal = |version: u64| TrustChange::Reseal {
        project: "p".into(),
        name: "db".into(),
        version,
        sealed: new_key.seal("p", "db", version, b"two"),
    };
    assert_eq!(apply(vec![reseal(1), reseal(2)]).await, [false, true], "only at the version it read");
    let (_, got) = &s.secrets(None).await.unwrap()[0];
    assert_eq!((got.version, got.sealed.key_id.as_str()), (2, new_key.id()));
    assert_eq!(new_key.open("p", "db", 2, &got.sealed).unwrap(), b"two");

    let del = TrustChange::DeleteSecret { project: "p".into(), name: "db".into() };
    assert_eq!(apply(vec![del.clone(), del]).await, [true, false]);
    assert_eq!(apply(vec![put(1, b"again")]).await, [true], "a deleted secret starts again at 1");
    apply(vec![TrustChange::DeleteProject { name: "p".into(), at: 9 }]).await;
    assert!(s.variables("p").await.unwrap().is_empty() && s.secrets(None).await.unwrap().is_empty());
}

/// Concurrency limits are set, reset and deleted as their guards say, and
/// go with their project; a call's tags are kept with its invocation,
/// whichever way it is written (one by one, or streamed with a job).
async fn limits_and_call_tags_are_kept(s: Arc<dyn StateStore>) {
    use stratus_core::settings::TagLimit;
    use stratus_core::trust::{Project, TrustChange};
    let apply = |changes: Vec<TrustChange>| {
        let s = s.clone();
        async move { s.commit(ChangeSet { trust: changes, ..Default::default() }).await.unwrap().trust }
    };
    let p = TrustChange::CreateProject(Project { name: "p".into(), created_at: 1, quotas: Default::default() });
    apply(vec![p]).await;
    let limit = |slots: u32, at: i64| TagLimit {
        tag: "db:write".into(),
        slots,
        updated_at: at,
        updated_by: "dev".into(),
        reset_at: None,
    };
    let put = |project: &str, l: TagLimit| TrustChange::PutLimit { project: project.into(), limit: l };
    assert_eq!(
        apply(vec![put("p", limit(3, 2)), put("p", limit(0, 3)), put("gone", limit(1, 3))]).await,
        [true, true, false]
    );
    let reset = |at: i64| TrustChange::ResetLimit { project: "p".into(), tag: "db:write".into(), at };
    assert_eq!(apply(vec![reset(4)]).await, [true]);
    let stored = s.limits(None).await.unwrap();
    assert_eq!(stored, [("p".to_string(), TagLimit { reset_at: Some(4), ..limit(0, 3) })]);
    assert!(s.limits(Some("other")).await.unwrap().is_empty());
    let del = TrustChange::DeleteLimit { project: "p".into(), tag: "db:write".into() };
    assert_eq!(apply(vec![del.clone(), del, reset(5)]).await, [true, false, false], "a reset needs the limit");
    apply(vec![put("p", limit(1, 6))]).await;
    apply(vec![TrustChange::DeleteProject { name: "p".into(), at: 9 }]).await;
    assert!(s.limits(None).await.unwrap().is_empty(), "gone with its project");

    let tags = vec!["db:write".to_string(), "gpu".to_string()];
    let mut one = new_inv("f", 1, 1);
    one.invocation.tags = tags.clone();
    let plain = new_inv("f", 1, 2);
    s.insert_invocations(&[one.clone(), plain.clone()]).await.unwrap();
    let got = s.get_invocation("p", one.invocation.id).await.unwrap().unwrap();
    assert_eq!(got.tags, tags);
    assert!(s.get_invocation("p", plain.invocation.id).await.unwrap().unwrap().tags.is_empty());
    let j = job(3);
    let mut tasks: Vec<_> = (0..3).map(|i| job_task(&j, i)).collect();
    for t in &mut tasks {
        t.invocation.tags = vec!["gpu".into()];
    }
    stream_job(&s, &j, tasks, &[2]).await;
    let queued = s.queued(None, 100).await.unwrap();
    let seen: Vec<Vec<String>> = queued.iter().map(|p| p.invocation.tags.clone()).collect();
    assert_eq!(seen, [tags, vec![], vec!["gpu".to_string()], vec!["gpu".to_string()], vec!["gpu".to_string()]]);
}

/// Python environments: set (again) while the project lives, listed by
/// project, deleted once, and gone with their project.
async fn pyenvs_are_kept_per_project(s: Arc<dyn StateStore>) {
    use stratus_core::pyenv::PyEnv;
    use stratus_core::trust::{Project, TrustChange};
    let apply = |changes: Vec<TrustChange>| {
        let s = s.clone();
        async move { s.commit(ChangeSet { trust: changes, ..Default::default() }).await.unwrap().trust }
    };
    for name in ["p", "q"] {
        apply(vec![TrustChange::CreateProject(Project {
            name: name.into(),
            created_at: 1,
            quotas: Default::default(),
        })])
        .await;
    }
    let env = |name: &str, req: &str, python: Option<&str>| PyEnv {
        name: name.into(),
        python: python.map(str::to_string),
        requirements: req.into(),
        updated_at: 2,
        updated_by: "dev".into(),
    };
    let put = |project: &str, e: PyEnv| TrustChange::PutPyEnv { project: project.into(), env: e };
    assert_eq!(
        apply(vec![
            put("p", env("sci", "numpy\n", None)),
            put("p", env("sci", "numpy==2.1.3\n", Some("3.11"))),
            put("q", env("sci", "six\n", None)),
            put("gone", env("x", "six\n", None)),
        ])
        .await,
        [true, true, true, false]
    );
    assert_eq!(s.pyenvs(Some("p")).await.unwrap(), [("p".to_string(), env("sci", "numpy==2.1.3\n", Some("3.11")))]);
    assert_eq!(s.pyenvs(None).await.unwrap().len(), 2);
    let del = TrustChange::DeletePyEnv { project: "p".into(), name: "sci".into() };
    assert_eq!(apply(vec![del.clone(), del]).await, [true, false]);
    assert!(s.pyenvs(Some("p")).await.unwrap().is_empty());
    apply(vec![TrustChange::DeleteProject { name: "q".into(), at: 9 }]).await;
    assert!(s.pyenvs(None).await.unwrap().is_empty(), "gone with its project");
}

/// Projects and tokens: each change applies at most once, as its guard says,
/// and is kept with its audit entry.
async fn projects_and_tokens_apply_once(s: Arc<dyn StateStore>) {
    use stratus_core::trust::{AuditEntry, Project, Role, Token, TrustChange};
    let token = |name: &str, project: &str, role: Role| Token {
        hash: stratus_core::trust::hash_token(name),
        name: name.into(),
        project: project.into(),
        role,
        created_at: 5,
        created_by: "-".into(),
        expires_at: Some(99),
        revoked_at: None,
    };
    let audit = |at: i64, project: &str, action: &str| AuditEntry {
        id: stratus_core::new_id(),
        at,
        actor: "admin".into(),
        project: project.into(),
        action: action.into(),
        target: "x".into(),
    };
    let apply = |changes: Vec<TrustChange>, audit: Vec<AuditEntry>| {
        let s = s.clone();
        async move { s.commit(ChangeSet { trust: changes, audit, ..Default::default() }).await.unwrap().trust }
    };
    let loaded = s.trust().await.unwrap();
    assert_eq!(loaded.projects.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["default"]);
    assert!(loaded.tokens.is_empty());

    let first = TrustChange::PutToken { token: token("admin", "default", Role::Admin), first: true };
    assert_eq!(apply(vec![first.clone()], vec![audit(1, "default", "token.create")]).await, [true]);
    let again = TrustChange::PutToken { token: token("admin2", "default", Role::Admin), first: true };
    assert_eq!(apply(vec![again], vec![]).await, [false], "only one first token, ever");

    let a = TrustChange::CreateProject(Project { name: "a".into(), created_at: 2, quotas: Default::default() });
    assert_eq!(apply(vec![a.clone(), a], vec![audit(2, "a", "project.create")]).await, [true, false]);
    let dev = TrustChange::PutToken { token: token("dev", "a", Role::Developer), first: false };
    let nowhere = TrustChange::PutToken { token: token("lost", "nowhere", Role::Reader), first: false };
    let worker = TrustChange::PutToken { token: token("w", "", Role::Worker), first: false };
    let clash = TrustChange::PutToken { token: token("dev2", "a", Role::Developer), first: false };
    let clash = match clash {
        TrustChange::PutToken { mut token, first } => {
            token.name = "dev".into();
            TrustChange::PutToken { token, first }
        }
        other => other,
    };
    assert_eq!(apply(vec![dev, nowhere, worker, clash], vec![]).await, [true, false, true, false]);
    let loaded = s.trust().await.unwrap();
    let mut names: Vec<_> = loaded.tokens.iter().map(|t| (t.name.as_str(), t.role, t.expires_at)).collect();
    names.sort_by_key(|n| n.0);
    assert_eq!(
        names,
        [("admin", Role::Admin, Some(99)), ("dev", Role::Developer, Some(99)), ("w", Role::Worker, Some(99))]
    );
    assert_eq!(loaded.tokens[0].hash, stratus_core::trust::hash_token(loaded.tokens[0].name.as_str()));

    // A project with a live function stays; without, it goes with its tokens (not the workers').
    s.put_function("a", "f", &spec(), 3).await.unwrap();
    let delete = TrustChange::DeleteProject { name: "a".into(), at: 4 };
    assert_eq!(apply(vec![delete.clone()], vec![]).await, [false]);
    s.delete_function("a", "f", 5).await.unwrap();
    assert_eq!(apply(vec![delete.clone(), delete], vec![audit(6, "a", "project.delete")]).await, [true, false]);
    let again = TrustChange::CreateProject(Project { name: "a".into(), created_at: 7, quotas: Default::default() });
    assert_eq!(apply(vec![again], vec![]).await, [false], "a deleted project's name is not reused");
    let loaded = s.trust().await.unwrap();
    assert_eq!(loaded.projects.len(), 1);
    let mut left: Vec<_> = loaded.tokens.iter().map(|t| t.name.as_str()).collect();
    left.sort();
    assert_eq!(left, ["admin", "w"]);

    let revoke = TrustChange::RevokeToken { name: "w".into(), at: 8 };
    assert_eq!(apply(vec![revoke.clone(), revoke], vec![]).await, [true, false]);
    // Its name is free again.
    let w = TrustChange::PutToken { token: token("w2", "", Role::Worker), first: false };
    let w = match w {
        TrustChange::PutToken { mut token, first } => {
            token.name = "w".into();
            TrustChange::PutToken { token, first }
        }
        other => other,
    };
    assert_eq!(apply(vec![w], vec![]).await, [true]);

    // A set whose last change fails (a second token with the same secret)
    // keeps none of it: not the project before it, not the audit entry.
    let mut twin = token("admin", "default", Role::Reader);
    twin.name = "twin".into();
    let bad = ChangeSet {
        trust: vec![
            TrustChange::CreateProject(Project { name: "b".into(), created_at: 9, quotas: Default::default() }),
            TrustChange::PutToken { token: twin, first: false },
        ],
        audit: vec![audit(9, "b", "project.create")],
        ..Default::default()
    };
    assert!(s.commit(bad).await.is_err());
    assert!(!s.trust().await.unwrap().projects.iter().any(|p| p.name == "b"));
    assert!(s.audit(None, 9, 10).await.unwrap().is_empty());

    let all = s.audit(None, 0, 100).await.unwrap();
    let actions: Vec<_> = all.iter().map(|e| (e.at, e.action.as_str())).collect();
    assert!(actions.starts_with(&[(1, "token.create"), (2, "project.create"), (6, "project.delete")]), "{actions:?}");
    assert_eq!(s.audit(Some("a"), 0, 100).await.unwrap().len(), 2);
    assert_eq!(s.audit(None, 2, 1).await.unwrap()[0].action, "project.create");
}

/// Purges empty finished invocations of a project (or one function) that
/// finished before a time, but neither unfinished ones nor the tasks of a
/// job still under way; the rows stay, marked.
async fn purges_drop_finished_payloads(s: Arc<dyn StateStore>) {
    use stratus_core::Clock;
    use stratus_store::Purge;
    // Real times: ids are made now, and an invocation finishes after it is made.
    let t = stratus_core::clock::SystemClock.now_ms();
    let (old, new, other, running) = (new_inv("f", 1, 1), new_inv("f", 1, 2), new_inv("g", 1, 3), new_inv("f", 1, 4));
    let j = job(5);
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let task = job_task(&j, 0);
    tx.send(JobRows::Rows(vec![task.clone()])).await.unwrap();
    tx.send(JobRows::Commit).await.unwrap();
    s.create_job(&j, rx).await.unwrap();
    s.insert_invocations(&[old.clone(), new.clone(), other.clone(), running.clone()]).await.unwrap();
    let finish =
        |n: &NewInvocation, at: i64| AttemptEnd { finished_at: at, ..end(n.invocation.id, 1, finish_ok(b"out")) };
    let ends = [finish(&old, t + 100), finish(&new, t + 300), finish(&other, t + 100), finish(&task, t + 100)];
    s.end_attempts(&ends).await.unwrap();
    s.start_attempts(&[AttemptStart { id: running.invocation.id, attempt: 1, worker: "w1".into(), started_at: 10 }])
        .await
        .unwrap();

    let purge = |function: Option<&str>, before: i64| Purge {
        project: "p".into(),
        function: function.map(String::from),
        finished_before: t + before,
        made_since: None,
        at: t + 1000,
    };
    let purged = |p: Purge| {
        let s = s.clone();
        async move { s.commit(ChangeSet { purges: vec![p], ..Default::default() }).await.unwrap().purged }
    };
    assert_eq!(purged(purge(Some("f"), 200)).await, [1], "only f's old one: not g's, not the running job's task");
    let p = s.get_payloads("p", old.invocation.id).await.unwrap().unwrap();
    assert_eq!((p.output, p.logs, p.purged_at), (None, None, Some(t + 1000)));
    assert_eq!(s.get_invocation("p", old.invocation.id).await.unwrap().unwrap().state, InvocationState::Succeeded);
    assert!(s.get_payloads("p", new.invocation.id).await.unwrap().unwrap().output.is_some());
    assert!(s.get_payloads("p", task.invocation.id).await.unwrap().unwrap().purged_at.is_none());
    let recent = Purge { made_since: Some(t + 60_000), ..purge(None, 10_000) };
    assert_eq!(purged(recent).await, [0], "none of them was made since");
    assert_eq!(purged(purge(None, 10_000)).await, [2], "the new one and g's; not the running one, nor the task");
    assert_eq!(purged(purge(None, 10_000)).await, [0], "nothing twice");
    s.set_job_state(j.id, &[JobState::Running], JobState::Succeeded, Default::default()).await.unwrap();
    assert_eq!(purged(purge(None, 10_000)).await, [1], "the job is over: its task too");
    assert!(s.get_payloads("p", running.invocation.id).await.unwrap().unwrap().purged_at.is_none());
}

fn event(id: &str, subject: &str) -> Event {
    Event {
        seq: 0,
        project: "p".into(),
        source: "cam".into(),
        id: id.into(),
        ty: "photo".into(),
        subject: Some(subject.into()),
        time: 5,
        datacontenttype: None,
        data: Some(br#"{"w":1}"#.to_vec()),
        depth: 0,
    }
}

async fn read_events(s: &Arc<dyn StateStore>, q: EventQuery) -> Vec<Event> {
    s.sequence_events().await.unwrap();
    s.events(&q).await.unwrap()
}

async fn events_are_stored_once_with_what_causes_them(s: Arc<dyn StateStore>) {
    let mut commits = s.event_commits();
    let r = s
        .commit(ChangeSet {
            events: vec![event("1", "a/x"), event("2", "b/y"), event("1", "a/x")],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.events, [true, true, false], "a duplicate key in one commit is ignored");
    assert!(commits.has_changed().unwrap(), "readers are told of stored events");
    commits.mark_unchanged();
    let again = s.commit(ChangeSet { events: vec![event("2", "b/y")], ..Default::default() }).await.unwrap();
    assert_eq!(again.events, [false], "and so is one stored before");
    assert!(!commits.has_changed().unwrap(), "nothing stored, nothing told");
    let mut other = event("1", "a/x");
    other.project = "q".into();
    assert_eq!(s.commit(ChangeSet { events: vec![other], ..Default::default() }).await.unwrap().events, [true]);

    // Built-in events commit with their change: a deploy, a direct
    // invocation's end, a job's end; a task of a job has none.
    let f = s.put_function("p", "f", &spec(), 7).await.unwrap();
    let a = new_inv("f", 1, 100);
    s.insert_invocations(std::slice::from_ref(&a)).await.unwrap();
    s.end_attempts(&[end(a.invocation.id, 1, finish_ok(b"out"))]).await.unwrap();
    let failing = EndOutcome::Requeue { not_before: 50, error: Failure::new(FailureKind::Exit, "x"), logs: vec![] };
    let b = new_inv("f", 2, 101);
    s.insert_invocations(std::slice::from_ref(&b)).await.unwrap();
    s.end_attempts(&[end(b.invocation.id, 1, failing)]).await.unwrap();
    let mut j = job(1);
    j.total = 1;
    let j = stream_job(&s, &j, vec![job_task(&j, 0)], &[1]).await;
    let task = s.job_results(j.id, 0, 10).await.unwrap()[0].invocation;
    s.end_attempts(&[end(task, 1, finish_ok(b"t"))]).await.unwrap();
    let update = JobUpdate { finished_at: Some(30), ..Default::default() };
    assert!(s.set_job_state(j.id, &[JobState::Running], JobState::Succeeded, update).await.unwrap());
    let cancelled = stream_job(&s, &job(2), vec![], &[1]).await;
    s.cancel_job(cancelled.id, 40).await.unwrap();
    s.cancel_job(cancelled.id, 41).await.unwrap();

    let all = read_events(&s, EventQuery { project: Some("p".into()), limit: 100, ..Default::default() }).await;
    let seen: Vec<(&str, &str)> = all.iter().map(|e| (e.ty.as_str(), e.id.as_str())).collect();
    let (aid, jid, cid) = (a.invocation.id.to_string(), j.id.to_string(), cancelled.id.to_string());
    assert_eq!(
        seen,
        [
            ("photo", "1"),
            ("photo", "2"),
            ("stratus.function.deployed", "f@1"),
            ("stratus.invocation.succeeded", aid.as_str()),
            ("stratus.job.succeeded", jid.as_str()),
            ("stratus.job.cancelled", cid.as_str()),
        ],
        "no event for a retry or a task; one per job"
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "numbered in commit order");
    assert_eq!(all[2].data_json().unwrap()["version"], f.version);
    let inv = all[3].data_json().unwrap();
    assert_eq!((inv["function"].as_str(), inv["attempts"].as_u64()), (Some("f"), Some(1)));
    assert_eq!(all[3].subject.as_deref(), Some("f"));
    assert_eq!(s.sequence_events().await.unwrap(), all.last().unwrap().seq.max(2));

    let q = |after, ty: Option<&str>, prefix: Option<&str>| EventQuery {
        project: Some("p".into()),
        after,
        limit: 100,
        ty: ty.map(Into::into),
        subject_prefix: prefix.map(Into::into),
    };
    let ids = |v: Vec<Event>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(s.events(&q(0, Some("photo"), None)).await.unwrap()), ["1", "2"]);
    assert_eq!(ids(s.events(&q(0, None, Some("b/"))).await.unwrap()), ["2"]);
    assert_eq!(ids(s.events(&q(all[1].seq, Some("photo"), None)).await.unwrap()), Vec::<String>::new());
    let everyone = read_events(&s, EventQuery { limit: 100, ..Default::default() }).await;
    assert_eq!(everyone.len(), all.len() + 1, "without a project, every project's");
}

async fn triggers_commit_with_a_guarded_cursor(s: Arc<dyn StateStore>) {
    use stratus_core::events::{Action, Condition, Context, TriggerSpec};
    s.commit(ChangeSet { events: vec![event("1", "a")], ..Default::default() }).await.unwrap();
    let top = s.sequence_events().await.unwrap();
    let spec = TriggerSpec {
        on: "photo".into(),
        source: None,
        subject_prefix: None,
        subject_suffix: None,
        filter: None,
        condition: Condition::Join { n: 2 },
        group_by: None,
        transient: false,
        action: Action::Emit { ty: "pair".into() },
        schedule: None,
    };
    let t = Trigger { project: "p".into(), name: "t".into(), spec, enabled: true, created_at: 9, from_seq: 0 };
    let create = || ChangeSet { reactions: vec![EventChange::Create(Box::new(t.clone()))], ..Default::default() };
    assert_eq!(s.commit(create()).await.unwrap().reactions, [true]);
    assert_eq!(s.commit(create()).await.unwrap().reactions, [false], "one trigger per name");
    let key = ("p".to_string(), "t".to_string(), "g".to_string());
    let context = Context::Join { seen: vec![("cam".into(), "1".into(), top)] };
    let inv = stratus_core::new_id();
    let firing = Firing {
        project: "p".into(),
        trigger: "t".into(),
        seq: top,
        at: 10,
        invocation: Some(inv),
        output: Some("out/a".into()),
        depth: 1,
    };
    let step = ChangeSet {
        events: vec![event("2", "a")],
        reactions: vec![
            EventChange::Context { key: key.clone(), context: Some(context.clone()) },
            EventChange::Fired(firing.clone()),
            EventChange::Cursor { from: 0, to: top },
        ],
        ..Default::default()
    };
    assert_eq!(s.commit(step.clone()).await.unwrap().reactions, [true, true, true]);
    let state = s.triggers().await.unwrap();
    assert_eq!(state.cursor, top);
    assert_eq!(state.triggers.len(), 1);
    assert_eq!(state.triggers[0].from_seq, top, "a trigger reacts to events after its creation");
    assert_eq!(state.triggers[0].spec, t.spec);
    assert_eq!(state.contexts, [(key.clone(), context)]);
    assert_eq!(s.firings_of(&[inv]).await.unwrap(), std::slice::from_ref(&firing));
    assert_eq!(s.firings("p", "t", 10).await.unwrap(), [firing]);

    // The same step again (another server's, or a retry after the commit
    // applied) is refused whole: its event is not stored either.
    let mut stale = step;
    stale.events = vec![event("3", "a")];
    assert!(matches!(s.commit(stale).await, Err(stratus_store::Error::Refused(_))));
    let photos = read_events(&s, EventQuery { project: Some("p".into()), limit: 10, ..Default::default() }).await;
    assert_eq!(photos.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["1", "2"]);

    let off = EventChange::SetEnabled { project: "p".into(), name: "t".into(), enabled: false };
    assert_eq!(s.commit(ChangeSet { reactions: vec![off], ..Default::default() }).await.unwrap().reactions, [true]);
    assert!(!s.triggers().await.unwrap().triggers[0].enabled);
    let delete = EventChange::Delete { project: "p".into(), name: "t".into() };
    assert_eq!(s.commit(ChangeSet { reactions: vec![delete], ..Default::default() }).await.unwrap().reactions, [true]);
    let state = s.triggers().await.unwrap();
    assert!(state.triggers.is_empty() && state.contexts.is_empty(), "its contexts go with it");

    // A job created whole with its tasks (a trigger's --map), once.
    let mut j = job(50);
    j.total = 2;
    let tasks = vec![job_task(&j, 0), job_task(&j, 1)];
    let whole = ChangeSet { new_jobs: vec![j.clone()], new: tasks, ..Default::default() };
    s.commit(whole.clone()).await.unwrap();
    s.commit(whole).await.unwrap();
    let stored = s.get_job("p", j.id).await.unwrap().unwrap();
    assert_eq!((stored.total, stored.state), (2, JobState::Running));
    assert_eq!(s.job_results(j.id, 0, 10).await.unwrap().len(), 2, "its tasks, once");

    let newest = read_events(&s, EventQuery { limit: 100, ..Default::default() }).await.last().unwrap().seq;
    let expire = EventChange::Expire { before: i64::MAX };
    s.commit(ChangeSet { reactions: vec![expire], ..Default::default() }).await.unwrap();
    let left = read_events(&s, EventQuery { limit: 10, ..Default::default() }).await;
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [newest], "all but the newest: numbers go on past it");
    s.commit(ChangeSet { events: vec![event("9", "a")], ..Default::default() }).await.unwrap();
    let after = read_events(&s, EventQuery { after: newest, limit: 10, ..Default::default() }).await;
    assert!(after.len() == 1 && after[0].seq > newest, "a new event is numbered after every one before");
}

macro_rules! conformance {
    ($engine:ident, $open:expr) => {
        mod $engine {
            use super::*;
            #[tokio::test]
            async fn events() {
                let (_guard, s) = $open.await;
                events_are_stored_once_with_what_causes_them(s).await;
            }
            #[tokio::test]
            async fn triggers() {
                let (_guard, s) = $open.await;
                triggers_commit_with_a_guarded_cursor(s).await;
            }
            #[tokio::test]
            async fn purges() {
                let (_guard, s) = $open.await;
                purges_drop_finished_payloads(s).await;
            }
            #[tokio::test]
            async fn settings() {
                let (_guard, s) = $open.await;
                variables_and_secrets_are_versioned(s).await;
            }
            #[tokio::test]
            async fn limits() {
                let (_guard, s) = $open.await;
                limits_and_call_tags_are_kept(s).await;
            }
            #[tokio::test]
            async fn trust() {
                let (_guard, s) = $open.await;
                projects_and_tokens_apply_once(s).await;
            }
            #[tokio::test]
            async fn payload_budget() {
                let (_guard, s) = $open.await;
                payload_cutoffs_keep_the_newest_that_fit(s).await;
            }
            #[tokio::test]
            async fn artifacts() {
                let (_guard, s) = $open.await;
                artifacts_in_use_are_those_of_live_functions_and_pending_work(s).await;
            }
            #[tokio::test]
            async fn functions() {
                let (_guard, s) = $open.await;
                functions_are_versioned_and_deleted(s).await;
            }
            #[tokio::test]
            async fn completions() {
                let (_guard, s) = $open.await;
                completions_are_recorded_once(s).await;
            }
            #[tokio::test]
            async fn jobs() {
                let (_guard, s) = $open.await;
                jobs_count_results_and_cancel(s).await;
            }
            #[tokio::test]
            async fn pyenvs() {
                let (_guard, s) = $open.await;
                pyenvs_are_kept_per_project(s).await;
            }
            #[tokio::test]
            async fn large_jobs() {
                let (_guard, s) = $open.await;
                large_jobs_stream_and_reduce(s).await;
            }
            #[tokio::test]
            async fn ordered_inserts() {
                let (_guard, s) = $open.await;
                ordered_inserts_come_before_later_writes(s).await;
            }
            #[tokio::test]
            async fn recorded_together() {
                let (_guard, s) = $open.await;
                inserts_starts_and_ends_are_recorded_together(s).await;
            }
            #[tokio::test]
            async fn end_batches() {
                let (_guard, s) = $open.await;
                end_batches_apply_in_order(s).await;
            }
            #[tokio::test]
            async fn change_sets() {
                let (_guard, s) = $open.await;
                change_sets_commit_whole_or_not_at_all(s).await;
            }
            #[tokio::test]
            async fn leadership() {
                let (_guard, s) = $open.await;
                a_server_leads_renews_and_resigns(s).await;
            }
            #[tokio::test]
            async fn restart() {
                let (_guard, s) = $open.await;
                restart_requeues_running_and_pages_the_queue(s).await;
            }
        }
    };
}

async fn sqlite() -> (tempfile::TempDir, Arc<dyn StateStore>) {
    let dir = tempfile::tempdir().unwrap();
    let s = stratus_store::open(&format!("sqlite://{}/state.db", dir.path().display())).await.unwrap();
    (dir, s)
}

conformance!(sqlite_engine, sqlite());
conformance!(postgres_engine, common::postgres());

#[tokio::test]
async fn sqlite_reopens_with_data_and_refuses_bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let s = stratus_store::open(&url).await.unwrap();
    s.put_function("p", "f", &spec(), 1).await.unwrap();
    drop(s);
    let s = stratus_store::open(&url).await.unwrap();
    assert!(s.get_function("p", "f", None).await.unwrap().is_some());
    assert!(stratus_store::open("mysql://x").await.is_err());
    assert!(stratus_store::open(&format!("{url}?synchronous=sometimes")).await.is_err());
}

/// The log is copied back into the database as it grows (by the
/// checkpointer thread, or by the writer should that fall behind), so it
/// stays bounded however many commits: the writer steps in at four
/// thousand pages; the log starts over once no checkpoint or reader holds
/// it, hence the slack below. (Here the commits come as fast as the writer
/// makes them; a server's log stays near the first mark, a thousand pages.)
#[tokio::test]
async fn sqlite_log_stays_bounded_over_many_commits() {
    let (dir, s) = sqlite().await;
    for i in 0..3000 {
        let mut n = new_inv("f", 1, i);
        n.input = vec![7; 8 << 10];
        s.insert_invocations(&[n]).await.unwrap();
    }
    let frame = 4096 + 24;
    let wal = std::fs::metadata(dir.path().join("state.db-wal")).unwrap().len();
    // 3,000 commits of three pages or more: over 9,000 frames without
    // checkpoints. The writer checkpoints at 4,000, but the log starts over
    // only once no checkpoint or reader is using it: some slack.
    assert!(wal <= 6000 * frame, "the log grew to {wal} bytes");
    assert_eq!(s.queued(None, 5000).await.unwrap().len(), 3000, "every row is there");
}
