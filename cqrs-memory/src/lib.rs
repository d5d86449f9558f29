//! # cqrs-memory
//!
//! In-process backends for [`cqrs_core`]: for tests, examples and single-process programs.
//! Everything lives in memory and is gone when the process ends.
//!
//! | type | implements |
//! |---|---|
//! | [`MemoryEventStore`] | `EventReader`, `EventAppender`, `EventOutbox` |
//! | [`MemorySnapshotStore`] | `SnapshotStore` |
//! | [`MemoryProcessStore`] | `ProcessStore` (state and undispatched commands together) |
//! | [`MemoryTransport`] | `MessageQueue`, `Topics`, `DeadLetters` (sessions, delays, expiry) |
//! | [`MemoryInbox`] | `InboxStore` |
//! | [`MemoryCheckpoints`] | `CheckpointStore` |
//! | [`MemoryLeases`] | `Leases` (among the clones of one value) |
//!
//! All of them are cheap to clone (clones share state) and safe to use from many tasks. No lock
//! is ever held across an `.await`.
//!
//! ## Example
//!
//! ```
//! use cqrs_core::testing::sample::{Inventory, SeatsAdded};
//! use cqrs_core::{Repository, Root};
//! use cqrs_memory::MemoryEventStore;
//! use cqrs_core::uuid::Uuid;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryEventStore::new();
//! let repository = Repository::<Inventory, _>::new(store.clone());
//!
//! let id = Uuid::now_v7();
//! let mut inventory = Root::<Inventory>::new(id);
//! inventory.execute(|i| i.add(1, 100))?;
//! repository.save(&mut inventory, None).await?;
//!
//! let loaded = repository.get(id).await?;
//! assert_eq!((loaded.version(), loaded.available(1)), (0, 100));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod checkpoints;
mod event_store;
mod inbox;
mod leases;
mod process_store;
mod snapshot_store;
mod transport;

pub use crate::checkpoints::MemoryCheckpoints;
pub use crate::event_store::MemoryEventStore;
pub use crate::inbox::MemoryInbox;
pub use crate::leases::MemoryLeases;
pub use crate::process_store::MemoryProcessStore;
pub use crate::snapshot_store::MemorySnapshotStore;
pub use crate::transport::MemoryTransport;
