//! Command dispatch: a direct handler call, the command dispatcher, the local-first bus, and a
//! round trip through the in-memory transport; event dispatch to 1 and 3 handlers.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cqrs_benches::{Reserve, Reserved, runtime};
use cqrs_core::{
    CommandBus, CommandDispatcher, CommandHandler, Envelope, EventDispatcher, EventHandler, LocalFirst,
    MessageQueue, Metadata, Processor, ProcessorConfig, Result, SystemClock, Unrouted,
};
use cqrs_memory::MemoryTransport;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[derive(Clone, Default)]
struct Count(Arc<AtomicU64>);

impl CommandHandler<Reserve> for Count {
    async fn handle(&self, command: &Reserve, _: &Metadata) -> Result<()> {
        self.0.fetch_add(command.quantity as u64, Ordering::Relaxed);
        Ok(())
    }
}

impl EventHandler<Reserved> for Count {
    async fn handle(&self, event: &Reserved, _: &Metadata) -> Result<()> {
        self.0.fetch_add(event.quantity as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn commands(c: &mut Criterion) {
    let rt = runtime();
    let handler = Count::default();
    let mut dispatcher = CommandDispatcher::new();
    dispatcher.register::<Reserve, _>(handler.clone()).unwrap();
    let dispatcher = Arc::new(dispatcher);
    let local_first = LocalFirst::new(Arc::clone(&dispatcher), Unrouted);
    let command = Reserve::new();
    let metadata = Metadata::with_id(command.id.to_string());
    let envelope = Envelope::command(command.clone());

    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct_handler_call", |b| {
        b.to_async(&rt).iter(|| async {
            CommandHandler::<Reserve>::handle(&handler, black_box(&command), &metadata)
                .await
                .unwrap();
        });
    });
    group.bench_function("dispatcher", |b| {
        b.to_async(&rt)
            .iter(|| async { dispatcher.dispatch(black_box(&envelope)).await.unwrap() });
    });
    // Envelopes are built before the clock starts: a caller builds one and hands it over.
    group.bench_function("local_first_bus", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let envelopes: Vec<Envelope> = (0..iters).map(|_| envelope.clone()).collect();
            let local_first = &local_first;
            async move {
                let start = Instant::now();
                for envelope in envelopes {
                    local_first.send(black_box(envelope)).await.unwrap();
                }
                start.elapsed()
            }
        });
    });
    group.bench_function("local_first_bus_with_clone", |b| {
        b.to_async(&rt)
            .iter(|| async { local_first.send(black_box(envelope.clone())).await.unwrap() });
    });
    group.bench_function("envelope_clone_drop", |b| {
        b.iter(|| drop(black_box(envelope.clone())));
    });
    group.bench_function("local_first_bus_new_envelope", |b| {
        b.to_async(&rt).iter(|| async {
            local_first
                .send(Envelope::command(black_box(command.clone())))
                .await
                .unwrap();
        });
    });

    let transport = MemoryTransport::new();
    let processor = Processor::with_config(
        transport.clone(),
        "bench",
        Arc::clone(&dispatcher),
        SystemClock::shared(),
        ProcessorConfig::default(),
    );
    group.bench_function("memory_transport_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            transport.enqueue("bench", vec![envelope.clone()]).await.unwrap();
            assert_eq!(processor.process_available().await.unwrap(), 1);
        });
    });
    group.finish();
}

fn events(c: &mut Criterion) {
    let rt = runtime();
    let envelope = Envelope::message(Reserved { quantity: 1 });
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    for handlers in [1, 3] {
        let mut dispatcher = EventDispatcher::new();
        for _ in 0..handlers {
            dispatcher.subscribe::<Reserved, _>(Count::default()).unwrap();
        }
        group.bench_function(format!("dispatch_to_{handlers}_handlers"), |b| {
            b.to_async(&rt)
                .iter(|| async { dispatcher.dispatch(black_box(&envelope)).await.unwrap() });
        });
    }
    group.finish();
}

criterion_group!(benches, commands, events);
criterion_main!(benches);
