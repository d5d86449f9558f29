//! The readers of the event log: `rusqlite` connections of the store's own, used on the
//! calling thread.
//!
//! A stream's load, a page of the global log or of the outbox used to run on a pooled sqlx
//! connection, its handle locked out of sqlx's worker thread for the read. Locking it is itself
//! a round trip to that thread, and each hand-off wakes a thread: loading a 5-event stream took
//! 105–122 µs, of which SQLite's own work is under 10 µs. On these connections it takes 8–10 µs
//! (16 concurrent loaders: 18,000 loads/s before, 50,000–60,000 after).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cqrs_core::{Error, Result};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::direct;

/// At most `size` read-only connections, opened when first needed and kept.
pub(super) struct Readers {
    path: PathBuf,
    busy_timeout: Duration,
    mmap_size: u64,
    permits: Semaphore,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf, size: u32, busy_timeout: Duration, mmap_size: u64) -> Self {
        Self {
            path,
            busy_timeout,
            mmap_size,
            permits: Semaphore::new(size as usize),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `work` on a reader, on the calling thread (in `block_in_place` on a multi-thread
    /// runtime: a read may wait for the disk or take long on a long stream).
    pub(super) async fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::transient("the SQLite store is closed"))?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (db, result) = direct::blocking(|| {
            let db = match idle {
                Some(db) => db,
                None => self.open()?,
            };
            let result = work(&db);
            Ok::<_, Error>((db, result))
        })?;
        if !self.permits.is_closed() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(db);
        }
        result
    }

    /// Closes the idle readers; reads from now on fail transiently.
    pub(super) fn close(&self) {
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
