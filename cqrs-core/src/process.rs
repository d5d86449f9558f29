//! Process managers: state stored as a versioned document, and the commands produced while
//! handling one message stored *in the same atomic step* (the undispatched outbox), then sent.
//!
//! The protocol, which every [`ProcessStore`] backend supports and [`ProcessRepository`] drives:
//!
//! 1. **save** writes the new state (optimistic concurrency on the version) and the outgoing
//!    commands together; then sends the commands one by one, in order, removing each from the
//!    store once it is sent. If a send fails, the rest stay stored and the error is returned.
//! 2. **every load** first sends what is left, the same way; a send failure fails the load.
//!    Removing a command that a concurrent sender already removed is not an error.
//! 3. a background [`Relay`] sends leftovers of processes nobody loads.
//!
//! Commands are therefore sent at least once whatever the point of a crash after the commit.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Serialize, de::DeserializeOwned};
use uuid::Uuid;

use crate::bus::CommandBus;
use crate::clock::SharedClock;
use crate::codec::{Codec, CodecError, CodecOp};
use crate::envelope::{Envelope, Metadata};
use crate::error::{Error, Result};
use crate::message::{AnyMessage, Payload};

/// The state document of a process manager.
pub trait ProcessState: Serialize + DeserializeOwned + fmt::Debug + Send + Sync + 'static {
    /// The stable name of the process type.
    const TYPE: &'static str;

    /// Whether the process has finished.
    fn is_completed(&self) -> bool;

    /// The version of the state's schema, stored with every record. Bump it when the shape
    /// changes incompatibly and teach [`upcast`](ProcessState::upcast) to migrate.
    const SCHEMA_VERSION: u32 = 1;

    /// A secondary key to find the process by (e.g. the order id it coordinates).
    fn key(&self) -> Option<String> {
        None
    }

    /// Migrates a JSON state written with an older schema version. The default refuses.
    ///
    /// # Errors
    /// When the old version cannot be migrated.
    fn upcast(from_version: u32, value: serde_json::Value) -> Result<serde_json::Value, crate::BoxError> {
        let _ = value;
        Err(format!(
            "no upcaster from schema version {from_version} to {}",
            Self::SCHEMA_VERSION
        )
        .into())
    }
}

/// A process manager instance: its state, its version, and the commands it produced while
/// handling the current message.
#[derive(Debug)]
pub struct Process<P> {
    id: Uuid,
    version: i64,
    state: P,
    outgoing: Vec<Envelope>,
    cause: Option<Metadata>,
}

impl<P: ProcessState> Process<P> {
    /// A new process (version −1: not stored yet).
    pub fn new(id: Uuid, state: P) -> Self {
        Self {
            id,
            version: -1,
            state,
            outgoing: Vec::new(),
            cause: None,
        }
    }

    /// Declares the message being handled: every command [`send`](Self::send) queues from now
    /// on is stamped as caused by it (its causation id, and its correlation id unless the
    /// command already has one). The testing kit and routers call it once per message.
    pub fn caused_by(&mut self, message: &Metadata) -> &mut Self {
        self.cause = Some(Metadata {
            message_id: message.message_id.clone(),
            correlation_id: message.correlation_id.clone(),
            ..Metadata::default()
        });
        self
    }

    /// The process id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The stored version (−1 before the first save).
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The state.
    pub fn state(&self) -> &P {
        &self.state
    }

    /// The state, to change it.
    pub fn state_mut(&mut self) -> &mut P {
        &mut self.state
    }

    /// Queues a command to send once the state is saved, stamped with the cause declared by
    /// [`caused_by`](Self::caused_by) if any.
    pub fn send(&mut self, envelope: Envelope) {
        let envelope = match &self.cause {
            Some(cause) if envelope.metadata.causation_id.is_none() => envelope.caused_by(cause),
            _ => envelope,
        };
        self.outgoing.push(envelope);
    }

    /// The commands queued while handling the current message.
    pub fn outgoing(&self) -> &[Envelope] {
        &self.outgoing
    }

