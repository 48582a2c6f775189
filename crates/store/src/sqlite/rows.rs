//! Rows: reading records, and the body of one commit.

use super::*;

pub(super) fn id_bytes(id: Id) -> [u8; 16] {
    id.to_bytes()
}

pub(super) fn id_from(bytes: Vec<u8>) -> rusqlite::Result<Id> {
    let arr: [u8; 16] = bytes.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "id is not 16 bytes".into())
    })?;
    Ok(Id::from_bytes(arr))
}

pub(super) fn corrupt<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> rusqlite::Error + '_ {
    move |e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("{what}: {e}").into())
}

pub(super) fn failure_from(s: Option<String>) -> rusqlite::Result<Option<Failure>> {
    s.map(|s| serde_json::from_str(&s).map_err(corrupt("error record"))).transpose()
}

pub(super) fn state_from(s: String) -> rusqlite::Result<InvocationState> {
    s.parse().map_err(corrupt("state"))
}

pub(super) fn function_from(row: &Row) -> rusqlite::Result<Function> {
    let spec: String = row.get("spec")?;
    let spec: FunctionSpec = serde_json::from_str(&spec).map_err(corrupt("function spec"))?;
    Ok(Function {
        project: row.get("project")?,
        name: row.get("name")?,
        version: row.get("version")?,
        spec,
        created_at: row.get("created_at")?,
    })
}

pub(super) const INVOCATION_COLUMNS: &str = "id, project, function, version, state, attempts, max_attempts, job_id, task_index, \
     queued_at, started_at, finished_at, worker, error, tags";

pub(super) fn invocation_from(row: &Row) -> rusqlite::Result<Invocation> {
    let job: Option<Vec<u8>> = row.get("job_id")?;
    Ok(Invocation {
        id: id_from(row.get("id")?)?,
        project: row.get("project")?,
        function: row.get("function")?,
        version: row.get("version")?,
        state: state_from(row.get("state")?)?,
        attempts: row.get("attempts")?,
        max_attempts: row.get("max_attempts")?,
        job_id: job.map(id_from).transpose()?,
        task_index: row.get::<_, Option<i64>>("task_index")?.map(|i| i as u64),
        queued_at: row.get("queued_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        worker: row.get("worker")?,
        error: failure_from(row.get("error")?)?,
        tags: row.get::<_, Option<String>>("tags")?.map(|t| stratus_core::names::split_tags(&t)).unwrap_or_default(),
    })
}

macro_rules! insert_invocation {
    ($verb:literal) => {
        concat!(
            $verb,
            " INTO invocations (id, project, function, version, state, attempts, max_attempts, job_id, \
             task_index, queued_at, not_before, input, partition, tags) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13)"
        )
    };
}
pub(super) const INSERT_INVOCATION: &str = insert_invocation!("INSERT");
/// [`INSERT_INVOCATION`] that skips an id stored already.
pub(super) const INSERT_INVOCATION_ONCE: &str = insert_invocation!("INSERT OR IGNORE");

pub(super) fn insert_rows(tx: &rusqlite::Transaction, rows: &[NewInvocation]) -> rusqlite::Result<()> {
    insert_rows_with(tx, INSERT_INVOCATION, rows)
}

pub(super) fn insert_rows_with<'a>(
    tx: &rusqlite::Transaction,
    sql: &str,
    rows: impl IntoIterator<Item = &'a NewInvocation>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(sql)?;
    for n in rows {
        let i = &n.invocation;
        let partition = partition_json(n.partition.as_ref());
        st.execute(params![
            id_bytes(i.id),
            i.project,
            i.function,
            i.version,
            i.state.as_str(),
            i.attempts,
            i.max_attempts,
            i.job_id.map(id_bytes),
            i.task_index.map(|x| x as i64),
            i.queued_at,
            n.input,
            partition,
            tags_text(&i.tags),
        ])?;
    }
    Ok(())
}

pub(super) fn partition_from(s: Option<String>) -> rusqlite::Result<Option<Partition>> {
    s.map(|s| serde_json::from_str(&s).map_err(corrupt("partition"))).transpose()
}

pub(super) const JOB_COLUMNS: &str = "id, project, function, version, reduce_function, reduce_version, state, total, succeeded, \
     failed, cancelled, created_at, finished_at, reduce_invocation, error";

