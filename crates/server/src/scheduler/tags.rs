//! Concurrency limits by tag: which attempts hold a slot of each tag, and
//! the entries waiting for one. A plain struct inside the queue (under its
//! lock), so that taking an entry and taking its slots are one step.
//!
//! A slot is held by an attempt in flight, from the take that starts it to
//! the removal of its in-flight record when its end is applied (or its
//! worker is declared lost): occupancy is the number of such attempts, a
//! set of invocation ids, never a counter moved on its own. An entry takes
//! a slot of every tag it carries, all or none; one that finds a limited tag
//! full is parked under that tag, off its lane, so the entries behind it
//! run (no head-of-line blocking), and goes back to the front of its lane
//! when a slot of that tag frees.
//!
//! A slot that takes several entries runs them one after another, so the
//! entries of one tag in one such batch share one slot of it, held from the
//! first one's take to the last one's end: what the limit counts is
//! attempts that may run at once.
//!
//! A project's `max_running` quota is a limit of the same kind, on every
//! attempt of the project: its key is the project with the empty tag, which
//! no real tag can be.

use super::queue::{Entry, lane_of};
use std::collections::{HashMap, HashSet, VecDeque};
use stratus_core::Id;
use stratus_store::Lane;

/// A tag of a project.
pub(super) type Key = (String, String);

/// Entries parked in memory per lane at most (twice the paging window);
/// past that the lane stops paging rows in until some are unparked (the
/// rest wait in the store).
pub(super) const PARKED_MAX: usize = 2 * super::queue::WINDOW;

#[derive(Default)]
pub(super) struct Tags {
    /// Slots per tag, where a limit is set.
    limits: HashMap<Key, u32>,
    /// The attempts that hold a slot, per tag (limited or not, so that a
    /// limit set later sees the occupancy).
    holders: HashMap<Key, HashSet<Id>>,
    /// Entries waiting for a slot of the tag, in the order they came.
    parked: HashMap<Key, VecDeque<Entry>>,
    /// Parked entries per lane (direct, tasks).
    parked_len: [usize; 2],
    /// Projects with a `max_running` quota.
    limited_projects: HashSet<String>,
    /// The entries of a batch that share a slot, by entry: the tags they
    /// share, each with the batch's first entry of it (which holds it).
    shared_by: HashMap<Id, Vec<(Key, Id)>>,
    /// Entries of each shared slot that have not ended yet.
    share_left: HashMap<(Key, Id), usize>,
}

/// The slots one batch holds: by tag, the entry that holds it.
pub(super) type Batch = HashMap<Key, Id>;

/// The key of a project's `max_running` quota.
pub(super) fn project_key(project: &str) -> Key {
    (project.to_string(), String::new())
}

fn lane_index(e: &Entry) -> usize {
    match lane_of(&e.invocation) {
        Lane::Direct => 0,
        Lane::Tasks => 1,
    }
}

impl Tags {
    /// The tags an entry carries: its function version's, its call's, and
    /// its project's quota when it has one.
    pub(super) fn carried(&self, e: &Entry) -> Vec<Key> {
        let f = &e.task.function;
        let mut keys: Vec<Key> = Vec::new();
        for t in f.spec.tags.iter().chain(&e.invocation.tags) {
            if !keys.iter().any(|(_, k)| k == t) {
                keys.push((f.project.clone(), t.clone()));
            }
        }
        if self.project_limited(&f.project) {
            keys.push(project_key(&f.project));
        }
        keys
    }

    pub(super) fn carries(&self, e: &Entry) -> bool {
        let f = &e.task.function;
        !f.spec.tags.is_empty() || !e.invocation.tags.is_empty() || self.project_limited(&f.project)
    }

    /// Whether the project has a `max_running` quota.
    pub(super) fn project_limited(&self, project: &str) -> bool {
        !self.limited_projects.is_empty() && self.limited_projects.contains(project)
    }

    /// Sets (`Some`) or removes a project's `max_running`; `running` are
    /// its attempts in flight now, which hold its slots from here on.
    pub(super) fn set_project_limit(&mut self, project: &str, slots: Option<u32>, running: Vec<Id>) {
        let key = project_key(project);
        match slots {
            Some(n) => {
                self.limited_projects.insert(project.to_string());
                self.limits.insert(key.clone(), n);
                if !running.is_empty() {
                    self.holders.insert(key, running.into_iter().collect());
                } else {
                    self.holders.remove(&key);
                }
            }
            None => {
                self.limited_projects.remove(project);
                self.limits.remove(&key);
                self.holders.remove(&key);
            }
        }
    }