    /// Takes the queued commands (the testing kit uses it between messages).
    pub fn take_outgoing(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outgoing)
    }

    /// Whether the process has finished.
    pub fn is_completed(&self) -> bool {
        self.state.is_completed()
    }
}

impl<P> Deref for Process<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.state
    }
}

impl<P> DerefMut for Process<P> {
    fn deref_mut(&mut self) -> &mut P {
        &mut self.state
    }
}

/// A process's state as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    /// [`ProcessState::TYPE`].
    pub process_type: String,
    /// The process id.
    pub id: Uuid,
    /// The version: on load, the stored one; on save, the one expected (−1 for a new process).
    pub version: i64,
    /// Whether the process has finished.
    pub completed: bool,
    /// Its secondary key.
    pub key: Option<String>,
    /// The codec of `state`.
    pub codec: Codec,
    /// The schema version of `state` ([`ProcessState::SCHEMA_VERSION`] when written).
    pub schema_version: u32,
    /// The encoded state.
    pub state: Bytes,
}

/// A command in a process's outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCommand {
    /// The envelope's message id; unique within the process's outbox.
    pub message_id: String,
    /// The serialized command.
    pub payload: Payload,
    /// The envelope's metadata (delay, time to live, correlation…).
    pub metadata: Metadata,
    /// When it was stored.
    pub stored_at: DateTime<Utc>,
}

impl StoredCommand {
    /// Serializes an outgoing envelope.
    ///
    /// # Errors
    /// When the command cannot be encoded.
    pub fn from_envelope(
        envelope: &Envelope,
        codec: Codec,
        stored_at: DateTime<Utc>,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            message_id: envelope.metadata.message_id.clone(),
            payload: envelope.message.to_payload(codec)?,
            metadata: envelope.metadata.clone(),
            stored_at,
        })
    }

    /// The envelope to send.
    pub fn to_envelope(&self) -> Envelope {
        Envelope::from_parts(AnyMessage::raw(self.payload.clone()), self.metadata.clone())
    }
}

/// A stored process with the commands not yet sent, in order.
#[derive(Clone, Debug)]
pub struct LoadedProcess {
    /// The state.
    pub record: ProcessRecord,
    /// The undispatched commands, oldest first.
    pub pending: Vec<StoredCommand>,
}

/// Stores process state with its undispatched commands.
pub trait ProcessStore: Send + Sync {
    /// The process `(process_type, id)`, with its undispatched commands.
    fn load(
        &self,
        process_type: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<LoadedProcess>>> + Send;

    /// A process with this key: a non-completed one if any; otherwise, only if
    /// `include_completed`, the most recently saved completed one.
    fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> impl Future<Output = Result<Option<LoadedProcess>>> + Send;

    /// Writes `record` (whose `version` is the one expected) and appends `commands` to its
    /// outbox, in one atomic step. Returns the new version.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the stored version is not `record.version`; nothing is written.
    fn save(
        &self,
        record: ProcessRecord,
        commands: Vec<StoredCommand>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Removes a sent command. Removing one that is already gone is not an error.
    fn remove_command(
        &self,
        process_type: &str,
        id: Uuid,
        message_id: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes several sent commands of one process. The default removes them one at a time;
    /// a backend where each call is a round trip removes them in one.
    fn remove_commands(
        &self,
        process_type: &str,
        id: Uuid,
        message_ids: &[String],
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            for message_id in message_ids {
                self.remove_command(process_type, id, message_id).await?;
            }
            Ok(())
        }
    }

    /// Up to `limit` processes with a command stored before `stored_before`, for the relay.
    fn with_pending(
        &self,
        stored_before: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Uuid)>>> + Send;
}

impl<T: ProcessStore> ProcessStore for Arc<T> {
    fn load(
        &self,
        process_type: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<LoadedProcess>>> + Send {
        (**self).load(process_type, id)
    }
    fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> impl Future<Output = Result<Option<LoadedProcess>>> + Send {
        (**self).find_by_key(process_type, key, include_completed)
    }
    fn save(
        &self,
        record: ProcessRecord,
        commands: Vec<StoredCommand>,
    ) -> impl Future<Output = Result<i64>> + Send {
        (**self).save(record, commands)
    }
    fn remove_command(
        &self,
        process_type: &str,
        id: Uuid,
        message_id: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).remove_command(process_type, id, message_id)
    }
    fn remove_commands(
        &self,
        process_type: &str,
        id: Uuid,
        message_ids: &[String],
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).remove_commands(process_type, id, message_ids)
    }
    fn with_pending(
        &self,
        stored_before: DateTime<Utc>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, Uuid)>>> + Send {
        (**self).with_pending(stored_before, limit)
    }
}

/// Sends commands of a process's outbox in order, stopping at the first the bus refuses, then
/// removes the ones sent, together.
async fn dispatch_outbox<S: ProcessStore, B: CommandBus>(
    store: &S,
    bus: &B,
    process_type: &str,
    id: Uuid,
    commands: impl IntoIterator<Item = (String, Envelope)>,
) -> Result<usize> {
    let mut sent = Vec::new();
    let mut refused = Ok(());
    for (message_id, envelope) in commands {
        if let Err(error) = bus.send(envelope).await {
            refused = Err(error);
            break;
        }
        sent.push(message_id);
    }
    if !sent.is_empty() {
        store.remove_commands(process_type, id, &sent).await?;
    }
    refused.map(|()| sent.len())
}

fn pending_envelopes(pending: &[StoredCommand]) -> impl Iterator<Item = (String, Envelope)> + '_ {
    pending.iter().map(|c| (c.message_id.clone(), c.to_envelope()))
}