pub(super) fn job_from(r: &Row) -> rusqlite::Result<Job> {
    let state: String = r.get("state")?;
    let reduce_inv: Option<Vec<u8>> = r.get("reduce_invocation")?;
    Ok(Job {
        id: id_from(r.get("id")?)?,
        project: r.get("project")?,
        function: r.get("function")?,
        version: r.get("version")?,
        reduce_function: r.get("reduce_function")?,
        reduce_version: r.get("reduce_version")?,
        state: state.parse().map_err(corrupt("job state"))?,
        total: r.get::<_, i64>("total")? as u64,
        succeeded: r.get::<_, i64>("succeeded")? as u64,
        failed: r.get::<_, i64>("failed")? as u64,
        cancelled: r.get::<_, i64>("cancelled")? as u64,
        created_at: r.get("created_at")?,
        finished_at: r.get("finished_at")?,
        reduce_invocation: reduce_inv.map(id_from).transpose()?,
        error: r.get("error")?,
    })
}

pub(super) fn read_job(c: &Connection, id: [u8; 16]) -> rusqlite::Result<Option<Job>> {
    c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))?
        .query_row(params![id], job_from)
        .optional()
}

pub(super) fn start_rows<'a>(
    tx: &rusqlite::Transaction,
    starts: impl IntoIterator<Item = &'a AttemptStart>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "UPDATE invocations SET state = 'running', attempts = ?1, started_at = ?2, worker = ?3 \
         WHERE id = ?4 AND state = 'queued'",
    )?;
    for s in starts {
        st.execute(params![s.attempt, s.started_at, s.worker, id_bytes(s.id)])?;
    }
    Ok(())
}

pub(super) const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts \
     (invocation_id, attempt, worker, started_at, finished_at, state, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Writes each new invocation that one of `ends` finishes (a sync
/// invocation that ran to its end while its row was held back) as one row
/// in its final state, with its attempt: the row goes in once, instead of
/// inserted queued and then updated by the guarded end (which also added,
/// then removed, an entry of a partial index). Only where that is what the
/// usual path would write: a queued row outside any job, the end's attempt
/// after those it made, no start of another attempt in the batch. Returns,
/// for each of `ends`, whether it was so written; the others (rows stored
/// already, retries, tasks of jobs, whose counters `end_rows` keeps) take
/// the usual path.
pub(super) fn insert_finished(
    tx: &rusqlite::Transaction,
    new: &[NewInvocation],
    starts: &[AttemptStart],
    ends: &[AttemptEnd],
    builtin: &mut Vec<Event>,
) -> Result<Vec<bool>> {
    let mut written = vec![false; ends.len()];
    if ends.is_empty() || new.is_empty() {
        return Ok(written);
    }
    let mut first_end: HashMap<Id, usize> = HashMap::with_capacity(ends.len());
    for (k, e) in ends.iter().enumerate() {
        first_end.entry(e.id).or_insert(k);
    }
    let started: HashMap<Id, u32> = starts.iter().map(|s| (s.id, s.attempt)).collect();
    for n in new {
        let i = &n.invocation;
        let Some(&k) = first_end.get(&i.id) else { continue };
        let e = &ends[k];
        let EndOutcome::Finish { state, output, error, logs } = &e.outcome else { continue };
        if i.state != InvocationState::Queued
            || i.job_id.is_some()
            || i.task_index.is_some()
            || i.attempts >= e.attempt
            || started.get(&i.id).is_some_and(|&a| a != e.attempt)
        {
            continue;
        }
        let error = error.as_ref().map(failure_json);
        let partition = partition_json(n.partition.as_ref());
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO invocations (id, project, function, version, state, attempts, max_attempts, \
                 queued_at, not_before, input, partition, output, error, logs, worker, started_at, finished_at, tags) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                id_bytes(i.id),
                i.project,
                i.function,
                i.version,
                state.as_str(),
                e.attempt,
                i.max_attempts,
                i.queued_at,
                n.input,
                partition,
                output,
                error,
                logs,
                e.worker,
                e.started_at,
                e.finished_at,
                tags_text(&i.tags),
            ])?;
        if inserted == 1 {
            tx.prepare_cached(INSERT_ATTEMPT)?.execute(params![
                id_bytes(i.id),
                e.attempt,
                e.worker,
                e.started_at,
                e.finished_at,
                state.as_str(),
                error
            ])?;
            written[k] = true;
            builtin.push(stratus_core::events::builtin::invocation(
                &i.project,
                &i.function,
                i.version,
                i.id,
                *state,
                e.attempt,
                error.as_deref(),
                e.finished_at,
            ));
        }
    }
    Ok(written)
}

