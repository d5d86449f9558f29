//! The SQL stores, with durable commits: appends of 1, 10, 100 and 1,000 events from one
//! writer; single-event appends from 16 concurrent writers with group commit on and off; loading
//! and folding a 10,000-event stream; a snapshot plus a 100-event tail. SQLite always;
//! PostgreSQL when `CQRS_TEST_POSTGRES_URL` is set (a fresh schema per run).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::testing::sample::{Inventory, InventoryEvent, SeatsAdded};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Codec, EventMetadata, EventSet, EventStore, ExpectedVersion, MementoPolicy, NewEvent, Repository, Root,
    SnapshotStore, StreamId,
};
use cqrs_sql::{PgOptions, PgStore, SqliteOptions, SqliteStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn events(n: usize) -> Vec<NewEvent> {
    let event: InventoryEvent = SeatsAdded {
        seat_type: 1,
        quantity: 1,
    }
    .into();
    let payload = event.encode(Codec::Json).unwrap();
    (0..n)
        .map(|_| NewEvent {
            event_id: Uuid::now_v7(),
            payload: payload.clone(),
            metadata: EventMetadata::correlated(Some(Uuid::now_v7().to_string())),
        })
        .collect()
}

/// One runtime for a backend's whole bench: the store's background tasks (PostgreSQL's group
/// committer, the pools) live on the runtime that opened it.
fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `work` as a task of `rt`, as an application's handlers run, and waits for it. A
/// future driven by `block_on` runs on the bench's own thread instead, and each wake-up of
/// that thread costs more: about 60 µs more per SQLite append measured here.
fn in_task<T: Send + 'static>(rt: &Runtime, work: impl Future<Output = T> + Send + 'static) -> T {
    rt.block_on(rt.spawn(work)).unwrap()
}

/// What the benches need of a store.
trait Store: EventStore + SnapshotStore + Clone + Send + Sync + 'static {}
impl<T: EventStore + SnapshotStore + Clone + Send + Sync + 'static> Store for T {}

fn single_writer<S: Store>(c: &mut Criterion, rt: &Runtime, backend: &str, store: &S) {
    let mut group = c.benchmark_group(format!("{backend}/append_1_writer"));
    group.sample_size(20).measurement_time(Duration::from_secs(4));
    for n in [1usize, 10, 100, 1_000] {
        group.throughput(Throughput::Elements(n as u64));
        let stream = StreamId::new(format!("bench-{n}-{}", Uuid::now_v7()));
        let mut version = -1i64;
        group.bench_function(BenchmarkId::from_parameter(format!("{n}_events")), |b| {
            b.iter_custom(|iters| {
                let batches: Vec<_> = (0..iters).map(|_| events(n)).collect();
                let (store, stream, first) = (store.clone(), stream.clone(), version);
                let (elapsed, last) = in_task(rt, async move {
                    let mut version = first;
                    let start = Instant::now();
                    for batch in batches {
                        let written = store
                            .append(&stream, "Bench", ExpectedVersion::Exact(version), batch)
                            .await
                            .unwrap();
                        version = written.last_version;
                    }
                    (start.elapsed(), version)
                });
                version = last;
                elapsed
            });
        });
    }
    group.finish();
}

