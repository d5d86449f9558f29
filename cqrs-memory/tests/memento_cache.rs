//! The memento cache: the fresh-window shortcut, stale entries, failed saves, expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_core::testing::sample::Inventory;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AppendResult, EventAppender, EventReader, ExpectedVersion, ManualClock, MementoCache, MementoPolicy,
    NewEvent, Repository, Result, Root, StoredEvent, StreamId,
};
use cqrs_memory::MemoryEventStore;

/// Counts reads, and records the versions asked for and the events returned.
#[derive(Clone)]
struct CountingStore {
    inner: MemoryEventStore,
    loads: Arc<AtomicUsize>,
    last_from: Arc<AtomicUsize>,
    last_returned: Arc<AtomicUsize>,
}

impl CountingStore {
    fn new() -> Self {
        Self {
            inner: MemoryEventStore::new(),
            loads: Arc::default(),
            last_from: Arc::default(),
            last_returned: Arc::default(),
        }
    }
    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
    fn last_read(&self) -> (usize, usize) {
        (
            self.last_from.load(Ordering::SeqCst),
            self.last_returned.load(Ordering::SeqCst),
        )
    }
}

impl EventReader for CountingStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let events = self.inner.load(stream, from_version).await?;
        self.last_from.store(from_version as usize, Ordering::SeqCst);
        self.last_returned.store(events.len(), Ordering::SeqCst);
        Ok(events)
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.inner.read_all(after, limit).await
    }
}

impl EventAppender for CountingStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, stream_type, expected, events).await
    }
}

fn setup() -> (
    ManualClock,
    CountingStore,
    MementoCache,
    Repository<Inventory, CountingStore>,
) {
    let clock = ManualClock::starting_now();
    let store = CountingStore::new();
    let cache = MementoCache::new(clock.shared());
    let repo = Repository::new(store.clone()).with_mementos(MementoPolicy::new().cache(cache.clone()));
    (clock, store, cache, repo)
}

async fn saved_inventory(repo: &Repository<Inventory, CountingStore>, events: usize) -> Uuid {
    let id = Uuid::now_v7();
    let mut root = Root::<Inventory>::new(id);
    for _ in 0..events {
        root.execute(|i| i.add(1, 1)).unwrap();
    }
    repo.save(&mut root, None).await.unwrap();
    id
}

#[tokio::test]
async fn a_fresh_entry_is_trusted_without_reading_the_store() {
    let (_clock, store, cache, repo) = setup();
    let id = saved_inventory(&repo, 10).await;
    assert_eq!(cache.len(), 1, "a save caches the memento");
    let before = store.loads();
    let loaded = repo.get(id).await.unwrap();
    assert_eq!(store.loads(), before, "no store read inside the fresh window");
    assert_eq!((loaded.version(), loaded.available(1)), (9, 10));
}

#[tokio::test]
async fn an_older_entry_reads_only_the_events_after_the_memento() {
    let (clock, store, _cache, repo) = setup();
    let id = saved_inventory(&repo, 10).await;
    // Another writer appends 3 events behind the cache's back.
    let other = Repository::<Inventory, _>::new(store.clone());
    let mut root = other.get(id).await.unwrap();
    for _ in 0..3 {
        root.execute(|i| i.add(1, 1)).unwrap();
    }
    other.save(&mut root, None).await.unwrap();

    clock.advance(Duration::from_secs(2));
    let loads = store.loads();
    let loaded = repo.get(id).await.unwrap();
    assert_eq!(store.loads(), loads + 1);
    assert_eq!(
        store.last_read(),
        (10, 3),
        "only the 3 events after version 9 are read"
    );
    assert_eq!((loaded.version(), loaded.available(1)), (12, 13));
}

#[tokio::test]
async fn a_failed_save_marks_the_entry_stale() {
    let (_clock, store, _cache, repo) = setup();
    let id = saved_inventory(&repo, 5).await;
    let mut mine = repo.get(id).await.unwrap();

    let other = Repository::<Inventory, _>::new(store.clone());
    let mut theirs = other.get(id).await.unwrap();
    theirs.execute(|i| i.add(1, 100)).unwrap();
    other.save(&mut theirs, None).await.unwrap();

    mine.execute(|i| i.add(1, 1)).unwrap();
    assert!(repo.save(&mut mine, None).await.unwrap_err().is_conflict());

    // Still inside the fresh window, but the entry is stale: the store is read.
    let loads = store.loads();
    let reloaded = repo.get(id).await.unwrap();
    assert_eq!(store.loads(), loads + 1);
    assert_eq!(store.last_read(), (5, 1));
    assert_eq!((reloaded.version(), reloaded.available(1)), (5, 105));
}

#[tokio::test]
async fn entries_expire_and_the_stream_is_replayed() {
    let (clock, store, _cache, repo) = setup();
    let id = saved_inventory(&repo, 4).await;
    clock.advance(Duration::from_secs(31 * 60));
    repo.get(id).await.unwrap();
    assert_eq!(store.last_read(), (0, 4), "an expired entry is a full replay");
}

#[tokio::test]
async fn repositories_share_a_cache_and_find_reports_absence() {
    let (_clock, store, cache, repo) = setup();
    let id = saved_inventory(&repo, 2).await;
    let second =
        Repository::<Inventory, _>::new(store.clone()).with_mementos(MementoPolicy::new().cache(cache));
    let loads = store.loads();
    assert_eq!(second.get(id).await.unwrap().version(), 1);
    assert_eq!(
        store.loads(),
        loads,
        "the second repository used the shared cache"
    );
    assert!(repo.find(Uuid::now_v7()).await.unwrap().is_none());
    let missing = Uuid::now_v7();
    let error = repo.get(missing).await.unwrap_err();
    assert_eq!(error.to_string(), format!("Inventory: {missing}"));
}
