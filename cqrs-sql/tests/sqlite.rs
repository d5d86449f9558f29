//! The cqrs-core conformance suite, run unchanged against SQLite (temporary files).

#![cfg(feature = "sqlite")]

mod support;

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

/// On a multi-thread runtime the event log's direct SQLite calls run in `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_store_on_a_multi_thread_runtime() {
    let (_dir, store) = store().await;
    conformance::event_store(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

/// A store on a manual clock, for the transport's time-driven behaviour.
async fn clocked() -> (TempDir, cqrs_core::ManualClock, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = cqrs_core::ManualClock::starting_now();
    let options = SqliteOptions::new(dir.path().join("transport.db")).clock(clock.shared());
    let store = SqliteStore::open_with(options).await.unwrap();
    (dir, clock, store)
}

#[tokio::test]
async fn transport() {
    let (_dir, clock, store) = clocked().await;
    conformance::transport(&store, &clock).await;
}

#[tokio::test]
async fn session_hand_over() {
    let (_dir, clock, store) = clocked().await;
    conformance::session_hand_over(&store, &clock).await;
}

#[tokio::test]
async fn checkpoints() {
    let (_dir, store) = store().await;
    conformance::checkpoints(&store, &store).await;
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
/// five deliveries; a healthy one completes its message; a session's messages are handled in
/// order, each handed over with the completion of the one before.
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
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (counted, noted) = (Arc::clone(&calls), Arc::clone(&seen));
    let mut dispatcher = CommandDispatcher::new();
    dispatcher
        .register::<Remind, _>(handler_fn(move |r: Remind, _| {
            let (counted, noted) = (Arc::clone(&counted), Arc::clone(&noted));
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                noted.lock().unwrap().push(r.note.clone());
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

    seen.lock().unwrap().clear();
    let session: Vec<_> = (1..=5)
        .map(|n| Envelope::command(Remind::new(format!("s-{n}"))).with_session_id("s"))
        .collect();
    store.enqueue("q", session).await.unwrap();
    assert_eq!(
        processor.process_available().await.unwrap(),
        5,
        "each one counted"
    );
    assert_eq!(*seen.lock().unwrap(), ["s-1", "s-2", "s-3", "s-4", "s-5"]);
    assert!(store.receive("q", 10).await.unwrap().is_empty());
}

/// Bad stored data is a clear error, never a panic; a closed store fails transiently.
#[tokio::test]
async fn corrupt_rows_are_clear_errors_and_outages_are_transient() {
    use cqrs_core::testing::sample::Inventory;
    use cqrs_core::uuid::Uuid;
    use cqrs_core::{Repository, StreamId};

    let (dir, store) = store().await;
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("conformance.db").display()
    ))
    .await
    .unwrap();
    let repo = Repository::<Inventory, _>::new(store.clone());
    for (case, name, codec, payload) in support::CORRUPT_ROWS {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO cqrs_events (event_id, stream_id, stream_type, version, name, schema_version, codec, \
             payload, metadata, recorded_at) VALUES (?, ?, 'Inventory', 0, ?, 1, ?, ?, '{}', 0)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(StreamId::for_aggregate("Inventory", id).as_str())
        .bind(name)
        .bind(codec)
        .bind(payload)
        .execute(&raw)
        .await
        .unwrap();
        support::assert_unreadable(case, &repo.get(id).await.unwrap_err());
    }

    store.close().await;
    let error = repo.get(Uuid::now_v7()).await.unwrap_err();
    assert!(error.is_transient(), "a closed pool is an outage: {error}");
}

/// The inbox records on the handler's own transaction: rolled back with it, committed with it.
#[tokio::test]
async fn inbox_records_commit_with_the_handlers_transaction() {
    use cqrs_core::InboxStore;

    let (dir, store) = store().await;
    let raw = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("conformance.db").display()
    ))
    .await
    .unwrap();
    let mut tx = raw.begin().await.unwrap();
    SqliteStore::mark_processed_in(&mut tx, "projection", "m-1")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(
        !store.is_processed("projection", "m-1").await.unwrap(),
        "rolled back with the handler"
    );
    let mut tx = raw.begin().await.unwrap();
    SqliteStore::mark_processed_in(&mut tx, "projection", "m-1")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(store.is_processed("projection", "m-1").await.unwrap());
    store.mark_processed("projection", "m-1").await.unwrap();
    assert!(!store.is_processed("other", "m-1").await.unwrap(), "per handler");
}

/// Leases are lock files next to the database: two stores on one file (as two processes would
/// open it) see each other's.
#[tokio::test]
async fn leases() {
    let (dir, store) = store().await;
    let other = SqliteStore::open(dir.path().join("conformance.db"))
        .await
        .expect("the database opens twice");
    conformance::leases(&store, &other).await;
}
