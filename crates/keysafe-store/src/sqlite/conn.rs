//! Connections to the database file through SQLite's own API (rusqlite): the settings every
//! connection uses, the pool of query-only connections that reads borrow, the helpers that run
//! one statement from the statement cache, and the one mapping of SQLite errors to
//! `StoreError`.
//!
//! A read borrows an idle connection and runs on the calling thread: a point read is a few
//! B-tree descents, microseconds when its pages are in SQLite's cache and tens of them when its
//! leaves must be copied from the kernel's page cache (a large database read at random);
//! handing it to another thread costs more than it saves (a futex wake and two context switches per
//! statement; BENCHMARKS.md measured the blocking pool and `block_in_place` for these reads at a
//! million deposits: more CPU a read and a longer tail). The price is that a page the kernel
//! must fetch from the disk holds this runtime thread until it arrives. Reads whose work grows
//! with the data (listings, the audit trail, counts) run on tokio's blocking pool instead, so a
//! long one never holds a runtime thread. In WAL mode a reader never waits for the writer.

use keysafe_core::store::{StoreError, StoreResult};
use rusqlite::ffi::ErrorCode;
use rusqlite::{Connection, OpenFlags, Params, Row};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Idle read connections kept; more are opened when every kept one is in use at once, and
/// closed again when they come back to a full pool.
const MAX_IDLE_READERS: usize = 8;
/// Prepared statements cached per connection (the hot paths use a handful).
const STATEMENT_CACHE: usize = 64;
/// How long a statement waits for a lock held by another connection before it fails.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Maps a failed statement. Failures that say the database cannot be used now (locked past the
/// busy timeout, an I/O error, a file that cannot be opened, a full disk) are `Unavailable`;
/// anything else is a backend error.
pub(crate) fn backend_error(e: rusqlite::Error) -> StoreError {
    match sqlite_code(&e) {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull,
        ) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Backend(e.to_string()),
    }
}

fn sqlite_code(e: &rusqlite::Error) -> Option<ErrorCode> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    }
}

/// Maps a failed write: a uniqueness violation is `AlreadyExists`, a missing referenced row
/// `NotFound`; the rest as [`backend_error`].
pub(crate) fn write_error(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return StoreError::AlreadyExists;
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return StoreError::NotFound,
            _ => {}
        }
    }
    backend_error(e)
}

/// Opens a connection with the settings every keysafe connection uses: WAL, `synchronous=FULL`
/// (a committed transaction survives power loss), foreign keys enforced, a busy timeout, and
/// `secure_delete` (freed pages are overwritten with zeros, so purged ciphertext does not linger
/// in the file). `query_only` connections refuse every write.
pub(crate) fn open(path: &Path, query_only: bool) -> StoreResult<Connection> {
    open_with(path, query_only, false)
}

/// Turns off SQLite's allocation statistics before the library initialises. They are kept
/// under one process-wide mutex taken on every allocation and free of every connection, so the
/// read connections on the runtime threads and the writer thread would contend on it for
/// numbers keysafe never reads. Answers whether the setting took: SQLite accepts it only before
/// it initialises, so it does not when something else in the process used SQLite first (then
/// the statistics stay on, which costs speed, not correctness).
#[allow(unsafe_code)]
pub(crate) fn configure_library() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        // SAFETY: `sqlite3_config` with SQLITE_CONFIG_MEMSTATUS takes one int, and must not
        // run while another thread is inside SQLite. Every SQLite use of keysafe starts here
        // first (`open_with`, and `testing::RawDb::connect` before sqlx opens), and `OnceLock`
        // runs it once, with any other caller waiting until it returns. Called after SQLite
        // initialised, it changes nothing and answers SQLITE_MISUSE.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                std::ffi::c_int::from(0u8),
            )
        };
        rc == rusqlite::ffi::SQLITE_OK
    })
}

