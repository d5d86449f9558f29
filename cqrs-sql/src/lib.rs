//! # cqrs-sql
//!
//! SQL backends for [`cqrs_core`] on sqlx.
//!
//! | feature | type | what it is |
//! |---|---|---|
//! | `sqlite` (default) | `SqliteStore`, `SqliteReaders` | the embedded default: one file, WAL, one writer connection on a thread of its own (`BEGIN IMMEDIATE`, group commit), readers used on the calling thread; `SqliteReaders` offers the same readers for an application's own SQLite files |
//! | `postgres` | `PgStore` | scale-out: several processes share one database; one-statement appends; gap-safe reads of the global log; an outbox that is a position in it; what a process's tasks ask at once (loads, saves, completions, enqueues) served in one statement; the busiest statements on connections kept between them (`KeptConnections`, `pg_pool_options`: no round trip to check a connection in use); LISTEN/NOTIFY wake-ups |
//!
//! A store implements the storage and transport traits of `cqrs-core` over one database:
//! `EventReader`, `EventAppender` and `EventOutbox` (on SQLite the append itself writes the
//! outbox rows, on PostgreSQL the outbox is a position the publisher moves; concurrent appends
//! share commits through group commit, and on SQLite so do the other writes: queue settles,
//! enqueues, outbox marks, process saves), `SnapshotStore`,
//! `ProcessStore` (state and undispatched commands in one transaction), `InboxStore`,
//! `CheckpointStore`, and the message transport `MessageQueue`, `Topics` and `DeadLetters`
//! (sessions, delays, time to live, leases fenced by delivery count), and `Leases` (advisory
//! locks on PostgreSQL, lock files on SQLite). Every backend passes the
//! conformance suite of `cqrs_core::testing::conformance` unchanged. Design and operation:
//! `docs/storage.md`.
//!
//! Migrations are embedded per dialect, versioned and idempotent; opening a store applies them
//! (`SqliteStore::open`, `PgStore::connect`), and `migrate` applies them explicitly.
//!
//! ## Example
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cqrs_core::testing::sample::Inventory;
//! use cqrs_core::{Repository, Root};
//! use cqrs_core::uuid::Uuid;
//! use cqrs_sql::SqliteStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("events.db")).await?;
//! let repository = Repository::<Inventory, _>::new(store.clone());
//!
//! let mut inventory = Root::<Inventory>::new(Uuid::now_v7());
//! inventory.execute(|i| i.add(1, 100))?;
//! repository.save(&mut inventory, None).await?;
//! assert_eq!(repository.get(inventory.id()).await?.available(1), 100);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Faults
//!
//! A lost connection, a pool timeout, a busy SQLite database or a PostgreSQL server that is
//! shutting down, starting or out of connections (and a serialization failure or deadlock) is
//! reported as a transient error (`Error::is_transient`), which the retry decorator and
//! processors retry, and [`sqlx_error`] classifies an application's own statements the same
//! way. A unique-key violation on an append or a process save is a conflict; bytes that do not
//! decode are a codec error, never a panic.

mod error;
mod group;
mod migrate;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use crate::error::db as sqlx_error;
#[cfg(feature = "postgres")]
pub use crate::postgres::{
    BatchStats, KeptConnection, KeptConnections, OnKept, PgNotifier, PgOptions, PgStore, pg_pool_options,
};
#[cfg(feature = "sqlite")]
pub use crate::sqlite::{SqliteOptions, SqliteReaders, SqliteStore, sqlite_error};
/// The `rusqlite` that [`SqliteReaders`] hands its connections out as (it shares sqlx's SQLite).
#[cfg(feature = "sqlite")]
pub use rusqlite;
