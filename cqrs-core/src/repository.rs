//! The repository: find / get / save aggregates over an event store, with an optional memento
//! policy (an in-memory memento cache and persistent snapshots).

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use futures::future::BoxFuture;
use uuid::Uuid;

use crate::aggregate::{Aggregate, EventSet, Originator, Root};
use crate::clock::{SharedClock, SystemClock, saturating_add};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::snapshot::{NoSnapshots, Snapshot, SnapshotStore};
use crate::store::{EventMetadata, EventStore, ExpectedVersion, NewEvent, StreamId};

/// Settings of a [`MementoCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MementoCacheConfig {
    /// A memento cached less than this long ago is trusted without reading the store. Only
    /// sound when one writer owns the aggregate (the single-writer shortcut). Default: 1 s.
    pub fresh_for: Duration,
    /// Entries older than this are dropped. Default: 30 minutes.
    pub expire_after: Duration,
}

impl Default for MementoCacheConfig {
    fn default() -> Self {
        Self {
            fresh_for: Duration::from_secs(1),
            expire_after: Duration::from_secs(30 * 60),
        }
    }
}

struct CacheEntry {
    version: i64,
    memento: Arc<dyn Any + Send + Sync>,
    cached_at: DateTime<Utc>,
    stale: bool,
}

struct CacheInner {
    entries: DashMap<(&'static str, Uuid), CacheEntry>,
    config: MementoCacheConfig,
    clock: SharedClock,
}

/// An in-memory cache of aggregate mementos, keyed by aggregate type and id. Clones share one
/// cache, so several repositories of a process can use it together.
#[derive(Clone)]
pub struct MementoCache {
    inner: Arc<CacheInner>,
}

/// A memento read from a [`MementoCache`].
#[derive(Debug, Clone)]
pub struct CachedMemento<M> {
    /// The version it was captured at.
    pub version: i64,
    /// A copy of the memento.
    pub memento: M,
    /// Whether it is within the fresh window and not marked stale.
    pub fresh: bool,
}

impl MementoCache {
    /// A cache with the default settings.
    pub fn new(clock: SharedClock) -> Self {
        Self::with_config(MementoCacheConfig::default(), clock)
    }

    /// A cache with the given settings.
    pub fn with_config(config: MementoCacheConfig, clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                entries: DashMap::new(),
                config,
                clock,
            }),
        }
    }

    /// A copy of the cached memento of `(kind, id)`, unless absent, expired or of another type.
    pub fn get<M: Clone + Send + Sync + 'static>(
        &self,
        kind: &'static str,
        id: Uuid,
    ) -> Option<CachedMemento<M>> {
        let now = self.inner.clock.now();
        let (version, memento, fresh) = {
            let entry = self.inner.entries.get(&(kind, id))?;
            if saturating_add(entry.cached_at, self.inner.config.expire_after) <= now {
                let expired_at = entry.cached_at;
                drop(entry);
                // Unless a concurrent put replaced it meanwhile.
                self.inner
                    .entries
                    .remove_if(&(kind, id), |_, e| e.cached_at == expired_at);
                return None;
            }
            let fresh = !entry.stale && saturating_add(entry.cached_at, self.inner.config.fresh_for) > now;
            (entry.version, Arc::clone(&entry.memento), fresh)
        };
        let memento = memento.downcast_ref::<M>()?.clone();
        Some(CachedMemento {
            version,
            memento,
            fresh,
        })
    }

    /// Caches `memento`, captured at `version`, as of now.
    pub fn put<M: Send + Sync + 'static>(&self, kind: &'static str, id: Uuid, version: i64, memento: M) {
        let entry = CacheEntry {
            version,
            memento: Arc::new(memento),
            cached_at: self.inner.clock.now(),
            stale: false,
        };
        self.inner.entries.insert((kind, id), entry);
    }

    /// Marks an entry stale: it is still used, but the store is read for later events.
    pub fn mark_stale(&self, kind: &'static str, id: Uuid) {
        if let Some(mut entry) = self.inner.entries.get_mut(&(kind, id)) {
            entry.stale = true;
        }
    }

    /// Number of entries (expired ones included until they are next looked up).
    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }
}

impl fmt::Debug for MementoCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MementoCache")
            .field("entries", &self.inner.entries.len())
            .field("config", &self.inner.config)
            .finish()
    }
}

/// How a repository uses mementos: an optional shared [`MementoCache`], and optional
/// persistent snapshots every N events.
#[derive(Debug, Clone)]
pub struct MementoPolicy<P = NoSnapshots> {
    cache: Option<MementoCache>,
    snapshots: P,
    every: Option<u64>,
    codec: Codec,
    clock: SharedClock,
}

impl MementoPolicy {
    /// No cache and no snapshots yet; mementos are encoded with bincode.
    pub fn new() -> Self {
        Self {
            cache: None,
            snapshots: NoSnapshots,
            every: None,
            codec: Codec::Bincode,
            clock: SystemClock::shared(),
        }
    }
}

