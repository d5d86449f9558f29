//! The store conformance suite: generic async checks every backend runs unchanged.
//!
//! Each function takes fresh, empty stores and panics on the first violation. A backend's
//! test file calls each of them:
//!
//! ```text
//! #[tokio::test]
//! async fn event_store() {
//!     cqrs_core::testing::conformance::event_store(&MyStore::new()).await;
//! }
//! ```

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use uuid::Uuid;

use super::bus::RecordingBus;
use super::sample::{Booking, Inventory, InventoryEvent, Remind, SeatsAdded};
use crate::aggregate::{EventSet, Root};
use crate::clock::{Clock, ManualClock, SystemClock};
use crate::codec::Codec;
use crate::dispatch::MessageHandler;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::message::Message;
use crate::process::{Process, ProcessRepository, ProcessStore, Relay};
use crate::repository::{MementoPolicy, Repository};
use crate::snapshot::{Snapshot, SnapshotStore};
use crate::store::{
    EventMetadata, EventOutbox, EventStore, ExpectedVersion, NewEvent, StoredEvent, StreamId,
};
use crate::subscription::{CatchUp, CheckpointStore};
use crate::transport::{
    DeadLetters, Delivery, MessageFilter, MessageQueue, QueueDepths, Topics, subscription_queue,
};
use std::sync::{Arc, Mutex};

fn new_event(seat_type: u32) -> NewEvent {
    let event: InventoryEvent = SeatsAdded {
        seat_type,
        quantity: 1,
    }
    .into();
    NewEvent {
        event_id: Uuid::now_v7(),
        payload: event.encode(Codec::Json).expect("sample events encode"),
        metadata: EventMetadata {
            correlation_id: Some(format!("corr-{seat_type}")),
            causation_id: Some("cause".into()),
            ..EventMetadata::default()
        },
    }
}

fn batch(from: u32, n: u32) -> Vec<NewEvent> {
    (from..from + n).map(new_event).collect()
}

