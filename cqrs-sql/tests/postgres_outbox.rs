//! PostgreSQL's outbox is a position (migration 12): an append writes no outbox row, a
//! publisher's pass moves the position, and only the events the bus refused are held back, a
//! row each. The conformance suite (`postgres.rs`) checks the `EventOutbox` contract; these
//! tests check what the position must never do: pass an event that commits late, lose one held
//! back, or forget what an earlier schema left unpublished.

#![cfg(feature = "postgres")]

mod support;

use std::time::Duration;

use cqrs_core::{EventAppender, EventOutbox, ExpectedVersion, StoredEvent, StreamId};
use cqrs_sql::{PgOptions, PgStore};
use tokio::sync::RwLock;

/// A test that holds a transaction open holds back every gap-safe reader of the cluster: it runs
/// alone, the other tests together.
static CLUSTER: RwLock<()> = RwLock::const_new(());

/// Appends `count` events to `stream`, one append each, after `from` events already there.
async fn append(store: &PgStore, stream: &StreamId, from: i64, count: i64) {
    for version in from..from + count {
        store
            .append(
                stream,
                "Test",
                ExpectedVersion::Exact(version - 1),
                support::one_event(version as u32),
            )
            .await
            .unwrap();
    }
}

fn versions(events: &[StoredEvent]) -> Vec<(String, i64)> {
    events
        .iter()
        .map(|e| (e.stream_id.to_string(), e.version))
        .collect()
}

/// The outbox's answer once it holds `expected` events: a gap-safe outbox holds back events
/// while older transactions run, other tests' included.
async fn unpublished(store: &PgStore, limit: usize, expected: usize) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    for _ in 0..200 {
        events = store.unpublished(limit).await.unwrap();
        if events.len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    events
}

async fn count(store: &PgStore, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Marks a whole pass published; then the outbox answers nothing and holds no row.
async fn publish_all(store: &PgStore, pass: &[StoredEvent]) {
    store
        .mark_events_published(&pass.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        store.unpublished(100).await.unwrap().is_empty(),
        "nothing left to publish"
    );
    assert_eq!(
        count(store, "SELECT count(*) FROM cqrs_outbox").await,
        0,
        "every row gone"
    );
}

async fn position(store: &PgStore) -> i64 {
    count(store, "SELECT position FROM cqrs_outbox_position").await
}

/// Appends write no outbox row; a pass that publishes everything moves the position past it
/// all; a pass that publishes one stream and not another holds the other's events back, a row
/// each, and they come first in the next pass, with the stream's newer events after them.
#[tokio::test]
async fn a_pass_moves_the_position_and_holds_back_only_what_it_did_not_publish() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("outbox_position").await else {
        return;
    };
    let (a, b) = (StreamId::new("a"), StreamId::new("b"));
    append(&store, &a, 0, 3).await;
    append(&store, &b, 0, 2).await;
    assert_eq!(
        count(&store, "SELECT count(*) FROM cqrs_outbox").await,
        0,
        "no row an event"
    );

    let pass = unpublished(&store, 100, 5).await;
    assert_eq!(
        versions(&pass),
        [
            ("a".into(), 0),
            ("a".into(), 1),
            ("a".into(), 2),
            ("b".into(), 0),
            ("b".into(), 1)
        ]
    );
    // The bus took b's events and refused a's.
    let published: Vec<&StoredEvent> = pass.iter().filter(|e| e.stream_id == b).collect();
    store.mark_events_published(&published).await.unwrap();
    assert_eq!(
        position(&store).await,
        pass[4].position as i64,
        "past the last one published"
    );
    assert_eq!(
        count(&store, "SELECT count(*) FROM cqrs_outbox").await,
        3,
        "a's events held back, a row each"
    );

    append(&store, &a, 3, 1).await;
    let pass = unpublished(&store, 100, 4).await;
    assert_eq!(
        versions(&pass),
        [("a".into(), 0), ("a".into(), 1), ("a".into(), 2), ("a".into(), 3)],
        "the held-back events first, then the stream's newer one, in order"
    );
    let first_two: Vec<&StoredEvent> = pass.iter().take(2).collect();
    store.mark_events_published(&first_two).await.unwrap();
    assert_eq!(
        versions(&store.unpublished(100).await.unwrap()),
        [("a".into(), 2), ("a".into(), 3)],
        "a pass limited to a prefix leaves the rest"
    );
    let limited = store.unpublished(1).await.unwrap();
    assert_eq!(
        versions(&limited),
        [("a".into(), 2)],
        "the limit counts held-back events too"
    );

    let rest = store.unpublished(100).await.unwrap();
    publish_all(&store, &rest).await;
    assert_eq!(position(&store).await, rest[1].position as i64);
}

