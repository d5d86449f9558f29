//! The SQLite backend: one file, WAL, one writer connection, a pool of readers.

mod batch;
mod checkpoints;
mod direct;
mod events;
mod leases;
mod processes;
mod readers;
mod sql;
mod transport;
mod writer;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::{Result, SharedClock, SystemClock};
use tokio::sync::Notify;

use self::batch::WriteFn;
pub use self::direct::error as sqlite_error;
pub use self::readers::SqliteReaders;
use self::writer::Writer;
use crate::error::corrupt;
use crate::migrate::SQLITE as MIGRATIONS;

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    path: PathBuf,
    /// `PRAGMA synchronous` of the writer.
    synchronous: &'static str,
    busy_timeout: Duration,
    readers: u32,
    group_commit: bool,
    lease: Duration,
    mmap_size: u64,
    offload_reads: bool,
    clock: SharedClock,
}

impl SqliteOptions {
    /// The default [`mmap_size`](Self::mmap_size): 0, no memory map.
    pub const DEFAULT_MMAP_SIZE: u64 = 0;

    /// Options for the database file at `path` (created if missing): durable commits
    /// (`synchronous = FULL`), a 5 s busy timeout, 4 reader connections, no memory map
    /// ([`DEFAULT_MMAP_SIZE`](Self::DEFAULT_MMAP_SIZE)), reads run inline, the system clock.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_owned(),
            synchronous: "FULL",
            busy_timeout: Duration::from_secs(5),
            readers: 4,
            group_commit: true,
            lease: Duration::from_secs(60),
            mmap_size: Self::DEFAULT_MMAP_SIZE,
            offload_reads: false,
            clock: SystemClock::shared(),
        }
    }

    /// Turns group commit on (the default) or off. On, concurrent appends are written together
    /// in one transaction with one durable commit, each still checked and answered on its own;
    /// so are the other writes (queue settles and enqueues, outbox marks, process saves,
    /// checkpoints), each rolled back alone if it fails.
    ///
    /// Off, every append and every write commits on its own.
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Trades durability against power loss for speed: `synchronous = NORMAL` in WAL mode
    /// still survives a crash of the process, not of the machine.
    #[must_use]
    pub fn relaxed_durability(mut self) -> Self {
        self.synchronous = "NORMAL";
        self
    }

    /// How long a statement waits for a lock held by another process before failing
    /// (transiently).
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// How long a received message stays locked to its consumer (default 60 s). A handler
    /// that runs longer may see its message delivered again.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The number of reader connections (default 4).
    #[must_use]
    pub fn readers(mut self, readers: u32) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// How much of the database file each connection reads through a memory map
    /// (`PRAGMA mmap_size`; 0, the default, turns it off).
    ///
    /// A map suits a file read much more than it is written. In WAL mode a connection that
    /// begins a read after another one has written drops its page cache and, with a map,
    /// unmaps the file, maps it again and faults in every page it touches; without one, each
    /// page it reads is a `pread`. Under the conference system's load (writes every few
    /// hundred microseconds), a 1 GiB map cost 15 % more CPU per order than none; a lone
    /// 10,000-event load took 7.6 ms with it and 8.6 ms without.
    #[must_use]
    pub fn mmap_size(mut self, bytes: u64) -> Self {
        self.mmap_size = bytes;
        self
    }

    /// Whether the store's reads run in `block_in_place` rather than inline on the task's
    /// thread (off by default); see [`SqliteReaders::offload`] for the trade.
    #[must_use]
    pub fn offload_reads(mut self, on: bool) -> Self {
        self.offload_reads = on;
        self
    }

    /// The clock that stamps records.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

struct Inner {
    writer: Writer,
    readers: SqliteReaders,
    clock: SharedClock,
    appended: Arc<Notify>,
    lease: Duration,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    path: PathBuf,
}

