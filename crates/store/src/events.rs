//! Events and triggers: the statements both engines run, written once in
//! SQLite's `?N` style (see [`crate::trust::pg`]), and the conversions of
//! their rows.

use stratus_core::events::{Context, Event, EventChange, Trigger, TriggerSpec};

/// Stores an event unless one with its `(project, source, id)` is stored
/// (an invocation's event is one by construction: the unique index leaves
/// out the source `/stratus/invocations`, `stratus_core::events::builtin::INVOCATIONS`).
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events \
     (project, source, id, type, subject, time, datacontenttype, data, depth, stored_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
     ON CONFLICT (project, source, id) WHERE source <> '/stratus/invocations' DO NOTHING";

/// Events numbered after `?1`, oldest first, at most `?2`; of project `?3`
/// (all when NULL), of type `?4` (any when NULL), whose subject starts with
/// `?5` (any when NULL; `?6` is `?5` with the next character after it, the
/// end of the range of subjects that start with it).
pub(crate) const EVENTS: &str = "SELECT seq, project, source, id, type, subject, time, datacontenttype, data, depth \
     FROM events WHERE seq > ?1 \
     AND (CAST(?3 AS TEXT) IS NULL OR project = ?3) AND (CAST(?4 AS TEXT) IS NULL OR type = ?4) \
     AND (CAST(?5 AS TEXT) IS NULL OR (subject >= ?5 AND subject < ?6)) \
     ORDER BY seq LIMIT ?2";

/// The string just after every string that starts with `prefix`, for a
/// range scan (`>= prefix AND < end`); a prefix of `char::MAX`s has none,
/// and gets one that is larger than any stored subject in practice.
pub(crate) fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = char::from_u32(c as u32 + 1) {
            chars.push(next);
            return chars.into_iter().collect();
        }
    }
    "\u{10FFFF}".repeat(prefix.chars().count() + 1)
}

pub(crate) const CREATE_TRIGGER: &str = "INSERT INTO triggers (project, name, spec, enabled, created_at, from_seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(seq), 0) FROM events)) ON CONFLICT (project, name) DO NOTHING";

pub(crate) const DELETE_TRIGGER: &str = "DELETE FROM triggers WHERE project = ?1 AND name = ?2";
pub(crate) const DELETE_CONTEXTS: &str = "DELETE FROM trigger_contexts WHERE project = ?1 AND trigger = ?2";
pub(crate) const SET_ENABLED: &str = "UPDATE triggers SET enabled = ?3 WHERE project = ?1 AND name = ?2";
pub(crate) const PUT_CONTEXT: &str = "INSERT INTO trigger_contexts (project, trigger, grp, context) \
     SELECT CAST(?1 AS TEXT), CAST(?2 AS TEXT), CAST(?3 AS TEXT), CAST(?4 AS TEXT) \
     WHERE EXISTS (SELECT 1 FROM triggers WHERE project = ?1 AND name = ?2) \
     ON CONFLICT (project, trigger, grp) DO UPDATE SET context = excluded.context";
pub(crate) const DROP_CONTEXT: &str = "DELETE FROM trigger_contexts WHERE project = ?1 AND trigger = ?2 AND grp = ?3";
pub(crate) const MOVE_CURSOR: &str = "UPDATE event_cursor SET seq = ?2 WHERE id = 1 AND seq = ?1";
pub(crate) const FIRED: &str = "INSERT INTO trigger_firings (project, trigger, seq, at, invocation, output, depth) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (project, trigger, seq) DO NOTHING";
/// Drops the events stored before `?1` (found from the newest of them
/// down), but never the newest event: on SQLite the next number is past it.
pub(crate) const EXPIRE_EVENTS: &str = "DELETE FROM events WHERE seq <= \
     (SELECT seq FROM events WHERE stored_at < ?1 ORDER BY seq DESC LIMIT 1) \
     AND seq < (SELECT MAX(seq) FROM events)";
pub(crate) const EXPIRE_FIRINGS: &str = "DELETE FROM trigger_firings WHERE at < ?1";

