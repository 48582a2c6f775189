//! One lane of the queue, shared fairly between projects: each project has
//! its own line of ready entries, and a take serves the projects in turn, one
//! entry each, so one project's million-task job does not hold back another
//! project's work behind it. Each project is paged from the store behind its
//! own cursor, in id order (see [`super::queue`]).

use super::queue::{Entry, WINDOW};
use std::collections::{HashMap, VecDeque};
use stratus_core::Id;

/// A project's line in a lane.
#[derive(Default)]
struct Line {
    ready: VecDeque<Entry>,
    /// Highest id paged in (or pushed): every queued row of the project in
    /// this lane up to it is in memory.
    cursor: Option<Id>,
    /// The store may hold queued rows of the project beyond the cursor.
    backlog: bool,
    /// Counts the marks of a backlog, so that a page read before a mark
    /// does not clear it.
    marks: u64,
    /// `marks` when the page being read was asked for.
    paged_at: u64,
}

#[derive(Default)]
pub(super) struct LaneQueue {
    lines: HashMap<String, Line>,
    /// The projects with ready entries, in the order of their turns.
    turns: VecDeque<String>,
    /// Ready entries, all projects.
    len: usize,
    /// The store may hold queued rows of projects not known here (after a
    /// start, or a commit that queued work of several projects): paging
    /// asks the store which projects have some, and marks their backlog.
    pub(super) discover: bool,
    pub(super) refilling: bool,
}

impl LaneQueue {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Nothing ready, and nothing waiting in the store.
    pub(super) fn idle(&self) -> bool {
        self.len == 0 && !self.discover && self.lines.values().all(|l| !l.backlog)
    }

    /// Appends a new entry, moving its project's cursor past it.
    pub(super) fn push_new(&mut self, e: Entry) {
        let id = e.invocation.id;
        self.push_back(e).cursor = Some(id);
    }

    /// Appends an entry to its project's line (which takes its turn after
    /// the others' if it was empty); the line.
    fn push_back(&mut self, e: Entry) -> &mut Line {
        let line = self.lines.entry(e.invocation.project.clone()).or_default();
        if line.ready.is_empty() {
            // Not in `turns`: only projects with ready entries are.
            self.turns.push_back(e.invocation.project.clone());
        }
        line.ready.push_back(e);
        self.len += 1;
        line
    }

    /// Puts an entry back at the front of its project's line (a retry that
    /// is due, an entry that got its concurrency slot): its project's turn
    /// comes first.
    pub(super) fn push_front(&mut self, e: Entry) {
        let project = e.invocation.project.clone();
        let line = self.lines.entry(project.clone()).or_default();
        line.ready.push_front(e);
        self.len += 1;
        self.turns.retain(|p| *p != project);
        self.turns.push_front(project);
    }

    /// The next entry: the front of the line of the project whose turn it
    /// is; that project's next turn comes after every other's.
    pub(super) fn pop_front(&mut self) -> Option<Entry> {
        while let Some(project) = self.turns.pop_front() {
            let Some(line) = self.lines.get_mut(&project) else { continue };
            let Some(e) = line.ready.pop_front() else { continue };
            if !line.ready.is_empty() {
                self.turns.push_back(project);
            }
            self.len -= 1;
            return Some(e);
        }
        None
    }

    /// The entry `pop_front` would give.
    pub(super) fn front(&self) -> Option<&Entry> {
        self.turns.iter().find_map(|p| self.lines.get(p)?.ready.front())
    }

    pub(super) fn retain(&mut self, keep: impl Fn(&Entry) -> bool) {
        for line in self.lines.values_mut() {
            line.ready.retain(&keep);
        }
        let lines = &self.lines;
        self.turns.retain(|p| lines.get(p).is_some_and(|l| !l.ready.is_empty()));
        self.len = self.lines.values().map(|l| l.ready.len()).sum();
    }

    /// Whether `n` new entries of `project` can go straight into memory:
    /// its line has room and nothing of it waits in the store before them.
    pub(super) fn fits(&self, project: &str, n: usize) -> bool {
        if self.discover {
            return false;
        }
        match self.lines.get(project) {
            Some(l) => !l.backlog && l.ready.len() + n <= WINDOW,
            None => n <= WINDOW,
        }
    }

    /// Leaves `project`'s newly committed rows to the store, to be paged in.
    pub(super) fn mark_backlog(&mut self, project: &str) {
        let line = self.lines.entry(project.to_string()).or_default();
        line.backlog = true;
        line.marks += 1;
    }

    /// Whether some line waits for a page: it has a backlog and has drained
    /// to half its window, or projects are to be discovered.
    pub(super) fn wants_page(&self) -> bool {
        self.discover || self.lines.values().any(|l| l.backlog && l.ready.len() <= WINDOW / 2)
    }

    /// The next line to page: its project, its cursor and the rows it may
    /// take; `None` when no line needs one.
    pub(super) fn next_page(&mut self) -> Option<(String, Option<Id>, usize)> {
        let (project, line) = self
            .lines
            .iter_mut()
            .filter(|(_, l)| l.backlog && l.ready.len() <= WINDOW / 2)
            .min_by_key(|(_, l)| l.ready.len())?;
        line.paged_at = line.marks;
        Some((project.clone(), line.cursor, WINDOW - line.ready.len()))
    }

    /// Takes in a page of `project` read behind its cursor: `last` is the
    /// highest id it held, `full` whether it filled the room it was given
    /// (the store may hold more).
    pub(super) fn absorb_page(&mut self, project: &str, last: Option<Id>, full: bool, ready: Vec<Entry>) {
        let line = self.lines.entry(project.to_string()).or_default();
        if let Some(last) = last {
            line.cursor = Some(last);
        }
        // Rows committed after the page was asked for may be past it.
        line.backlog = full || line.marks != line.paged_at;
        for e in ready {
            self.push_back(e);
        }
    }

    /// The projects found holding queued rows in the store: each has a
    /// backlog from its current cursor on.
    pub(super) fn discovered(&mut self, projects: Vec<String>) {
        for p in projects {
            self.mark_backlog(&p);
        }
        self.discover = false;
    }

    #[cfg(test)]
    pub(super) fn cursor(&self, project: &str) -> Option<Id> {
        self.lines.get(project).and_then(|l| l.cursor)
    }

    #[cfg(test)]
    pub(super) fn backlog(&self, project: &str) -> bool {
        self.lines.get(project).is_some_and(|l| l.backlog)
    }
}
