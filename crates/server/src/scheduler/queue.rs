//! The queue: what is ready to run, by lane, and retries waiting for their
//! backoff. A plain struct, without IO or locks; the scheduler holds it
//! under a mutex, pages it from the store ([`super::paging`]) and wakes
//! slots when it changes.
//!
//! A lane is shared fairly between projects ([`super::lane`]): each project
//! has a line of at most [`WINDOW`] entries in memory; the rest stays in the
//! store (its `backlog`) and is paged in behind the project's cursor, in id
//! order. Everything of a project up to its cursor that is queued in the
//! store is in memory, so nothing is dispatched twice and nothing is skipped.
//! Entries waiting for a slot of a concurrency tag are parked off their
//! lane ([`super::tags`]); they are in memory too.

pub(super) use super::lane::LaneQueue;
use super::tags::{Batch, Key, PARKED_MAX, Tags};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;
use stratus_core::clock::Millis;
use stratus_core::{Id, Invocation, Task};
use stratus_store::Lane;

/// Entries of one project's line in a lane kept in memory.
pub(super) const WINDOW: usize = 8192;

/// Above this many runnable entries a slot takes several at a time.
const PLENTY: usize = 256;

/// An invocation ready to run, with the task a worker gets for it.
pub(super) struct Entry {
    pub(super) invocation: Invocation,
    pub(super) task: Task,
}

pub(super) fn lane_of(inv: &Invocation) -> Lane {
    if inv.task_index.is_some() { Lane::Tasks } else { Lane::Direct }
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) direct: LaneQueue,
    pub(super) tasks: LaneQueue,
    /// Retries waiting for their backoff, by due time.
    delayed: BinaryHeap<Reverse<(Millis, u64)>>,
    delayed_entries: HashMap<u64, Entry>,
    seq: u64,
    pub(super) closed: bool,
    /// Concurrency limits: slots held, entries parked.
    pub(super) tags: Tags,
}

/// What [`Queue::take`] took.
pub(super) struct Taken {
    pub(super) entries: Vec<Entry>,
    /// Runnable entries before the take.
    pub(super) available: usize,
    /// Runnable entries are left: wake another taker.
    pub(super) more: bool,
}

impl Queue {
    pub(super) fn lane(&mut self, lane: Lane) -> &mut LaneQueue {
        match lane {
            Lane::Direct => &mut self.direct,
            Lane::Tasks => &mut self.tasks,
        }
    }

    /// Appends new entries to a lane, moving their projects' cursors past them.
    pub(super) fn push_ready(&mut self, lane: Lane, entries: Vec<Entry>) {
        let l = self.lane(lane);
        for e in entries {
            l.push_new(e);
        }
    }

    /// Holds a retry until `not_before`.
    pub(super) fn push_delayed(&mut self, entry: Entry, not_before: Millis) {
        self.seq += 1;
        self.delayed.push(Reverse((not_before, self.seq)));
        self.delayed_entries.insert(self.seq, entry);
    }

    /// Whether `n` new entries of `project` can go straight into the
    /// lane's window: its line has room, nothing of it waits in the store
    /// before them, and the lane has room to park entries waiting for a
    /// concurrency slot.
    pub(super) fn fits(&mut self, lane: Lane, project: &str, n: usize) -> bool {
        let parked_full = self.tags.parked_in(lane) >= PARKED_MAX;
        !parked_full && self.lane(lane).fits(project, n)
    }

    /// Whether a retry is due at `now`.
    pub(super) fn retry_due(&self, now: Millis) -> bool {
        self.delayed.peek().is_some_and(|Reverse((due, _))| *due <= now)
    }

    /// Puts entries back at the front of their lanes, in their order.
    fn push_front(&mut self, entries: Vec<Entry>) {
        for e in entries.into_iter().rev() {
            let lane = lane_of(&e.invocation);
            self.lane(lane).push_front(e);
        }
    }

    /// Gives back the slots of an attempt that ended, and moves entries
    /// that were waiting for them back to their lanes; true if any moved.
    pub(super) fn release(&mut self, e: &Entry) -> bool {
        let freed = self.tags.release(e);
        self.unpark(&freed)
    }

    /// Moves entries parked under `keys` that now have room back to their
    /// lanes; true if any moved.
    pub(super) fn unpark(&mut self, keys: &[Key]) -> bool {
        let mut moved = false;
        for k in keys {
            let back = self.tags.unpark(k);
            moved |= !back.is_empty();
            self.push_front(back);
        }
        moved
    }