/// Append, load, conflicts, the global log and the outbox.
///
/// # Panics
/// On any violation.
pub async fn event_store<S: EventStore + EventOutbox>(store: &S) {
    let a = StreamId::new(format!("conf-a-{}", Uuid::now_v7()));
    let b = StreamId::new(format!("conf-b-{}", Uuid::now_v7()));

    assert!(
        store.load(&a, 0).await.unwrap().is_empty(),
        "an unknown stream is empty"
    );

    let written = store
        .append(&a, "Conf", ExpectedVersion::NO_STREAM, batch(0, 3))
        .await
        .unwrap();
    assert_eq!(written.last_version, 2);
    let loaded = store.load(&a, 0).await.unwrap();
    assert_eq!(loaded.iter().map(|e| e.version).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(loaded[0].stream_type, "Conf");
    assert_eq!(loaded[2].position, written.last_position);
    assert_eq!(loaded[1].metadata.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(loaded[1].metadata.causation_id.as_deref(), Some("cause"));
    assert_eq!(loaded[1].payload.name, "sample.SeatsAdded");
    assert_eq!(loaded[1].payload.codec, Codec::Json);
    assert_eq!(loaded[1].payload.schema_version, 1);
    let tail = store.load(&a, 1).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);

    // A conflict carries stream, expected and actual, and writes nothing.
    let conflict = store
        .append(&a, "Conf", ExpectedVersion::Exact(1), batch(10, 2))
        .await
        .unwrap_err();
    match &conflict {
        Error::Conflict {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, a.as_str());
            assert_eq!(*expected, ExpectedVersion::Exact(1));
            assert_eq!(*actual, 2);
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(conflict.is_conflict());
    let conflict = store
        .append(&b, "Conf", ExpectedVersion::Exact(0), batch(10, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, Error::Conflict { actual: -1, .. }),
        "{conflict}"
    );
    assert_eq!(store.load(&a, 0).await.unwrap().len(), 3);
    assert!(store.load(&b, 0).await.unwrap().is_empty());

    store
        .append(&b, "Conf", ExpectedVersion::NO_STREAM, batch(20, 2))
        .await
        .unwrap();
    store
        .append(&a, "Conf", ExpectedVersion::Any, batch(30, 1))
        .await
        .unwrap();
    store
        .append(&b, "Conf", ExpectedVersion::Exact(1), batch(40, 2))
        .await
        .unwrap();

    // Concurrent appends with the same expected version: exactly one wins.
    let racers = (0..8).map(|i| store.append(&a, "Conf", ExpectedVersion::Exact(3), batch(100 + i, 2)));
    let outcomes = join_all(racers).await;
    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        1,
        "one concurrent append wins"
    );
    assert!(
        outcomes
            .iter()
            .filter_map(|o| o.as_ref().err())
            .all(Error::is_conflict)
    );
    assert_eq!(store.load(&a, 0).await.unwrap().len(), 6);

    // The global log: increasing positions, paged reads, each stream in version order. A
    // gap-safe log may hold back events while older transactions run, so read until ours show.
    let mut all = Vec::new();
    for _ in 0..500 {
        all = read_whole_log(store).await;
        if all
            .iter()
            .filter(|e| e.stream_id == a || e.stream_id == b)
            .count()
            >= 10
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ours: Vec<_> = all
        .iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .collect();
    assert_eq!(ours.len(), 10, "every appended event is in the log once");
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions increase"
    );
    for stream in [&a, &b] {
        let versions: Vec<i64> = ours
            .iter()
            .filter(|e| &e.stream_id == stream)
            .map(|e| e.version)
            .collect();
        assert_eq!(
            versions,
            (0..versions.len() as i64).collect::<Vec<_>>(),
            "{stream} in order"
        );
    }

    // The outbox holds everything appended, in position order, until marked published.
    let outbox = async || -> Vec<StoredEvent> {
        store
            .unpublished(1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.stream_id == a || e.stream_id == b)
            .collect()
    };
    let versions = |events: Vec<StoredEvent>| -> Vec<(StreamId, i64)> {
        events.into_iter().map(|e| (e.stream_id, e.version)).collect()
    };
    let unpublished = store.unpublished(1000).await.unwrap();
    assert!(unpublished.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(outbox().await.len(), 10);
    store.mark_published(&a, 3).await.unwrap();
    let left = versions(outbox().await);
    assert_eq!(
        left.iter()
            .filter(|(s, _)| s == &a)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(left.iter().filter(|(s, _)| s == &b).count(), 4);
    store
        .mark_published_many(&[(a.clone(), 4), (b.clone(), 1)])
        .await
        .unwrap();
    let mut left: Vec<(String, i64)> = versions(outbox().await)
        .into_iter()
        .map(|(stream, version)| (stream.to_string(), version))
        .collect();
    left.sort();
    let mut expected = vec![(a.to_string(), 5), (b.to_string(), 2), (b.to_string(), 3)];
    expected.sort();
    assert_eq!(left, expected, "each stream up to its own version");
    // Marking past a stream's last version marks all of it; marking again changes nothing.
    store
        .mark_published_many(&[(a.clone(), 5), (b.clone(), 99), (a.clone(), 5)])
        .await
        .unwrap();
    assert!(outbox().await.is_empty(), "marked events leave the outbox");

    // The publisher's marks: the events it published, each stream's oldest ones.
    store
        .append(&a, "Conf", ExpectedVersion::Exact(5), batch(200, 3))
        .await
        .unwrap();
    store
        .append(&b, "Conf", ExpectedVersion::Exact(3), batch(300, 1))
        .await
        .unwrap();
    let unpublished = outbox().await;
    assert_eq!(unpublished.len(), 4);
    let published: Vec<&StoredEvent> = unpublished
        .iter()
        .filter(|e| e.stream_id == b || e.version == 6)
        .collect();
    store.mark_events_published(&published).await.unwrap();
    assert_eq!(
        versions(outbox().await),
        [(a.clone(), 7), (a.clone(), 8)],
        "exactly the events marked leave the outbox"
    );
    store
        .mark_events_published(&unpublished.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(outbox().await.is_empty());
}

/// 64 concurrent appends to distinct streams, one with a wrong expected version: 63 succeed,
/// that one alone fails with a conflict, and nothing else is rolled back (the shape group
/// commit must keep).
///
/// # Panics
/// On any violation.
pub async fn concurrent_appends<S: EventStore>(store: &S) {
    let streams: Vec<StreamId> = (0..64)
        .map(|i| StreamId::new(format!("conc-{i}-{}", Uuid::now_v7())))
        .collect();
    for stream in &streams {
        store
            .append(stream, "Conf", ExpectedVersion::NO_STREAM, batch(0, 1))
            .await
            .unwrap();
    }
    let appends = streams.iter().enumerate().map(|(i, stream)| {
        let expected = if i == 17 {
            ExpectedVersion::Exact(5)
        } else {
            ExpectedVersion::Exact(0)
        };
        store.append(stream, "Conf", expected, batch(i as u32, 2))
    });
    let outcomes = join_all(appends).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 17 {
            let error = outcome.as_ref().unwrap_err();
            assert!(matches!(error, Error::Conflict { actual: 0, .. }), "{error}");
        } else {
            assert_eq!(outcome.as_ref().unwrap().last_version, 2, "append {i}");
        }
    }
    for (i, (stream, outcome)) in streams.iter().zip(&outcomes).enumerate() {
        let loaded = store.load(stream, 0).await.unwrap();
        let versions: Vec<i64> = loaded.iter().map(|e| e.version).collect();
        let expected: &[i64] = if i == 17 { &[0] } else { &[0, 1, 2] };
        assert_eq!(versions, expected, "stream {i}");
        if let Ok(written) = outcome {
            // Positions are the store's own: each answer names its last event's.
            assert_eq!(written.last_position, loaded[2].position, "stream {i}");
        }
    }
}

/// The whole global log, read in pages of 3.
async fn read_whole_log<S: EventStore>(store: &S) -> Vec<crate::store::StoredEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 3).await.unwrap();
        if page.is_empty() {
            return all;
        }
        assert!(page.len() <= 3);
        after = page.last().unwrap().position;
        all.extend(page);
    }
}

