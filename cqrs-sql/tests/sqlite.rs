//! The cqrs-core conformance suite, run unchanged against SQLite (temporary files).

#![cfg(feature = "sqlite")]

use cqrs_core::testing::conformance;
use cqrs_sql::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

async fn store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("the database opens");
    (dir, store)
}

async fn unbatched() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = SqliteOptions::new(dir.path().join("plain.db")).group_commit(false);
    (
        dir,
        SqliteStore::open_with(options).await.expect("the database opens"),
    )
}

#[tokio::test]
async fn event_store() {
    let (_dir, store) = store().await;
    conformance::event_store(&store).await;
}

#[tokio::test]
async fn group_commit_fails_only_the_conflicting_append() {
    let (_dir, store) = store().await;
    let (batches, appends) = store.group_commit_stats().unwrap();
    conformance::concurrent_appends(&store).await;
    let (batches_after, appends_after) = store.group_commit_stats().unwrap();
    assert_eq!(
        appends_after - appends,
        64 + 64,
        "64 creations, then 64 concurrent appends"
    );
    assert!(
        batches_after - batches < 64 + 64,
        "concurrent appends shared transactions"
    );

    let (_dir, plain) = unbatched().await;
    assert!(plain.group_commit_stats().is_none());
    conformance::concurrent_appends(&plain).await;
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
