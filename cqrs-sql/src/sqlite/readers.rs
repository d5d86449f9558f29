//! Read-only `rusqlite` connections used on the calling thread: the store's own readers of the
//! event log, and the same for an application's SQLite files (read models, say).
//!
//! A stream's load, a page of the global log or of the outbox used to run on a pooled sqlx
//! connection, its handle locked out of sqlx's worker thread for the read. Locking it is itself
//! a round trip to that thread, and each hand-off wakes a thread: loading a 5-event stream took
//! 105–122 µs, of which SQLite's own work is under 10 µs. On these connections it takes 8–12 µs
//! (16 concurrent loaders: 18,000 loads/s before, 46,000–53,000 after).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cqrs_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::direct;

/// A pool of read-only connections to one SQLite file, opened when first needed and kept, each
/// used on the calling thread: inside `block_in_place` on a multi-thread tokio runtime (a read
/// may wait for the disk, or take long on many rows), inline on a current-thread one. No
/// thread hand-off, unlike a sqlx pool, whose every statement runs on a worker thread of its
/// own and sends its rows back through a channel.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use cqrs_sql::{SqliteReaders, rusqlite, sqlite_error};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("models.db");
/// rusqlite::Connection::open(&path)?.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (7);")?;
///
/// let readers = SqliteReaders::new(&path, 2);
/// let n: i64 = readers
///     .read(|db| db.query_row("SELECT n FROM t", [], |row| row.get(0)).map_err(sqlite_error))
///     .await?;
/// assert_eq!(n, 7);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct SqliteReaders {
    path: PathBuf,
    busy_timeout: Duration,
    mmap_size: u64,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReaders {
    /// At most `size` readers of the SQLite file at `path` (which must exist), with a 5 s busy
    /// timeout and the first [`SqliteOptions::DEFAULT_MMAP_SIZE`](super::SqliteOptions::DEFAULT_MMAP_SIZE)
    /// bytes of the file memory-mapped.
    pub fn new(path: impl AsRef<Path>, size: u32) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            busy_timeout: Duration::from_secs(5),
            mmap_size: super::SqliteOptions::DEFAULT_MMAP_SIZE,
            permits: Semaphore::new(size.max(1) as usize),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// How long a read waits for a lock held by a writer's checkpoint or recovery.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How much of the file each reader maps into memory (`PRAGMA mmap_size`; 0 turns it off).
    #[must_use]
    pub fn mmap_size(mut self, bytes: u64) -> Self {
        self.mmap_size = bytes;
        self
    }

    /// Runs `work` on a reader, on the calling thread; waits for one to be free.
    ///
    /// # Errors
    /// `work`'s error; an error when the file cannot be opened (transient when it is busy);
    /// a transient one once [`close`](Self::close) was called.
    pub async fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::transient("the SQLite readers are closed"))?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (db, result) = direct::blocking(|| {
            let db = match idle {
                Some(db) => db,
                None => self.open()?,
            };
            let result = work(&db);
            if !db.is_autocommit() {
                // A transaction `work` left open would pin later reads to its snapshot.
                let _ = db.execute_batch("ROLLBACK");
            }
            Ok::<_, Error>((db, result))
        })?;
        if !self.permits.is_closed() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(db);
        }
        result
    }

    /// Closes the idle readers; reads from now on fail transiently.
    pub fn close(&self) {
        self.permits.close();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn open(&self) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let db = Connection::open_with_flags(&self.path, flags).map_err(direct::error)?;
        db.busy_timeout(self.busy_timeout).map_err(direct::error)?;
        db.execute_batch(&format!("PRAGMA mmap_size = {};", self.mmap_size))
            .map_err(direct::error)?;
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite_error;

    #[tokio::test]
    async fn a_read_that_leaves_a_transaction_open_does_not_pin_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pinned.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (1);")
            .unwrap();
        let readers = SqliteReaders::new(&path, 1);
        let count = |db: &Connection| -> Result<i64> {
            db.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                .map_err(sqlite_error)
        };
        let first = readers
            .read(|db| {
                db.execute_batch("BEGIN").map_err(sqlite_error)?;
                count(db)
            })
            .await
            .unwrap();
        assert_eq!(first, 1);
        writer.execute("INSERT INTO t VALUES (2)", []).unwrap();
        assert_eq!(
            readers.read(count).await.unwrap(),
            2,
            "the same connection, a fresh snapshot"
        );
        readers.close();
        assert!(readers.read(count).await.unwrap_err().is_transient());
    }
}
