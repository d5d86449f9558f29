//! The message queue round trip: enqueue one command, receive it, complete it; on the memory
//! transport, SQLite (durable commits) and PostgreSQL (when `CQRS_TEST_POSTGRES_URL` is set).

use std::time::Instant;

use cqrs_core::testing::sample::Remind;
use cqrs_core::{Envelope, MessageQueue};
use cqrs_memory::MemoryTransport;
use cqrs_sql::{PgOptions, PgStore, SqliteStore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;

fn round_trip<Q: MessageQueue>(c: &mut Criterion, rt: &Runtime, name: &str, queue: &Q) {
    let mut group = c.benchmark_group("queue");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function(format!("{name}/send_receive_complete"), |b| {
        b.iter_custom(|iters| {
            let envelopes: Vec<Envelope> = (0..iters)
                .map(|_| Envelope::command(Remind::new("bench")))
                .collect();
            rt.block_on(async {
                let start = Instant::now();
                for envelope in envelopes {
                    queue.enqueue("bench", vec![envelope]).await.unwrap();
                    let delivery = queue.receive("bench", 1).await.unwrap().pop().unwrap();
                    queue.complete(&delivery).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn queues(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    round_trip(c, &rt, "memory", &MemoryTransport::new());
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt
        .block_on(SqliteStore::open(dir.path().join("queue.db")))
        .unwrap();
    round_trip(c, &rt, "sqlite", &sqlite);
    match std::env::var("CQRS_TEST_POSTGRES_URL") {
        Ok(url) => {
            let schema = format!("cqrs_bench_{}", cqrs_core::uuid::Uuid::now_v7().simple());
            let pg = rt
                .block_on(PgStore::connect_with(PgOptions::new(url).schema(schema)))
                .unwrap();
            round_trip(c, &rt, "postgres", &pg);
        }
        Err(_) => eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; skipping the PostgreSQL queue bench"),
    }
}

criterion_group!(benches, queues);
criterion_main!(benches);