/// An event whose transaction took its position early and commits late: while it runs, the
/// outbox answers none of the events committed after it (the position would pass it, and it
/// would never be published), and says so, so that the publisher looks again without waiting
/// for a notification; once it commits, it comes first, and every event is published once.
#[tokio::test]
async fn the_position_never_passes_an_event_that_commits_late() {
    let _alone = CLUSTER.write().await;
    let Some(url) = support::postgres_url() else {
        return;
    };
    // Not listening: the only wake-ups are this store's own appends and the outbox's looks.
    let store = PgStore::connect_with(
        PgOptions::new(url)
            .schema(support::fresh_schema("outbox_late"))
            .listen(false),
    )
    .await
    .unwrap();

    let mut early = store.pool().begin().await.unwrap();
    support::insert_in_transaction(&mut early, "early", 0).await;
    let late = StreamId::new("late");
    append(&store, &late, 0, 3).await;

    assert!(
        store.unpublished(100).await.unwrap().is_empty(),
        "nothing is answered past a running earlier transaction"
    );
    // The appends' own wake-up, then the outbox's look again: without it, nothing would wake
    // the publisher when the early transaction ends, since it notifies nobody.
    let wake = Duration::from_secs(10);
    tokio::time::timeout(wake, store.appended()).await.unwrap();
    tokio::time::timeout(wake, store.appended())
        .await
        .expect("a pass that saw events waiting looks again without a notification");
    assert!(store.unpublished(100).await.unwrap().is_empty());

    early.commit().await.unwrap();
    let pass = unpublished(&store, 100, 4).await;
    assert_eq!(
        versions(&pass),
        [
            ("early".into(), 0),
            ("late".into(), 0),
            ("late".into(), 1),
            ("late".into(), 2)
        ],
        "the late commit first, by its position"
    );
    publish_all(&store, &pass).await;
}

/// A database of the schema before the position: its outbox rows are the unpublished events,
/// the events without a row were published. After the upgrade, exactly the former are answered;
/// and a row a writer of the earlier schema still writes, for an event above the position, is
/// answered once and removed when that event is published.
#[tokio::test]
async fn what_the_earlier_schema_left_unpublished_is_published_after_the_upgrade() {
    let _shared = CLUSTER.read().await;
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema("outbox_upgrade");
    let connect = || PgStore::connect_with(PgOptions::new(url.clone()).schema(schema.clone()));
    let store = connect().await.unwrap();
    let a = StreamId::new("a");
    append(&store, &a, 0, 4).await;
    // Back to the schema before migration 12, where a2 and a3 were not yet published.
    sqlx::raw_sql(
        "DROP TABLE cqrs_outbox_position, cqrs_outbox_ahead; DELETE FROM cqrs_migrations WHERE version = 12; \
         INSERT INTO cqrs_outbox (position, stream_id, version) \
         SELECT position, stream_id, version FROM cqrs_events WHERE version >= 2",
    )
    .execute(store.pool())
    .await
    .unwrap();
    store.close().await;

    let store = connect().await.unwrap();
    let pass = unpublished(&store, 100, 2).await;
    assert_eq!(versions(&pass), [("a".into(), 2), ("a".into(), 3)]);

    // A writer of the earlier schema appends b0 with its outbox row.
    let b = StreamId::new("b");
    append(&store, &b, 0, 1).await;
    sqlx::query(
        "INSERT INTO cqrs_outbox (position, stream_id, version) \
         SELECT position, stream_id, version FROM cqrs_events WHERE stream_id = 'b'",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let pass = unpublished(&store, 100, 3).await;
    assert_eq!(
        versions(&pass),
        [("a".into(), 2), ("a".into(), 3), ("b".into(), 0)],
        "b0 once"
    );
    publish_all(&store, &pass).await;
}

/// Two publishers at once (a lease lost and taken over, say) while eight writers append, and
/// the bus refusing one stream until the end: every event is published at least once, the
/// refused stream's once the bus takes it again, and the outbox ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_publish_every_event_and_leave_nothing_behind() {
    use std::collections::HashSet;

    use cqrs_core::testing::RecordingBus;
    use cqrs_core::{Publisher, PublisherConfig, SystemClock};

    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("outbox_racing").await else {
        return;
    };
    let bus = RecordingBus::new();
    bus.fail_if(|envelope| envelope.metadata.message_id.starts_with("writer-3:"));
    let config = PublisherConfig {
        batch_size: 16,
        ..PublisherConfig::default()
    };
    let publisher = || {
        Publisher::with_config(
            store.clone(),
            bus.clone(),
            std::sync::Arc::new(SystemClock),
            config.clone(),
        )
    };
    let (one, two) = (publisher(), publisher());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move { append(&store, &StreamId::new(format!("writer-{w}")), 0, 20).await })
        })
        .collect();
    let publishing = |publisher: Publisher<PgStore, RecordingBus>| {
        let writers_done = writers.iter().map(|w| w.abort_handle()).collect::<Vec<_>>();
        async move {
            while !writers_done.iter().all(|w| w.is_finished()) {
                // The refused stream fails its passes; the others go on.
                let _ = publisher.publish_pending().await;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            publisher
        }
    };
    let (one, two) = tokio::join!(publishing(one), publishing(two));
    for writer in writers {
        writer.await.unwrap();
    }

    bus.heal();
    let expected: HashSet<String> = (0..8)
        .flat_map(|w| (0..20).map(move |v| format!("writer-{w}:{v}")))
        .collect();
    // Until every event is sent: a gap-safe outbox may answer nothing for a while when another
    // transaction of the cluster runs long, so an empty answer does not mean it is drained.
    let mut missing = Vec::new();
    for _ in 0..1000 {
        one.publish_pending().await.unwrap();
        two.publish_pending().await.unwrap();
        let sent: HashSet<String> = bus.sent_ids().into_iter().collect();
        missing = expected.difference(&sent).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(missing.is_empty(), "every event published: missing {missing:?}");
    assert!(store.unpublished(100).await.unwrap().is_empty());
    assert_eq!(count(&store, "SELECT count(*) FROM cqrs_outbox").await, 0);
}