/// [`open`], creating the file when `create` says so and it is missing.
pub(crate) fn open_with(path: &Path, query_only: bool, create: bool) -> StoreResult<Connection> {
    configure_library();
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(backend_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let mut pragmas = String::from(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
         PRAGMA secure_delete = ON;",
    );
    if query_only {
        pragmas.push_str(" PRAGMA query_only = ON;");
    }
    conn.execute_batch(&pragmas).map_err(backend_error)?;
    Ok(conn)
}

/// Runs a cached statement and decodes its first row, if any.
pub(crate) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    decode: impl FnOnce(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    let mut st = conn.prepare_cached(sql).map_err(backend_error)?;
    let mut rows = st.query(params).map_err(backend_error)?;
    match rows.next().map_err(backend_error)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

/// Runs a cached statement and decodes every row.
pub(crate) fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    mut decode: impl FnMut(&Row<'_>) -> StoreResult<T>,
) -> StoreResult<Vec<T>> {
    let mut st = conn.prepare_cached(sql).map_err(backend_error)?;
    let mut rows = st.query(params).map_err(backend_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(backend_error)? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// Runs a cached statement that changes rows; answers how many it changed.
pub(crate) fn exec(conn: &Connection, sql: &str, params: impl Params) -> StoreResult<usize> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.execute(params))
        .map_err(write_error)
}

/// The query-only connections that reads borrow.
pub(crate) struct Readers {
    path: PathBuf,
    /// `None` once closed.
    idle: Mutex<Option<Vec<Connection>>>,
    /// Connections open now, idle or borrowed.
    open: AtomicUsize,
}

impl Readers {
    /// Opens the pool with one connection (which also checks that the file opens).
    pub(crate) fn open(path: &Path) -> StoreResult<Arc<Self>> {
        let first = open(path, true)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            idle: Mutex::new(Some(vec![first])),
            open: AtomicUsize::new(1),
        }))
    }

    fn take(&self) -> StoreResult<Connection> {
        let idle = self
            .idle
            .lock()
            .map_err(|_| StoreError::Backend("reader pool poisoned".into()))?
            .as_mut()
            .map(|v| v.pop());
        match idle {
            None => Err(StoreError::Unavailable("the store is closed".into())),
            Some(Some(c)) => Ok(c),
            Some(None) => {
                let c = open(&self.path, true)?;
                self.open.fetch_add(1, Ordering::Relaxed);
                Ok(c)
            }
        }
    }

    fn give(&self, conn: Connection) {
        // A connection left inside a transaction (a snapshot read whose end failed) would pin
        // its snapshot for the next borrower: it is closed instead.
        if conn.is_autocommit()
            && let Ok(mut idle) = self.idle.lock()
            && let Some(v) = idle.as_mut()
            && v.len() < MAX_IDLE_READERS
        {
            v.push(conn);
            return;
        }
        drop(conn);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open (idle or in use), and how many of them are idle.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let idle = self
            .idle
            .lock()
            .ok()
            .and_then(|i| i.as_ref().map(Vec::len))
            .unwrap_or(0);
        (self.open.load(Ordering::Relaxed).max(idle), idle)
    }

    /// Runs `f` with a read connection on this thread (point reads; see the module comment).
    pub(crate) fn run<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        let conn = self.take()?;
        let r = f(&conn);
        self.give(conn);
        r
    }

    /// Runs `f` with a read connection on the blocking pool (reads that grow with the data).
    pub(crate) async fn run_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.run(f))
            .await
            .map_err(|e| StoreError::Backend(format!("a read task failed: {e}")))?
    }

    /// Runs `f` on the blocking pool inside one read transaction, so that all its queries see
    /// one snapshot of the database.
    pub(crate) async fn run_snapshot<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.run_blocking(move |c| {
            c.execute_batch("BEGIN").map_err(backend_error)?;
            let r = f(c);
            // A read transaction: ending it commits nothing.
            let _ = c.execute_batch("ROLLBACK");
            r
        })
        .await
    }

    /// Closes the idle connections; later reads answer `Unavailable`.
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock()
            && let Some(v) = idle.take()
        {
            self.open.fetch_sub(v.len(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocation statistics are off: SQLite's count of the memory it holds stays at zero
    /// while a connection allocates. (Nothing in this test process uses SQLite before the
    /// store opens its first connection.)
    #[test]
    #[allow(unsafe_code)]
    fn allocation_statistics_are_off() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_with(&dir.path().join("x.db"), false, true).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (v BLOB); INSERT INTO t VALUES (zeroblob(100000)); SELECT * FROM t;",
        )
        .unwrap();
        assert!(
            configure_library(),
            "SQLite was initialised before the store"
        );
        // SAFETY: a plain read of a counter; no arguments.
        assert_eq!(unsafe { rusqlite::ffi::sqlite3_memory_used() }, 0);
    }

    /// SQLite was compiled without SQLITE_ENABLE_MEMORY_MANAGEMENT (`.cargo/config.toml`), so
    /// each connection has its own page cache instead of one group behind a process-wide mutex
    /// that the writer and every reader would take for each page.
    #[test]
    fn page_caches_are_per_connection() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_with(&dir.path().join("x.db"), false, true).unwrap();
        let options = all(&conn, "PRAGMA compile_options", [], |r| {
            crate::sqlite::rows::at::<String>(r, 0)
        })
        .unwrap();
        assert!(
            options.iter().any(|o| o.starts_with("THREADSAFE=")),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "SQLite was built with SQLITE_ENABLE_MEMORY_MANAGEMENT: {options:?}"
        );
    }

    /// A borrowed connection that comes back inside a transaction is closed, not kept: the next
    /// borrower never inherits an old snapshot.
    #[test]
    fn a_connection_left_in_a_transaction_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        open_with(&path, false, true)
            .unwrap()
            .execute_batch("CREATE TABLE t (v INTEGER)")
            .unwrap();
        let readers = Readers::open(&path).unwrap();
        assert_eq!(readers.counts(), (1, 1));
        readers
            .run(|c| c.execute_batch("SELECT 1").map_err(backend_error))
            .unwrap();
        assert_eq!(readers.counts(), (1, 1), "an idle connection is kept");
        readers
            .run(|c| {
                c.execute_batch("BEGIN; SELECT count(*) FROM t;")
                    .map_err(backend_error)
            })
            .unwrap();
        assert_eq!(readers.counts(), (0, 0), "it was closed");
        // The next read opens a fresh connection, outside any transaction.
        readers
            .run(|c| {
                assert!(c.is_autocommit());
                Ok(())
            })
            .unwrap();
        assert_eq!(readers.counts(), (1, 1));
    }
}
