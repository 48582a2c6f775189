//! PostgreSQL engine (the distributed mode): several servers may share one
//! database, so nothing here relies on being the only writer.
//!
//! URL: `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME&pool_size=N&...]`
//! (`postgresql://` too). `schema` keeps Stratus's tables in that schema
//! (created if missing; lowercase letters, digits and `_`), which lets one
//! database hold several independent stores, as the tests do. `pool_size`
//! (default 8) bounds the connections this process opens. Other parameters
//! are PostgreSQL's own (`connect_timeout`, `application_name`, `options`,
//! ...); TLS is not supported yet, so `sslmode=require` fails to connect.
//!
//! Correctness comes from the database, never from this process: every
//! guarded change is one conditional `UPDATE ... WHERE state/attempt match`,
//! which PostgreSQL re-checks against the row it locks, and a job's counters
//! move in the same statement as the tasks that move them. A batch of starts
//! or ends is one statement over `UNNEST`ed arrays, and a job's tasks stream
//! in with one binary `COPY`, so the cost of a task is amortised over its
//! batch. Two statements touching the same rows in different orders can
//! deadlock; PostgreSQL then fails one of them, and since each write is one
//! statement or one transaction, it is simply run again.

use crate::trust::pg;
use crate::{
    AttemptEnd, AttemptStart, ChangeSet, CommitReport, Error, FunctionChange, FunctionOutcome, JobMove, JobRows, Lane,
    NewInvocation, Payloads, PendingInvocation, Result, SchemaVersion, Seat, StateStore, TaskResult,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use stratus_core::change::{JobCount, failure_json, partition_json, tags_text};
use stratus_core::clock::Millis;
use stratus_core::events::{Event, EventChange, Firing, Trigger};
use stratus_core::trust::{AuditEntry, Project, Token, TrustChange};
use stratus_core::{Attempt, Failure, Function, FunctionSpec, Id, Invocation, InvocationState, Job, Partition};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Config, GenericClient, NoTls, Row, Statement, Transaction};
use uuid::Uuid;

mod conn;
mod rows;
mod sql;
use conn::*;
use rows::*;
use sql::*;

/// Numbered migrations; the `stratus_schema` table records those applied.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_leader.sql")),
    (3, include_str!("../../migrations/postgres/0003_health.sql")),
    (4, include_str!("../../migrations/postgres/0004_trust.sql")),
    (5, include_str!("../../migrations/postgres/0005_events.sql")),
    (6, include_str!("../../migrations/postgres/0006_settings.sql")),
    (7, include_str!("../../migrations/postgres/0007_limits.sql")),
    (8, include_str!("../../migrations/postgres/0008_queue_by_project.sql")),
    (9, include_str!("../../migrations/postgres/0009_pyenvs.sql")),
];

/// First key of the advisory lock that serialises migrations ("STRT"); the
/// second is a hash of the schema, so separate stores do not wait on each other.
const MIGRATION_LOCK: i32 = 0x5354_5254;

/// First key of the advisory locks that serialise a function's versions ("FUNC").
const FUNCTION_LOCK: i32 = 0x4655_4e43;

const DEFAULT_POOL_SIZE: usize = 8;

/// How many times a write that lost a deadlock is run again.
const RETRIES: u32 = 8;

pub struct PostgresStore {
    pool: Pool,
    schema: SchemaVersion,
    /// Bumped after each commit that stored events.
    event_commits: tokio::sync::watch::Sender<u64>,
}

impl PostgresStore {
    /// Connects to the database named by `url` (see the module docs) and
    /// applies pending migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, MIGRATIONS).await
    }

    pub(crate) async fn open_with(url: &str, migrations: &[(u32, &str)]) -> Result<Self> {
        let Settings { config, schema, pool_size, shown } = Settings::parse(url)?;
        let pool = Pool { config, shown, idle: Mutex::new(Vec::new()), permits: Semaphore::new(pool_size) };
        let version = {
            let mut conn = pool.get().await?;
            migrate(&mut conn.client, schema.as_deref(), migrations).await?
        };
        Ok(PostgresStore { pool, schema: version, event_commits: tokio::sync::watch::Sender::new(0) })
    }
}

