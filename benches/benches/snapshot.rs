//! Rehydrating a seat-availability-like aggregate with 10, 1,000 and 10,000 events from the
//! in-memory store: full replay, cached memento, persistent snapshot plus tail.

use std::hint::black_box;

use cqrs_benches::runtime;
use cqrs_core::testing::sample::Inventory;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Codec, ManualClock, MementoCache, MementoPolicy, Originator, Repository, Root, Snapshot, SnapshotStore,
    StreamId,
};
use cqrs_memory::{MemoryEventStore, MemorySnapshotStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// An inventory of `events` events: seat types added, then reservations, each cancelled 50
/// events later — like seat availability, where a reservation is soon committed, cancelled or
/// expired, so the state (and the memento) stays small however long the stream grows.
async fn seeded(events: usize) -> (MemoryEventStore, Uuid, Root<Inventory>) {
    let store = MemoryEventStore::new();
    let repo = Repository::<Inventory, _>::new(store.clone());
    let id = Uuid::now_v7();
    let mut root = Root::<Inventory>::new(id);
    for seat_type in 0..4 {
        root.execute(|i| i.add(seat_type, 1_000_000)).unwrap();
    }
    for n in 4..events as u64 {
        let old = n.wrapping_sub(51);
        if n % 2 == 1 && root.reservation(old).is_some() {
            let cancelled = root.cancel(old);
            root.record_all(cancelled);
        } else {
            root.execute(|i| i.reserve(n, (n % 4) as u32, 1)).unwrap();
        }
        if root.pending().len() == 500 {
            repo.save(&mut root, None).await.unwrap();
        }
    }
    repo.save(&mut root, None).await.unwrap();
    (store, id, root)
}

fn rehydrate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rehydrate");
    for events in [10usize, 1_000, 10_000] {
        let (store, id, full) = rt.block_on(seeded(events));
        group.throughput(Throughput::Elements(events as u64));

        let plain = Repository::<Inventory, _>::new(store.clone());
        group.bench_with_input(BenchmarkId::new("full_replay", events), &id, |b, id| {
            b.to_async(&rt)
                .iter(|| async { black_box(plain.get(*id).await.unwrap()) });
        });

        // The clock never moves, so the cached memento stays inside its fresh window.
        let clock = ManualClock::starting_now();
        let cached = Repository::<Inventory, _>::new(store.clone())
            .with_mementos(MementoPolicy::new().cache(MementoCache::new(clock.shared())));
        rt.block_on(cached.get(id)).unwrap();
        group.bench_with_input(BenchmarkId::new("cached_memento", events), &id, |b, id| {
            b.to_async(&rt)
                .iter(|| async { black_box(cached.get(*id).await.unwrap()) });
        });

        // A stored snapshot `tail` events before the end (at most 100).
        let tail = (events / 10).min(100);
        let snapshots = MemorySnapshotStore::new();
        let at = full.version() - tail as i64;
        let base = rt.block_on(async {
            let events = cqrs_core::EventReader::load(&store, &StreamId::for_aggregate("Inventory", id), 0)
                .await
                .unwrap();
            let mut base = Root::<Inventory>::new(id);
            for event in &events[..=at as usize] {
                base.apply_stored(event).unwrap();
            }
            base
        });
        rt.block_on(snapshots.save_snapshot(Snapshot {
            stream_id: StreamId::for_aggregate("Inventory", id),
            version: at,
            schema_version: Inventory::MEMENTO_VERSION,
            codec: Codec::Bincode,
            bytes: Codec::Bincode.encode(&base.memento()).unwrap().into(),
            taken_at: clock.shared().now(),
        }))
        .unwrap();
        let snapshotted = Repository::<Inventory, _>::new(store.clone())
            .with_mementos(MementoPolicy::new().snapshots(snapshots, 1_000_000));
        let loaded = rt.block_on(snapshotted.get(id)).unwrap();
        assert_eq!(loaded.state(), full.state());
        assert_eq!(loaded.version() + 1, events as i64);
        group.bench_with_input(
            BenchmarkId::new(format!("snapshot_plus_{tail}_tail"), events),
            &id,
            |b, id| {
                b.to_async(&rt)
                    .iter(|| async { black_box(snapshotted.get(*id).await.unwrap()) });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, rehydrate);
criterion_main!(benches);
