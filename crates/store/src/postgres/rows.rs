//! Rows and parameters: reading records, binding batches as arrays, and
//! the statements of one commit.

use super::*;

pub(super) fn to_u32(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} is out of range")))
}

pub(super) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("{what} {v} is out of range")))
}

pub(super) fn failure_from(s: Option<String>) -> Result<Option<Failure>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(format!("error record: {e}")))).transpose()
}

pub(super) fn partition_from(s: Option<String>) -> Result<Option<Partition>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(format!("partition: {e}")))).transpose()
}

pub(super) fn state_from(s: &str) -> Result<InvocationState> {
    s.parse().map_err(|e| Error::Corrupt(format!("state: {e}")))
}

pub(super) fn function_from(r: &Row) -> Result<Function> {
    let spec: &str = r.try_get("spec")?;
    let spec: FunctionSpec = serde_json::from_str(spec).map_err(|e| Error::Corrupt(format!("function spec: {e}")))?;
    Ok(Function {
        project: r.try_get("project")?,
        name: r.try_get("name")?,
        version: to_u32(r.try_get("version")?, "version")?,
        spec,
        created_at: r.try_get("created_at")?,
    })
}

pub(super) fn invocation_from(r: &Row) -> Result<Invocation> {
    Ok(Invocation {
        id: Id::from_uuid(r.try_get("id")?),
        project: r.try_get("project")?,
        function: r.try_get("function")?,
        version: to_u32(r.try_get("version")?, "version")?,
        state: state_from(r.try_get("state")?)?,
        attempts: to_u32(r.try_get("attempts")?, "attempts")?,
        max_attempts: to_u32(r.try_get("max_attempts")?, "max attempts")?,
        job_id: r.try_get::<_, Option<Uuid>>("job_id")?.map(Id::from_uuid),
        task_index: r.try_get::<_, Option<i64>>("task_index")?.map(|i| to_u64(i, "task index")).transpose()?,
        queued_at: r.try_get("queued_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        worker: r.try_get("worker")?,
        error: failure_from(r.try_get("error")?)?,
        tags: r.try_get::<_, Option<&str>>("tags")?.map(stratus_core::names::split_tags).unwrap_or_default(),
    })
}

pub(super) fn job_from(r: &Row) -> Result<Job> {
    let state: &str = r.try_get("state")?;
    Ok(Job {
        id: Id::from_uuid(r.try_get("id")?),
        project: r.try_get("project")?,
        function: r.try_get("function")?,
        version: to_u32(r.try_get("version")?, "version")?,
        reduce_function: r.try_get("reduce_function")?,
        reduce_version: r.try_get::<_, Option<i64>>("reduce_version")?.map(|v| to_u32(v, "version")).transpose()?,
        state: state.parse().map_err(|e| Error::Corrupt(format!("job state: {e}")))?,
        total: to_u64(r.try_get("total")?, "total")?,
        succeeded: to_u64(r.try_get("succeeded")?, "succeeded")?,
        failed: to_u64(r.try_get("failed")?, "failed")?,
        cancelled: to_u64(r.try_get("cancelled")?, "cancelled")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
        reduce_invocation: r.try_get::<_, Option<Uuid>>("reduce_invocation")?.map(Id::from_uuid),
        error: r.try_get("error")?,
    })
}

pub(super) type Param<'a> = &'a (dyn ToSql + Sync);

/// New invocations as one array per column, for [`INSERT_INVOCATIONS`].
pub(super) struct InvocationArrays<'a> {
    pub(super) id: Vec<Uuid>,
    pub(super) project: Vec<&'a str>,
    pub(super) function: Vec<&'a str>,
    pub(super) version: Vec<i64>,
    pub(super) state: Vec<&'static str>,
    pub(super) attempts: Vec<i64>,
    pub(super) max_attempts: Vec<i64>,
    pub(super) job_id: Vec<Option<Uuid>>,
    pub(super) task_index: Vec<Option<i64>>,
    pub(super) queued_at: Vec<i64>,
    pub(super) input: Vec<&'a [u8]>,
    pub(super) partition: Vec<Option<String>>,
    pub(super) tags: Vec<Option<String>>,
}