/// Persistent snapshots: taken every N events, used on load, and ignored (with a full replay)
/// when they do not decode or have another schema version.
///
/// # Panics
/// On any violation.
pub async fn snapshots<S, P>(events: S, snapshots: P)
where
    S: EventStore + Clone + 'static,
    P: SnapshotStore + Clone + 'static,
{
    let plain = Repository::<Inventory, S>::new(events.clone());
    let snapshotting = Repository::<Inventory, S>::new(events.clone())
        .with_mementos(MementoPolicy::new().snapshots(snapshots.clone(), 10));
    let id = Uuid::now_v7();
    let stream = StreamId::for_aggregate("Inventory", id);
    let mut root = Root::<Inventory>::new(id);
    for i in 0..25u32 {
        root.execute(|inv| inv.add(i % 3, 2)).unwrap();
        if i % 4 == 3 {
            snapshotting.save(&mut root, None).await.unwrap();
        }
    }
    snapshotting.save(&mut root, None).await.unwrap();
    let snapshot = snapshots
        .load_snapshot(&stream)
        .await
        .unwrap()
        .expect("a snapshot was taken");
    assert_eq!(
        snapshot.version, 19,
        "taken by the save that reached 20 events; not again before 30"
    );
    assert_eq!(snapshot.codec, Codec::Bincode);

    let replayed = plain.get(id).await.unwrap();
    let restored = snapshotting.get(id).await.unwrap();
    assert_eq!(restored.version(), 24);
    assert_eq!(
        restored.state(),
        replayed.state(),
        "snapshot plus tail equals a full replay"
    );

    // A snapshot that lies (claims the state is empty) proves it is used...
    let empty = Inventory::default();
    let lying = Snapshot {
        bytes: Codec::Bincode
            .encode(&crate::aggregate::Originator::to_memento(&empty))
            .unwrap()
            .into(),
        version: 24,
        ..snapshot.clone()
    };
    snapshots.save_snapshot(lying).await.unwrap();
    assert_eq!(
        snapshotting.get(id).await.unwrap().available(0),
        0,
        "the snapshot was used"
    );

    // ...while one that does not decode, or has another schema version, is ignored.
    for bad in [
        Snapshot {
            bytes: Bytes::from_static(&[0xff, 0xff, 0xff]),
            ..snapshot.clone()
        },
        Snapshot {
            schema_version: 99,
            ..snapshot.clone()
        },
    ] {
        snapshots.save_snapshot(bad).await.unwrap();
        let loaded = snapshotting.get(id).await.unwrap();
        assert_eq!(loaded.state(), replayed.state());
        assert_eq!(loaded.version(), 24);
    }
}

fn booking(order: Uuid) -> Process<Booking> {
    Process::new(
        Uuid::now_v7(),
        Booking {
            order,
            step: 0,
            done: false,
        },
    )
}

fn reminders(process: &mut Process<Booking>, notes: &[&str]) -> Vec<String> {
    notes
        .iter()
        .map(|note| {
            let envelope = Envelope::command(Remind::new(*note)).with_delay(Duration::from_secs(60));
            let id = envelope.metadata.message_id.clone();
            process.send(envelope);
            id
        })
        .collect()
}