impl Default for MementoPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> MementoPolicy<P> {
    /// Uses (and fills) a memento cache.
    #[must_use]
    pub fn cache(mut self, cache: MementoCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Stores a snapshot in `store` each time a save crosses a multiple of `every` events.
    ///
    /// # Panics
    /// If `every` is 0.
    pub fn snapshots<Q: SnapshotStore>(self, store: Q, every: u64) -> MementoPolicy<Q> {
        assert!(every > 0, "snapshot interval must be positive");
        MementoPolicy {
            cache: self.cache,
            snapshots: store,
            every: Some(every),
            codec: self.codec,
            clock: self.clock,
        }
    }

    /// The codec for persistent snapshots (default: bincode).
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The clock that stamps snapshots.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

/// The memento behaviour of a repository, erased so `Repository<A, S>` needs no extra type
/// parameter and no `Originator` bound unless it is used.
trait MementoStrategy<A: Aggregate>: Send + Sync {
    /// The starting point of a load: a restored root and whether it is fresh.
    fn base<'a>(&'a self, id: Uuid, stream: &'a StreamId) -> BoxFuture<'a, Option<(Root<A>, bool)>>;
    /// A root was read from the store up to its current version.
    fn loaded(&self, root: &Root<A>);
    /// A root was saved; `before` is its committed version before the save.
    fn saved<'a>(&'a self, root: &'a Root<A>, stream: &'a StreamId, before: i64) -> BoxFuture<'a, ()>;
    /// A save of this aggregate failed.
    fn save_failed(&self, id: Uuid);
}

struct Mementos<A, P> {
    policy: MementoPolicy<P>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Originator, P: SnapshotStore> MementoStrategy<A> for Mementos<A, P> {
    fn base<'a>(&'a self, id: Uuid, stream: &'a StreamId) -> BoxFuture<'a, Option<(Root<A>, bool)>> {
        Box::pin(async move {
            if let Some(cached) = self
                .policy
                .cache
                .as_ref()
                .and_then(|c| c.get::<A::Memento>(A::TYPE, id))
            {
                return Some((Root::restore(id, cached.version, cached.memento), cached.fresh));
            }
            self.policy.every?;
            let snapshot = match self.policy.snapshots.load_snapshot(stream).await {
                Ok(found) => found?,
                Err(error) => {
                    tracing::warn!(%stream, %error, "snapshot store failed; replaying the stream");
                    return None;
                }
            };
            if snapshot.schema_version != A::MEMENTO_VERSION {
                tracing::debug!(%stream, found = snapshot.schema_version, "snapshot of another schema version ignored");
                return None;
            }
            match snapshot.codec.decode::<A::Memento>(&snapshot.bytes) {
                Ok(memento) => Some((Root::restore(id, snapshot.version, memento), false)),
                Err(error) => {
                    tracing::warn!(%stream, %error, "snapshot does not decode; replaying the stream");
                    None
                }
            }
        })
    }

    fn loaded(&self, root: &Root<A>) {
        if let Some(cache) = &self.policy.cache {
            cache.put(A::TYPE, root.id(), root.version(), root.memento());
        }
    }

    fn saved<'a>(&'a self, root: &'a Root<A>, stream: &'a StreamId, before: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.loaded(root);
            let Some(every) = self.policy.every else { return };
            let crossed =
                (root.version() + 1).div_euclid(every as i64) > (before + 1).div_euclid(every as i64);
            if !crossed {
                return;
            }
            let bytes = match self.policy.codec.encode(&root.memento()) {
                Ok(bytes) => bytes,
                Err(error) => {
                    tracing::warn!(%stream, %error, "memento does not encode; no snapshot taken");
                    return;
                }
            };
            let snapshot = Snapshot {
                stream_id: stream.clone(),
                version: root.version(),
                schema_version: A::MEMENTO_VERSION,
                codec: self.policy.codec,
                bytes: bytes.into(),
                taken_at: self.policy.clock.now(),
            };
            if let Err(error) = self.policy.snapshots.save_snapshot(snapshot).await {
                tracing::warn!(%stream, %error, "snapshot not stored");
            }
        })
    }

    fn save_failed(&self, id: Uuid) {
        if let Some(cache) = &self.policy.cache {
            cache.mark_stale(A::TYPE, id);
        }
    }
}

/// Loads and saves aggregates of type `A` in the event store `S`.
pub struct Repository<A: Aggregate, S> {
    store: S,
    codec: Codec,
    mementos: Option<Arc<dyn MementoStrategy<A>>>,
}

impl<A: Aggregate, S: Clone> Clone for Repository<A, S> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            codec: self.codec,
            mementos: self.mementos.clone(),
        }
    }
}

impl<A: Aggregate, S: fmt::Debug> fmt::Debug for Repository<A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("store", &self.store)
            .field("codec", &self.codec)
            .field("mementos", &self.mementos.is_some())
            .finish()
    }
}

