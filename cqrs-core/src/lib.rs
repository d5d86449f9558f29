//! # cqrs-core
//!
//! Traits and generic machinery for CQRS and event sourcing. No database and no HTTP here:
//! backends (`cqrs-memory`, `cqrs-sql`) implement the store and transport traits, and your
//! domain implements aggregates, process managers and handlers.
//!
//! | concept | items |
//! |---|---|
//! | messages | [`Message`] (stable [`NAME`](Message::NAME)), [`Command`], [`Envelope`], [`Metadata`], [`AnyMessage`], [`Payload`] |
//! | event sourcing | [`Aggregate`], [`Root`], [`event_set!`], [`Originator`] (mementos), [`Repository`], [`MementoCache`] |
//! | stores | [`EventReader`], [`EventAppender`], [`EventStore`], [`EventOutbox`], [`SnapshotStore`], [`ProcessStore`], [`InboxStore`] |
//! | dispatch | [`CommandDispatcher`] (one handler per command), [`EventDispatcher`] (many per event) |
//! | buses | [`CommandBus`], [`EventBus`], decorators [`LocalFirst`], [`Retry`], [`Trace`], [`Metrics`], [`BusBuilder`] |
//! | transport | [`MessageQueue`], [`Topics`], [`DeadLetters`], [`Processor`], [`AdaptiveLimit`] |
//! | outboxes | [`Publisher`] (events), [`ProcessRepository`] and [`Relay`] (process commands) |
//! | subscriptions | [`CatchUp`] (read the log from a checkpoint), [`CheckpointStore`], [`SharedLog`] (one read for several) |
//! | singletons | [`Leases`], [`Lease`], [`run_under_lease`] (one process at a time runs a publisher, a relay, a projection) |
//! | time | [`Clock`], [`SystemClock`], [`ManualClock`] |
//! | backends' machinery | [`Coalescer`] (what many tasks ask at once, served in one call) |
//!
//! ## Example
//!
//! An aggregate, tested with no store, then a command handled in-process through the
//! local-first bus:
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{
//!     event_set, Aggregate, BusBuilder, Command, CommandBus, CommandDispatcher, CommandHandler,
//!     Envelope, Error, Message, Metadata, Result, Root, Unrouted,
//! };
//! use serde::{Deserialize, Serialize};
//! use uuid::Uuid;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Deposited { amount: u64 }
//! impl Message for Deposited { const NAME: &'static str = "Deposited"; }
//!
//! event_set! {
//!     #[derive(Debug, Clone, PartialEq)]
//!     enum AccountEvent { Deposited(Deposited) }
//! }
//!
//! #[derive(Debug, Default)]
//! struct Account { balance: u64 }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "Account";
//!     type Event = AccountEvent;
//!     fn new(_id: Uuid) -> Self { Self::default() }
//!     fn apply(&mut self, event: &AccountEvent) {
//!         match event { AccountEvent::Deposited(e) => self.balance += e.amount }
//!     }
//! }
//!
//! impl Account {
//!     fn deposit(&self, amount: u64) -> Result<Vec<AccountEvent>, &'static str> {
//!         if amount == 0 { return Err("nothing to deposit") }
//!         Ok(vec![Deposited { amount }.into()])
//!     }
//! }
//!
//! // Given / when / then, no store needed.
//! let mut account = Root::<Account>::from_history(Uuid::nil(), [Deposited { amount: 5 }.into()]);
//! account.execute(|a| a.deposit(10)).unwrap();
//! assert_eq!((account.version(), account.balance), (1, 15));
//!
//! // A command with a local handler is handled in-process.
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! struct Deposit { id: Uuid, amount: u64 }
//! impl Message for Deposit { const NAME: &'static str = "Deposit"; }
//! impl Command for Deposit { fn command_id(&self) -> Uuid { self.id } }
//!
//! struct DepositHandler;
//! impl CommandHandler<Deposit> for DepositHandler {
//!     async fn handle(&self, command: &Deposit, _: &Metadata) -> Result<()> {
//!         if command.amount == 0 { return Err(Error::domain("nothing to deposit")) }
//!         Ok(())
//!     }
//! }
//!
//! let mut local = CommandDispatcher::new();
//! local.register::<Deposit, _>(DepositHandler)?;
//! let bus = BusBuilder::new().trace().local_first(Arc::new(local)).build(Unrouted);
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! bus.send(Envelope::command(Deposit { id: Uuid::now_v7(), amount: 3 })).await?;
//! # Ok::<_, Error>(()) })?;
//! # Ok::<_, Error>(())
//! ```
//!
//! ## Feature flags
//!
//! - `testing`: [`testing`] — given/when/then kits for aggregates and process managers, a
//!   scriptable [`RecordingBus`](testing::RecordingBus), a sample aggregate and process, and the
//!   store conformance suite every backend runs.
//!
//! ## Guarantees (with a backend that keeps the store contracts)
//!
//! - An append is atomic and checked against the expected version; a conflict writes nothing.
//! - Appended events reach the event bus through the outbox at least once, in per-stream
//!   order, with deterministic message ids.
//! - A command recorded by a process manager is sent at least once, whatever the point of a
//!   crash after its state commit.
//! - A processor never drops a message because its handler failed: it retries with backoff
//!   and dead-letters after the configured number of deliveries.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
mod backoff;
pub mod bus;
mod clock;
mod coalesce;
mod codec;
mod dispatch;
mod envelope;
mod error;
pub mod inbox;
mod lease;
mod limit;
mod message;
mod partitioned;
mod process;
mod processor;
mod publisher;
mod repository;
mod snapshot;
mod store;
mod subscription;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod transport;

pub use crate::aggregate::{Aggregate, EventSet, Originator, Root};
pub use crate::backoff::Backoff;
pub use crate::bus::{
    BusBuilder, CommandBus, CommandBusExt, EventBus, LocalFirst, Metrics, Retry, Trace, Unrouted,
};
pub use crate::clock::{Clock, ManualClock, SharedClock, SystemClock, saturating_add};
pub use crate::coalesce::Coalescer;
pub use crate::codec::{Codec, CodecError, CodecOp, Upcast};
pub use crate::dispatch::{
    BatchOutcome, CommandBatchHandler, CommandDispatcher, CommandHandler, EventDispatcher, EventHandler,
    FnHandler, MessageHandler, handler_fn,
};
pub use crate::envelope::{Envelope, Metadata, Source};
pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use crate::inbox::{Inbox, InboxStore};
pub use crate::lease::{Lease, Leases, run_under_lease};
pub use crate::limit::{AdaptiveLimit, LimitConfig, Permit};
pub use crate::message::{AnyMessage, Command, Decoded, Message, Payload};
pub use crate::partitioned::Partitioned;
pub use crate::process::{
    LoadedProcess, Process, ProcessRecord, ProcessRepository, ProcessState, ProcessStore, Relay,
    StoredCommand, process_conflict,
};
pub use crate::processor::{Processor, ProcessorConfig};
pub use crate::publisher::{Publisher, PublisherConfig};
pub use crate::repository::{CachedMemento, MementoCache, MementoCacheConfig, MementoPolicy, Repository};
pub use crate::snapshot::{NoSnapshots, Snapshot, SnapshotStore};
pub use crate::store::{
    AppendResult, EventAppender, EventMetadata, EventOutbox, EventReader, EventStore, ExpectedVersion,
    NewEvent, StoredEvent, StreamId,
};
pub use crate::subscription::{CatchUp, CheckpointStore, SharedLog};
pub use crate::transport::{
    DeadLetter, DeadLetters, Delivery, MessageFilter, MessageQueue, QueueBus, QueueDepths, TopicBus, Topics,
};

// Re-exported so `event_set!` users and backends need no direct dependency for these.
pub use bytes::Bytes;
pub use chrono;
pub use uuid;
