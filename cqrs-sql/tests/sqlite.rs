//! The cqrs-core conformance suite, run unchanged against SQLite (temporary files).

#![cfg(feature = "sqlite")]

use cqrs_core::testing::conformance;
use cqrs_sql::SqliteStore;
use tempfile::TempDir;

async fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("the database opens");
    (dir, store)
}

#[tokio::test]
async fn event_store() {
    let (_dir, store) = store().await;
    conformance::event_store(&store).await;
}

#[tokio::test]
async fn snapshots() {
    let (_dir, store) = store().await;
    conformance::snapshots(store.clone(), store).await;
}

#[tokio::test]
async fn process_store() {
    let (_dir, store) = store().await;
    conformance::process_store(store).await;
}