impl<'a> InvocationArrays<'a> {
    pub(super) fn new(rows: &'a [NewInvocation]) -> Self {
        let mut a = InvocationArrays {
            id: Vec::with_capacity(rows.len()),
            project: Vec::with_capacity(rows.len()),
            function: Vec::with_capacity(rows.len()),
            version: Vec::with_capacity(rows.len()),
            state: Vec::with_capacity(rows.len()),
            attempts: Vec::with_capacity(rows.len()),
            max_attempts: Vec::with_capacity(rows.len()),
            job_id: Vec::with_capacity(rows.len()),
            task_index: Vec::with_capacity(rows.len()),
            queued_at: Vec::with_capacity(rows.len()),
            input: Vec::with_capacity(rows.len()),
            partition: Vec::with_capacity(rows.len()),
            tags: Vec::with_capacity(rows.len()),
        };
        for n in rows {
            let i = &n.invocation;
            a.id.push(i.id.as_uuid());
            a.project.push(&i.project);
            a.function.push(&i.function);
            a.version.push(i.version.into());
            a.state.push(i.state.as_str());
            a.attempts.push(i.attempts.into());
            a.max_attempts.push(i.max_attempts.into());
            a.job_id.push(i.job_id.map(|j| j.as_uuid()));
            a.task_index.push(i.task_index.map(|x| x as i64));
            a.queued_at.push(i.queued_at);
            a.input.push(&n.input);
            a.partition.push(partition_json(n.partition.as_ref()));
            a.tags.push(tags_text(&i.tags));
        }
        a
    }

    pub(super) fn params(&self) -> [Param<'_>; 13] {
        [
            &self.id,
            &self.project,
            &self.function,
            &self.version,
            &self.state,
            &self.attempts,
            &self.max_attempts,
            &self.job_id,
            &self.task_index,
            &self.queued_at,
            &self.input,
            &self.partition,
            &self.tags,
        ]
    }
}

/// One round of ends (distinct ids) as arrays, for [`END_ATTEMPTS`].
pub(super) struct EndArrays<'a> {
    pub(super) ord: Vec<i32>,
    pub(super) id: Vec<Uuid>,
    pub(super) attempt: Vec<i64>,
    pub(super) state: Vec<&'static str>,
    pub(super) output: Vec<Option<&'a [u8]>>,
    pub(super) error: Vec<Option<String>>,
    pub(super) logs: Vec<&'a [u8]>,
    pub(super) worker: Vec<&'a str>,
    pub(super) started_at: Vec<i64>,
    pub(super) finished_at: Vec<i64>,
    pub(super) not_before: Vec<Option<i64>>,
    pub(super) attempt_state: Vec<&'static str>,
    pub(super) counts: Vec<i32>,
}

impl<'a> EndArrays<'a> {
    pub(super) fn new(ends: &'a [AttemptEnd], round: &[usize]) -> Self {
        let mut a = EndArrays {
            ord: Vec::with_capacity(round.len()),
            id: Vec::with_capacity(round.len()),
            attempt: Vec::with_capacity(round.len()),
            state: Vec::with_capacity(round.len()),
            output: Vec::with_capacity(round.len()),
            error: Vec::with_capacity(round.len()),
            logs: Vec::with_capacity(round.len()),
            worker: Vec::with_capacity(round.len()),
            started_at: Vec::with_capacity(round.len()),
            finished_at: Vec::with_capacity(round.len()),
            not_before: Vec::with_capacity(round.len()),
            attempt_state: Vec::with_capacity(round.len()),
            counts: Vec::with_capacity(round.len()),
        };
        for &i in round {
            let e = &ends[i];
            let row = e.row();
            let counts = match row.count {
                JobCount::None => 0,
                JobCount::Succeeded => 1,
                JobCount::Failed => 2,
                JobCount::Cancelled => 3,
            };
            a.ord.push(i as i32);
            a.id.push(e.id.as_uuid());
            a.attempt.push(e.attempt.into());
            a.state.push(row.state.as_str());
            a.output.push(row.output);
            a.error.push(row.error);
            a.logs.push(row.logs);
            a.worker.push(&e.worker);
            a.started_at.push(e.started_at);
            a.finished_at.push(e.finished_at);
            a.not_before.push(row.not_before);
            a.attempt_state.push(row.attempt_state.as_str());
            a.counts.push(counts);
        }
        a
    }