/// The process store's outbox protocol, lookups and optimistic concurrency.
///
/// # Panics
/// On any violation.
pub async fn process_store<S: ProcessStore + Clone + 'static>(store: S) {
    let clock = SystemClock::shared();
    let bus = RecordingBus::new();
    let repo = ProcessRepository::<Booking, S, RecordingBus>::new(store.clone(), bus.clone(), clock.clone());

    // A bus failing on the 2nd of 3 commands: save fails after the commit.
    let order = Uuid::now_v7();
    let mut process = booking(order);
    let ids = reminders(&mut process, &["one", "two", "three"]);
    bus.fail_attempt(2);
    let error = repo.save(&mut process).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(bus.sent_ids(), [ids[0].clone()]);

    // The next load sends the 2nd and 3rd, never the 1st again; a failure on the 3rd fails it.
    bus.fail_attempt(2);
    assert!(
        repo.load(process.id()).await.is_err(),
        "a send failure fails the load"
    );
    assert_eq!(bus.sent_ids(), [ids[0].clone(), ids[1].clone()]);

    // A clean bus then sends only the 3rd, with its envelope hints intact.
    let loaded = repo
        .load(process.id())
        .await
        .unwrap()
        .expect("the state was committed");
    assert_eq!(bus.sent_ids(), ids);
    let last = bus.sent().pop().unwrap();
    assert_eq!(last.metadata.delay, Some(Duration::from_secs(60)));
    assert_eq!(last.message.decode::<Remind>().unwrap().note, "three");
    assert_eq!(loaded.version(), 0);
    assert_eq!(loaded.state().order, order);
    let record = store
        .load("sample.Booking", process.id())
        .await
        .unwrap()
        .unwrap()
        .record;
    assert_eq!(
        (record.codec, record.schema_version, record.completed),
        (Codec::Json, 1, false)
    );
    assert_eq!(record.key, Some(order.to_string()));
    repo.load(process.id()).await.unwrap();
    assert_eq!(bus.sent_ids(), ids, "nothing is sent twice once delivered");

    // Two loaders racing to send the same leftovers both finish without an error.
    let mut racing = booking(Uuid::now_v7());
    let race_ids = reminders(&mut racing, &["a", "b", "c"]);
    bus.clear();
    bus.fail_attempt(1);
    assert!(repo.save(&mut racing).await.is_err());
    let (first, second) = futures::join!(repo.load(racing.id()), repo.load(racing.id()));
    first.unwrap().unwrap();
    second.unwrap().unwrap();
    let sent = bus.sent_ids();
    for id in &race_ids {
        assert!(sent.contains(id), "{id} was sent");
    }
    assert!(
        store
            .load("sample.Booking", racing.id())
            .await
            .unwrap()
            .unwrap()
            .pending
            .is_empty()
    );

    // A concurrent state save loses with a conflict and stores nothing.
    let mut one = repo.load(process.id()).await.unwrap().unwrap();
    let mut two = repo.load(process.id()).await.unwrap().unwrap();
    one.step = 1;
    repo.save(&mut one).await.unwrap();
    two.step = 2;
    reminders(&mut two, &["lost"]);
    bus.clear();
    let conflict = repo.save(&mut two).await.unwrap_err();
    assert!(conflict.is_conflict(), "{conflict}");
    assert!(bus.sent().is_empty(), "the loser sends nothing");
    let stored = store.load("sample.Booking", process.id()).await.unwrap().unwrap();
    assert!(stored.pending.is_empty());
    assert_eq!(repo.load(process.id()).await.unwrap().unwrap().step, 1);
    let mut duplicate = Process::new(
        process.id(),
        Booking {
            order,
            step: 9,
            done: false,
        },
    );
    assert!(
        repo.save(&mut duplicate).await.unwrap_err().is_conflict(),
        "a second new process with one id conflicts"
    );

    // Two commands with one message id are refused before anything is stored.
    let mut twice = booking(Uuid::now_v7());
    let same = Envelope::command(Remind::new("once"));
    twice.send(same.clone());
    twice.send(same);
    let error = repo.save(&mut twice).await.unwrap_err();
    assert!(
        error.to_string().contains("two commands with the message id"),
        "{error}"
    );
    assert!(store.load("sample.Booking", twice.id()).await.unwrap().is_none());

    // Lookups by key: non-completed first; completed only when asked.
    let key = Uuid::now_v7();
    let mut finished = booking(key);
    finished.done = true;
    repo.save(&mut finished).await.unwrap();
    assert!(repo.find_by_key(&key.to_string(), false).await.unwrap().is_none());
    let found = repo.find_by_key(&key.to_string(), true).await.unwrap().unwrap();
    assert_eq!(found.id(), finished.id());
    let mut running = booking(key);
    repo.save(&mut running).await.unwrap();
    for include_completed in [false, true] {
        let found = repo
            .find_by_key(&key.to_string(), include_completed)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id(), running.id(), "the running instance comes first");
    }
    // Of the completed ones, the most recently saved: a later save of an older one puts it first.
    let key = Uuid::now_v7();
    let mut older = booking(key);
    older.done = true;
    repo.save(&mut older).await.unwrap();
    let mut newer = booking(key);
    newer.done = true;
    repo.save(&mut newer).await.unwrap();
    let latest = || async {
        repo.find_by_key(&key.to_string(), true)
            .await
            .unwrap()
            .unwrap()
            .id()
    };
    assert_eq!(latest().await, newer.id());
    repo.save(&mut older).await.unwrap();
    assert_eq!(
        latest().await,
        older.id(),
        "saved again, the older one is the latest"
    );

    // The relay sends leftovers nobody loads, once they are older than its grace period.
    let manual = ManualClock::starting_now();
    let relay_bus = RecordingBus::new();
    let relay_repo =
        ProcessRepository::<Booking, S, RecordingBus>::new(store.clone(), relay_bus.clone(), manual.shared());
    let mut idle = booking(Uuid::now_v7());
    let idle_ids = reminders(&mut idle, &["x", "y"]);
    relay_bus.fail_attempt(1);
    assert!(relay_repo.save(&mut idle).await.is_err());
    let relay = Relay::new(store.clone(), relay_bus.clone(), manual.shared())
        .timing(Duration::from_secs(5), Duration::from_secs(1));
    relay_bus.clear();
    relay.sweep().await.unwrap();
    assert!(
        !relay_bus.sent_ids().iter().any(|id| idle_ids.contains(id)),
        "too young to sweep"
    );
    manual.advance(Duration::from_secs(6));
    relay.sweep().await.unwrap();
    let swept = relay_bus.sent_ids();
    assert_eq!(
        swept
            .iter()
            .filter(|id| idle_ids.contains(id))
            .collect::<Vec<_>>(),
        idle_ids.iter().collect::<Vec<_>>()
    );
    assert!(
        store
            .load("sample.Booking", idle.id())
            .await
            .unwrap()
            .unwrap()
            .pending
            .is_empty()
    );
}

/// A helper for backends' own tests: an inventory stream's events, decoded.
///
/// # Panics
/// If the stream does not decode.
pub async fn inventory_events<S: EventStore>(store: &S, id: Uuid) -> Vec<InventoryEvent> {
    store
        .load(&StreamId::for_aggregate("Inventory", id), 0)
        .await
        .unwrap()
        .iter()
        .map(|e| InventoryEvent::decode(&e.payload).unwrap())
        .collect()
}

