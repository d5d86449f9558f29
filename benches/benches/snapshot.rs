//! Rehydrating an aggregate from the in-memory store: full replay, cached memento, persistent
//! snapshot plus tail. Two aggregates: the framework's sample inventory (10, 1,000 and 10,000
//! events) and the conference domain's real SeatsAvailability (1,000 and 10,000 events).

use std::hint::black_box;

use conference_domain::seats_availability::SeatsAvailability;
use conference_domain::values::SeatQuantity;
use cqrs_benches::runtime;
use cqrs_core::testing::sample::Inventory;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Codec, ManualClock, MementoCache, MementoPolicy, Originator, Repository, Root, Snapshot, SnapshotStore,
    StreamId,
};
use cqrs_memory::{MemoryEventStore, MemorySnapshotStore};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

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

/// A SeatsAvailability of `events` events: four seat types, then reservations, each committed
/// or cancelled 50 events later, as the registration process does.
async fn seeded_availability(events: usize) -> (MemoryEventStore, Uuid, Root<SeatsAvailability>) {
    let store = MemoryEventStore::new();
    let repo = Repository::<SeatsAvailability, _>::new(store.clone());
    let id = Uuid::now_v7();
    let types: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let reservations: Vec<Uuid> = (0..events).map(|_| Uuid::now_v7()).collect();
    let mut root = Root::<SeatsAvailability>::new(id);
    for &seat_type in &types {
        root.record_all(root.add_seats(seat_type, 1_000_000));
    }
    for n in 4..events {
        let old = reservations[n.wrapping_sub(51) % events];
        let settled = match n % 3 {
            _ if n < 55 || root.reservation(old).is_none() => None,
            0 => Some(root.cancel_reservation(old)),
            _ => Some(root.commit_reservation(old)),
        };
        match settled {
            Some(events) => root.record_all(events),
            None => {
                let wanted = [
                    SeatQuantity::new(types[n % 4], 2),
                    SeatQuantity::new(types[(n + 1) % 4], 1),
                ];
                root.execute(|a| a.make_reservation(reservations[n], &wanted))
                    .unwrap();
            }
        }
        if root.pending().len() == 500 {
            repo.save(&mut root, None).await.unwrap();
        }
    }
    repo.save(&mut root, None).await.unwrap();
    (store, id, root)
}

/// Benches loading aggregate `id` of `full.version() + 1` events: full replay, cached memento,
/// persistent snapshot plus a tail of at most 100 events.
fn bench_loads<A>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    store: &MemoryEventStore,
    id: Uuid,
    full: &Root<A>,
) where
    A: Originator + PartialEq,
{
    let events = (full.version() + 1) as usize;
    group.throughput(Throughput::Elements(events as u64));

    let plain = Repository::<A, _>::new(store.clone());
    group.bench_with_input(BenchmarkId::new("full_replay", events), &id, |b, id| {
        b.to_async(rt)
            .iter(|| async { black_box(plain.get(*id).await.unwrap()) });
    });

    // The clock never moves, so the cached memento stays inside its fresh window.
    let clock = ManualClock::starting_now();
    let cached = Repository::<A, _>::new(store.clone())
        .with_mementos(MementoPolicy::new().cache(MementoCache::new(clock.shared())));
    rt.block_on(cached.get(id)).unwrap();
    group.bench_with_input(BenchmarkId::new("cached_memento", events), &id, |b, id| {
        b.to_async(rt)
            .iter(|| async { black_box(cached.get(*id).await.unwrap()) });
    });

    // A stored snapshot `tail` events before the end (at most 100).
    let tail = (events / 10).min(100);
    let snapshots = MemorySnapshotStore::new();
    let at = full.version() - tail as i64;
    let stream = StreamId::for_aggregate(A::TYPE, id);
    let base = rt.block_on(async {
        let events = cqrs_core::EventReader::load(store, &stream, 0).await.unwrap();
        let mut base = Root::<A>::new(id);
        for event in &events[..=at as usize] {
            base.apply_stored(event).unwrap();
        }
        base
    });
    rt.block_on(snapshots.save_snapshot(Snapshot {
        stream_id: stream,
        version: at,
        schema_version: A::MEMENTO_VERSION,
        codec: Codec::Bincode,
        bytes: Codec::Bincode.encode(&base.memento()).unwrap().into(),
        taken_at: clock.shared().now(),
    }))
    .unwrap();
    let snapshotted = Repository::<A, _>::new(store.clone())
        .with_mementos(MementoPolicy::new().snapshots(snapshots, 1_000_000));
    let loaded = rt.block_on(snapshotted.get(id)).unwrap();
    assert!(
        loaded.state() == full.state(),
        "snapshot plus tail rebuilds the same state"
    );
    assert_eq!(loaded.version() + 1, events as i64);
    group.bench_with_input(
        BenchmarkId::new(format!("snapshot_plus_{tail}_tail"), events),
        &id,
        |b, id| {
            b.to_async(rt)
                .iter(|| async { black_box(snapshotted.get(*id).await.unwrap()) });
        },
    );
}

fn rehydrate(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rehydrate");
    for events in [10usize, 1_000, 10_000] {
        let (store, id, full) = rt.block_on(seeded(events));
        bench_loads(&mut group, &rt, &store, id, &full);
    }
    group.finish();
}

fn rehydrate_seats_availability(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("rehydrate_seats_availability");
    for events in [1_000usize, 10_000] {
        let (store, id, full) = rt.block_on(seeded_availability(events));
        bench_loads(&mut group, &rt, &store, id, &full);
    }
    group.finish();
}

criterion_group!(benches, rehydrate, rehydrate_seats_availability);
criterion_main!(benches);
