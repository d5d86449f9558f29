//! The cqrs-core conformance suite, run against the in-memory backends.

use cqrs_core::testing::conformance;
use cqrs_memory::{MemoryEventStore, MemoryProcessStore, MemorySnapshotStore};

#[tokio::test]
async fn event_store() {
    conformance::event_store(&MemoryEventStore::new()).await;
}

#[tokio::test]
async fn concurrent_appends() {
    conformance::concurrent_appends(&MemoryEventStore::new()).await;
}

#[tokio::test]
async fn transport() {
    let clock = cqrs_core::ManualClock::starting_now();
    conformance::transport(&cqrs_memory::MemoryTransport::with_clock(clock.shared()), &clock).await;
}

#[tokio::test]
async fn checkpoints() {
    conformance::checkpoints(&MemoryEventStore::new(), &cqrs_memory::MemoryCheckpoints::new()).await;
}

#[tokio::test]
async fn snapshots() {
    conformance::snapshots(MemoryEventStore::new(), MemorySnapshotStore::new()).await;
}

#[tokio::test]
async fn process_store() {
    conformance::process_store(MemoryProcessStore::new()).await;
}

#[tokio::test]
async fn leases() {
    let leases = cqrs_memory::MemoryLeases::new();
    conformance::leases(&leases, &leases.clone()).await;
}