/// The transport contract: visibility while in flight, abandon with a delay, fenced settling,
/// scheduled delivery, time to live, sessions (one at a time, in order, a retried message
/// holding its session), dead letters (list, requeue), and topics with name filters. `clock`
/// must be the clock the transport was built with.
///
/// # Panics
/// On any violation.
pub async fn transport<T>(transport: &T, clock: &ManualClock)
where
    T: MessageQueue + Topics + DeadLetters + QueueDepths,
{
    queue_depths(transport).await;
    let queue = format!("conf-{}", Uuid::now_v7().simple());
    let ids = |deliveries: &[Delivery]| -> Vec<String> {
        deliveries
            .iter()
            .map(|d| d.envelope.metadata.message_id.clone())
            .collect()
    };

    // Basics: metadata and payload survive; in flight is invisible; abandon comes back later.
    let a = Envelope::command(Remind::new("a"))
        .with_correlation_id("corr")
        .with_header("h", "v");
    let b = Envelope::command(Remind::new("b"));
    let (a_id, b_id) = (a.metadata.message_id.clone(), b.metadata.message_id.clone());
    transport.enqueue(&queue, vec![a, b]).await.unwrap();
    let got = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(ids(&got), [a_id.clone(), b_id.clone()], "FIFO");
    assert!(got.iter().all(|d| d.delivery_count == 1 && d.queue == queue));
    assert_eq!(got[0].envelope.metadata.correlation_id.as_deref(), Some("corr"));
    assert_eq!(
        got[0].envelope.metadata.headers.get("h").map(String::as_str),
        Some("v")
    );
    assert_eq!(got[0].envelope.message.decode::<Remind>().unwrap().note, "a");
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "in flight is invisible"
    );
    transport.complete(&got[0]).await.unwrap();
    transport.abandon(&got[1], Duration::from_secs(30)).await.unwrap();
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "abandoned with a delay"
    );
    clock.advance(Duration::from_secs(31));
    let again = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(ids(&again), std::slice::from_ref(&b_id));
    assert_eq!(again[0].delivery_count, 2);

    // Settling is fenced: the first delivery of b no longer settles anything.
    transport.complete(&got[1]).await.unwrap();
    transport.abandon(&again[0], Duration::ZERO).await.unwrap();
    let third = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(
        (ids(&third), third[0].delivery_count),
        (vec![b_id.clone()], 3),
        "a stale complete is a no-op"
    );
    transport.complete(&third[0]).await.unwrap();
    assert!(transport.receive(&queue, 10).await.unwrap().is_empty());

    // Scheduled delivery and time to live.
    let later = Envelope::command(Remind::new("later")).with_delay(Duration::from_secs(600));
    let short = Envelope::command(Remind::new("short")).with_time_to_live(Duration::from_secs(5));
    let sent_at = clock.now();
    transport.enqueue(&queue, vec![later, short]).await.unwrap();
    let now = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(now.len(), 1, "the delayed message waits");
    let expires_at = now[0].expires_at.expect("a time to live sets an expiry");
    let off = (expires_at - (sent_at + chrono::TimeDelta::seconds(5))).abs();
    assert!(
        off < chrono::TimeDelta::milliseconds(1),
        "expires 5 s after sending (stores may keep microseconds): {off}"
    );
    transport.complete(&now[0]).await.unwrap();
    clock.advance(Duration::from_secs(600));
    let due = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(due[0].envelope.message.decode::<Remind>().unwrap().note, "later");
    assert_eq!(due[0].expires_at, None);
    transport.complete(&due[0]).await.unwrap();

    // Sessions: one message per session at a time, in order; a retried one holds its session.
    let in_session = |s: &str, note: &str| Envelope::command(Remind::new(note)).with_session_id(s);
    transport
        .enqueue(
            &queue,
            vec![
                in_session("s1", "s1-1"),
                in_session("s1", "s1-2"),
                in_session("s2", "s2-1"),
                Envelope::command(Remind::new("free")),
            ],
        )
        .await
        .unwrap();
    let notes = |ds: &[Delivery]| -> Vec<String> {
        ds.iter()
            .map(|d| d.envelope.message.decode::<Remind>().unwrap().note.clone())
            .collect()
    };
    let first = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&first), ["s1-1", "s2-1", "free"]);
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "s1-2 waits for s1-1"
    );
    transport
        .abandon(&first[0], Duration::from_secs(60))
        .await
        .unwrap();
    for d in &first[1..] {
        transport.complete(d).await.unwrap();
    }
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "a retried message holds its session"
    );
    clock.advance(Duration::from_secs(61));
    let retried = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&retried), ["s1-1"]);
    transport.complete(&retried[0]).await.unwrap();
    let next = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&next), ["s1-2"]);
    transport.complete(&next[0]).await.unwrap();

    // Complete and go on with the session: the next messages come with the completion (up to
    // the number asked, in order, held by this consumer) or from the next receive; each once.
    transport
        .enqueue(
            &queue,
            (1..=5).map(|i| in_session("s3", &format!("s3-{i}"))).collect(),
        )
        .await
        .unwrap();
    let mut handled = Vec::new();
    let mut batch = transport.receive(&queue, 10).await.unwrap();
    while !batch.is_empty() {
        assert!(batch.iter().all(|d| d.delivery_count == 1));
        handled.extend(notes(&batch));
        assert!(
            transport.receive(&queue, 10).await.unwrap().is_empty(),
            "the session is held while its messages are"
        );
        batch = match transport.complete_and_next(&batch, 2).await.unwrap() {
            next if next.is_empty() => transport.receive(&queue, 10).await.unwrap(),
            next => {
                assert!(next.len() <= 2, "no more than asked for");
                next
            }
        };
    }
    assert_eq!(handled, ["s3-1", "s3-2", "s3-3", "s3-4", "s3-5"]);

    // Released messages come back at once, their delivery not counted, in order.
    transport
        .enqueue(
            &queue,
            vec![
                in_session("s4", "s4-1"),
                in_session("s4", "s4-2"),
                in_session("s4", "s4-3"),
            ],
        )
        .await
        .unwrap();
    let first = transport.receive(&queue, 10).await.unwrap();
    let handed = transport.complete_and_next(&first, 10).await.unwrap();
    if !handed.is_empty() {
        assert_eq!(notes(&handed), ["s4-2", "s4-3"]);
        transport.release(&handed).await.unwrap();
    }
    let again = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(
        (notes(&again), again[0].delivery_count),
        (vec!["s4-2".to_owned()], 1)
    );
    transport.release(&again).await.unwrap();
    transport.release(&again).await.unwrap();
    let third = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(
        (notes(&third), third[0].delivery_count),
        (vec!["s4-2".to_owned()], 1),
        "released once: a stale release is a no-op"
    );
    transport.complete_and_next(&third, 0).await.unwrap();
    let last = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&last), ["s4-3"], "asking for none completes and takes none");
    transport.complete(&last[0]).await.unwrap();

    // Dead letters: listed with the reason, requeued with a fresh delivery count.
    transport
        .enqueue(&queue, vec![Envelope::command(Remind::new("poison"))])
        .await
        .unwrap();
    let poison = transport.receive(&queue, 1).await.unwrap();
    transport
        .dead_letter(&poison[0], "cannot be handled")
        .await
        .unwrap();
    assert!(transport.receive(&queue, 10).await.unwrap().is_empty());
    let dead = transport.dead_letters(Some(&queue), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].reason.as_str(), dead[0].delivery_count),
        ("cannot be handled", 1)
    );
    assert_eq!(
        dead[0].envelope.message.decode::<Remind>().unwrap().note,
        "poison"
    );
    transport.requeue(dead[0].id).await.unwrap();
    assert!(transport.dead_letters(Some(&queue), 10).await.unwrap().is_empty());
    let back = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(
        (notes(&back), back[0].delivery_count),
        (vec!["poison".to_owned()], 1)
    );
    transport.complete(&back[0]).await.unwrap();
    assert!(matches!(
        transport.requeue(dead[0].id).await,
        Err(Error::NotFound { .. })
    ));

    // Topics: each subscription gets what its filter names.
    let topic = format!("topic-{}", Uuid::now_v7().simple());
    transport
        .subscribe(&topic, "all", MessageFilter::All)
        .await
        .unwrap();
    transport
        .subscribe(&topic, "reminders", MessageFilter::names(["nothing"]))
        .await
        .unwrap();
    transport
        .subscribe(&topic, "reminders", MessageFilter::names([Remind::NAME]))
        .await
        .unwrap();
    transport
        .publish(
            &topic,
            vec![
                Envelope::command(Remind::new("r")),
                Envelope::message(SeatsAdded {
                    seat_type: 1,
                    quantity: 1,
                }),
            ],
        )
        .await
        .unwrap();
    let all = transport
        .receive(&subscription_queue(&topic, "all"), 10)
        .await
        .unwrap();
    let reminders = transport
        .receive(&subscription_queue(&topic, "reminders"), 10)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(reminders.len(), 1, "the updated filter applies");
    assert_eq!(reminders[0].envelope.name(), Remind::NAME);
}