    /// Whether anything is ready, or waits for its backoff.
    pub(super) fn has_work(&self) -> bool {
        !self.direct.is_empty() || !self.tasks.is_empty() || !self.delayed.is_empty()
    }

    /// Entries held in memory, ready, delayed or parked.
    pub(super) fn len(&self) -> usize {
        self.direct.len() + self.tasks.len() + self.delayed_entries.len() + self.tags.parked_total()
    }

    /// Drops every entry `keep` refuses, ready or delayed.
    pub(super) fn retain(&mut self, keep: impl Fn(&Entry) -> bool) {
        self.direct.retain(&keep);
        self.tasks.retain(&keep);
        self.delayed_entries.retain(|_, e| keep(e));
        self.tags.retain(&keep);
    }

    /// Takes up to `max` runnable entries at `now`, direct invocations
    /// first (an interactive call does not wait behind a big map), the
    /// projects of a lane in turn, after
    /// moving due retries to the front of their lanes. A slot (`greedy`
    /// false) takes several only when there is plenty, so no slot sits idle
    /// while another holds a batch of long tasks; the dispatcher takes what
    /// it asks for. With nothing runnable, says how long until the next
    /// retry is due, if one waits. An entry must also get a slot of each
    /// of its concurrency tags ([`Tags::admit`]); one that cannot is
    /// parked, and the take goes on with the entries behind it.
    pub(super) fn take(&mut self, now: Millis, max: usize, greedy: bool) -> Result<Taken, Option<Duration>> {
        while let Some(Reverse((due, seq))) = self.delayed.peek().copied() {
            if due > now {
                break;
            }
            self.delayed.pop();
            if let Some(e) = self.delayed_entries.remove(&seq) {
                let lane = lane_of(&e.invocation);
                self.lane(lane).push_front(e);
            }
        }
        let available = self.direct.len() + self.tasks.len();
        let max = if greedy {
            max
        } else if available >= PLENTY {
            max.min(available / 64)
        } else {
            1
        };
        let mut entries = Vec::new();
        // A slot runs what it takes one after another: one slot of a tag
        // for its batch. The dispatcher's entries go to many workers.
        let mut batch = Batch::new();
        while entries.len() < max {
            match self.direct.pop_front().or_else(|| self.tasks.pop_front()) {
                Some(e) => match self.tags.admit(&e, (!greedy).then_some(&mut batch)) {
                    Ok(()) => entries.push(e),
                    Err(full) => self.tags.park(full, e),
                },
                None => break,
            }
        }
        if entries.is_empty() {
            let next_due =
                self.delayed.peek().map(|Reverse((due, _))| Duration::from_millis((due - now).max(1) as u64));
            return Err(next_due);
        }
        let more = !self.direct.is_empty() || !self.tasks.is_empty();
        Ok(Taken { entries, available, more })
    }

    /// Marks for paging the lanes where a project's line holds a backlog
    /// and has drained to half its window, or projects are to be
    /// discovered (with room to park); true if the paging task is to be
    /// woken.
    pub(super) fn wants_refill(&mut self) -> bool {
        let mut wake = false;
        for lane in [Lane::Direct, Lane::Tasks] {
            let parked_full = self.tags.parked_in(lane) >= PARKED_MAX;
            let l = self.lane(lane);
            if !l.refilling && !parked_full && l.wants_page() {
                l.refilling = true;
                wake = true;
            }
        }
        wake
    }

    /// Whether the paging task is to ask the store which projects have
    /// queued rows in `lane`.
    pub(super) fn begin_discovery(&mut self, lane: Lane) -> bool {
        let l = self.lane(lane);
        if l.discover {
            l.refilling = true;
        }
        l.discover
    }

    /// The next page of a lane: the project, where its page starts and how
    /// many rows it may hold; `None` when no line needs one (then the lane
    /// is no longer refilling).
    pub(super) fn next_page(&mut self, lane: Lane) -> Option<(String, Option<Id>, usize)> {
        let parked_full = self.tags.parked_in(lane) >= PARKED_MAX;
        let l = self.lane(lane);
        let next = if parked_full { None } else { l.next_page() };
        l.refilling = next.is_some();
        next
    }