/// A job's tasks' times, in input order (the timeline of its page and of
/// the Python SDK's `plot()`); `attempts` cast so both engines read an integer.
pub(crate) const JOB_TIMINGS: &str = "SELECT task_index, id, state, CAST(attempts AS BIGINT), worker, queued_at, \
     started_at, finished_at FROM invocations WHERE job_id = ?1 AND task_index >= ?2 ORDER BY task_index LIMIT ?3";

pub(crate) const TRIGGERS: &str =
    "SELECT project, name, spec, enabled, created_at, from_seq FROM triggers ORDER BY project, name";
pub(crate) const CONTEXTS: &str = "SELECT project, trigger, grp, context FROM trigger_contexts";
pub(crate) const CURSOR: &str = "SELECT seq FROM event_cursor WHERE id = 1";
pub(crate) const FIRINGS: &str = "SELECT project, trigger, seq, at, invocation, output, depth FROM trigger_firings \
     WHERE project = ?1 AND trigger = ?2 ORDER BY seq DESC LIMIT ?3";

/// The statements one event change runs, with its parameters as text and
/// numbers, so both engines bind them the same way.
pub(crate) enum Steps<'a> {
    Create { t: &'a Trigger, spec: String },
    Delete { project: &'a str, name: &'a str },
    Enabled { project: &'a str, name: &'a str, enabled: bool },
    PutContext { key: &'a (String, String, String), context: String },
    DropContext { key: &'a (String, String, String) },
    Cursor { from: i64, to: i64 },
    Fired(&'a stratus_core::events::Firing),
    Expire { before: i64 },
}

impl<'a> Steps<'a> {
    pub(crate) fn of(change: &'a EventChange) -> Self {
        match change {
            EventChange::Create(t) => {
                Steps::Create { t, spec: serde_json::to_string(&t.spec).expect("trigger spec serialises") }
            }
            EventChange::Delete { project, name } => Steps::Delete { project, name },
            EventChange::SetEnabled { project, name, enabled } => Steps::Enabled { project, name, enabled: *enabled },
            EventChange::Context { key, context: Some(c) } => {
                Steps::PutContext { key, context: serde_json::to_string(c).expect("context serialises") }
            }
            EventChange::Context { key, context: None } => Steps::DropContext { key },
            EventChange::Cursor { from, to } => Steps::Cursor { from: *from as i64, to: *to as i64 },
            EventChange::Fired(f) => Steps::Fired(f),
            EventChange::Expire { before } => Steps::Expire { before: *before },
        }
    }
}

/// A trigger's spec as stored, read back.
pub(crate) fn spec_from(s: &str) -> Result<TriggerSpec, String> {
    serde_json::from_str(s).map_err(|e| format!("trigger spec: {e}"))
}

/// A context as stored, read back.
pub(crate) fn context_from(s: &str) -> Result<Context, String> {
    serde_json::from_str(s).map_err(|e| format!("trigger context: {e}"))
}

/// The refusal of a commit whose cursor move did not apply.
pub(crate) fn cursor_moved() -> crate::Error {
    crate::Error::Refused("the event processor's cursor moved: another server processed these events".into())
}

/// What [`crate::StateStore::events`] reads.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// One project's, or every project's when `None`.
    pub project: Option<String>,
    pub after: u64,
    pub limit: u32,
    pub ty: Option<String>,
    pub subject_prefix: Option<String>,
}

/// An event row's values, before they become an [`Event`].
pub(crate) type EventRow =
    (i64, String, String, String, String, Option<String>, i64, Option<String>, Option<Vec<u8>>, i32);

pub(crate) fn event_from(r: EventRow) -> Event {
    let (seq, project, source, id, ty, subject, time, datacontenttype, data, depth) = r;
    Event { seq: seq as u64, project, source, id, ty, subject, time, datacontenttype, data, depth: depth.max(0) as u32 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prefix_range_ends_after_every_string_it_starts() {
        assert_eq!(super::prefix_end("uploads/"), "uploads0");
        assert_eq!(super::prefix_end("a"), "b");
        assert!("uploads/zzz" < super::prefix_end("uploads/").as_str());
    }
}