/// The session hand-over of a backend that combines completing with receiving and whose locks
/// run out (as the SQLite and PostgreSQL transports do; [`transport`] accepts either way):
/// [`MessageQueue::complete_and_next`] hands this consumer the session's next messages, up to
/// the number asked and up to the first that is not due; a delivery whose lease ran out (and
/// was delivered again) completes nothing and takes nothing; one lost lock among several
/// completes the others and takes nothing. `clock` must be the clock the transport was built
/// with, and its lease at most an hour.
///
/// # Panics
/// On any violation.
pub async fn session_hand_over<T: MessageQueue>(transport: &T, clock: &ManualClock) {
    let queue = format!("hand-over-{}", Uuid::now_v7().simple());
    let in_session = |note: &str| Envelope::command(Remind::new(note)).with_session_id("s");
    let notes = |ds: &[Delivery]| -> Vec<String> {
        ds.iter()
            .map(|d| d.envelope.message.decode::<Remind>().unwrap().note.clone())
            .collect()
    };
    let mut six: Vec<Envelope> = ["1", "2", "3", "4"].into_iter().map(in_session).collect();
    six.push(in_session("5").with_delay(Duration::from_secs(60)));
    six.push(in_session("6"));
    transport.enqueue(&queue, six).await.unwrap();
    let first = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&first), ["1"]);
    let second = transport.complete_and_next(&first, 1).await.unwrap();
    assert_eq!(
        (notes(&second), second[0].delivery_count),
        (vec!["2".to_owned()], 1),
        "the next one, as many as asked"
    );
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "the session is held"
    );

    clock.advance(Duration::from_secs(3600));
    let again = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(
        (notes(&again), again[0].delivery_count),
        (vec!["2".to_owned()], 2),
        "the lease ran out"
    );
    assert!(
        transport.complete_and_next(&second, 10).await.unwrap().is_empty(),
        "a lost lock completes nothing and takes nothing"
    );
    let run = transport.complete_and_next(&again, 10).await.unwrap();
    assert_eq!(
        notes(&run),
        ["3", "4", "5", "6"],
        "the holder goes on; 5 is due by now"
    );
    assert!(run.iter().all(|d| d.delivery_count == 1));

    let mut held = run.clone();
    held[0].delivery_count += 1;
    assert!(
        transport.complete_and_next(&held, 10).await.unwrap().is_empty(),
        "one lost lock among them: the others are completed, nothing is taken"
    );
    assert!(
        transport.receive(&queue, 10).await.unwrap().is_empty(),
        "3 still holds the session"
    );
    clock.advance(Duration::from_secs(3600));
    let left = transport.receive(&queue, 10).await.unwrap();
    assert_eq!((notes(&left), left[0].delivery_count), (vec!["3".to_owned()], 2));
    assert!(
        transport.complete_and_next(&left, 10).await.unwrap().is_empty(),
        "the session is empty"
    );
    assert!(transport.receive(&queue, 10).await.unwrap().is_empty());

    // A run stops at the first message that is not due.
    transport
        .enqueue(
            &queue,
            vec![
                in_session("a"),
                in_session("b"),
                in_session("c").with_delay(Duration::from_secs(60)),
                in_session("d"),
            ],
        )
        .await
        .unwrap();
    let first = transport.receive(&queue, 10).await.unwrap();
    let run = transport.complete_and_next(&first, 10).await.unwrap();
    assert_eq!(notes(&run), ["b"], "c is not due, and d waits behind it");
    assert!(transport.complete_and_next(&run, 10).await.unwrap().is_empty());
    clock.advance(Duration::from_secs(61));
    let due = transport.receive(&queue, 10).await.unwrap();
    assert_eq!(notes(&due), ["c"]);
    let rest = transport.complete_and_next(&due, 10).await.unwrap();
    assert_eq!(notes(&rest), ["d"]);
    transport.complete(&rest[0]).await.unwrap();
    assert!(transport.receive(&queue, 10).await.unwrap().is_empty());
}