/// Event store, outbox, snapshot store, process store and inbox in one SQLite file.
///
/// Writes go through a single connection on a thread of its own (`BEGIN IMMEDIATE`,
/// group-committed), so they never contend inside the process and the global position is
/// gap-free; reads use a pool of WAL readers and never wait for writes. Clones share the
/// writer and the readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with the default options, and applies
    /// the migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(SqliteOptions::new(path)).await
    }

    /// Opens a `sqlite://` URL (or a plain path) with the default options.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn connect(url: &str) -> Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        Self::open(path).await
    }

    /// Opens the database with `options` and applies the migrations.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with(options: SqliteOptions) -> Result<Self> {
        let appended = Arc::new(Notify::new());
        let writer = Writer::start(
            &options.path,
            writer::Settings {
                synchronous: options.synchronous,
                busy_timeout: options.busy_timeout,
                mmap_size: options.mmap_size,
                group_commit: options.group_commit,
                clock: Arc::clone(&options.clock),
                appended: Arc::clone(&appended),
            },
        )
        .await?;
        let store = Self {
            inner: Arc::new(Inner {
                writer,
                readers: SqliteReaders::new(&options.path, options.readers)
                    .busy_timeout(options.busy_timeout)
                    .mmap_size(options.mmap_size)
                    .offload(options.offload_reads),
                clock: options.clock,
                appended,
                lease: options.lease,
                wakers: Mutex::new(HashMap::new()),
                path: options.path,
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not applied yet, each in its own transaction. Idempotent.
    ///
    /// # Errors
    /// When a migration fails; the ones before it stay applied.
    pub async fn migrate(&self) -> Result<()> {
        let now = self.now_micros();
        let applied = self
            .inner
            .writer
            .exclusive(move |db| {
                db.execute(sql::CREATE_MIGRATIONS, []).map_err(direct::error)?;
                let mut applied = Vec::new();
                for migration in MIGRATIONS {
                    let tx = db
                        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                        .map_err(direct::error)?;
                    let done: bool = tx
                        .query_row(sql::MIGRATION_APPLIED, [migration.version], |row| row.get(0))
                        .map_err(direct::error)?;
                    if done {
                        continue;
                    }
                    tx.execute_batch(migration.sql).map_err(direct::error)?;
                    tx.execute(
                        sql::RECORD_MIGRATION,
                        rusqlite::params![migration.version, migration.name, now],
                    )
                    .map_err(direct::error)?;
                    tx.commit().map_err(direct::error)?;
                    applied.push(migration);
                }
                Ok(applied)
            })
            .await?;
        for migration in applied {
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        Ok(())
    }

    /// `(batches, appends)` written by group commit so far; `None` when it is off.
    pub fn group_commit_stats(&self) -> Option<(u64, u64)> {
        self.inner.writer.stats()
    }

    /// Closes the writer and the readers; writes already queued finish first. Later
    /// operations fail transiently.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.readers.close();
    }

    /// Runs `work` on one of the store's readers (see [`readers`]).
    async fn read<T>(&self, work: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        self.inner.readers.read(work).await
    }

    /// Runs `write` on the writer in the next group-committed batch (see [`batch`]); a
    /// write of several `statements` runs in a savepoint of its own.
    async fn write<T: Send + 'static>(&self, statements: usize, write: WriteFn<T>) -> Result<T> {
        self.inner.writer.write(statements, write).await
    }

    /// Runs one statement with `params` bound in the next group-committed batch; answers the
    /// number of rows it changed.
    async fn execute(
        &self,
        statement: &'static str,
        params: impl rusqlite::Params + Send + 'static,
    ) -> Result<usize> {
        self.write(
            1,
            Box::new(move |db| {
                db.prepare_cached(statement)
                    .and_then(|mut statement| statement.execute(params))
                    .map_err(direct::error)
            }),
        )
        .await
    }

    /// Runs one statement once per set of `params`, all in one write of the next
    /// group-committed batch (nothing for none); answers the number of rows they changed.
    async fn execute_each<P: rusqlite::Params + Send + 'static>(
        &self,
        statement: &'static str,
        params: Vec<P>,
    ) -> Result<usize> {
        if params.is_empty() {
            return Ok(0);
        }
        self.write(
            params.len(),
            Box::new(move |db| {
                let mut statement = db.prepare_cached(statement).map_err(direct::error)?;
                params.into_iter().try_fold(0, |changed, params| {
                    Ok(changed + statement.execute(params).map_err(direct::error)?)
                })
            }),
        )
        .await
    }

    fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn now_micros(&self) -> i64 {
        self.now().timestamp_micros()
    }
}

fn timestamp(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| corrupt("timestamp", micros))
}
