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
async fn transport() {
    let dir = tempfile::tempdir().unwrap();
    let clock = cqrs_core::ManualClock::starting_now();
    let options = SqliteOptions::new(dir.path().join("transport.db")).clock(clock.shared());
    let store = SqliteStore::open_with(options).await.unwrap();
    conformance::transport(&store, &clock).await;
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

/// A processor over the SQLite queue: a failing handler is retried, then dead-lettered after
/// five deliveries; a healthy one completes its message.
#[tokio::test]
async fn processor_over_the_sqlite_queue() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{
        Backoff, CommandDispatcher, DeadLetters, Envelope, Error, MessageQueue, Processor, ProcessorConfig,
        SystemClock, handler_fn,
    };

    let (_dir, store) = store().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let mut dispatcher = CommandDispatcher::new();
    dispatcher
        .register::<Remind, _>(handler_fn(move |r: Remind, _| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if r.note == "fail" {
                    Err(Error::transient("down"))
                } else {
                    Ok(())
                }
            }
        }))
        .unwrap();
    let config = ProcessorConfig {
        backoff: Backoff::none(),
        ..ProcessorConfig::default()
    };
    let processor = Processor::with_config(
        store.clone(),
        "q",
        Arc::new(dispatcher),
        SystemClock::shared(),
        config,
    );
    store
        .enqueue(
            "q",
            vec![
                Envelope::command(Remind::new("fail")),
                Envelope::command(Remind::new("ok")),
            ],
        )
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5 + 1);
    let dead = store.dead_letters(Some("q"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_count, 5);
    assert!(
        store.receive("q", 10).await.unwrap().is_empty(),
        "the healthy message was completed"
    );
}