/// Queue depths count what a queue holds, in flight included, until it is settled; dead
/// letters are counted apart.
async fn queue_depths<T: MessageQueue + QueueDepths>(transport: &T) {
    let queue = format!("depth-{}", Uuid::now_v7().simple());
    let depth = || async {
        let depths = transport.queue_depths().await.unwrap();
        depths
            .into_iter()
            .find(|(q, _)| *q == queue)
            .map_or(0, |(_, n)| n)
    };
    assert_eq!(depth().await, 0);
    let dead_before = transport.dead_letter_count().await.unwrap();
    let messages = (0..3)
        .map(|n| Envelope::command(Remind::new(n.to_string())))
        .collect();
    transport.enqueue(&queue, messages).await.unwrap();
    assert_eq!(depth().await, 3);
    let got = transport.receive(&queue, 1).await.unwrap();
    assert_eq!(depth().await, 3, "a message being handled still counts");
    transport.complete(&got[0]).await.unwrap();
    assert_eq!(depth().await, 2);
    let got = transport.receive(&queue, 1).await.unwrap();
    transport.dead_letter(&got[0], "conformance").await.unwrap();
    assert_eq!(depth().await, 1, "a dead letter leaves its queue");
    assert_eq!(transport.dead_letter_count().await.unwrap(), dead_before + 1);
}