/// Loads and saves process managers of type `P`, sending their commands through `B`.
pub struct ProcessRepository<P, S, B> {
    store: S,
    bus: B,
    codec: Codec,
    clock: SharedClock,
    _state: PhantomData<fn() -> P>,
}

impl<P, S: fmt::Debug, B: fmt::Debug> fmt::Debug for ProcessRepository<P, S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessRepository")
            .field("store", &self.store)
            .field("bus", &self.bus)
            .field("codec", &self.codec)
            .finish()
    }
}

impl<P: ProcessState, S: ProcessStore, B: CommandBus> ProcessRepository<P, S, B> {
    /// A repository storing state as JSON.
    pub fn new(store: S, bus: B, clock: SharedClock) -> Self {
        Self {
            store,
            bus,
            codec: Codec::Json,
            clock,
            _state: PhantomData,
        }
    }

    /// The process store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The process `id`, after sending its leftover commands.
    ///
    /// # Errors
    /// A send failure (the leftovers stay stored); a state that does not decode.
    pub async fn load(&self, id: Uuid) -> Result<Option<Process<P>>> {
        match self.store.load(P::TYPE, id).await? {
            Some(loaded) => self.resume(loaded).await.map(Some),
            None => Ok(None),
        }
    }

    /// The process with `key` (non-completed first; completed ones only if
    /// `include_completed`), after sending its leftover commands.
    ///
    /// # Errors
    /// As [`load`](Self::load).
    pub async fn find_by_key(&self, key: &str, include_completed: bool) -> Result<Option<Process<P>>> {
        match self.store.find_by_key(P::TYPE, key, include_completed).await? {
            Some(loaded) => self.resume(loaded).await.map(Some),
            None => Ok(None),
        }
    }

    async fn resume(&self, loaded: LoadedProcess) -> Result<Process<P>> {
        let LoadedProcess { record, pending } = loaded;
        dispatch_outbox(
            &self.store,
            &self.bus,
            P::TYPE,
            record.id,
            pending_envelopes(&pending),
        )
        .await?;
        let state = record
            .codec
            .decode_versioned::<P>(&record.state, record.schema_version, P::SCHEMA_VERSION, P::upcast)
            .map_err(|e| CodecError::new(CodecOp::Decode, P::TYPE, record.codec, e))?;
        Ok(Process {
            id: record.id,
            version: record.version,
            state,
            outgoing: Vec::new(),
            cause: None,
        })
    }