/// [`commit_rows`], then, if it stored events, a bump of `tell`.
pub(super) fn commit_telling(
    c: &mut Connection,
    changes: &ChangeSet,
    tell: &tokio::sync::watch::Sender<u64>,
) -> Result<CommitReport> {
    let report = commit_rows(c, changes)?;
    if report.stored_events > 0 {
        // The one writer stores events in number order: the watch holds
        // the highest number committed.
        tell.send_modify(|n| *n = (*n).max(report.last_seq));
    }
    Ok(report)
}

pub(super) fn firing_from(r: &Row) -> rusqlite::Result<Firing> {
    let invocation: Option<Vec<u8>> = r.get(4)?;
    Ok(Firing {
        project: r.get(0)?,
        trigger: r.get(1)?,
        seq: r.get::<_, i64>(2)? as u64,
        at: r.get(3)?,
        invocation: invocation.map(id_from).transpose()?,
        output: r.get(5)?,
        depth: r.get(6)?,
    })
}

/// The body of [`StateStore::commit`], in one transaction.
pub(super) fn commit_rows(c: &mut Connection, changes: &ChangeSet) -> Result<CommitReport> {
    let ChangeSet { functions, new_jobs, new, starts, ends, jobs, cancels, trust, audit, purges, events, reactions } =
        changes;
    let now = stratus_core::Clock::now_ms(&stratus_core::SystemClock);
    let tx = c.transaction()?;
    for j in new_jobs {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO jobs (id, project, function, version, reduce_function, reduce_version, state, \
             total, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            id_bytes(j.id),
            j.project,
            j.function,
            j.version,
            j.reduce_function,
            j.reduce_version,
            j.state.as_str(),
            j.total as i64,
            j.created_at
        ])?;
    }
    let mut builtin = Vec::new();
    let functions = functions.iter().map(|f| change_function(&tx, f)).collect::<Result<Vec<_>>>()?;
    for f in &functions {
        if let FunctionOutcome::Put(f) = f {
            builtin.push(stratus_core::events::builtin::deployed(f));
        }
    }
    let finished = insert_finished(&tx, new, starts, ends, &mut builtin)?;
    let ids: HashSet<Id> = ends.iter().zip(&finished).filter(|(_, f)| **f).map(|(e, _)| e.id).collect();
    insert_rows_with(&tx, INSERT_INVOCATION_ONCE, new.iter().filter(|n| !ids.contains(&n.invocation.id)))?;
    start_rows(&tx, starts.iter().filter(|s| !ids.contains(&s.id)))?;
    let mut report = end_rows(&tx, ends.iter().zip(&finished).filter(|(_, f)| !**f).map(|(e, _)| e), &mut builtin)?;
    report.moved = jobs.iter().map(|m| move_job(&tx, m, &mut builtin)).collect::<Result<_>>()?;
    report.cancelled = cancels.iter().map(|c| cancel_job(&tx, c, &mut builtin)).collect::<Result<_>>()?;
    report.functions = functions;
    report.trust = trust.iter().map(|t| change_trust(&tx, t)).collect::<Result<_>>()?;
    for a in audit {
        tx.prepare_cached(crate::trust::INSERT_AUDIT)?.execute(params![
            id_bytes(a.id),
            a.at,
            a.actor,
            a.project,
            a.action,
            a.target
        ])?;
    }
    for p in purges {
        let (from, to) = p.id_range();
        let n = tx.prepare_cached(crate::trust::PURGE)?.execute(params![
            p.project,
            p.finished_before,
            p.at,
            p.function,
            Vec::<u8>::new(),
            id_bytes(from),
            id_bytes(to)
        ])?;
        report.purged.push(n as u64);
    }
    for e in &builtin {
        let stored = insert_event(&tx, e, now)?;
        if stored {
            report.stored_events += 1;
            report.last_seq = tx.last_insert_rowid() as u64;
        }
    }
    for e in events {
        let stored = insert_event(&tx, e, now)?;
        if stored {
            report.stored_events += 1;
            report.last_seq = tx.last_insert_rowid() as u64;
        }
        report.events.push(stored);
    }
    report.reactions = reactions.iter().map(|r| change_reaction(&tx, r)).collect::<Result<_>>()?;
    tx.commit()?;
    if !ids.is_empty() {
        let mut others = report.applied.into_iter();
        report.applied = finished.iter().map(|&f| f || others.next().unwrap_or(false)).collect();
    }
    Ok(report)
}