    /// Takes a slot of every tag `e` carries, or none: `Err` names a
    /// limited tag with no slot free. With `batch` (a slot's batch, run one
    /// after another), a tag whose slot the batch holds already is shared.
    pub(super) fn admit(&mut self, e: &Entry, mut batch: Option<&mut Batch>) -> Result<(), Key> {
        if !self.carries(e) {
            return Ok(());
        }
        let keys = self.carried(e);
        let held = |k: &Key| batch.as_ref().is_some_and(|b| b.contains_key(k));
        if let Some(full) = keys.iter().find(|k| !held(k) && self.room(k) == 0) {
            return Err(full.clone());
        }
        let id = e.invocation.id;
        for k in keys {
            match batch.as_mut().and_then(|b| b.get(&k).copied()) {
                Some(lead) => {
                    let left = self.share_left.entry((k.clone(), lead)).or_insert_with(|| {
                        self.shared_by.entry(lead).or_default().push((k.clone(), lead));
                        1
                    });
                    *left += 1;
                    self.shared_by.entry(id).or_default().push((k, lead));
                }
                None => {
                    self.holders.entry(k.clone()).or_default().insert(id);
                    if let Some(b) = batch.as_mut() {
                        b.insert(k, id);
                    }
                }
            }
        }
        Ok(())
    }

    /// Free slots of a tag; unlimited when it has no limit.
    fn room(&self, key: &Key) -> usize {
        match self.limits.get(key) {
            None => usize::MAX,
            Some(&n) => (n as usize).saturating_sub(self.holders.get(key).map_or(0, HashSet::len)),
        }
    }

    /// Gives back the slots `e`'s attempt held; the tags that may now have
    /// room for a parked entry.
    pub(super) fn release(&mut self, e: &Entry) -> Vec<Key> {
        if !self.carries(e) {
            return Vec::new();
        }
        let mut freed = Vec::new();
        let shared = self.shared_by.remove(&e.invocation.id).unwrap_or_default();
        for k in self.carried(e) {
            let holder = match shared.iter().find(|(sk, _)| *sk == k) {
                None => Some(e.invocation.id),
                Some((_, lead)) => {
                    let share = (k.clone(), *lead);
                    match self.share_left.get_mut(&share) {
                        // Others of its batch still hold the slot.
                        Some(n) if *n > 1 => {
                            *n -= 1;
                            None
                        }
                        Some(_) => {
                            self.share_left.remove(&share);
                            Some(*lead)
                        }
                        // Released by a reset meanwhile.
                        None => None,
                    }
                }
            };
            if let Some(id) = holder
                && let Some(h) = self.holders.get_mut(&k)
            {
                h.remove(&id);
                if h.is_empty() {
                    self.holders.remove(&k);
                }
            }
            if self.parked.contains_key(&k) {
                freed.push(k);
            }
        }
        freed
    }

    pub(super) fn park(&mut self, key: Key, e: Entry) {
        self.parked_len[lane_index(&e)] += 1;
        self.parked.entry(key).or_default().push_back(e);
    }

    /// Takes out as many parked entries of `key` as it has free slots, in
    /// the order they were parked.
    pub(super) fn unpark(&mut self, key: &Key) -> Vec<Entry> {
        let room = self.room(key);
        let Some(q) = self.parked.get_mut(key) else { return Vec::new() };
        let out: Vec<Entry> = q.drain(..room.min(q.len())).collect();
        if q.is_empty() {
            self.parked.remove(key);
        }
        for e in &out {
            self.parked_len[lane_index(e)] -= 1;
        }
        out
    }

    /// Sets (`Some`) or removes a tag's limit.
    pub(super) fn set_limit(&mut self, key: &Key, slots: Option<u32>) {
        match slots {
            Some(n) => self.limits.insert(key.clone(), n),
            None => self.limits.remove(key),
        };
    }

    /// Forgets every holder of a tag: their slots are free at once, and
    /// their ends give back nothing.
    pub(super) fn reset(&mut self, key: &Key) {
        self.holders.remove(key);
        self.share_left.retain(|(k, _), _| k != key);
    }

    pub(super) fn parked_in(&self, lane: Lane) -> usize {
        self.parked_len[match lane {
            Lane::Direct => 0,
            Lane::Tasks => 1,
        }]
    }

    pub(super) fn parked_total(&self) -> usize {
        self.parked_len[0] + self.parked_len[1]
    }

    /// Drops every parked entry `keep` refuses.
    pub(super) fn retain(&mut self, keep: &impl Fn(&Entry) -> bool) {
        let mut len = [0usize; 2];
        self.parked.retain(|_, q| {
            q.retain(keep);
            for e in q.iter() {
                len[lane_index(e)] += 1;
            }
            !q.is_empty()
        });
        self.parked_len = len;
    }

    /// The attempts holding a slot of the tag.
    pub(super) fn holders(&self, key: &Key) -> Vec<Id> {
        self.holders.get(key).map(|h| h.iter().copied().collect()).unwrap_or_default()
    }

    /// How many entries wait for a slot of the tag, and the first `max`.
    pub(super) fn waiters(&self, key: &Key, max: usize) -> (usize, Vec<Id>) {
        self.parked
            .get(key)
            .map_or((0, Vec::new()), |q| (q.len(), q.iter().take(max).map(|e| e.invocation.id).collect()))
    }
}
