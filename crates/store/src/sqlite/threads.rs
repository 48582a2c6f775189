//! Connections and the threads that own them: readers, the writer, and
//! the checkpointer; migrations.

use super::*;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        let transient = matches!(e.sqlite_error_code(), Some(DatabaseBusy | DatabaseLocked));
        Error::Db { message: e.to_string(), transient, source: Some(Box::new(e)) }
    }
}

/// An error of the process around the database (a thread, a directory).
pub(super) fn os_error(what: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Db { message: format!("{what}: {e}"), transient: false, source: Some(Box::new(e)) }
}

/// The size the log file is cut back to when it starts over.
pub const WAL_SIZE_LIMIT: i64 = 64 << 20;

pub(super) fn open_conn(path: &PathBuf, synchronous: &str, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // The log is reused from its start once checkpointed; a large write
        // (a big output) leaves the file large until then. This cuts it back
        // to 64 MiB whenever it starts over, so its size at rest stays bounded.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

pub(super) fn migrate(conn: &mut Connection) -> Result<SchemaVersion> {
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > known {
        return Err(Error::TooNew { found: current, known });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| Error::Migrate { version: *version, message: e.to_string() })?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied state store migration");
    }
    Ok(SchemaVersion { found: current, now: known.max(current) })
}

pub(super) fn spawn_thread(name: &str, mut conn: Connection, rx: Arc<Mutex<mpsc::Receiver<DbJob>>>) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            loop {
                let job = match rx.lock().unwrap().recv() {
                    Ok(j) => j,
                    Err(_) => return,
                };
                job(&mut conn);
            }
        })
        .map_err(|e| os_error("cannot start a database thread".into(), e))?;
    Ok(())
}

/// The writer thread: runs the write jobs, in the order they were sent.
pub(super) fn spawn_writer(
    conn: Arc<Mutex<Connection>>,
    rx: mpsc::Receiver<DbJob>,
    queued: Arc<AtomicUsize>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("stratus-sqlite-w".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut conn.lock().unwrap_or_else(|p| p.into_inner()));
                queued.fetch_sub(1, AcqRel);
            }
        })
        .map_err(|e| os_error("cannot start the database writer thread".into(), e))?;
    Ok(())
}

/// WAL pages after which the log is copied back into the database, as
/// SQLite's own automatic checkpoint does.
pub(super) const CHECKPOINT_PAGES: i32 = 1000;

pub(super) const IDLE: u8 = 0;
pub(super) const ASKED: u8 = 1;
pub(super) const DONE: u8 = 2;

/// What the writer's commit hook and the checkpointer thread share.
pub(super) struct Checkpoints {
    /// IDLE, ASKED (the thread is copying the log back) or DONE (the next
    /// commit finishes the checkpoint).
    pub(super) state: AtomicU8,
    /// The log's length in pages after the last commit.
    pub(super) pages: AtomicI32,
}

impl Checkpoints {
    /// Whether the next commit may checkpoint (and so sync both files).
    pub(super) fn due(&self) -> bool {
        self.state.load(Acquire) == DONE || self.pages.load(Relaxed) >= 3 * CHECKPOINT_PAGES
    }
}

/// Moves most of the writer's checkpoint work to a thread of its own.
/// SQLite runs a checkpoint on the committing connection once the log
/// passes [`CHECKPOINT_PAGES`]: copying a thousand pages back and syncing
/// both files stalled the writer for milliseconds, every few hundred
/// commits, and with it every caller waiting for a commit; about half of a
/// small commit's cost on average. Here the writer's commit hook (which
/// replaces the automatic checkpoint) asks the checkpointer thread, which
/// copies the log back with passive checkpoints (they never block the
/// writer or the readers). Once it is done, the writer's next commit makes
/// one more passive checkpoint of what came in meanwhile, a few pages: the
/// log can start over only after a checkpoint that left nothing behind,
/// which the other thread cannot count on while commits keep coming. Past
/// four times the mark (a reader held on to an old snapshot, say) the
/// writer checkpoints after every commit, as SQLite would. The thread ends
/// with the writer's connection (its hook owns the sender); it opens its
/// own at the first request (an idle server has no use for it).
pub(super) fn spawn_checkpointer(
    writer: &mut Connection,
    path: PathBuf,
    synchronous: String,
) -> Result<Arc<Checkpoints>> {
    let shared = Arc::new(Checkpoints { state: AtomicU8::new(IDLE), pages: AtomicI32::new(0) });
    let state = shared.clone();
    let (ask, asked) = mpsc::sync_channel::<()>(1);
    let hook = shared.clone();
    writer.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: std::ffi::c_int| {
        hook.pages.store(pages, Relaxed);
        let hook_state = &hook.state;
        if pages < CHECKPOINT_PAGES {
            return Ok(());
        }
        let finish = pages >= 4 * CHECKPOINT_PAGES || hook_state.compare_exchange(DONE, IDLE, AcqRel, Relaxed).is_ok();
        if finish {
            match wal.checkpoint() {
                // The checkpointer is at it: the next commit tries again.
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
                Ok(()) => {}
            }
        } else if hook_state.compare_exchange(IDLE, ASKED, AcqRel, Relaxed).is_ok() {
            let _ = ask.try_send(());
        }
        Ok(())
    }))?;
    std::thread::Builder::new()
        .name("stratus-sqlite-c".into())
        .spawn(move || {
            let mut checkpointer = None;
            let mut warned = false;
            while asked.recv().is_ok() {
                if checkpointer.is_none() {
                    match open_conn(&path, &synchronous, false) {
                        Ok(c) => checkpointer = Some(c),
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(error = %e, "cannot open the SQLite checkpointer; the writer will checkpoint");
                        }
                        Err(_) => {}
                    }
                }
                if let Some(checkpointer) = &checkpointer {
                    // Each pass copies what was committed during the one before.
                    for _ in 0..4 {
                        let pass = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                        });
                        match pass {
                            Ok((log, copied)) if log > copied + i64::from(CHECKPOINT_PAGES / 10) => continue,
                            Ok(_) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "SQLite checkpoint failed; the writer will make one");
                                break;
                            }
                        }
                    }
                }
                // The writer finishes (or, without a connection here, does it all).
                state.state.store(DONE, Release);
            }
        })
        .map_err(|e| os_error("cannot start the checkpoint thread".into(), e))?;
    Ok(shared)
}