impl PostgresStore {
    async fn commit_once(
        &self,
        changes: &ChangeSet,
        starts: &[&AttemptStart],
        rounds: &[Vec<usize>],
    ) -> PgResult<CommitReport> {
        let mut c = self.pool.get().await?;
        let st = Recording {
            insert: c.stmt(INSERT_INVOCATIONS_ONCE).await?,
            start: c.stmt(START_ATTEMPTS).await?,
            end: c.stmt(END_ATTEMPTS).await?,
        };
        let (new, ends) = (&changes.new, &changes.ends);
        let statements = usize::from(!new.is_empty()) + usize::from(!starts.is_empty()) + rounds.len();
        let others = changes.functions.is_empty()
            && changes.new_jobs.is_empty()
            && changes.jobs.is_empty()
            && changes.cancels.is_empty()
            && changes.trust.is_empty()
            && changes.audit.is_empty()
            && changes.purges.is_empty()
            && changes.events.is_empty()
            && changes.reactions.is_empty();
        if others && statements == 1 {
            // One statement is atomic on its own: no BEGIN and COMMIT.
            st.insert_and_start(&c.client, new, starts).await?;
            return st.end(&c.client, ends, rounds).await;
        }
        // Several statements share one transaction (two more round trips),
        // so a change set is kept whole or not at all.
        let (set, insert) = (c.stmt(SET_JOB_STATE).await?, c.stmt(INSERT_INVOCATIONS).await?);
        let functions = Functions {
            lock: c.stmt(LOCK_FUNCTION).await?,
            put: c.stmt(PUT_FUNCTION).await?,
            delete: c.stmt(DELETE_FUNCTION).await?,
        };
        let cancel = c.stmt(CANCEL_JOB).await?;
        let trust = match changes.trust.is_empty() && changes.audit.is_empty() && changes.purges.is_empty() {
            true => None,
            false => Some(TrustStatements::prepare(&mut c).await?),
        };
        let (insert_event, job_by_id) = (c.stmt(&pg(crate::events::INSERT_EVENT)).await?, c.stmt(JOB_BY_ID).await?);
        let reactions = match changes.reactions.is_empty() {
            true => None,
            false => Some(Reactions::prepare(&mut c).await?),
        };
        let now = stratus_core::Clock::now_ms(&stratus_core::SystemClock);
        let mut builtin = Vec::new();
        let insert_job = match changes.new_jobs.is_empty() {
            true => None,
            false => Some(c.stmt(&format!("{INSERT_JOB} ON CONFLICT (id) DO NOTHING")).await?),
        };
        let tx = c.client.transaction().await?;
        if let Some(st) = &insert_job {
            for j in &changes.new_jobs {
                let (total, version, reduce_version) =
                    (j.total as i64, i64::from(j.version), j.reduce_version.map(i64::from));
                let params: [Param<'_>; 9] = [
                    &j.id.as_uuid(),
                    &j.project,
                    &j.function,
                    &version,
                    &j.reduce_function,
                    &reduce_version,
                    &j.state.as_str(),
                    &total,
                    &j.created_at,
                ];
                tx.execute(st, &params).await?;
            }
        }
        let mut changed = Vec::with_capacity(changes.functions.len());
        for f in &changes.functions {
            let outcome = functions.change(&tx, f).await?;
            if let FunctionOutcome::Put(f) = &outcome {
                builtin.push(stratus_core::events::builtin::deployed(f));
            }
            changed.push(outcome);
        }
        st.insert_and_start(&tx, new, starts).await?;
        let mut report = st.end(&tx, ends, rounds).await?;
        report.functions = changed;
        let job_event = async |id: Id, at: Millis, builtin: &mut Vec<Event>| -> PgResult<()> {
            if let Some(row) = tx.query_opt(&job_by_id, &[&id.as_uuid()]).await?
                && let Some(e) = stratus_core::events::builtin::job(&job_from(&row)?, at)
            {
                builtin.push(e);
            }
            Ok(())
        };
        for m in &changes.jobs {
            let moved = move_job(&tx, &set, &insert, m).await?;
            if moved && stratus_core::events::builtin::job_ended(m.to) {
                job_event(m.id, m.update.finished_at.unwrap_or(0), &mut builtin).await?;
            }
            report.moved.push(moved);
        }
        let error = failure_json(&stratus_core::change::cancelled_task());
        for j in &changes.cancels {
            let row = tx.query_one(&cancel, &[&j.at, &error, &j.id.as_uuid()]).await?;
            report.cancelled.push(to_u64(row.try_get(0)?, "count")?);
            job_event(j.id, j.at, &mut builtin).await?;
        }
        if let Some(trust) = trust {
            for t in &changes.trust {
                report.trust.push(trust.change(&tx, t).await?);
            }
            for a in &changes.audit {
                let params: [Param<'_>; 6] = [&a.id.as_uuid(), &a.at, &a.actor, &a.project, &a.action, &a.target];
                tx.execute(&trust.audit, &params).await?;
            }
            for p in &changes.purges {
                let empty: &[u8] = &[];
                let (from, to) = p.id_range();
                let (from, to) = (from.as_uuid(), to.as_uuid());
                let params: [Param<'_>; 7] = [&p.project, &p.finished_before, &p.at, &p.function, &empty, &from, &to];
                report.purged.push(tx.execute(&trust.purge, &params).await?);
            }
        }
        let store_event = async |e: &Event| -> PgResult<bool> {
            let depth = e.depth as i32;
            let params: [Param<'_>; 10] =
                [&e.project, &e.source, &e.id, &e.ty, &e.subject, &e.time, &e.datacontenttype, &e.data, &depth, &now];
            Ok(tx.execute(&insert_event, &params).await? > 0)
        };
        for e in &builtin {
            report.stored_events += u64::from(store_event(e).await?);
        }
        for e in &changes.events {
            let stored = store_event(e).await?;
            report.stored_events += u64::from(stored);
            report.events.push(stored);
        }
        if let Some(r) = reactions {
            for change in &changes.reactions {
                report.reactions.push(r.change(&tx, change).await?);
            }
        }
        tx.commit().await?;
        Ok(report)
    }

    async fn lead_once(&self, seat: &Seat, lease_ms: i64, restarted: bool) -> PgResult<Option<Seat>> {
        let mut c = self.pool.get().await?;
        let lead = c.stmt(LEAD).await?;
        let leader = c.stmt(LEADER).await?;
        let incarnation = seat.incarnation.as_uuid();
        loop {
            let params: [Param<'_>; 5] = [&seat.url, &incarnation, &lease_ms, &restarted, &seat.server.as_uuid()];
            if c.client.query_opt(&lead, &params).await?.is_some() {
                return Ok(None);
            }
            // Another holds it, unless it resigned in between: then try again.
            if let Some(row) = c.client.query_opt(&leader, &[]).await? {
                return Ok(Some(Seat {
                    server: Id::from_uuid(row.try_get(0)?),
                    url: row.try_get(1)?,
                    incarnation: Id::from_uuid(row.try_get(2)?),
                }));
            }
        }
    }

    async fn requeue_running_once(&self) -> PgResult<u64> {
        let c = self.pool.get().await?;
        Ok(c.client.execute(REQUEUE_RUNNING, &[]).await?)
    }
}

#[async_trait]
impl StateStore for PostgresStore {
    fn schema(&self) -> SchemaVersion {
        self.schema
    }

    async fn get_function(&self, project: &str, name: &str, version: Option<u32>) -> Result<Option<Function>> {
        let mut c = self.pool.get().await?;
        let row = match version {
            Some(v) => {
                let st = c.stmt(GET_FUNCTION_VERSION).await?;
                c.client.query_opt(&st, &[&project, &name, &i64::from(v)]).await?
            }
            None => {
                let st = c.stmt(GET_FUNCTION_LATEST).await?;
                c.client.query_opt(&st, &[&project, &name]).await?
            }
        };
        row.as_ref().map(function_from).transpose()
    }

    async fn list_functions(&self, project: &str) -> Result<Vec<Function>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_FUNCTIONS).await?;
        c.client.query(&st, &[&project]).await?.iter().map(function_from).collect()
    }

    async fn check_writable(&self, now: Millis) -> Result<()> {
        let c = self.pool.get().await?;
        c.client
            .execute(
                "INSERT INTO health (id, checked_at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET checked_at = $1",
                &[&now],
            )
            .await?;
        Ok(())
    }

    async fn commit(&self, changes: ChangeSet) -> Result<CommitReport> {
        if changes.is_empty() {
            return Ok(CommitReport::default());
        }
        let starts = changes.first_starts();
        let rounds = end_rounds(&changes.ends);
        let (changes, starts, rounds) = (&changes, &starts, &rounds);
        let report = retrying(move || self.commit_once(changes, starts, rounds)).await?;
        if report.stored_events > 0 {
            self.event_commits.send_modify(|n| *n += 1);
        }
        Ok(report)
    }

    async fn events(&self, q: &crate::EventQuery) -> Result<Vec<Event>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::events::EVENTS)).await?;
        let prefix = q.subject_prefix.as_deref().filter(|p| !p.is_empty());
        let end = prefix.map(crate::events::prefix_end);
        let (after, limit) = (q.after as i64, i64::from(q.limit));
        let params: [Param<'_>; 6] = [&after, &limit, &q.project, &q.ty, &prefix, &end];
        c.client
            .query(&st, &params)
            .await?
            .iter()
            .map(|r| {
                Ok(crate::events::event_from((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                    r.try_get(8)?,
                    r.try_get(9)?,
                )))
            })
            .collect()
    }