impl<A: Aggregate, S: EventStore> Repository<A, S> {
    /// A repository that replays every load from the store; events are encoded as JSON.
    pub fn new(store: S) -> Self {
        Self {
            store,
            codec: Codec::Json,
            mementos: None,
        }
    }

    /// Encodes new events with `codec` instead of JSON.
    #[must_use]
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The stream of aggregate `id`.
    pub fn stream_id(id: Uuid) -> StreamId {
        StreamId::for_aggregate(A::TYPE, id)
    }

    /// The aggregate `id`, or `None` if its stream is empty.
    ///
    /// # Errors
    /// Store failures; [`Error::Corrupt`], [`Error::UnknownMessage`] or [`Error::Codec`] when
    /// the stream is not a valid history of `A`.
    pub async fn find(&self, id: Uuid) -> Result<Option<Root<A>>> {
        let stream = Self::stream_id(id);
        let base = match &self.mementos {
            Some(m) => m.base(id, &stream).await,
            None => None,
        };
        let mut root = match base {
            Some((root, true)) => return Ok(Some(root)),
            Some((root, false)) => root,
            None => Root::new(id),
        };
        let events = self.store.load(&stream, root.version() + 1).await?;
        if events.is_empty() && root.version() < 0 {
            return Ok(None);
        }
        for event in &events {
            root.apply_stored(event)?;
        }
        if let Some(m) = &self.mementos {
            m.loaded(&root);
        }
        Ok(Some(root))
    }

    /// The aggregate `id`.
    ///
    /// # Errors
    /// [`Error::NotFound`] (`"<type>: <id>"`) when its stream is empty; otherwise as
    /// [`find`](Self::find).
    pub async fn get(&self, id: Uuid) -> Result<Root<A>> {
        self.find(id).await?.ok_or_else(|| Error::NotFound {
            entity: A::TYPE.to_owned(),
            id: id.to_string(),
        })
    }

    /// Appends the pending events of `root` atomically, expecting the stream at the root's
    /// committed version. `cause` gives the events' correlation and causation: pass the
    /// handled command's [`Metadata`](crate::Metadata) (its id becomes the correlation id) or
    /// an explicit `Option<String>` correlation id.
    ///
    /// Publishing happens afterwards, through the store's outbox.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another writer saved first; the pending events stay pending.
    pub async fn save(&self, root: &mut Root<A>, cause: impl Into<EventMetadata>) -> Result<()> {
        let events = root.pending().len();
        self.save_caused(root, [(cause.into(), events)]).await
    }

    /// Appends the pending events of `root` atomically, as [`save`](Self::save) does, with
    /// causes given run by run: each `(cause, n)` is the metadata of the next `n` pending
    /// events. For several commands decided on one load of the aggregate, each event caused by
    /// its own command.
    ///
    /// # Errors
    /// As [`save`](Self::save); [`Error::Permanent`] when the runs do not cover the pending
    /// events exactly (nothing is appended).
    pub async fn save_caused(
        &self,
        root: &mut Root<A>,
        causes: impl IntoIterator<Item = (EventMetadata, usize)>,
    ) -> Result<()> {
        if root.pending().is_empty() {
            return Ok(());
        }
        let mut pending = root.pending().iter();
        let mut events = Vec::with_capacity(root.pending().len());
        let mut covered = 0;
        for (metadata, n) in causes {
            covered += n;
            for event in pending.by_ref().take(n) {
                events.push(NewEvent {
                    event_id: Uuid::now_v7(),
                    payload: event.encode(self.codec)?,
                    metadata: metadata.clone(),
                });
            }
        }
        if covered != root.pending().len() {
            return Err(Error::permanent(format!(
                "the causes cover {covered} of {} pending events of {} {}",
                root.pending().len(),
                A::TYPE,
                root.id()
            )));
        }
        let before = root.committed_version();
        let stream = Self::stream_id(root.id());
        let appended = self
            .store
            .append(&stream, A::TYPE, ExpectedVersion::Exact(before), events)
            .await;
        match appended {
            Ok(_) => {
                root.take_pending();
                if let Some(m) = &self.mementos {
                    m.saved(root, &stream, before).await;
                }
                Ok(())
            }
            Err(error) => {
                if let Some(m) = &self.mementos {
                    m.save_failed(root.id());
                }
                Err(error)
            }
        }
    }
}

impl<A: Originator, S: EventStore> Repository<A, S> {
    /// Uses mementos as `policy` says: a memento cache, persistent snapshots, or both.
    #[must_use]
    pub fn with_mementos<P: SnapshotStore + 'static>(mut self, policy: MementoPolicy<P>) -> Self {
        self.mementos = Some(Arc::new(Mementos::<A, P> {
            policy,
            _aggregate: PhantomData,
        }));
        self
    }
}
