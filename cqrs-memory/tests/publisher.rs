//! The outbox publisher: once per event, per-stream order, bounded concurrency, restarts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cqrs_core::testing::RecordingBus;
use cqrs_core::testing::sample::Inventory;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AdaptiveLimit, Envelope, EventBus, EventOutbox, LimitConfig, Publisher, PublisherConfig, Repository,
    Result, Root, SystemClock,
};
use cqrs_memory::MemoryEventStore;

/// A bus that checks, on every call, that the calls in progress never exceed the limit.
#[derive(Clone)]
struct LimitProbe {
    limit: Arc<std::sync::OnceLock<AdaptiveLimit>>,
    in_flight: Arc<AtomicUsize>,
    max_seen: Arc<AtomicUsize>,
    over_limit: Arc<AtomicUsize>,
    recorder: RecordingBus,
}

impl EventBus for LimitProbe {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        if now > self.limit.get().expect("limit installed").limit() {
            self.over_limit.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let outcome = self.recorder.publish(events).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

async fn fill(store: &MemoryEventStore, streams: usize, events_per_save: usize, saves: usize) -> Vec<Uuid> {
    let repo = Repository::<Inventory, _>::new(store.clone());
    let mut ids = Vec::new();
    for _ in 0..streams {
        let id = Uuid::now_v7();
        let mut root = Root::<Inventory>::new(id);
        for _ in 0..saves {
            for _ in 0..events_per_save {
                root.execute(|i| i.add(1, 1)).unwrap();
            }
            repo.save(&mut root, None).await.unwrap();
        }
        ids.push(id);
    }
    ids
}

fn versions_by_stream(sent: &[Envelope]) -> HashMap<String, Vec<i64>> {
    let mut by_stream: HashMap<String, Vec<i64>> = HashMap::new();
    for envelope in sent {
        let source = envelope
            .metadata
            .source
            .as_ref()
            .expect("published events carry their source");
        assert_eq!(
            envelope.metadata.message_id,
            format!("{}:{}", source.stream_id, source.version)
        );
        assert_eq!(
            envelope.metadata.session_id.as_deref(),
            Some(source.stream_id.as_str())
        );
        by_stream
            .entry(source.stream_id.to_string())
            .or_default()
            .push(source.version);
    }
    by_stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_once_each_in_order_within_the_limit() {
    let store = MemoryEventStore::new();
    fill(&store, 200, 2, 3).await;
    let probe = LimitProbe {
        limit: Arc::default(),
        in_flight: Arc::default(),
        max_seen: Arc::default(),
        over_limit: Arc::default(),
        recorder: RecordingBus::new(),
    };
    let config = PublisherConfig {
        batch_size: 500,
        limit: LimitConfig {
            min: 2,
            max: 8,
            ..LimitConfig::default()
        },
        whole_passes: false,
        ..PublisherConfig::default()
    };
    let publisher = Publisher::with_config(store.clone(), probe.clone(), SystemClock::shared(), config);
    probe.limit.set(publisher.limit().clone()).unwrap();

    let mut total = 0;
    loop {
        let n = publisher.publish_pending().await.unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, 1200);
    let by_stream = versions_by_stream(&probe.recorder.sent());
    assert_eq!(by_stream.len(), 200);
    for versions in by_stream.values() {
        assert_eq!(
            versions,
            &(0..6).collect::<Vec<_>>(),
            "each event once, in stream order"
        );
    }
    assert_eq!(
        probe.over_limit.load(Ordering::SeqCst),
        0,
        "never above the limit"
    );
    assert!(
        probe.max_seen.load(Ordering::SeqCst) > 1,
        "streams were published in parallel"
    );
    assert!(probe.max_seen.load(Ordering::SeqCst) <= 8);
    assert!(store.unpublished(10).await.unwrap().is_empty());
}

/// With whole passes (the default), a pass is one call to the bus and one write of the marks;
/// a call the bus refuses is retried stream by stream, so only the refused stream stays.
#[tokio::test]
async fn a_pass_is_one_call_and_a_refused_one_goes_stream_by_stream() {
    let store = MemoryEventStore::new();
    let ids = fill(&store, 20, 2, 3).await;
    let bus = RecordingBus::new();
    let config = PublisherConfig {
        batch_size: 50,
        ..PublisherConfig::default()
    };
    let publisher = Publisher::with_config(store.clone(), bus.clone(), SystemClock::shared(), config);
    assert_eq!(publisher.publish_pending().await.unwrap(), 50);
    assert_eq!(bus.calls().len(), 1, "one call for the pass");
    assert_eq!(store.unpublished(200).await.unwrap().len(), 70, "the pass marked");

    let refused = ids[15].to_string();
    let doomed = refused.clone();
    bus.fail_if(move |e| e.metadata.message_id.contains(&doomed));
    assert!(
        publisher.publish_pending().await.is_err(),
        "the refused stream is reported"
    );
    let held: Vec<String> = store
        .unpublished(200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.position <= 100)
        .map(|e| e.stream_id.to_string())
        .collect();
    assert_eq!(held.len(), 6, "the pass's other streams went one by one");
    assert!(held.iter().all(|stream| stream.contains(&refused)));

    bus.heal();
    let calls = bus.calls().len();
    while publisher.publish_pending().await.unwrap() > 0 {}
    assert_eq!(bus.calls().len(), calls + 1, "healed: one call for the rest");
    assert!(store.unpublished(200).await.unwrap().is_empty());
    for (stream, versions) in versions_by_stream(&bus.sent()) {
        let mut distinct = versions.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct,
            (0..6).collect::<Vec<_>>(),
            "{stream}: every event, at least once"
        );
    }
}

#[tokio::test]
async fn a_restart_publishes_what_a_crash_left() {
    let store = MemoryEventStore::new();
    let ids = fill(&store, 10, 3, 1).await;
    let failing = RecordingBus::new();
    let doomed = ids[3].to_string();
    failing.fail_if(move |e| e.metadata.message_id.contains(&doomed));
    let first = Publisher::new(store.clone(), failing.clone(), SystemClock::shared());
    assert!(
        first.publish_pending().await.is_err(),
        "the failing stream is reported"
    );
    assert_eq!(versions_by_stream(&failing.sent()).len(), 9);
    drop(first);

    // "Restart": a new publisher over the same store, with a healthy bus.
    let healthy = RecordingBus::new();
    let second = Publisher::new(store.clone(), healthy.clone(), SystemClock::shared());
    assert_eq!(second.publish_pending().await.unwrap(), 3);
    let by_stream = versions_by_stream(&healthy.sent());
    assert_eq!(by_stream.len(), 1);
    assert_eq!(by_stream.values().next().unwrap(), &[0, 1, 2]);
    assert_eq!(second.publish_pending().await.unwrap(), 0);
}

#[tokio::test]
async fn run_until_publishes_new_appends_promptly() {
    let store = MemoryEventStore::new();
    let bus = RecordingBus::new();
    let publisher = Publisher::new(store.clone(), bus.clone(), SystemClock::shared());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        publisher
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    fill(&store, 3, 1, 2).await;
    for _ in 0..200 {
        if bus.sent().len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(bus.sent().len(), 6);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