/// Checkpoints and catch-up subscriptions over a store: every event once, in log order, the
/// filter applied, a restart resuming after the checkpoint, and a failing handler stopping the
/// subscription at that event until it succeeds.
///
/// # Panics
/// On any violation.
pub async fn checkpoints<S, C>(store: &S, checkpoints: &C)
where
    S: EventStore + Clone,
    C: CheckpointStore + Clone,
{
    let name = format!("conf-{}", Uuid::now_v7().simple());
    assert_eq!(checkpoints.load_checkpoint(&name).await.unwrap(), None);
    checkpoints.save_checkpoint(&name, 7).await.unwrap();
    checkpoints.save_checkpoint(&name, 9).await.unwrap();
    assert_eq!(checkpoints.load_checkpoint(&name).await.unwrap(), Some(9));

    // Start after whatever the log already holds, then append 2 streams × 3 events.
    let mut start = 0;
    loop {
        let page = store.read_all(start, 1000).await.unwrap();
        match page.last() {
            Some(e) => start = e.position,
            None => break,
        }
    }
    let subscription = format!("conf-sub-{}", Uuid::now_v7().simple());
    checkpoints.save_checkpoint(&subscription, start).await.unwrap();
    let streams = [
        StreamId::new(format!("sub-a-{}", Uuid::now_v7())),
        StreamId::new(format!("sub-b-{}", Uuid::now_v7())),
    ];
    for stream in &streams {
        store
            .append(stream, "Conf", ExpectedVersion::NO_STREAM, batch(0, 3))
            .await
            .unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail_on = Arc::new(Mutex::new(None::<(StreamId, i64)>));
    let handler = {
        let (seen, fail_on) = (Arc::clone(&seen), Arc::clone(&fail_on));
        Recorder { seen, fail_on }
    };
    let catch_up = CatchUp::new(&subscription, store.clone(), checkpoints.clone(), handler).page_size(2);
    *fail_on.lock().unwrap() = Some((streams[1].clone(), 1));
    for _ in 0..500 {
        // A gap-safe log may hold back events while older transactions run.
        if catch_up.catch_up().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped_at: Vec<(StreamId, i64)> = seen.lock().unwrap().clone();
    assert!(
        stopped_at.iter().all(|(s, v)| !(s == &streams[1] && *v >= 1)),
        "stops at the failing event"
    );
    assert!(stopped_at.contains(&(streams[1].clone(), 0)));
    *fail_on.lock().unwrap() = None;
    for _ in 0..500 {
        catch_up.catch_up().await.unwrap();
        if seen.lock().unwrap().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen_now = seen.lock().unwrap().clone();
    assert_eq!(seen_now.len(), 6, "every event once: {seen_now:?}");
    for stream in &streams {
        let versions: Vec<i64> = seen_now
            .iter()
            .filter(|(s, _)| s == stream)
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(versions, [0, 1, 2], "{stream} in order");
    }

    // A restarted subscription resumes after its checkpoint: nothing is handled again.
    let again = CatchUp::new(
        &subscription,
        store.clone(),
        checkpoints.clone(),
        Recorder {
            seen: Arc::clone(&seen),
            fail_on,
        },
    );
    assert_eq!(again.catch_up().await.unwrap(), 0);

    // A filter skips what it does not name, and still advances.
    let filtered = format!("conf-filtered-{}", Uuid::now_v7().simple());
    checkpoints.save_checkpoint(&filtered, start).await.unwrap();
    let none = Arc::new(Mutex::new(Vec::new()));
    let skip_all = CatchUp::new(
        &filtered,
        store.clone(),
        checkpoints.clone(),
        Recorder {
            seen: Arc::clone(&none),
            fail_on: Arc::default(),
        },
    )
    .filter(MessageFilter::names(["nothing"]));
    skip_all.catch_up().await.unwrap();
    assert!(none.lock().unwrap().is_empty());
    assert!(checkpoints.load_checkpoint(&filtered).await.unwrap().unwrap() > start);
}

/// Records the (stream, version) of each event it handles; fails on one if told to.
struct Recorder {
    seen: Arc<Mutex<Vec<(StreamId, i64)>>>,
    fail_on: Arc<Mutex<Option<(StreamId, i64)>>>,
}

impl MessageHandler for Recorder {
    async fn handle(&self, envelope: &Envelope) -> crate::Result<()> {
        let source = envelope
            .metadata
            .source
            .clone()
            .expect("log events carry their source");
        let at = (source.stream_id, source.version);
        if self.fail_on.lock().unwrap().as_ref() == Some(&at) {
            return Err(Error::transient("told to fail here"));
        }
        self.seen.lock().unwrap().push(at);
        Ok(())
    }
}

/// Leases: a name is held by one holder at a time, released when the holder drops it, and
/// names are independent. `other` is a second handle on the same backend (a second process
/// would use its own), which must see the first handle's leases.
pub async fn leases<L: crate::Leases>(leases: &L, other: &L) {
    use futures::FutureExt;

    let name = format!("conformance-{}", Uuid::now_v7());
    let first = leases
        .try_acquire(&name)
        .await
        .expect("the backend answers")
        .expect("a free lease is granted");
    assert_eq!(first.name(), name);
    assert!(first.lost().now_or_never().is_none(), "a fresh lease is held");
    assert!(
        other
            .try_acquire(&name)
            .await
            .expect("the backend answers")
            .is_none(),
        "a held lease is refused to another holder"
    );
    assert!(
        leases
            .try_acquire(&name)
            .await
            .expect("the backend answers")
            .is_none(),
        "a held lease is refused to its own backend too"
    );
    let second_name = format!("{name}-other");
    let second = other
        .try_acquire(&second_name)
        .await
        .expect("the backend answers")
        .expect("another name is independent");
    drop(first);
    // Released promptly, perhaps in the background (a connection closing): asked again for up
    // to five seconds.
    let mut again = None;
    for _ in 0..100 {
        again = other.try_acquire(&name).await.expect("the backend answers");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = again.expect("a released lease is granted again");
    assert!(again.lost().now_or_never().is_none());
    drop((again, second));
}
