//! Read-only `rusqlite` connections used on the calling thread: the store's own readers of the
//! event log, and the same for an application's SQLite files (read models, say).
//!
//! A stream's load, a page of the global log or of the outbox used to run on a pooled sqlx
//! connection, its handle locked out of sqlx's worker thread for the read. Locking it is itself
//! a round trip to that thread, and each hand-off wakes a thread: loading a 5-event stream took
//! 105–122 µs, of which SQLite's own work is under 10 µs. On these connections it takes 8–12 µs
//! (16 concurrent loaders: 18,000 loads/s before, 46,000–53,000 after).
//!
//! A read runs inline on the task's thread by default. Run in `block_in_place`, as the first
//! version did, each read handed the tokio worker's core to another thread and back, which cost
//! more than the read itself: with reads inline, the conference system went from 290 to 430
//! orders/s end to end. [`SqliteReaders::offload`] brings `block_in_place` back where a read may
//! wait long on the disk.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use cqrs_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::direct;

/// A pool of read-only connections to one SQLite file, opened when first needed and kept, each
/// used on the calling thread. No thread hand-off, unlike a sqlx pool, whose every statement
/// runs on a worker thread of its own and sends its rows back through a channel.
///
/// A read holds its tokio worker thread while it runs, as any computation between two `await`s
/// does: a stream of a few events loads in about 10 µs, a stream of 10,000 events in about
/// 8 ms, from the operating system's page cache. Where reads may wait long on the
/// disk (a database much larger than memory, a network file system) or return many thousands
/// of rows, [`offload`](Self::offload) runs them in `block_in_place` instead, leaving the worker
/// to the other tasks at the cost of two thread hand-offs per read.
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
    offload: bool,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl SqliteReaders {
    /// At most `size` readers of the SQLite file at `path` (which must exist), with a 5 s busy
    /// timeout, no memory map ([`SqliteOptions::DEFAULT_MMAP_SIZE`](super::SqliteOptions::DEFAULT_MMAP_SIZE)),
    /// each read run inline.
    pub fn new(path: impl AsRef<Path>, size: u32) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            busy_timeout: Duration::from_secs(5),
            mmap_size: super::SqliteOptions::DEFAULT_MMAP_SIZE,
            offload: false,
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

    /// How much of the file each reader maps into memory (`PRAGMA mmap_size`; 0, the default,
    /// turns it off); see [`SqliteOptions::mmap_size`](super::SqliteOptions::mmap_size) for
    /// when a map pays.
    #[must_use]
    pub fn mmap_size(mut self, bytes: u64) -> Self {
        self.mmap_size = bytes;
        self
    }

    /// Whether a read runs in `block_in_place` on a multi-thread tokio runtime (off by
    /// default: inline). On, the worker's other tasks move to another thread while a read
    /// waits on the disk; each read then costs two thread hand-offs. A current-thread runtime
    /// always reads inline.
    #[must_use]
    pub fn offload(mut self, on: bool) -> Self {
        self.offload = on;
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
        let read = || {
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
        };
        let (db, result) = if self.offload {
            direct::blocking(read)?
        } else {
            read()?
        };
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

    /// On a runtime of one worker, an offloaded read that waits for a task it spawned sees it
    /// run: `block_in_place` hands the worker to another thread. (Inline, the read holds the
    /// only worker, and the task runs only after the read gave up waiting.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_offloaded_read_leaves_the_worker_to_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offloaded.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (3);")
            .unwrap();
        let readers = SqliteReaders::new(&path, 1).offload(true);
        // The test's body runs outside the worker; the read must run on it.
        let read = tokio::spawn(async move {
            readers
                .read(|db| {
                    let n: i64 = db
                        .query_row("SELECT n FROM t", [], |row| row.get(0))
                        .map_err(sqlite_error)?;
                    let (sender, receiver) = std::sync::mpsc::channel();
                    tokio::spawn(async move { sender.send(4_i64) });
                    let sent = receiver
                        .recv_timeout(Duration::from_secs(30))
                        .map_err(|e| Error::permanent(e.to_string()))?;
                    Ok((n, sent))
                })
                .await
        });
        assert_eq!(read.await.unwrap().unwrap(), (3, 4));
    }
}