    pub(super) fn params(&self) -> [Param<'_>; 13] {
        [
            &self.ord,
            &self.id,
            &self.attempt,
            &self.state,
            &self.output,
            &self.error,
            &self.logs,
            &self.worker,
            &self.started_at,
            &self.finished_at,
            &self.not_before,
            &self.attempt_state,
            &self.counts,
        ]
    }
}

/// Splits a batch of ends into rounds in which each invocation appears once,
/// keeping the batch's order per invocation: a set-based statement over one
/// round then does what ends applied one by one would.
pub(super) fn end_rounds(ends: &[AttemptEnd]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<Id, usize> = HashMap::with_capacity(ends.len());
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, e) in ends.iter().enumerate() {
        let r = seen.entry(e.id).or_insert(0);
        if rounds.len() <= *r {
            rounds.push(Vec::new());
        }
        rounds[*r].push(i);
        *r += 1;
    }
    rounds
}

/// Folds the rows of one round of [`END_ATTEMPTS`] into the report: which
/// ends applied, and each touched job as it is now, keyed by its first end.
pub(super) fn absorb_round(
    rows: &[Row],
    applied: &mut [bool],
    jobs: &mut Vec<(i32, Job)>,
    events: &mut u64,
) -> Result<()> {
    for (k, r) in rows.iter().enumerate() {
        if k == 0 {
            *events += to_u64(r.try_get("events")?, "events")?;
        }
        if let Some(ords) = r.try_get::<_, Option<Vec<i32>>>("applied")? {
            for o in ords {
                if let Some(a) = usize::try_from(o).ok().and_then(|o| applied.get_mut(o)) {
                    *a = true;
                }
            }
        }
        if r.try_get::<_, Option<Uuid>>("id")?.is_none() {
            continue;
        }
        let first: i32 = r.try_get("first_end")?;
        let job = job_from(r)?;
        match jobs.iter_mut().find(|(_, j)| j.id == job.id) {
            Some((f, j)) => {
                *f = (*f).min(first);
                *j = job;
            }
            None => jobs.push((first, job)),
        }
    }
    Ok(())
}

/// The statements of [`StateStore::commit`], prepared on one connection.
pub(super) struct Recording {
    pub(super) insert: Statement,
    pub(super) start: Statement,
    pub(super) end: Statement,
}

impl Recording {
    /// The new rows, then the starts.
    pub(super) async fn insert_and_start(
        &self,
        cl: &impl GenericClient,
        new: &[NewInvocation],
        starts: &[&AttemptStart],
    ) -> PgResult<()> {
        if !new.is_empty() {
            cl.execute(&self.insert, &InvocationArrays::new(new).params()).await?;
        }
        if !starts.is_empty() {
            let ids: Vec<Uuid> = starts.iter().map(|s| s.id.as_uuid()).collect();
            let attempts: Vec<i64> = starts.iter().map(|s| s.attempt.into()).collect();
            let started: Vec<i64> = starts.iter().map(|s| s.started_at).collect();
            let workers: Vec<&str> = starts.iter().map(|s| s.worker.as_str()).collect();
            cl.execute(&self.start, &[&ids, &attempts, &started, &workers]).await?;
        }
        Ok(())
    }

    /// The ends, round by round.
    pub(super) async fn end(
        &self,
        cl: &impl GenericClient,
        ends: &[AttemptEnd],
        rounds: &[Vec<usize>],
    ) -> PgResult<CommitReport> {
        let mut applied = vec![false; ends.len()];
        let mut jobs = Vec::new();
        let mut events = 0;
        for round in rounds {
            let rows = cl.query(&self.end, &EndArrays::new(ends, round).params()).await?;
            absorb_round(&rows, &mut applied, &mut jobs, &mut events)?;
        }
        jobs.sort_by_key(|(first, _)| *first);
        let jobs = jobs.into_iter().map(|(_, j)| j).collect();
        Ok(CommitReport { applied, jobs, stored_events: events, ..Default::default() })
    }
}

