//! Jobs: creating one from streamed task rows, cancelling it, recovering
//! those a previous run left, and moving each on as its tasks end. What a
//! job does next is decided in [`stratus_core::job`], which returns the
//! change set to commit.

use super::Scheduler;
use super::queue::Entry;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use stratus_core::job::{self, JobDecision};
use stratus_core::{Function, Id, Invocation, Job, JobState, Partition, Task, new_id};
use stratus_store::{ChangeSet, JobRows, Lane, NewInvocation};
use tokio::sync::mpsc;

/// One task of a job, as its creator describes it.
#[derive(Debug, Clone)]
pub enum TaskSpec {
    Input(Vec<u8>),
    Partition(Partition),
}

impl Scheduler {
    /// Creates a job from task rows streamed into the returned sender by the
    /// caller (each row: input bytes or a partition). The job is durable, and
    /// queued, when the returned future resolves.
    pub async fn create_job(
        &self,
        function: Arc<Function>,
        reduce: Option<Arc<Function>>,
        tags: Vec<String>,
        mut rows: mpsc::Receiver<Result<TaskSpec, String>>,
    ) -> Result<Job, super::Error> {
        let _guard = self.tasks_lock.lock().await;
        let now = self.clock.now_ms();
        let job = Job::running(&function, reduce.as_deref(), 0, now);
        let (tx, rx) = mpsc::channel(4);
        let job_id = job.id;
        let f = function.clone();
        let feeder = tokio::spawn(async move {
            let mut index = 0u64;
            let mut batch = Vec::with_capacity(1024);
            loop {
                let next = rows.recv().await;
                let end = match next {
                    Some(Ok(spec)) => {
                        let mut inv = Invocation::queued(&f, now, Some(job_id), Some(index)).with_tags(&tags);
                        inv.id = new_id();
                        index += 1;
                        let (input, partition) = match spec {
                            TaskSpec::Input(b) => (b, None),
                            TaskSpec::Partition(p) => (Vec::new(), Some(p)),
                        };
                        batch.push(NewInvocation { invocation: inv, input, partition });
                        None
                    }
                    Some(Err(why)) => Some(JobRows::Abort(why)),
                    None => Some(JobRows::Commit),
                };
                if (batch.len() >= 1024 || (end.is_some() && !batch.is_empty()))
                    && tx.send(JobRows::Rows(std::mem::take(&mut batch))).await.is_err()
                {
                    return;
                }
                if let Some(end) = end {
                    let _ = tx.send(end).await;
                    return;
                }
            }
        });
        let created = self.store.create_job(&job, rx).await;
        feeder.abort();
        let job = created?;
        self.metrics.invocations_submitted.fetch_add(job.total, Relaxed);
        {
            let mut q = self.queue.lock().unwrap();
            q.tasks.mark_backlog(&job.project);
        }
        self.refill.notify_one();
        if job.total == 0 {
            self.on_job_progress(job.clone()).await;
        }
        Ok(job)
    }

    /// Cancels a job: queued tasks never start, running ones are killed.
    pub async fn cancel_job(&self, job: &Job) -> Result<u64, super::Error> {
        let _guard = self.tasks_lock.lock().await;
        let n = self.store.cancel_job(job.id, self.clock.now_ms()).await?;
        self.queue.lock().unwrap().retain(|e| e.task.job != Some(job.id));
        for f in self.inflight.lock().unwrap().values() {
            if f.entry.task.job == Some(job.id) {
                f.cancel.cancel();
            }
        }
        self.job_ended(job.id);
        Ok(n)
    }

    pub(super) async fn recover_jobs(&self) -> Result<(), stratus_store::Error> {
        for job in self.store.active_jobs().await? {
            match job.state {
                JobState::Running => self.on_job_progress(job).await,
                JobState::Reducing => {
                    let Some(rid) = job.reduce_invocation else { continue };
                    if let Some(inv) = self.store.get_invocation(&job.project, rid).await?
                        && inv.state.is_terminal()
                    {
                        self.finish_reduce(&job, &inv).await;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Acts on [`job::on_progress`]: ends the job, or starts its reducer.
    pub(super) async fn on_job_progress(&self, job: Job) {
        match job::on_progress(&job) {
            JobDecision::Wait => {}
            JobDecision::Finish(state, error) => {
                self.move_job(job.id, job::finish(&job, state, error, self.clock.now_ms())).await;
            }
            JobDecision::StartReduce => {
                // Reading every output may take a while: not on the writer.
                let me = self.arc();
                tokio::spawn(async move {
                    if let Err(e) = me.start_reduce(&job).await {
                        tracing::error!(job = %job.id, error = %e, "cannot start the reducer");
                        me.move_job(job.id, job::reduce_failed(&job, e.to_string(), me.clock.now_ms())).await;
                    }
                });
            }
        }
    }

    /// Commits a change set that ends a job, then wakes its waiters.
    async fn move_job(&self, id: Id, changes: ChangeSet) {
        match self.store.commit(changes).await {
            Ok(_) => self.job_ended(id),
            Err(e) => tracing::error!(job = %id, error = %e, "cannot record the end of a job"),
        }
    }

    async fn start_reduce(&self, job: &Job) -> Result<(), stratus_store::Error> {
        let (Some(name), Some(version)) = (&job.reduce_function, job.reduce_version) else { return Ok(()) };
        let Some(reducer) = self.function(&job.project, name, version).await? else {
            return Err(stratus_store::Error::Aborted(format!("reducer '{name}' version {version} is gone")));
        };
        let mut input = Vec::new();
        let mut from = 0;
        loop {
            let page = self.store.job_results(job.id, from, 5000).await?;
            let Some(last) = page.last() else { break };
            from = last.index + 1;
            for r in page {
                input.extend_from_slice(r.output.as_deref().unwrap_or_default());
                input.push(b'\n');
            }
        }
        let _guard = self.direct_lock.lock().await;
        let inv = Invocation::queued(&reducer, self.clock.now_ms(), Some(job.id), None);
        let row = NewInvocation { invocation: inv.clone(), input: input.clone(), partition: None };
        if self.store.commit(job::start_reduce(job, row)).await?.moved == [true] {
            let task = Task {
                invocation: inv.id,
                attempt: 1,
                function: reducer,
                input,
                partition: None,
                job: Some(job.id),
                token: None,
            };
            self.enqueue_new(Lane::Direct, vec![Entry { invocation: inv, task }]);
        }
        Ok(())
    }

    /// Ends a job with its reducer's end.
    pub(super) async fn finish_reduce(&self, job: &Job, reducer: &Invocation) {
        self.move_job(job.id, job::on_reducer_end(job, reducer, self.clock.now_ms())).await;
    }

    /// Attempts of a job running now.
    pub fn job_running(&self, job: Id) -> usize {
        self.inflight.lock().unwrap().values().filter(|f| f.entry.task.job == Some(job)).count()
    }
}