    /// Saves the state with the outgoing commands atomically, then sends the commands.
    ///
    /// # Errors
    /// A permanent error, storing nothing, when two outgoing commands share a message id;
    /// [`Error::Conflict`] when another save came first (nothing stored, nothing sent); a send
    /// failure after the commit (the state is saved; the unsent commands stay in the outbox and
    /// go out on the next load or with the relay).
    pub async fn save(&self, process: &mut Process<P>) -> Result<()> {
        let mut ids = std::collections::HashSet::new();
        if let Some(twice) = process
            .outgoing
            .iter()
            .find(|e| !ids.insert(e.metadata.message_id.as_str()))
        {
            return Err(Error::permanent(format!(
                "process {}-{} queued two commands with the message id `{}`; each needs its own",
                P::TYPE,
                process.id,
                twice.metadata.message_id
            )));
        }
        let now = self.clock.now();
        let commands = process
            .outgoing
            .iter()
            .map(|e| StoredCommand::from_envelope(e, self.codec, now))
            .collect::<Result<Vec<_>, _>>()?;
        let state = self
            .codec
            .encode(&process.state)
            .map_err(|e| CodecError::new(CodecOp::Encode, P::TYPE, self.codec, e))?;
        let record = ProcessRecord {
            process_type: P::TYPE.to_owned(),
            id: process.id,
            version: process.version,
            completed: process.state.is_completed(),
            key: process.state.key(),
            codec: self.codec,
            schema_version: P::SCHEMA_VERSION,
            state: state.into(),
        };
        process.version = self.store.save(record, commands).await?;
        let outgoing = std::mem::take(&mut process.outgoing);
        let sends = outgoing.into_iter().map(|e| (e.metadata.message_id.clone(), e));
        dispatch_outbox(&self.store, &self.bus, P::TYPE, process.id, sends).await?;
        Ok(())
    }
}

/// Sends the leftovers of process outboxes without waiting for the next message.
///
/// Only commands stored more than `grace` ago are swept, so the relay rarely races the save
/// that is sending them right now (if it does, the command is sent twice: at least once).
pub struct Relay<S, B> {
    store: S,
    bus: B,
    clock: SharedClock,
    grace: Duration,
    interval: Duration,
    batch_size: usize,
}

impl<S, B> fmt::Debug for Relay<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("grace", &self.grace)
            .field("interval", &self.interval)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl<S: ProcessStore, B: CommandBus> Relay<S, B> {
    /// A relay sweeping every second, for commands older than one second.
    pub fn new(store: S, bus: B, clock: SharedClock) -> Self {
        Self {
            store,
            bus,
            clock,
            grace: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            batch_size: 256,
        }
    }

    /// Sets the grace period and the sweep interval.
    #[must_use]
    pub fn timing(mut self, grace: Duration, interval: Duration) -> Self {
        self.grace = grace;
        self.interval = interval;
        self
    }

    /// One sweep; returns how many commands were sent.
    ///
    /// # Errors
    /// The first failure to send; the remaining commands stay stored.
    pub async fn sweep(&self) -> Result<usize> {
        let before = self.clock.now() - chrono::TimeDelta::from_std(self.grace).unwrap_or_default();
        let mut sent = 0;
        for (process_type, id) in self.store.with_pending(before, self.batch_size).await? {
            if let Some(loaded) = self.store.load(&process_type, id).await? {
                sent += dispatch_outbox(
                    &self.store,
                    &self.bus,
                    &process_type,
                    id,
                    pending_envelopes(&loaded.pending),
                )
                .await?;
            }
        }
        Ok(sent)
    }

    /// Sweeps every interval until `shutdown` resolves; failures are logged.
    ///
    /// # Errors
    /// None today.
    pub async fn run_until(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(sent) => tracing::info!(sent, "relay sent leftover process commands"),
                Err(error) => tracing::warn!(%error, "relay sweep failed"),
            }
            tokio::select! {
                () = tokio::time::sleep(self.interval) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}

/// The conflict error of a process save: `(type-id, expected, actual)`.
pub fn process_conflict(process_type: &str, id: Uuid, expected: i64, actual: i64) -> Error {
    Error::Conflict {
        stream: format!("{process_type}-{id}"),
        expected: crate::store::ExpectedVersion::Exact(expected),
        actual,
    }
}