/// The statements of a change to a function's versions.
pub(super) struct Functions {
    pub(super) lock: Statement,
    pub(super) put: Statement,
    pub(super) delete: Statement,
}

impl Functions {
    /// One change in `tx`. A new version takes the function's advisory lock
    /// first, so two servers putting the same name get two versions.
    pub(super) async fn change(&self, tx: &Transaction<'_>, change: &FunctionChange) -> PgResult<FunctionOutcome> {
        match change {
            FunctionChange::Put { project, name, spec, at } => {
                tx.execute(&self.lock, &[&FUNCTION_LOCK, project, name]).await?;
                let spec_json = serde_json::to_string(spec).expect("spec serialises");
                let row = tx.query_one(&self.put, &[project, name, &spec_json, at]).await?;
                let version = to_u32(row.try_get(0)?, "version")?;
                let (project, name, spec) = (project.clone(), name.clone(), spec.clone());
                Ok(FunctionOutcome::Put(Function { project, name, version, spec, created_at: *at }))
            }
            FunctionChange::Delete { project, name, at } => {
                Ok(FunctionOutcome::Deleted(tx.execute(&self.delete, &[at, project, name]).await? > 0))
            }
        }
    }
}

/// One guarded job move in `tx`; its insert only when the move applies.
pub(super) async fn move_job(tx: &Transaction<'_>, set: &Statement, insert: &Statement, m: &JobMove) -> PgResult<bool> {
    let from: Vec<&str> = m.from.iter().map(|s| s.as_str()).collect();
    let update = &m.update;
    let params: [Param<'_>; 6] = [
        &m.to.as_str(),
        &update.finished_at,
        &update.error,
        &update.reduce_invocation.map(|i| i.as_uuid()),
        &m.id.as_uuid(),
        &from,
    ];
    if tx.execute(set, &params).await? == 0 {
        return Ok(false);
    }
    if let Some(row) = &update.insert {
        tx.execute(insert, &InvocationArrays::new(std::slice::from_ref(row)).params()).await?;
    }
    Ok(true)
}

/// The statements of changes to projects and tokens, prepared before the
/// transaction that runs them.
pub(super) struct TrustStatements {
    create_project: Statement,
    delete_project: Statement,
    revoke_project_tokens: Statement,
    put_token: Statement,
    revoke_token: Statement,
    set_quotas: Statement,
    delete_project_variables: Statement,
    delete_project_secrets: Statement,
    put_variable: Statement,
    delete_variable: Statement,
    put_secret: Statement,
    delete_secret: Statement,
    reseal: Statement,
    delete_project_limits: Statement,
    put_limit: Statement,
    delete_limit: Statement,
    reset_limit: Statement,
    delete_project_pyenvs: Statement,
    put_pyenv: Statement,
    delete_pyenv: Statement,
    pub(super) audit: Statement,
    pub(super) purge: Statement,
}

impl TrustStatements {
    pub(super) async fn prepare(c: &mut PgConn) -> PgResult<Self> {
        use crate::trust::*;
        Ok(TrustStatements {
            create_project: c.stmt(&pg(CREATE_PROJECT)).await?,
            delete_project: c.stmt(&pg(DELETE_PROJECT)).await?,
            revoke_project_tokens: c.stmt(&pg(REVOKE_PROJECT_TOKENS)).await?,
            put_token: c.stmt(&pg(PUT_TOKEN)).await?,
            revoke_token: c.stmt(&pg(REVOKE_TOKEN)).await?,
            set_quotas: c.stmt(&pg(SET_QUOTAS)).await?,
            delete_project_variables: c.stmt(&pg(DELETE_PROJECT_VARIABLES)).await?,
            delete_project_secrets: c.stmt(&pg(DELETE_PROJECT_SECRETS)).await?,
            put_variable: c.stmt(&pg(PUT_VARIABLE)).await?,
            delete_variable: c.stmt(&pg(DELETE_VARIABLE)).await?,
            put_secret: c.stmt(&pg(PUT_SECRET)).await?,
            delete_secret: c.stmt(&pg(DELETE_SECRET)).await?,
            reseal: c.stmt(&pg(RESEAL_SECRET)).await?,
            delete_project_limits: c.stmt(&pg(DELETE_PROJECT_LIMITS)).await?,
            put_limit: c.stmt(&pg(PUT_LIMIT)).await?,
            delete_limit: c.stmt(&pg(DELETE_LIMIT)).await?,
            reset_limit: c.stmt(&pg(RESET_LIMIT)).await?,
            delete_project_pyenvs: c.stmt(&pg(DELETE_PROJECT_PYENVS)).await?,
            put_pyenv: c.stmt(&pg(PUT_PYENV)).await?,
            delete_pyenv: c.stmt(&pg(DELETE_PYENV)).await?,
            audit: c.stmt(&pg(INSERT_AUDIT)).await?,
            purge: c.stmt(&pg(PURGE)).await?,
        })
    }