fn sixteen_writers<S: Store>(c: &mut Criterion, rt: &Runtime, backend: &str, stores: &[(&str, S)]) {
    let mut group = c.benchmark_group(format!("{backend}/append_16_writers"));
    group.sample_size(10).measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Elements(1));
    for (label, store) in stores {
        group.bench_function(BenchmarkId::from_parameter(format!("1_event_{label}")), |b| {
            b.iter_custom(|iters| {
                let per_writer = iters.div_ceil(16);
                rt.block_on(async {
                    let start = Instant::now();
                    let writers: Vec<_> = (0..16)
                        .map(|_| {
                            let store = store.clone();
                            tokio::spawn(async move {
                                let stream = StreamId::new(format!("w-{}", Uuid::now_v7()));
                                for version in 0..per_writer as i64 {
                                    store
                                        .append(
                                            &stream,
                                            "Bench",
                                            ExpectedVersion::Exact(version - 1),
                                            events(1),
                                        )
                                        .await
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for writer in writers {
                        writer.await.unwrap();
                    }
                    // Per append, as if exactly `iters` were made.
                    start.elapsed().mul_f64(iters as f64 / (per_writer * 16) as f64)
                })
            });
        });
    }
    group.finish();
}

fn loading<S: Store>(c: &mut Criterion, rt: &Runtime, backend: &str, store: &S) {
    let id = Uuid::now_v7();
    let repo = Repository::<Inventory, S>::new(store.clone());
    rt.block_on(async {
        let mut root = Root::<Inventory>::new(id);
        for chunk in 0..10 {
            for _ in 0..1_000 {
                root.execute(|i| i.add(chunk, 1)).unwrap();
            }
            repo.save(&mut root, None).await.unwrap();
        }
    });
    let snapshotted = Repository::<Inventory, S>::new(store.clone())
        .with_mementos(MementoPolicy::new().snapshots(store.clone(), 9_900));
    rt.block_on(async {
        // A snapshot at version 9,899: loads then read a 100-event tail.
        let mut base = Root::<Inventory>::new(id);
        for event in store
            .load(&StreamId::for_aggregate("Inventory", id), 0)
            .await
            .unwrap()
            .iter()
            .take(9_900)
        {
            base.apply_stored(event).unwrap();
        }
        let snapshot = cqrs_core::Snapshot {
            stream_id: StreamId::for_aggregate("Inventory", id),
            version: base.version(),
            schema_version: <Inventory as cqrs_core::Originator>::MEMENTO_VERSION,
            codec: Codec::Bincode,
            bytes: Codec::Bincode.encode(&base.memento()).unwrap().into(),
            taken_at: cqrs_core::chrono::Utc::now(),
        };
        store.save_snapshot(snapshot).await.unwrap();
        assert_eq!(snapshotted.get(id).await.unwrap().version(), 9_999);
    });
    let mut group = c.benchmark_group(format!("{backend}/load"));
    group.sample_size(20);
    group.bench_function("10000_events_fold", |b| {
        b.to_async(rt).iter(|| async { repo.get(id).await.unwrap() });
    });
    group.bench_function("snapshot_plus_100_tail", |b| {
        b.to_async(rt)
            .iter(|| async { snapshotted.get(id).await.unwrap() });
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let dir = TempDir::new().unwrap();
    let rt = multi_thread();
    let open = |name: &str, group_commit: bool| {
        let options = SqliteOptions::new(dir.path().join(name)).group_commit(group_commit);
        rt.block_on(SqliteStore::open_with(options)).unwrap()
    };
    let store = open("bench.db", true);
    single_writer(c, &rt, "sqlite", &store);
    loading(c, &rt, "sqlite", &store);
    let plain = open("plain.db", false);
    sixteen_writers(
        c,
        &rt,
        "sqlite",
        &[("group_commit", store), ("no_group_commit", plain)],
    );
}

fn postgres(c: &mut Criterion) {
    let Ok(url) = std::env::var("CQRS_TEST_POSTGRES_URL") else {
        eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; skipping the PostgreSQL benches");
        return;
    };
    let rt = multi_thread();
    let connect = |group_commit: bool| {
        let schema = format!("cqrs_bench_{}", Uuid::now_v7().simple());
        let options = PgOptions::new(url.clone())
            .schema(schema)
            .group_commit(group_commit)
            .max_connections(24);
        Arc::new(rt.block_on(PgStore::connect_with(options)).unwrap())
    };
    let store = connect(true);
    single_writer(c, &rt, "postgres", &store);
    loading(c, &rt, "postgres", &store);
    let plain = connect(false);
    sixteen_writers(
        c,
        &rt,
        "postgres",
        &[("group_commit", store), ("no_group_commit", plain)],
    );
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