/// Stores an event unless its key is stored; whether it was.
pub(super) fn insert_event(tx: &rusqlite::Transaction, e: &Event, now: Millis) -> Result<bool> {
    let n = tx.prepare_cached(crate::events::INSERT_EVENT)?.execute(params![
        e.project,
        e.source,
        e.id,
        e.ty,
        e.subject,
        e.time,
        e.datacontenttype,
        e.data,
        e.depth,
        now
    ])?;
    Ok(n > 0)
}

/// One change to triggers within `tx`; whether it applied. A cursor that
/// is not where the change says refuses the whole commit.
pub(super) fn change_reaction(tx: &rusqlite::Transaction, change: &EventChange) -> Result<bool> {
    use crate::events::*;
    let applied = match Steps::of(change) {
        Steps::Create { t, spec } => {
            tx.prepare_cached(DELETE_CONTEXTS)?.execute(params![t.project, t.name])?;
            tx.prepare_cached(CREATE_TRIGGER)?.execute(params![t.project, t.name, spec, t.enabled, t.created_at])? > 0
        }
        Steps::Delete { project, name } => {
            tx.prepare_cached(DELETE_CONTEXTS)?.execute(params![project, name])?;
            tx.prepare_cached(DELETE_TRIGGER)?.execute(params![project, name])? > 0
        }
        Steps::Enabled { project, name, enabled } => {
            tx.prepare_cached(SET_ENABLED)?.execute(params![project, name, enabled])? > 0
        }
        Steps::PutContext { key, context } => {
            tx.prepare_cached(PUT_CONTEXT)?.execute(params![key.0, key.1, key.2, context])? > 0
        }
        Steps::DropContext { key } => tx.prepare_cached(DROP_CONTEXT)?.execute(params![key.0, key.1, key.2])? > 0,
        Steps::Cursor { from, to } => {
            if tx.prepare_cached(MOVE_CURSOR)?.execute(params![from, to])? == 0 {
                return Err(cursor_moved());
            }
            true
        }
        Steps::Fired(f) => {
            tx.prepare_cached(FIRED)?.execute(params![
                f.project,
                f.trigger,
                f.seq as i64,
                f.at,
                f.invocation.map(id_bytes),
                f.output,
                f.depth
            ])? > 0
        }
        Steps::Expire { before } => {
            tx.prepare_cached(EXPIRE_FIRINGS)?.execute(params![before])?;
            tx.prepare_cached(EXPIRE_EVENTS)?.execute(params![before])? > 0
        }
    };
    Ok(applied)
}