    /// One change within `tx`; whether it applied.
    pub(super) async fn change(&self, tx: &Transaction<'_>, change: &TrustChange) -> PgResult<bool> {
        use crate::trust::Steps;
        Ok(match Steps::of(change) {
            Steps::Project { name, at } => tx.execute(&self.create_project, &[&name, &at]).await? > 0,
            Steps::DeleteProject { name, at } => {
                let applied = tx.execute(&self.delete_project, &[&name, &at]).await? > 0;
                if applied {
                    tx.execute(&self.revoke_project_tokens, &[&name, &at]).await?;
                    tx.execute(&self.delete_project_variables, &[&name]).await?;
                    tx.execute(&self.delete_project_secrets, &[&name]).await?;
                    tx.execute(&self.delete_project_limits, &[&name]).await?;
                    tx.execute(&self.delete_project_pyenvs, &[&name]).await?;
                }
                applied
            }
            Steps::Token { token: t, first } => {
                let params: [Param<'_>; 8] = [
                    &t.hash,
                    &t.name,
                    &t.project,
                    &t.role.as_str(),
                    &t.created_at,
                    &t.created_by,
                    &t.expires_at,
                    &first,
                ];
                tx.execute(&self.put_token, &params).await? > 0
            }
            Steps::Revoke { name, at } => tx.execute(&self.revoke_token, &[&name, &at]).await? > 0,
            Steps::Quotas { name, quotas } => tx.execute(&self.set_quotas, &[&name, &quotas]).await? > 0,
            Steps::PutVariable { project, v } => {
                let params: [Param<'_>; 6] = [&project, &v.name, &v.value, &v.json, &v.updated_at, &v.updated_by];
                tx.execute(&self.put_variable, &params).await? > 0
            }
            Steps::DeleteVariable { project, name } => tx.execute(&self.delete_variable, &[&project, &name]).await? > 0,
            Steps::PutSecret { project, s, version, sealed } => {
                let params: [Param<'_>; 8] = [
                    &project,
                    &s.name,
                    &version,
                    &s.sealed.key_id,
                    &sealed,
                    &s.created_at,
                    &s.updated_at,
                    &s.updated_by,
                ];
                tx.execute(&self.put_secret, &params).await? > 0
            }
            Steps::DeleteSecret { project, name } => tx.execute(&self.delete_secret, &[&project, &name]).await? > 0,
            Steps::Reseal { project, name, version, key_id, sealed } => {
                let params: [Param<'_>; 5] = [&project, &name, &version, &key_id, &sealed];
                tx.execute(&self.reseal, &params).await? > 0
            }
            Steps::PutLimit { project, l, slots } => {
                let params: [Param<'_>; 5] = [&project, &l.tag, &slots, &l.updated_at, &l.updated_by];
                tx.execute(&self.put_limit, &params).await? > 0
            }
            Steps::DeleteLimit { project, tag } => tx.execute(&self.delete_limit, &[&project, &tag]).await? > 0,
            Steps::ResetLimit { project, tag, at } => tx.execute(&self.reset_limit, &[&project, &tag, &at]).await? > 0,
            Steps::PutPyEnv { project, e } => {
                let params: [Param<'_>; 6] =
                    [&project, &e.name, &e.python, &e.requirements, &e.updated_at, &e.updated_by];
                tx.execute(&self.put_pyenv, &params).await? > 0
            }
            Steps::DeletePyEnv { project, name } => tx.execute(&self.delete_pyenv, &[&project, &name]).await? > 0,
        })
    }
}

pub(super) fn firing_from(r: &Row) -> Result<Firing> {
    Ok(Firing {
        project: r.try_get(0)?,
        trigger: r.try_get(1)?,
        seq: to_u64(r.try_get(2)?, "seq")?,
        at: r.try_get(3)?,
        invocation: r.try_get::<_, Option<Uuid>>(4)?.map(Id::from_uuid),
        output: r.try_get(5)?,
        depth: r.try_get::<_, i32>(6)?.max(0) as u32,
    })
}

/// The statements of changes to triggers, prepared before the transaction
/// that runs them.
pub(super) struct Reactions {
    create: Statement,
    delete: Statement,
    delete_contexts: Statement,
    enabled: Statement,
    put_context: Statement,
    drop_context: Statement,
    cursor: Statement,
    fired: Statement,
    expire_events: Statement,
    expire_firings: Statement,
}

impl Reactions {
    pub(super) async fn prepare(c: &mut PgConn) -> PgResult<Self> {
        use crate::events::*;
        use crate::trust::pg;
        Ok(Reactions {
            create: c.stmt(&pg(CREATE_TRIGGER)).await?,
            delete: c.stmt(&pg(DELETE_TRIGGER)).await?,
            delete_contexts: c.stmt(&pg(DELETE_CONTEXTS)).await?,
            enabled: c.stmt(&pg(SET_ENABLED)).await?,
            put_context: c.stmt(&pg(PUT_CONTEXT)).await?,
            drop_context: c.stmt(&pg(DROP_CONTEXT)).await?,
            cursor: c.stmt(&pg(MOVE_CURSOR)).await?,
            fired: c.stmt(&pg(FIRED)).await?,
            expire_events: c.stmt(&pg(EXPIRE_EVENTS)).await?,
            expire_firings: c.stmt(&pg(EXPIRE_FIRINGS)).await?,
        })
    }

    /// One change in `tx`; whether it applied. A cursor that is not where
    /// the change says refuses the whole commit.
    pub(super) async fn change(&self, tx: &Transaction<'_>, change: &EventChange) -> PgResult<bool> {
        use crate::events::Steps;
        let applied = match Steps::of(change) {
            Steps::Create { t, spec } => {
                tx.execute(&self.delete_contexts, &[&t.project, &t.name]).await?;
                let params: [Param<'_>; 5] = [&t.project, &t.name, &spec, &t.enabled, &t.created_at];
                tx.execute(&self.create, &params).await? > 0
            }
            Steps::Delete { project, name } => {
                tx.execute(&self.delete_contexts, &[&project, &name]).await?;
                tx.execute(&self.delete, &[&project, &name]).await? > 0
            }
            Steps::Enabled { project, name, enabled } => {
                tx.execute(&self.enabled, &[&project, &name, &enabled]).await? > 0
            }
            Steps::PutContext { key, context } => {
                tx.execute(&self.put_context, &[&key.0, &key.1, &key.2, &context]).await? > 0
            }
            Steps::DropContext { key } => tx.execute(&self.drop_context, &[&key.0, &key.1, &key.2]).await? > 0,
            Steps::Cursor { from, to } => {
                if tx.execute(&self.cursor, &[&from, &to]).await? == 0 {
                    return Err(Fail::from(crate::events::cursor_moved()));
                }
                true
            }
            Steps::Fired(f) => {
                let (seq, depth) = (f.seq as i64, f.depth as i32);
                let invocation = f.invocation.map(|i| i.as_uuid());
                let params: [Param<'_>; 7] = [&f.project, &f.trigger, &seq, &f.at, &invocation, &f.output, &depth];
                tx.execute(&self.fired, &params).await? > 0
            }
            Steps::Expire { before } => {
                tx.execute(&self.expire_firings, &[&before]).await?;
                tx.execute(&self.expire_events, &[&before]).await? > 0
            }
        };
        Ok(applied)
    }
}