    async fn sequence_events(&self) -> Result<u64> {
        retrying(|| async {
            let mut c = self.pool.get().await?;
            let st = c.stmt(SEQUENCE_EVENTS).await?;
            let tx = c.client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&EVENT_LOCK]).await?;
            tx.execute(&st, &[]).await?;
            let max: Option<i64> = tx.query_one("SELECT MAX(seq) FROM events", &[]).await?.try_get(0)?;
            tx.commit().await?;
            Ok(max.unwrap_or(0) as u64)
        })
        .await
    }

    fn event_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.event_commits.subscribe()
    }

    async fn triggers(&self) -> Result<crate::TriggerState> {
        use crate::events::*;
        let mut c = self.pool.get().await?;
        let (t, x, k) = (c.stmt(&pg(TRIGGERS)).await?, c.stmt(&pg(CONTEXTS)).await?, c.stmt(&pg(CURSOR)).await?);
        let triggers = c
            .client
            .query(&t, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(Trigger {
                    project: r.try_get(0)?,
                    name: r.try_get(1)?,
                    spec: spec_from(r.try_get(2)?).map_err(Error::Corrupt)?,
                    enabled: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    from_seq: to_u64(r.try_get(5)?, "from_seq")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let contexts = c
            .client
            .query(&x, &[])
            .await?
            .iter()
            .map(|r| {
                let key = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
                Ok((key, context_from(r.try_get(3)?).map_err(Error::Corrupt)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let cursor = to_u64(c.client.query_one(&k, &[]).await?.try_get(0)?, "cursor")?;
        Ok(crate::TriggerState { triggers, contexts, cursor })
    }

    async fn firings(&self, project: &str, trigger: &str, limit: u32) -> Result<Vec<Firing>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::events::FIRINGS)).await?;
        c.client.query(&st, &[&project, &trigger, &i64::from(limit)]).await?.iter().map(firing_from).collect()
    }

    async fn firings_of(&self, invocations: &[Id]) -> Result<Vec<Firing>> {
        let mut c = self.pool.get().await?;
        let st = c
            .stmt(
                "SELECT project, trigger, seq, at, invocation, output, depth FROM trigger_firings \
                 WHERE invocation = ANY($1::uuid[])",
            )
            .await?;
        let ids: Vec<Uuid> = invocations.iter().map(|i| i.as_uuid()).collect();
        c.client.query(&st, &[&ids]).await?.iter().map(firing_from).collect()
    }

    async fn trust(&self) -> Result<crate::Trust> {
        use crate::trust::*;
        let mut c = self.pool.get().await?;
        let (p, t) = (c.stmt(&pg(LIVE_PROJECTS)).await?, c.stmt(&pg(LIVE_TOKENS)).await?);
        let projects = c
            .client
            .query(&p, &[])
            .await?
            .iter()
            .map(|r| {
                let quotas = quotas_from(r.try_get(2)?).map_err(Error::Corrupt)?;
                Ok(Project { name: r.try_get(0)?, created_at: r.try_get(1)?, quotas })
            })
            .collect::<Result<Vec<_>>>()?;
        let tokens = c
            .client
            .query(&t, &[])
            .await?
            .iter()
            .map(|r| {
                Ok(Token {
                    hash: r.try_get(0)?,
                    name: r.try_get(1)?,
                    project: r.try_get(2)?,
                    role: role_from(r.try_get(3)?).map_err(Error::Corrupt)?,
                    created_at: r.try_get(4)?,
                    created_by: r.try_get(5)?,
                    expires_at: r.try_get(6)?,
                    revoked_at: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::Trust { projects, tokens })
    }

    async fn variables(&self, project: &str) -> Result<Vec<stratus_core::settings::Variable>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::VARIABLES)).await?;
        c.client
            .query(&st, &[&project])
            .await?
            .iter()
            .map(|r| {
                Ok(stratus_core::settings::Variable {
                    name: r.try_get(0)?,
                    value: r.try_get(1)?,
                    json: r.try_get(2)?,
                    version: to_u64(r.try_get(3)?, "version")?,
                    updated_at: r.try_get(4)?,
                    updated_by: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn payload_cutoff(&self, project: &str, budget: u64) -> Result<Option<Millis>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::PAYLOAD_CUTOFF_POSTGRES)).await?;
        let budget = budget.min(i64::MAX as u64) as i64;
        let row = c.client.query_opt(&st, &[&project, &budget]).await?;
        Ok(row.map(|r| r.try_get::<_, i64>(0)).transpose()?.map(|at| at + 1))
    }

    async fn artifacts_in_use(&self) -> Result<std::collections::HashSet<String>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::SPECS_IN_USE)).await?;
        let rows = c.client.query(&st, &[]).await?;
        let specs = rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<Vec<_>, _>>()?;
        Ok(crate::trust::artifacts_of(specs))
    }

    async fn limits(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::TagLimit)>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::LIMITS)).await?;
        c.client
            .query(&st, &[&project])
            .await?
            .iter()
            .map(|r| {
                let row = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?);
                Ok(crate::trust::limit_from(row))
            })
            .collect()
    }

    async fn pyenvs(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::pyenv::PyEnv)>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::PYENVS)).await?;
        c.client
            .query(&st, &[&project])
            .await?
            .iter()
            .map(|r| {
                let row = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?);
                Ok(crate::trust::pyenv_from(row))
            })
            .collect()
    }

    async fn secrets(&self, project: Option<&str>) -> Result<Vec<(String, stratus_core::settings::StoredSecret)>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::trust::SECRETS)).await?;
        c.client
            .query(&st, &[&project])
            .await?
            .iter()
            .map(|r| {
                let row = (
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                    r.try_get(7)?,
                );
                crate::trust::secret_from(row).map_err(Error::Corrupt)
            })
            .collect()
    }

    async fn audit(&self, project: Option<&str>, since: Millis, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&crate::trust::pg(crate::trust::AUDIT)).await?;
        c.client
            .query(&st, &[&since, &project, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: Id::from_uuid(r.try_get(0)?),
                    at: r.try_get(1)?,
                    actor: r.try_get(2)?,
                    project: r.try_get(3)?,
                    action: r.try_get(4)?,
                    target: r.try_get(5)?,
                })
            })
            .collect()
    }

    async fn get_invocation(&self, project: &str, id: Id) -> Result<Option<Invocation>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_INVOCATION).await?;
        c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?.as_ref().map(invocation_from).transpose()
    }

    async fn get_payloads(&self, project: &str, id: Id) -> Result<Option<Payloads>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_PAYLOADS).await?;
        let row = c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?;
        Ok(match row {
            Some(r) => Some(Payloads { output: r.try_get(0)?, logs: r.try_get(1)?, purged_at: r.try_get(2)? }),
            None => None,
        })
    }

    async fn input_preview(&self, project: &str, id: Id, max: u32) -> Result<Option<(Vec<u8>, u64)>> {
        let mut c = self.pool.get().await?;
        let st = c
            .stmt("SELECT substring(input FROM 1 FOR $3), octet_length(input) FROM invocations WHERE id = $1 AND project = $2")
            .await?;
        let row = c.client.query_opt(&st, &[&id.as_uuid(), &project, &(max as i32)]).await?;
        Ok(match row {
            Some(r) => {
                Some((r.try_get::<_, Option<Vec<u8>>>(0)?.unwrap_or_default(), r.try_get::<_, i32>(1)?.max(0) as u64))
            }
            None => None,
        })
    }

    async fn max_attempts(&self, ids: &[Id]) -> Result<Vec<(Id, u32)>> {
        let uuids: Vec<_> = ids.iter().map(|id| id.as_uuid()).collect();
        let mut c = self.pool.get().await?;
        let st = c.stmt("SELECT id, max_attempts FROM invocations WHERE id = ANY($1)").await?;
        c.client
            .query(&st, &[&uuids])
            .await?
            .iter()
            .map(|r| Ok((Id::from_uuid(r.try_get("id")?), to_u32(r.try_get("max_attempts")?, "max attempts")?)))
            .collect()
    }

    async fn list_attempts(&self, id: Id) -> Result<Vec<Attempt>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_ATTEMPTS).await?;
        c.client
            .query(&st, &[&id.as_uuid()])
            .await?
            .iter()
            .map(|r| {
                Ok(Attempt {
                    attempt: to_u32(r.try_get("attempt")?, "attempt")?,
                    worker: r.try_get("worker")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                    state: state_from(r.try_get("state")?)?,
                    error: failure_from(r.try_get("error")?)?,
                })
            })
            .collect()
    }

    async fn list_invocations(
        &self,
        project: &str,
        function: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> Result<Vec<Invocation>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_INVOCATIONS).await?;
        // No UUIDv7 is all ones, so `id < max` keeps every real id.
        let before = before.map(|b| b.as_uuid()).unwrap_or(Uuid::max());
        c.client
            .query(&st, &[&project, &before, &function, &i64::from(limit)])
            .await?
            .iter()
            .map(invocation_from)
            .collect()
    }

    async fn lead(&self, seat: &Seat, lease: Duration, restarted: bool) -> Result<Option<Seat>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        retrying(move || self.lead_once(seat, lease_ms, restarted)).await
    }

    async fn resign(&self, seat: &Seat) -> Result<()> {
        let c = self.pool.get().await?;
        c.client.execute(RESIGN, &[&seat.incarnation.as_uuid()]).await?;
        Ok(())
    }

    async fn requeue_running(&self) -> Result<u64> {
        retrying(move || self.requeue_running_once()).await
    }

    async fn queued_in(
        &self,
        lane: Option<Lane>,
        project: Option<&str>,
        after: Option<Id>,
        limit: u32,
    ) -> Result<Vec<PendingInvocation>> {
        let sql = match (lane, project.is_some()) {
            (None, false) => QUEUED_ANY,
            (Some(Lane::Direct), false) => QUEUED_DIRECT,
            (Some(Lane::Tasks), false) => QUEUED_TASKS,
            (None, true) => QUEUED_ANY_OF,
            (Some(Lane::Direct), true) => QUEUED_DIRECT_OF,
            (Some(Lane::Tasks), true) => QUEUED_TASKS_OF,
        };
        let mut c = self.pool.get().await?;
        let st = c.stmt(sql).await?;
        // No UUIDv7 is nil, so `id > nil` keeps every real id.
        let after = after.map(|a| a.as_uuid()).unwrap_or(Uuid::nil());
        let limit = i64::from(limit);
        let rows = match project {
            Some(p) => c.client.query(&st, &[&after, &limit, &p]).await?,
            None => c.client.query(&st, &[&after, &limit]).await?,
        };
        rows.iter()
            .map(|r| {
                Ok(PendingInvocation {
                    invocation: invocation_from(r)?,
                    input: r.try_get("input")?,
                    partition: partition_from(r.try_get("partition")?)?,
                    not_before: r.try_get("not_before")?,
                })
            })
            .collect()
    }

    async fn queued_projects(&self, lane: Lane) -> Result<Vec<String>> {
        let sql = match lane {
            Lane::Direct => QUEUED_PROJECTS_DIRECT,
            Lane::Tasks => QUEUED_PROJECTS_TASKS,
        };
        let mut c = self.pool.get().await?;
        let st = c.stmt(sql).await?;
        c.client.query(&st, &[]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    async fn active_jobs(&self) -> Result<Vec<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(ACTIVE_JOBS).await?;
        c.client.query(&st, &[]).await?.iter().map(job_from).collect()
    }

    async fn count_by_state(&self) -> Result<Vec<(InvocationState, u64)>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(COUNT_BY_STATE).await?;
        c.client
            .query(&st, &[])
            .await?
            .iter()
            .map(|r| Ok((state_from(r.try_get(0)?)?, to_u64(r.try_get(1)?, "count")?)))
            .collect()
    }

    async fn create_job(&self, job: &Job, mut rows: tokio::sync::mpsc::Receiver<JobRows>) -> Result<Job> {
        let mut job = job.clone();
        let mut c = self.pool.get().await?;
        let insert_job = c.stmt(INSERT_JOB).await?;
        let tx = c.client.transaction().await?;
        // One COPY for the whole stream, however the rows are batched. On an
        // abort, dropping the writer fails the COPY and dropping the
        // transaction rolls it back.
        let sink = tx.copy_in(COPY_INVOCATIONS).await?;
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COPY_TYPES));
        let mut total = 0u64;
        loop {
            match rows.recv().await {
                Some(JobRows::Rows(batch)) => {
                    total += batch.len() as u64;
                    for n in &batch {
                        let i = &n.invocation;
                        let partition = partition_json(n.partition.as_ref());
                        let tags = tags_text(&i.tags);
                        writer
                            .as_mut()
                            .write(&[
                                &i.id.as_uuid(),
                                &i.project,
                                &i.function,
                                &i64::from(i.version),
                                &i.state.as_str(),
                                &i64::from(i.attempts),
                                &i64::from(i.max_attempts),
                                &i.job_id.map(|j| j.as_uuid()),
                                &i.task_index.map(|x| x as i64),
                                &i.queued_at,
                                &i.queued_at,
                                &n.input,
                                &partition,
                                &tags,
                            ])
                            .await?;
                    }
                }
                Some(JobRows::Commit) => break,
                Some(JobRows::Abort(why)) => return Err(Error::Aborted(why)),
                None => return Err(Error::Aborted("the request ended before the job was complete".into())),
            }
        }
        writer.as_mut().finish().await?;
        job.total = total;
        tx.execute(
            &insert_job,
            &[
                &job.id.as_uuid(),
                &job.project,
                &job.function,
                &i64::from(job.version),
                &job.reduce_function,
                &job.reduce_version.map(i64::from),
                &job.state.as_str(),
                &(total as i64),
                &job.created_at,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(job)
    }

    async fn get_job(&self, project: &str, id: Id) -> Result<Option<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(GET_JOB).await?;
        c.client.query_opt(&st, &[&id.as_uuid(), &project]).await?.as_ref().map(job_from).transpose()
    }

    async fn list_jobs(&self, project: &str, before: Option<Id>, limit: u32) -> Result<Vec<Job>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(LIST_JOBS).await?;
        let before = before.map(|b| b.as_uuid()).unwrap_or(Uuid::max());
        c.client.query(&st, &[&project, &before, &i64::from(limit)]).await?.iter().map(job_from).collect()
    }

    async fn job_timings(&self, job: Id, from: u64, limit: u32) -> Result<Vec<stratus_core::api::TaskTiming>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(&pg(crate::events::JOB_TIMINGS)).await?;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        c.client
            .query(&st, &[&job.as_uuid(), &from, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(stratus_core::api::TaskTiming {
                    index: to_u64(r.try_get(0)?, "task index")?,
                    invocation: Id::from_uuid(r.try_get(1)?),
                    state: state_from(r.try_get(2)?)?,
                    attempts: to_u32(r.try_get::<_, i64>(3)?, "attempts")?,
                    worker: r.try_get(4)?,
                    queued_at: r.try_get(5)?,
                    started_at: r.try_get(6)?,
                    finished_at: r.try_get(7)?,
                })
            })
            .collect()
    }

    async fn job_results(&self, job: Id, from: u64, limit: u32) -> Result<Vec<TaskResult>> {
        let mut c = self.pool.get().await?;
        let st = c.stmt(JOB_RESULTS).await?;
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        c.client
            .query(&st, &[&job.as_uuid(), &from, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(TaskResult {
                    index: to_u64(r.try_get(0)?, "task index")?,
                    invocation: Id::from_uuid(r.try_get(1)?),
                    state: state_from(r.try_get(2)?)?,
                    output: r.try_get(3)?,
                    error: failure_from(r.try_get(4)?)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The URL of a fresh schema on the test server (see `tests/common`).
    fn fresh_schema_url() -> (String, String) {
        let base = std::env::var("STRATUS_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
        let schema = format!("t_{}", stratus_core::new_id().to_string().replace('-', ""));
        let sep = if base.contains('?') { '&' } else { '?' };
        (format!("{base}{sep}schema={schema}"), schema)
    }

    #[test]
    fn batches_split_into_rounds_of_distinct_invocations() {
        let (a, b) = (stratus_core::new_id(), stratus_core::new_id());
        let end = |id| AttemptEnd {
            id,
            attempt: 1,
            worker: "w".into(),
            started_at: 0,
            finished_at: 0,
            outcome: crate::EndOutcome::Requeue {
                not_before: 0,
                error: Failure::new(stratus_core::FailureKind::Exit, "x"),
                logs: vec![],
            },
        };
        let ends = [end(a), end(b), end(a), end(a), end(b)];
        assert_eq!(end_rounds(&ends), [vec![0, 1], vec![2, 4], vec![3]]);
    }

    /// A database on schema version 1, with data, is upgraded to the latest
    /// version (the leader's lease, the health row); the data stays, and a
    /// binary that knows only version 1 is then refused.
    #[tokio::test]
    async fn an_older_schema_is_upgraded_without_losing_data() {
        let (url, schema) = fresh_schema_url();
        let v1 = PostgresStore::open_with(&url, &MIGRATIONS[..1])
            .await
            .unwrap_or_else(|e| panic!("this test needs PostgreSQL ({e}); set STRATUS_TEST_POSTGRES"));
        let spec = FunctionSpec {
            runtime: stratus_core::Runtime::Wasm,
            artifact: "a".repeat(64),
            env: Default::default(),
            limits: Default::default(),
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: vec![],
            pyenv: None,
        };
        // As a binary that knew only version 1 wrote it (no event table).
        let spec_json = serde_json::to_string(&spec).unwrap();
        let c = v1.pool.get().await.unwrap();
        c.client
            .execute(
                "INSERT INTO functions (project, name, version, spec, created_at) VALUES ('p', 'f', 1, $1, 1)",
                &[&spec_json],
            )
            .await
            .unwrap();
        drop(c);
        drop(v1);

        let v2 = PostgresStore::open(&url).await.unwrap();
        assert_eq!(v2.schema(), SchemaVersion { found: 1, now: 9 });
        assert_eq!(v2.get_function("p", "f", None).await.unwrap().unwrap().spec, spec);
        assert_eq!(v2.put_function("p", "f", &spec, 2).await.unwrap().version, 2);
        let seat =
            crate::Seat { server: stratus_core::new_id(), url: "http://a".into(), incarnation: stratus_core::new_id() };
        assert_eq!(v2.lead(&seat, Duration::from_secs(10), true).await.unwrap(), None, "the lease table is there");
        let c = v2.pool.get().await.unwrap();
        let versions: Vec<i32> = c
            .client
            .query("SELECT version FROM stratus_schema ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9]);

        assert!(matches!(
            PostgresStore::open_with(&url, &MIGRATIONS[..1]).await,
            Err(Error::TooNew { found: 9, known: 1 })
        ));
        c.client.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).await.unwrap();
    }
}
