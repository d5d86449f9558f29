//! `SharedLog`: subscriptions following one log together read it once per growth, and none
//! misses or repeats an event.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cqrs_core::testing::sample::Inventory;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    CatchUp, CheckpointStore, Envelope, EventReader, MessageHandler, Repository, Result, Root, SharedLog,
    StoredEvent, StreamId,
};
use cqrs_memory::{MemoryCheckpoints, MemoryEventStore};

/// Counts the reads of the global log that reach the store, and the events they return.
#[derive(Clone)]
struct Counting {
    inner: MemoryEventStore,
    reads: Arc<AtomicUsize>,
    events: Arc<AtomicUsize>,
}

impl EventReader for Counting {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        self.inner.load(stream, from_version).await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let events = self.inner.read_all(after, limit).await?;
        self.events.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }
}

/// Records the positions it is handed.
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<u64>>>);

impl MessageHandler for Seen {
    async fn handle(&self, envelope: &Envelope) -> Result<()> {
        let position = envelope.metadata.source.as_ref().map_or(0, |s| s.position);
        self.0.lock().unwrap().push(position);
        Ok(())
    }
}

async fn add_seats(store: &MemoryEventStore, n: usize) {
    let repository = Repository::<Inventory, _>::new(store.clone());
    for _ in 0..n {
        let mut inventory = Root::<Inventory>::new(Uuid::now_v7());
        inventory.execute(|i| i.add(1, 10)).unwrap();
        repository.save(&mut inventory, None::<String>).await.unwrap();
    }
}

/// Adds `n` events, invalidates the shared log as a publication does, and catches every
/// subscription up in turn; returns how many reads reached the store.
async fn grow_and_catch_up<S: EventReader, C: CheckpointStore, H: MessageHandler>(
    store: &MemoryEventStore,
    n: usize,
    log: &SharedLog<S>,
    subscriptions: &[CatchUp<SharedLog<S>, C, H>],
    reads: &AtomicUsize,
) -> usize {
    add_seats(store, n).await;
    log.invalidate();
    let before = reads.load(Ordering::SeqCst);
    for subscription in subscriptions {
        subscription.catch_up().await.unwrap();
    }
    reads.load(Ordering::SeqCst) - before
}

#[tokio::test]
async fn subscriptions_woken_together_read_the_log_once_and_see_every_event_once() {
    let store = MemoryEventStore::new();
    let reads = Arc::new(AtomicUsize::new(0));
    let log = SharedLog::new(Counting {
        inner: store.clone(),
        reads: reads.clone(),
        events: Arc::default(),
    });
    let checkpoints = MemoryCheckpoints::new();
    let seen: Vec<Seen> = (0..6).map(|_| Seen::default()).collect();
    let subscriptions: Vec<_> = seen
        .iter()
        .enumerate()
        .map(|(i, s)| CatchUp::new(format!("p{i}"), log.clone(), checkpoints.clone(), s.clone()).page_size(4))
        .collect();

    for round in 1..=5u64 {
        assert_eq!(
            grow_and_catch_up(&store, 3, &log, &subscriptions, &reads).await,
            1,
            "round {round}: six subscriptions, one read (three new events fit one page)"
        );
        for (i, s) in seen.iter().enumerate() {
            let positions = s.0.lock().unwrap().clone();
            let expected: Vec<u64> = (1..=round * 3).collect();
            assert_eq!(positions, expected, "subscription {i}, round {round}");
            let checkpoint = checkpoints.load_checkpoint(&format!("p{i}")).await.unwrap();
            assert_eq!(checkpoint, Some(round * 3));
        }
    }

    // More than a page: a full page answers only readers it holds a full page for; the rest
    // of the way is read from the store, once.
    assert_eq!(
        grow_and_catch_up(&store, 10, &log, &subscriptions, &reads).await,
        3,
        "pages of 4, 4 and 2 events"
    );
    for s in &seen {
        let positions = s.0.lock().unwrap().clone();
        assert_eq!(positions, (1..=25).collect::<Vec<u64>>());
    }

    // Without an invalidation, a page fetched before the log grew may say the log ends there;
    // the next invalidation brings the rest.
    add_seats(&store, 2).await;
    subscriptions[0].catch_up().await.unwrap();
    log.invalidate();
    for subscription in &subscriptions {
        subscription.catch_up().await.unwrap();
    }
    for s in &seen {
        let positions = s.0.lock().unwrap().clone();
        assert_eq!(
            positions,
            (1..=27).collect::<Vec<u64>>(),
            "none missed, none repeated"
        );
    }
}

/// A subscription that was behind when the log grew takes what the pages fetched before hold,
/// and reads from the store only the events that no page holds.
#[tokio::test]
async fn a_subscription_behind_reads_only_what_no_page_holds() {
    let store = MemoryEventStore::new();
    let (reads, events) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let log = SharedLog::new(Counting {
        inner: store.clone(),
        reads: reads.clone(),
        events: events.clone(),
    });
    let checkpoints = MemoryCheckpoints::new();
    let (ahead, behind) = (Seen::default(), Seen::default());
    let subscription = |name: &str, seen: &Seen| {
        CatchUp::new(name, log.clone(), checkpoints.clone(), seen.clone()).page_size(100)
    };
    let (first, second) = (subscription("ahead", &ahead), subscription("behind", &behind));

    // The first follows three growths of five events; the second, woken late, catches up after.
    for round in 1..=3 {
        add_seats(&store, 5).await;
        log.invalidate();
        first.catch_up().await.unwrap();
        assert_eq!(events.load(Ordering::SeqCst), round * 5, "only the new events");
    }
    add_seats(&store, 5).await;
    log.invalidate();
    second.catch_up().await.unwrap();
    assert_eq!(
        events.load(Ordering::SeqCst),
        20,
        "the second read only the last five from the store"
    );
    assert_eq!(reads.load(Ordering::SeqCst), 4);
    first.catch_up().await.unwrap();
    assert_eq!(
        reads.load(Ordering::SeqCst),
        4,
        "the first was answered by the page"
    );
    for seen in [&ahead, &behind] {
        let positions = seen.0.lock().unwrap().clone();
        assert_eq!(
            positions,
            (1..=20).collect::<Vec<u64>>(),
            "none missed, none repeated"
        );
    }

    // A page that was the end of the log says so only until the log grows.
    add_seats(&store, 2).await;
    log.invalidate();
    first.catch_up().await.unwrap();
    second.catch_up().await.unwrap();
    for seen in [&ahead, &behind] {
        assert_eq!(seen.0.lock().unwrap().len(), 22);
    }
    assert_eq!(events.load(Ordering::SeqCst), 22);
}