/// One change to a function's versions within `tx`.
pub(super) fn change_function(tx: &rusqlite::Transaction, change: &FunctionChange) -> Result<FunctionOutcome> {
    match change {
        FunctionChange::Put { project, name, spec, at } => {
            let max: Option<u32> = tx
                .prepare_cached("SELECT MAX(version) FROM functions WHERE project = ?1 AND name = ?2")?
                .query_row(params![project, name], |r| r.get(0))?;
            let version = max.unwrap_or(0) + 1;
            let spec_json = serde_json::to_string(spec).expect("spec serialises");
            tx.prepare_cached(
                "INSERT INTO functions (project, name, version, spec, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![project, name, version, spec_json, at])?;
            let f =
                Function { project: project.clone(), name: name.clone(), version, spec: spec.clone(), created_at: *at };
            Ok(FunctionOutcome::Put(f))
        }
        FunctionChange::Delete { project, name, at } => {
            let n = tx
                .prepare_cached(
                    "UPDATE functions SET deleted_at = ?1 WHERE project = ?2 AND name = ?3 AND deleted_at IS NULL",
                )?
                .execute(params![at, project, name])?;
            Ok(FunctionOutcome::Deleted(n > 0))
        }
    }
}

/// One change to projects or tokens within `tx`; whether it applied.
pub(super) fn change_trust(tx: &rusqlite::Transaction, change: &TrustChange) -> Result<bool> {
    use crate::trust::*;
    let applied = match Steps::of(change) {
        Steps::Project { name, at } => tx.prepare_cached(CREATE_PROJECT)?.execute(params![name, at])? > 0,
        Steps::DeleteProject { name, at } => {
            let applied = tx.prepare_cached(DELETE_PROJECT)?.execute(params![name, at])? > 0;
            if applied {
                tx.prepare_cached(REVOKE_PROJECT_TOKENS)?.execute(params![name, at])?;
                tx.prepare_cached(DELETE_PROJECT_VARIABLES)?.execute(params![name])?;
                tx.prepare_cached(DELETE_PROJECT_SECRETS)?.execute(params![name])?;
                tx.prepare_cached(DELETE_PROJECT_LIMITS)?.execute(params![name])?;
                tx.prepare_cached(DELETE_PROJECT_PYENVS)?.execute(params![name])?;
            }
            applied
        }
        Steps::Token { token: t, first } => {
            tx.prepare_cached(PUT_TOKEN)?.execute(params![
                t.hash,
                t.name,
                t.project,
                t.role.as_str(),
                t.created_at,
                t.created_by,
                t.expires_at,
                first
            ])? > 0
        }
        Steps::Revoke { name, at } => tx.prepare_cached(REVOKE_TOKEN)?.execute(params![name, at])? > 0,
        Steps::Quotas { name, quotas } => tx.prepare_cached(SET_QUOTAS)?.execute(params![name, quotas])? > 0,
        Steps::PutVariable { project, v } => {
            tx.prepare_cached(PUT_VARIABLE)?.execute(params![
                project,
                v.name,
                v.value,
                v.json,
                v.updated_at,
                v.updated_by
            ])? > 0
        }
        Steps::DeleteVariable { project, name } => {
            tx.prepare_cached(DELETE_VARIABLE)?.execute(params![project, name])? > 0
        }
        Steps::PutSecret { project, s, version, sealed } => {
            tx.prepare_cached(PUT_SECRET)?.execute(params![
                project,
                s.name,
                version,
                s.sealed.key_id,
                sealed,
                s.created_at,
                s.updated_at,
                s.updated_by
            ])? > 0
        }
        Steps::DeleteSecret { project, name } => tx.prepare_cached(DELETE_SECRET)?.execute(params![project, name])? > 0,
        Steps::Reseal { project, name, version, key_id, sealed } => {
            tx.prepare_cached(RESEAL_SECRET)?.execute(params![project, name, version, key_id, sealed])? > 0
        }
        Steps::PutLimit { project, l, slots } => {
            tx.prepare_cached(PUT_LIMIT)?.execute(params![project, l.tag, slots, l.updated_at, l.updated_by])? > 0
        }
        Steps::DeleteLimit { project, tag } => tx.prepare_cached(DELETE_LIMIT)?.execute(params![project, tag])? > 0,
        Steps::ResetLimit { project, tag, at } => {
            tx.prepare_cached(RESET_LIMIT)?.execute(params![project, tag, at])? > 0
        }
        Steps::PutPyEnv { project, e } => {
            tx.prepare_cached(PUT_PYENV)?.execute(params![
                project,
                e.name,
                e.python,
                e.requirements,
                e.updated_at,
                e.updated_by
            ])? > 0
        }
        Steps::DeletePyEnv { project, name } => tx.prepare_cached(DELETE_PYENV)?.execute(params![project, name])? > 0,
    };
    Ok(applied)
}

/// One job cancellation within `tx`; see [`JobCancel`].
pub(super) fn cancel_job(tx: &rusqlite::Transaction, c: &JobCancel, builtin: &mut Vec<Event>) -> Result<u64> {
    let err = failure_json(&stratus_core::change::cancelled_task());
    let n = tx
        .prepare_cached(
            "UPDATE invocations SET state = 'cancelled', finished_at = ?1, error = ?2 \
             WHERE job_id = ?3 AND state = 'queued'",
        )?
        .execute(params![c.at, err, id_bytes(c.id)])?;
    tx.prepare_cached(
        "UPDATE jobs SET cancelled = cancelled + ?1, \
         state = CASE WHEN state IN ('running', 'reducing') THEN 'cancelled' ELSE state END, \
         finished_at = COALESCE(finished_at, ?2) WHERE id = ?3",
    )?
    .execute(params![n as i64, c.at, id_bytes(c.id)])?;
    job_event(tx, c.id, c.at, builtin)?;
    Ok(n as u64)
}

/// The event of a job's end, if it has ended (a second one of the same job
/// is ignored when stored: its id is the job's).
fn job_event(tx: &rusqlite::Transaction, id: Id, at: Millis, builtin: &mut Vec<Event>) -> Result<()> {
    if let Some(job) = read_job(tx, id_bytes(id))?
        && let Some(e) = stratus_core::events::builtin::job(&job, at)
    {
        builtin.push(e);
    }
    Ok(())
}

/// One guarded job move within `tx`; see [`JobMove`].
pub(super) fn move_job(tx: &rusqlite::Transaction, m: &JobMove, builtin: &mut Vec<Event>) -> Result<bool> {
    let Some(job) = read_job(tx, id_bytes(m.id))? else { return Ok(false) };
    if !m.from.contains(&job.state) {
        return Ok(false);
    }
    let update = &m.update;
    if let Some(row) = &update.insert {
        insert_rows(tx, std::slice::from_ref(row))?;
    }
    tx.prepare_cached(
        "UPDATE jobs SET state = ?1, finished_at = COALESCE(?2, finished_at), error = COALESCE(?3, error), \
         reduce_invocation = COALESCE(?4, reduce_invocation) WHERE id = ?5",
    )?
    .execute(params![
        m.to.as_str(),
        update.finished_at,
        update.error,
        update.reduce_invocation.map(id_bytes),
        id_bytes(m.id)
    ])?;
    if stratus_core::events::builtin::job_ended(m.to) {
        job_event(tx, m.id, update.finished_at.unwrap_or(0), builtin)?;
    }
    Ok(true)
}

/// Applies attempt ends within `tx`; see [`StateStore::end_attempts`].
pub(super) fn end_rows<'a>(
    tx: &rusqlite::Transaction,
    ends: impl IntoIterator<Item = &'a AttemptEnd>,
    builtin: &mut Vec<Event>,
) -> Result<CommitReport> {
    let mut applied = Vec::new();
    // Per job: (succeeded, failed, cancelled) added by this batch.
    let mut touched: Vec<([u8; 16], (i64, i64, i64))> = Vec::new();
    {
        // The guard: still on this attempt (or queued for it, when the
        // start was never recorded) and not finished, reported by the
        // worker that started it (see BROKER_WORKER).
        let mut update = tx.prepare_cached(
            "UPDATE invocations SET state = ?1, attempts = ?2, output = ?3, error = ?4, logs = ?5, worker = ?6, \
             started_at = ?7, finished_at = ?8, not_before = COALESCE(?9, not_before) \
             WHERE id = ?10 AND ((state = 'running' AND attempts = ?2 AND (worker = ?6 OR worker = 'broker')) \
             OR (state = 'queued' AND attempts < ?2)) \
             RETURNING job_id, task_index, project, function, version",
        )?;
        let mut attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
        let mut depth = tx.prepare_cached("SELECT depth FROM trigger_firings WHERE invocation = ?1")?;
        for e in ends {
            let id = id_bytes(e.id);
            let row = e.row();
            type Found = (Option<Vec<u8>>, Option<i64>, String, String, u32);
            let found: Option<Found> = update
                .query_row(
                    params![
                        row.state.as_str(),
                        e.attempt,
                        row.output,
                        row.error,
                        row.logs,
                        e.worker,
                        e.started_at,
                        row.finished_at,
                        row.not_before,
                        id
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            let Some((job, index, project, function, version)) = found else {
                applied.push(false);
                continue;
            };
            attempt.execute(params![
                id,
                e.attempt,
                e.worker,
                e.started_at,
                e.finished_at,
                row.attempt_state.as_str(),
                row.error
            ])?;
            if job.is_none()
                && let Some(at) = row.finished_at
            {
                let mut event = stratus_core::events::builtin::invocation(
                    &project,
                    &function,
                    version,
                    e.id,
                    row.state,
                    e.attempt,
                    row.error.as_deref(),
                    at,
                );
                // A trigger's action: its events carry the action's depth.
                event.depth = depth.query_row(params![id], |r| r.get(0)).optional()?.unwrap_or(0);
                builtin.push(event);
            }
            if let (Some(job), Some(_)) = (job, index) {
                let (ok, failed, cancelled) = row.count.deltas();
                let job: [u8; 16] = job.try_into().map_err(|_| corrupt("job id")("length"))?;
                match touched.iter_mut().find(|(j, _)| *j == job) {
                    Some((_, c)) => {
                        c.0 += ok;
                        c.1 += failed;
                        c.2 += cancelled;
                    }
                    None => touched.push((job, (ok, failed, cancelled))),
                }
            }
            applied.push(true);
        }
    }
    {
        let mut count = tx.prepare_cached(
            "UPDATE jobs SET succeeded = succeeded + ?1, failed = failed + ?2, cancelled = cancelled + ?3 WHERE id = ?4",
        )?;
        for (job, (ok, failed, cancelled)) in &touched {
            count.execute(params![ok, failed, cancelled, job])?;
        }
    }
    let jobs = touched
        .into_iter()
        .map(|(j, _)| read_job(tx, j))
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect();
    Ok(CommitReport { applied, jobs, ..Default::default() })
}