    /// Takes in a page of `project` read behind its cursor: `last` is the
    /// highest id it held, `full` whether it filled the room it was given
    /// (the store may hold more).
    pub(super) fn absorb_page(&mut self, lane: Lane, project: &str, last: Option<Id>, full: bool, ready: Vec<Entry>) {
        self.lane(lane).absorb_page(project, last, full, ready);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use stratus_core::{Function, FunctionSpec, Limits, Runtime, new_id};

    fn entry(task_index: Option<u64>) -> Entry {
        tagged(task_index, &[])
    }

    /// An entry of a function tagged with `tags`.
    fn tagged(task_index: Option<u64>, tags: &[&str]) -> Entry {
        let spec = FunctionSpec {
            runtime: Runtime::Wasm,
            artifact: "0".repeat(64),
            env: Default::default(),
            limits: Limits::default(),
            retries: 0,
            network: false,
            vars: vec![],
            secrets: vec![],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            pyenv: None,
        };
        let function = Arc::new(Function { project: "p".into(), name: "f".into(), version: 1, spec, created_at: 0 });
        let invocation = Invocation::queued(&function, 0, task_index.map(|_| new_id()), task_index);
        let task = Task {
            invocation: invocation.id,
            attempt: 1,
            function,
            input: Vec::new(),
            partition: None,
            job: None,
            token: None,
        };
        Entry { invocation, task }
    }

    fn ids(t: &Taken) -> Vec<Id> {
        t.entries.iter().map(|e| e.invocation.id).collect()
    }

    #[test]
    fn direct_invocations_go_before_tasks_and_a_slot_takes_one() {
        let mut q = Queue::default();
        let (task, direct) = (entry(Some(0)), entry(None));
        let (t_id, d_id) = (task.invocation.id, direct.invocation.id);
        q.push_ready(Lane::Tasks, vec![task]);
        q.push_ready(Lane::Direct, vec![direct]);
        assert_eq!(q.direct.cursor("p"), Some(d_id));
        let first = q.take(0, 8, false).ok().unwrap();
        assert_eq!((ids(&first), first.available, first.more), (vec![d_id], 2, true));
        assert_eq!(ids(&q.take(0, 8, false).ok().unwrap()), [t_id]);
        assert_eq!(q.take(0, 8, false).err(), Some(None), "nothing runnable, nothing delayed");
    }

    #[test]
    fn a_slot_takes_several_only_when_there_is_plenty() {
        let mut q = Queue::default();
        q.push_ready(Lane::Tasks, (0..PLENTY as u64).map(|i| entry(Some(i))).collect());
        assert_eq!(q.take(0, 16, false).ok().unwrap().entries.len(), PLENTY / 64);
        assert_eq!(q.take(0, 16, false).ok().unwrap().entries.len(), 1, "below plenty: one");
        assert_eq!(q.take(0, 16, true).ok().unwrap().entries.len(), 16, "the dispatcher takes what it asks for");
    }

    #[test]
    fn a_retry_waits_for_its_backoff_then_goes_first() {
        let mut q = Queue::default();
        let (retry, other) = (entry(None), entry(None));
        let (r_id, o_id) = (retry.invocation.id, other.invocation.id);
        q.push_delayed(retry, 100);
        assert!(q.has_work() && !q.retry_due(99) && q.retry_due(100));
        assert_eq!(q.take(40, 1, false).err(), Some(Some(Duration::from_millis(60))));
        q.push_ready(Lane::Direct, vec![other]);
        assert_eq!(ids(&q.take(40, 1, false).ok().unwrap()), [o_id], "the retry is not due yet");
        assert_eq!(ids(&q.take(100, 1, false).ok().unwrap()), [r_id]);
        assert_eq!(q.len(), 0);
    }

    fn key(tag: &str) -> Key {
        ("p".into(), tag.into())
    }

    #[test]
    fn an_entry_without_a_slot_waits_aside_and_the_ones_behind_it_run() {
        let mut q = Queue::default();
        q.tags.set_limit(&key("a"), Some(1));
        let (a1, a2, free) = (tagged(Some(0), &["a"]), tagged(Some(1), &["a"]), entry(Some(2)));
        let (a1_id, a2_id, free_id) = (a1.invocation.id, a2.invocation.id, free.invocation.id);
        q.push_ready(Lane::Tasks, vec![a1, a2, free]);
        let first = q.take(0, 1, false).ok().unwrap();
        assert_eq!(ids(&first), [a1_id]);
        assert_eq!(ids(&q.take(0, 1, false).ok().unwrap()), [free_id], "a2 waits aside, not in the way");
        assert_eq!(q.tags.waiters(&key("a"), 10), (1, vec![a2_id]));
        assert_eq!(q.tags.holders(&key("a")), [a1_id]);
        assert!(q.take(0, 1, false).is_err(), "nothing runnable while the slot is held");
        assert_eq!(q.len(), 1, "the parked entry is still counted");
        assert!(q.release(&first.entries[0]), "the slot's end lets a2 back");
        assert_eq!(ids(&q.take(0, 1, false).ok().unwrap()), [a2_id]);
        assert_eq!(q.tags.waiters(&key("a"), 10), (0, vec![]));
    }

    #[test]
    fn an_entry_takes_a_slot_of_every_tag_or_none() {
        let mut q = Queue::default();
        q.tags.set_limit(&key("a"), Some(1));
        q.tags.set_limit(&key("b"), Some(0));
        let both = tagged(None, &["a", "b"]);
        q.push_ready(Lane::Direct, vec![both]);
        assert!(q.take(0, 1, false).is_err());
        assert!(q.tags.holders(&key("a")).is_empty(), "no slot of a is taken while b has none");
        assert_eq!(q.tags.waiters(&key("b"), 10).0, 1);
        q.tags.set_limit(&key("b"), Some(1));
        assert!(q.unpark(&[key("b")]));
        let taken = q.take(0, 1, false).ok().unwrap();
        assert_eq!((q.tags.holders(&key("a")).len(), q.tags.holders(&key("b")).len()), (1, 1));
        q.release(&taken.entries[0]);
        assert_eq!((q.tags.holders(&key("a")).len(), q.tags.holders(&key("b")).len()), (0, 0));
    }

    #[test]
    fn a_reset_frees_the_slots_and_a_cancel_drops_the_waiters() {
        let mut q = Queue::default();
        q.tags.set_limit(&key("a"), Some(1));
        let (a1, a2, a3) = (tagged(Some(0), &["a"]), tagged(Some(1), &["a"]), tagged(Some(2), &["a"]));
        let (a2_id, a3_id) = (a2.invocation.id, a3.invocation.id);
        q.push_ready(Lane::Tasks, vec![a1, a2, a3]);
        let first = q.take(0, 1, false).ok().unwrap();
        assert!(q.take(0, 1, false).is_err());
        q.tags.reset(&key("a"));
        assert!(q.unpark(&[key("a")]));
        assert_eq!(ids(&q.take(0, 1, false).ok().unwrap()), [a2_id], "the reset freed the slot");
        assert!(!q.release(&first.entries[0]), "the end of a released holder frees nothing more");
        assert_eq!(q.tags.holders(&key("a")), [a2_id]);
        q.retain(|e| e.invocation.id != a3_id);
        assert_eq!((q.tags.parked_total(), q.len()), (0, 0));
    }

    #[test]
    fn a_slots_batch_shares_one_slot_of_a_tag_until_its_last_entry_ends() {
        let mut q = Queue::default();
        q.tags.set_limit(&key("a"), Some(1));
        q.push_ready(Lane::Tasks, (0..PLENTY as u64).map(|i| tagged(Some(i), &["a"])).collect());
        let batch = q.take(0, 16, false).ok().unwrap();
        assert_eq!(batch.entries.len(), PLENTY / 64, "one slot's batch, run one after another");
        assert_eq!(q.tags.holders(&key("a")), [batch.entries[0].invocation.id], "holding one slot");
        assert!(q.take(0, 16, false).is_err(), "no other slot of the tag");
        let (last, rest) = batch.entries.split_last().unwrap();
        for e in rest {
            assert!(!q.release(e), "the batch still runs");
        }
        assert_eq!(q.tags.holders(&key("a")).len(), 1);
        assert!(q.release(last), "its last end gives the slot back");
        assert!(q.tags.holders(&key("a")).is_empty());
        let greedy = q.take(0, 16, true).ok().unwrap();
        assert_eq!(greedy.entries.len(), 1, "the dispatcher's entries each take a slot");
    }

    #[test]
    fn a_projects_max_running_counts_every_attempt_of_it() {
        let mut q = Queue::default();
        q.tags.set_project_limit("p", Some(1), vec![]);
        let (a, b) = (entry(Some(0)), tagged(Some(1), &["t"]));
        let b_id = b.invocation.id;
        q.push_ready(Lane::Tasks, vec![a, b]);
        let first = q.take(0, 1, false).ok().unwrap();
        assert!(q.take(0, 1, false).is_err(), "the second waits for the project's slot");
        assert_eq!(q.tags.holders(&key("t")), [], "and took no slot of its tag");
        assert!(q.release(&first.entries[0]));
        assert_eq!(ids(&q.take(0, 1, false).ok().unwrap()), [b_id]);
        q.tags.set_project_limit("p", None, vec![]);
        assert!(!q.tags.project_limited("p"));
    }

    #[test]
    fn a_lane_with_a_backlog_is_paged_when_half_drained() {
        let mut q = Queue::default();
        assert!(q.fits(Lane::Direct, "p", WINDOW) && !q.fits(Lane::Direct, "p", WINDOW + 1));
        q.tasks.mark_backlog("p");
        assert!(!q.fits(Lane::Tasks, "p", 1), "nothing may pass rows waiting in the store");
        assert!(q.fits(Lane::Tasks, "other", 1), "another project's line is its own");
        assert!(q.wants_refill());
        assert!(!q.wants_refill(), "already being refilled");
        assert_eq!(q.next_page(Lane::Tasks), Some(("p".to_string(), None, WINDOW)));
        let page: Vec<Entry> = (0..3).map(|i| entry(Some(i))).collect();
        let last = page.last().map(|e| e.invocation.id);
        q.absorb_page(Lane::Tasks, "p", last, false, page);
        assert_eq!((q.tasks.cursor("p"), q.tasks.backlog("p")), (last, false));
        assert_eq!(q.next_page(Lane::Tasks), None, "no backlog left");
        assert!(!q.tasks.refilling);
        let gone = q.tasks.front().unwrap().invocation.id;
        q.retain(|e| e.invocation.id != gone);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_mark_made_while_a_page_is_read_keeps_the_backlog() {
        let mut q = Queue::default();
        q.tasks.mark_backlog("p");
        assert!(q.next_page(Lane::Tasks).is_some());
        q.tasks.mark_backlog("p"); // rows committed while the page is read
        q.absorb_page(Lane::Tasks, "p", None, false, vec![]);
        assert!(q.tasks.backlog("p"), "the next page reads them");
        q.next_page(Lane::Tasks);
        q.absorb_page(Lane::Tasks, "p", None, false, vec![]);
        assert!(!q.tasks.backlog("p"));
    }

    /// An entry of project `project`.
    fn of(project: &str, task_index: Option<u64>) -> Entry {
        let mut e = entry(task_index);
        e.invocation.project = project.into();
        e
    }

    #[test]
    fn projects_take_turns_in_a_lane() {
        let mut q = Queue::default();
        let big: Vec<Entry> = (0..100).map(|i| of("big", Some(i))).collect();
        q.push_ready(Lane::Tasks, big);
        let small: Vec<Entry> = (0..3).map(|i| of("small", Some(i))).collect();
        let small_ids: Vec<Id> = small.iter().map(|e| e.invocation.id).collect();
        q.push_ready(Lane::Tasks, small);
        let mut order = Vec::new();
        for _ in 0..6 {
            order.push(q.take(0, 1, false).ok().unwrap().entries.remove(0));
        }
        let projects: Vec<&str> = order.iter().map(|e| e.invocation.project.as_str()).collect();
        assert_eq!(projects, ["big", "small", "big", "small", "big", "small"], "one each in turn");
        let taken: Vec<Id> =
            order.iter().filter(|e| e.invocation.project == "small").map(|e| e.invocation.id).collect();
        assert_eq!(taken, small_ids, "in order within a project");
        let greedy = q.take(0, 1000, true).ok().unwrap();
        assert_eq!(greedy.entries.len(), 97, "then the rest of the big one");
        assert!(q.tasks.is_empty() && q.tasks.idle());
    }

    #[test]
    fn a_project_found_in_the_store_after_a_start_is_paged() {
        let mut q = Queue::default();
        q.tasks.discover = true;
        assert!(!q.fits(Lane::Tasks, "p", 1), "nothing passes rows not yet discovered");
        assert!(q.wants_refill() && q.begin_discovery(Lane::Tasks));
        q.tasks.discovered(vec!["a".into(), "b".into()]);
        let mut pages = Vec::new();
        while let Some((project, _, _)) = q.next_page(Lane::Tasks) {
            q.absorb_page(Lane::Tasks, &project, None, false, vec![of(&project, Some(0))]);
            pages.push(project);
        }
        pages.sort();
        assert_eq!(pages, ["a", "b"]);
        assert_eq!(q.tasks.len(), 2);
    }
}
