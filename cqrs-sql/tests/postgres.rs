//! The cqrs-core conformance suite, run unchanged against PostgreSQL (a fresh schema per test),
//! and PostgreSQL's own guarantees: gap-safe reads of the global log.

#![cfg(feature = "postgres")]

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cqrs_core::testing::conformance;
use cqrs_core::uuid::Uuid;
use cqrs_core::{Codec, EventAppender, EventReader, ExpectedVersion, StreamId};
use cqrs_sql::PgStore;
use tokio::sync::RwLock;

/// The gap test holds a transaction open, which (by design) holds back every reader of the
/// cluster: it runs alone, the other tests together.
static CLUSTER: RwLock<()> = RwLock::const_new(());

#[tokio::test]
async fn event_store() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("events").await else {
        return;
    };
    conformance::event_store(&store).await;
}

#[tokio::test]
async fn group_commit_fails_only_the_conflicting_append() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("group").await else {
        return;
    };
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
        "concurrent appends shared statements"
    );

    let url = support::postgres_url().unwrap();
    let plain = PgStore::connect_with(
        cqrs_sql::PgOptions::new(url)
            .schema(support::fresh_schema("plain"))
            .group_commit(false),
    )
    .await
    .unwrap();
    assert!(plain.group_commit_stats().is_none());
    conformance::concurrent_appends(&plain).await;
}

/// A store in a fresh schema on a manual clock, for the transport's time-driven behaviour;
/// `None` without a PostgreSQL URL.
async fn clocked(test: &str) -> Option<(cqrs_core::ManualClock, PgStore)> {
    let url = support::postgres_url()?;
    let clock = cqrs_core::ManualClock::starting_now();
    let options = cqrs_sql::PgOptions::new(url)
        .schema(support::fresh_schema(test))
        .clock(clock.shared());
    Some((clock, PgStore::connect_with(options).await.unwrap()))
}

#[tokio::test]
async fn transport() {
    let _shared = CLUSTER.read().await;
    if let Some((clock, store)) = clocked("transport").await {
        conformance::transport(&store, &clock).await;
    }
}

#[tokio::test]
async fn session_hand_over() {
    let _shared = CLUSTER.read().await;
    if let Some((clock, store)) = clocked("hand_over").await {
        conformance::session_hand_over(&store, &clock).await;
    }
}

#[tokio::test]
async fn checkpoints() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("checkpoints").await else {
        return;
    };
    conformance::checkpoints(&store, &store).await;
}

#[tokio::test]
async fn snapshots() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("snapshots").await else {
        return;
    };
    conformance::snapshots(store.clone(), store).await;
}

#[tokio::test]
async fn process_store() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("processes").await else {
        return;
    };
    conformance::process_store(store).await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_bad_schema_names_are_refused() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("migrate").await else {
        return;
    };
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    let url = support::postgres_url().unwrap();
    let error = PgStore::connect_with(cqrs_sql::PgOptions::new(url).schema("x; DROP TABLE y"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("invalid schema name"), "{error}");
}

/// Reads the whole log from `after` on, as a subscription does.
async fn read_from(store: &PgStore, after: &mut u64, seen: &mut Vec<(StreamId, i64, u64)>) {
    loop {
        let page = store.read_all(*after, 100).await.unwrap();
        if page.is_empty() {
            return;
        }
        for e in &page {
            seen.push((e.stream_id.clone(), e.version, e.position));
        }
        *after = page.last().unwrap().position;
    }
}

/// An early transaction holds its append uncommitted while 8 concurrent writers append and a
/// subscription keeps reading; when it commits, the subscription delivers its event too: every
/// event exactly once, each stream in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_never_skips_an_event_that_commits_late() {
    let _alone = CLUSTER.write().await;
    let Some(store) = support::postgres("gaps").await else {
        return;
    };

    // The early transaction: assigned its position first, committed last.
    let mut early = store.pool().begin().await.unwrap();
    let early_stream = StreamId::new("early");
    support::insert_in_transaction(&mut early, early_stream.as_str(), 0).await;

    let writers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new(format!("writer-{w}"));
            for version in 0..25 {
                store
                    .append(
                        &stream,
                        "Test",
                        ExpectedVersion::Exact(version - 1),
                        support::one_event(w),
                    )
                    .await
                    .unwrap();
            }
        })
    });
    let mut after = 0;
    let mut seen = Vec::new();
    let reading = async {
        let mut writers: Vec<_> = writers.collect();
        while !writers.iter().all(|w| w.is_finished()) {
            read_from(&store, &mut after, &mut seen).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        for w in writers.drain(..) {
            w.await.unwrap();
        }
    };
    reading.await;
    read_from(&store, &mut after, &mut seen).await;
    assert!(
        seen.is_empty(),
        "nothing is delivered past a running earlier transaction: {}",
        seen.len()
    );

    early.commit().await.unwrap();
    read_from(&store, &mut after, &mut seen).await;

    assert_eq!(seen.len(), 8 * 25 + 1, "every event, the late one included");
    let unique: HashSet<_> = seen.iter().map(|(s, v, _)| (s.clone(), *v)).collect();
    assert_eq!(unique.len(), seen.len(), "no event twice");
    assert!(seen.iter().any(|(s, _, _)| s == &early_stream));
    let mut by_stream: HashMap<&StreamId, Vec<i64>> = HashMap::new();
    for (stream, version, _) in &seen {
        by_stream.entry(stream).or_default().push(*version);
    }
    for (stream, versions) in by_stream {
        assert_eq!(
            versions,
            (0..versions.len() as i64).collect::<Vec<_>>(),
            "{stream} in order"
        );
    }
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "positions increase");
}

/// Bad stored data is a clear error, never a panic; an unreachable or closed database fails
/// transiently, so retry policies retry it.
#[tokio::test]
async fn corrupt_rows_are_clear_errors_and_outages_are_transient() {
    use cqrs_core::Repository;
    use cqrs_core::testing::sample::Inventory;

    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("faults").await else {
        return;
    };
    let repo = Repository::<Inventory, _>::new(store.clone());
    for (case, name, codec, payload) in support::CORRUPT_ROWS {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO cqrs_events (position, event_id, stream_id, stream_type, version, name, schema_version, \
             codec, payload, metadata, recorded_at) \
             VALUES ((pg_current_xact_id()::text::bigint << 20) + 1, $1, $2, 'Inventory', 0, $3, 1, $4, $5, '{}', now())",
        )
        .bind(Uuid::now_v7())
        .bind(StreamId::for_aggregate("Inventory", id).as_str())
        .bind(name)
        .bind(codec)
        .bind(payload)
        .execute(store.pool())
        .await
        .unwrap();
        support::assert_unreadable(case, &repo.get(id).await.unwrap_err());
    }

    let down = cqrs_sql::PgOptions::new("postgres://postgres@127.0.0.1:1/test")
        .acquire_timeout(Duration::from_secs(1));
    let unreachable = PgStore::connect_with(down).await.unwrap_err();
    assert!(
        unreachable.is_transient(),
        "a database that is down is an outage: {unreachable}"
    );
    store.close().await;
    let error = repo.get(Uuid::now_v7()).await.unwrap_err();
    assert!(error.is_transient(), "a closed pool is an outage: {error}");
}

/// Leases are advisory locks: two stores on one schema (as two processes would connect) see
/// each other's; a store's leases share one connection, and when it dies every one of them is
/// lost to the next taker.
#[tokio::test]
async fn leases_are_exclusive_and_a_dead_holder_loses_its_lease() {
    use cqrs_core::Leases;

    let _shared = CLUSTER.read().await;
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema("leases");
    let open = || PgStore::connect_with(cqrs_sql::PgOptions::new(&url).schema(&schema));
    let (store, other) = (open().await.unwrap(), open().await.unwrap());
    conformance::leases(&store, &other).await;

    let lease = store.try_acquire("relay").await.unwrap().expect("a free lease");
    let publisher = store
        .try_acquire("publisher")
        .await
        .unwrap()
        .expect("a free lease");
    assert!(other.try_acquire("relay").await.unwrap().is_none());
    let holders: Vec<i32> = sqlx::query_scalar(
        "SELECT DISTINCT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' \
         AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY (ARRAY[hashtextextended($1, 0), hashtextextended($2, 0)])",
    )
    .bind(format!("cqrs-lease:{schema}:relay"))
    .bind(format!("cqrs-lease:{schema}:publisher"))
    .fetch_all(other.pool())
    .await
    .unwrap();
    assert_eq!(holders.len(), 1, "a store's leases share one connection");
    // The holder's connection dies, as when its process is killed.
    let terminated: Vec<bool> = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holders[0])
        .fetch_all(other.pool())
        .await
        .unwrap();
    assert_eq!(terminated, [true]);
    for lease in [&lease, &publisher] {
        tokio::time::timeout(Duration::from_secs(10), lease.lost())
            .await
            .expect("the holder learns that it lost each lease");
    }
    let taken = other.try_acquire("relay").await.unwrap();
    assert!(taken.is_some(), "another holder takes the lease over");
    let again = store.try_acquire("publisher").await.unwrap();
    assert!(
        again.is_some(),
        "the store that lost its connection takes a lease on a new one"
    );
    // The lost holdings are dropped only now: that releases nothing taken since.
    drop((lease, publisher));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        other.try_acquire("publisher").await.unwrap().is_none(),
        "the lease taken again is still held"
    );
}

/// `cqrs_sql::sqlx_error` on PostgreSQL's own failures: a server that ends the connection
/// (`57P01`, as when it shuts down) is worth a retry; a refused privilege (`42501`) and a unique
/// violation (`23505`) are not.
#[tokio::test]
async fn postgres_errors_are_classified_by_their_sqlstate() {
    use sqlx::Connection as _;

    let _shared = CLUSTER.read().await;
    let Some(url) = support::postgres_url() else {
        return;
    };
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let schema = support::fresh_schema("errors");
    let role = format!("{schema}_nobody");
    let setup = format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (id INTEGER PRIMARY KEY); \
         INSERT INTO {schema}.t VALUES (1); CREATE ROLE {role} NOLOGIN"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(setup))
        .execute(&mut admin)
        .await
        .unwrap();

    let duplicate = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("INSERT INTO {schema}.t VALUES (1)")))
        .execute(&mut admin)
        .await
        .unwrap_err();
    assert!(!cqrs_sql::sqlx_error(duplicate).is_transient());

    let mut nobody = sqlx::PgConnection::connect(&url).await.unwrap();
    let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE {role}; SELECT id FROM {schema}.t"
    )))
    .execute(&mut nobody)
    .await
    .unwrap_err();
    assert_eq!(
        refused.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501")
    );
    let refused = cqrs_sql::sqlx_error(refused);
    assert!(!refused.is_transient(), "{refused}");

    let mut doomed = sqlx::PgConnection::connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut doomed)
        .await
        .unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    let ended = sqlx::query("SELECT 1").execute(&mut doomed).await.unwrap_err();
    let ended = cqrs_sql::sqlx_error(ended);
    assert!(ended.is_transient(), "{ended}");

    let teardown = format!("DROP SCHEMA {schema} CASCADE; DROP ROLE {role}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(teardown))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn sent_commands_of_many_processes_are_removed_together() {
    use cqrs_core::ProcessStore;
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("removals").await else {
        return;
    };
    let ids: Vec<Uuid> = (0..64).map(|_| Uuid::now_v7()).collect();
    for id in &ids {
        let record = process(*id, -1, None, "{}");
        let commands = vec![ping_command(format!("{id}-a")), ping_command(format!("{id}-b"))];
        store.save(record, commands).await.unwrap();
    }
    let before = store.batch_stats().command_removals;
    // Each process removes one of its two commands, all at once.
    let sent: Vec<Vec<String>> = ids.iter().map(|id| vec![format!("{id}-a")]).collect();
    let removals = ids
        .iter()
        .zip(&sent)
        .map(|(id, sent)| store.remove_commands("P", *id, sent));
    for removed in futures::future::join_all(removals).await {
        removed.unwrap();
    }
    let after = store.batch_stats().command_removals;
    assert_eq!(after.1 - before.1, 64, "every removal answered");
    assert!(
        after.0 - before.0 < 64,
        "removals that arrive together share statements: {before:?} → {after:?}"
    );
    for id in &ids {
        let loaded = ProcessStore::load(&store, "P", *id).await.unwrap().unwrap();
        let left: Vec<&str> = loaded.pending.iter().map(|c| c.message_id.as_str()).collect();
        assert_eq!(left, [format!("{id}-b")], "only the sent command is gone");
    }
}

#[tokio::test]
async fn streams_loaded_together_each_get_their_own_events() {
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("loads").await else {
        return;
    };
    // Stream i holds i + 1 events; stream 0 is loaded from a version past its end, and one
    // stream that does not exist is asked for too.
    let streams: Vec<StreamId> = (0..48).map(|i| StreamId::new(format!("load-{i}"))).collect();
    for (i, stream) in streams.iter().enumerate() {
        let events = (0..=i as u32).flat_map(support::one_event).collect();
        store
            .append(stream, "Sample", ExpectedVersion::Exact(-1), events)
            .await
            .unwrap();
    }
    let from = |i: usize| if i == 0 { 5 } else { (i / 2) as i64 };
    let unknown = StreamId::new("load-none");
    let before = store.batch_stats().stream_loads;
    let loads = streams
        .iter()
        .enumerate()
        .map(|(i, stream)| store.load(stream, from(i)))
        .chain(std::iter::once(store.load(&unknown, 0)));
    let loaded = futures::future::join_all(loads).await;
    let after = store.batch_stats().stream_loads;
    for (i, (stream, events)) in streams.iter().zip(&loaded).enumerate() {
        let events = events.as_ref().unwrap();
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = if i == 0 {
            vec![]
        } else {
            (from(i)..=i as i64).collect()
        };
        assert_eq!(versions, expected, "stream {i}: its own events, in order");
        assert!(events.iter().all(|e| &e.stream_id == stream));
    }
    assert!(
        loaded[48].as_ref().unwrap().is_empty(),
        "an unknown stream is empty"
    );
    assert_eq!(after.1 - before.1, 49, "every load answered");
    assert!(
        after.0 - before.0 < 49,
        "loads that arrive together share statements: {before:?} → {after:?}"
    );
}

#[tokio::test]
async fn enqueues_and_process_finds_made_together_each_keep_their_own() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue, ProcessStore};
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("together").await else {
        return;
    };
    // 32 callers each enqueue three messages of their own session, all at once.
    let before = store.batch_stats();
    let enqueues = (0..32).map(|caller| {
        let envelopes: Vec<Envelope> = (0..3)
            .map(|n| {
                Envelope::command(Remind::new(format!("{caller}-{n}"))).with_session_id(format!("s{caller}"))
            })
            .collect();
        let queue = if caller % 2 == 0 { "even" } else { "odd" };
        store.enqueue(queue, envelopes)
    });
    for enqueued in futures::future::join_all(enqueues).await {
        enqueued.unwrap();
    }
    let after = store.batch_stats();
    assert_eq!(after.enqueues.1 - before.enqueues.1, 32, "every enqueue answered");
    assert!(
        after.enqueues.0 - before.enqueues.0 < 32,
        "enqueues share statements: {after:?}"
    );
    for queue in ["even", "odd"] {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        loop {
            let batch = store.receive(queue, 100).await.unwrap();
            if batch.is_empty() {
                break;
            }
            for delivery in &batch {
                let session = delivery.envelope.metadata.session_id.clone().unwrap();
                let note = delivery.envelope.message.decode::<Remind>().unwrap().note.clone();
                seen.entry(session).or_default().push(note);
                store.complete(delivery).await.unwrap();
            }
        }
        assert_eq!(
            seen.len(),
            16,
            "{queue}: each caller's messages went to its own queue"
        );
        for (session, ids) in seen {
            let caller = &session[1..];
            let expected: Vec<String> = (0..3).map(|n| format!("{caller}-{n}")).collect();
            assert_eq!(ids, expected, "{queue}/{session}: in the caller's order");
        }
    }
    // 32 processes found by key at once, and one key nobody has.
    for i in 0..32 {
        let record = process(
            Uuid::now_v7(),
            -1,
            Some(format!("key-{i}")),
            &format!("{{\"n\":{i}}}"),
        );
        store.save(record, Vec::new()).await.unwrap();
    }
    let keys: Vec<String> = (0..33).map(|i| format!("key-{i}")).collect();
    let found = futures::future::join_all(keys.iter().map(|key| store.find_by_key("P", key, false))).await;
    for (i, found) in found.into_iter().enumerate() {
        let found = found.unwrap();
        if i == 32 {
            assert!(found.is_none(), "an unknown key finds nothing");
            continue;
        }
        let found = found.expect("each key finds its process");
        assert_eq!(found.record.key.as_deref(), Some(keys[i].as_str()));
        assert_eq!(found.record.state.as_ref(), format!("{{\"n\":{i}}}").as_bytes());
    }
}

/// A store vacuums the tables it churns through on its own schedule, not autovacuum's.
#[tokio::test]
async fn a_store_vacuums_the_tables_it_churns_through() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres_with("vacuum", |options| {
        options.vacuum_every(Some(Duration::from_millis(100)))
    })
    .await
    else {
        return;
    };
    let schema = store.schema().to_owned();
    let vacuumed = || async {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT relname::text FROM pg_stat_user_tables WHERE schemaname = $1 AND vacuum_count > 0 ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(store.pool())
        .await
        .unwrap();
        tables
    };
    let expected = [
        "cqrs_messages",
        "cqrs_outbox",
        "cqrs_outbox_ahead",
        "cqrs_outbox_position",
        "cqrs_process_commands",
        "cqrs_processes",
    ];
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = vacuumed().await;
        if seen.len() == expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, expected);

    // None of them is ever truncated, by the store's vacuum or by autovacuum: emptied pages at
    // a queue's end stay, rather than every statement on it waiting behind the lock that
    // truncating them takes.
    let untruncated: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND 'vacuum_truncate=false' = ANY (c.reloptions) ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(untruncated, expected);
    let messages = (0..500)
        .map(|n| Envelope::command(Remind::new(format!("filler-{n}"))))
        .collect();
    store.enqueue("q", messages).await.unwrap();
    let pages = || async {
        let bytes: i64 = sqlx::query_scalar("SELECT pg_relation_size('cqrs_messages')")
            .fetch_one(store.pool())
            .await
            .unwrap();
        bytes
    };
    let filled = pages().await;
    assert!(filled > 0);
    sqlx::query("DELETE FROM cqrs_messages")
        .execute(store.pool())
        .await
        .unwrap();
    let vacuums = || async {
        let count: i64 = sqlx::query_scalar(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'cqrs_messages'",
        )
        .bind(&schema)
        .fetch_one(store.pool())
        .await
        .unwrap();
        count
    };
    // The vacuum running now may have started before the delete: wait for two more.
    let before = vacuums().await;
    for _ in 0..100 {
        if vacuums().await >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        vacuums().await >= before + 2,
        "the store vacuumed after the delete"
    );
    assert_eq!(pages().await, filled, "the emptied pages were kept");
}

/// A store told not to listen holds no `LISTEN` connection, so no notifying commit of the
/// database wakes a backend for it; it still reads what another store enqueues.
#[tokio::test]
async fn a_store_that_does_not_listen_holds_no_listening_connection() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(url) = support::postgres_url() else {
        return;
    };
    let schema = support::fresh_schema("quiet");
    // Each store's connections carry a name of their own, to be told apart in `pg_stat_activity`.
    let named = |name: &str| {
        let separator = if url.contains('?') { '&' } else { '?' };
        cqrs_sql::PgOptions::new(format!("{url}{separator}application_name={name}")).schema(schema.clone())
    };
    let loud_name = format!("loud_{}", Uuid::now_v7().simple());
    let quiet_name = format!("quiet_{}", Uuid::now_v7().simple());
    let loud = PgStore::connect_with(named(&loud_name)).await.unwrap();
    let quiet = PgStore::connect_with(named(&quiet_name).listen(false))
        .await
        .unwrap();
    let listening = |name: String| {
        let pool = loud.pool().clone();
        async move {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
            count
        }
    };
    assert_eq!(listening(loud_name).await, 1, "a store listens by default");
    assert_eq!(listening(quiet_name).await, 0);

    loud.enqueue("q", vec![Envelope::command(Remind::new("r"))])
        .await
        .unwrap();
    let taken = quiet.receive("q", 10).await.unwrap();
    assert_eq!(taken.len(), 1, "the quiet store reads what the other enqueued");
}

/// A message taken by a receive is rewritten in its own page (migration 11): its new version
/// goes beside the old one, where with full pages it went to another page, which cost a lock
/// record on the old row and a second page dirtied. 100 messages fill several pages.
#[tokio::test]
async fn a_message_taken_is_rewritten_in_its_own_page() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres_with("taken_in_place", |options| options.vacuum_every(None)).await
    else {
        return;
    };
    let messages = (0..100)
        .map(|n| Envelope::command(Remind::new(format!("{n:0>200}"))).with_session_id(format!("s{n}")))
        .collect();
    store.enqueue("q", messages).await.unwrap();
    let pages = || async {
        let pages: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, (ctid::text::point)[0]::int8 FROM cqrs_messages WHERE queue = 'q' ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        pages
    };
    let before = pages().await;
    let distinct: HashSet<i64> = before.iter().map(|(_, page)| *page).collect();
    assert!(
        distinct.len() > 2,
        "the messages span several pages: {distinct:?}"
    );

    let taken = store.receive("q", 100).await.unwrap();
    assert_eq!(taken.len(), 100);
    let after = pages().await;
    let moved: Vec<i64> = before
        .iter()
        .zip(&after)
        .filter(|(old, new)| old != new)
        .map(|((id, _), _)| *id)
        .collect();
    assert!(
        moved.is_empty(),
        "taken messages whose new version left their page: {moved:?}"
    );
}

/// A store of two connections, one of them its listener's, so that the statements all run on
/// the other and their table statistics can be flushed before they are read; its queue's
/// statements are planned with one message in queue `q`.
async fn planned_queue(test: &str) -> Option<PgStore> {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let store = support::postgres_with(test, |options| options.vacuum_every(None).max_connections(2)).await?;
    let first = Envelope::command(Remind::new("first")).with_session_id("s");
    store.enqueue("q", vec![first]).await.unwrap();
    let first = store.receive("q", 10).await.unwrap();
    assert!(store.complete_and_next(&first, 10).await.unwrap().is_empty());
    Some(store)
}

/// The rows of `cqrs_messages` read so far by sequential scans, and fetched by index scans.
async fn rows_read(store: &PgStore) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT seq_tup_read, COALESCE(idx_tup_fetch, 0) FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'cqrs_messages'",
    )
    .bind(store.schema())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// A receive reads about as many messages as it takes, not the queue's whole backlog nor the
/// messages other consumers hold; and statements planned while the queue held one message still look messages up by index once it
/// holds thousands, never reading the whole table. Counted with PostgreSQL's table statistics.
#[tokio::test]
async fn a_receive_reads_what_it_takes_not_the_backlog() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = planned_queue("receive_reads").await else {
        return;
    };
    let remind = |note: String| Envelope::command(Remind::new(note));

    // 2,000 sessions with a free head each, and 500 messages due in an hour.
    let heads = (0..2_000)
        .map(|n| remind(format!("head-{n}")).with_session_id(format!("s{n}")))
        .collect();
    store.enqueue("q", heads).await.unwrap();
    let later = (0..500)
        .map(|n| remind(format!("later-{n}")).with_delay(Duration::from_secs(3600)))
        .collect();
    store.enqueue("q", later).await.unwrap();
    // Another consumer holds the oldest 1,500.
    let held = store.receive("q", 1_500).await.unwrap();
    assert_eq!(held.len(), 1_500);
    let before = rows_read(&store).await;
    let taken = store.receive("q", 2).await.unwrap();
    let note = |d: &cqrs_core::Delivery| d.envelope.message.decode::<Remind>().unwrap().note.clone();
    assert_eq!(
        taken.iter().map(note).collect::<Vec<_>>(),
        ["head-1500", "head-1501"],
        "the oldest due and free first"
    );
    for delivery in &taken {
        assert!(
            store
                .complete_and_next(std::slice::from_ref(delivery), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
    let after = rows_read(&store).await;
    assert_eq!(after.0, before.0, "no statement read the table through");
    assert!(
        after.1 - before.1 < 100,
        "a receive of 2 and their completions fetched {} messages of 2,500, 1,500 of them held",
        after.1 - before.1
    );
}

/// A receive does not walk the followers of a busy session: the messages enqueued behind an
/// older one of their session are out of the due walk (migration 9), and the session's first
/// one is found by a lookup a session. Here one session holds 1,000 messages, its first held by
/// another consumer (a conference's seat commands under load), and 200 sessions a free head
/// each, enqueued after it.
#[tokio::test]
async fn a_receive_reads_no_message_behind_a_held_one() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = planned_queue("receive_behind").await else {
        return;
    };
    let remind = |note: String| Envelope::command(Remind::new(note));
    let note = |d: &cqrs_core::Delivery| d.envelope.message.decode::<Remind>().unwrap().note.clone();

    // Half enqueued together, half one by one: both ways mark the followers.
    let busy = |n: usize| remind(format!("busy-{n}")).with_session_id("busy");
    store.enqueue("q", (0..500).map(busy).collect()).await.unwrap();
    for n in 500..1_000 {
        store.enqueue("q", vec![busy(n)]).await.unwrap();
    }
    let held = store.receive("q", 1).await.unwrap();
    assert_eq!(held.iter().map(note).collect::<Vec<_>>(), ["busy-0"]);
    let heads = (0..200)
        .map(|n| remind(format!("head-{n}")).with_session_id(format!("s{n}")))
        .collect();
    store.enqueue("q", heads).await.unwrap();
    let behind: i64 = sqlx::query_scalar("SELECT count(*) FROM cqrs_messages WHERE behind")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        behind, 999,
        "every message of the busy session but its first is behind"
    );

    let (_, before) = rows_read(&store).await;
    let taken = store.receive("q", 2).await.unwrap();
    let (_, after) = rows_read(&store).await;
    assert_eq!(
        taken.iter().map(note).collect::<Vec<_>>(),
        ["head-0", "head-1"],
        "the free heads, none of the busy session's"
    );
    assert!(
        after - before < 50,
        "a receive of 2 fetched {} messages, 999 of them behind a held one",
        after - before
    );

    // The holder completes the first without following the session: the second, behind, is
    // now the session's first, and a receive takes it, then the third only after it.
    assert!(store.complete_and_next(&held, 0).await.unwrap().is_empty());
    let next = store.receive("q", 300).await.unwrap();
    let busy_taken: Vec<String> = next.iter().map(note).filter(|n| n.starts_with("busy")).collect();
    assert_eq!(busy_taken, ["busy-1"], "only the busy session's first");
    assert_eq!(next.len(), 199, "with the other sessions' heads");
}

/// The mark is a hint, never a rule: a session's first message marked behind (as an enqueue
/// racing the completion of the message before it can leave it) is still taken, and a follower
/// not marked (two enqueued at once to an empty session) still waits for its session.
#[tokio::test]
async fn a_message_behind_is_taken_once_it_is_first_and_not_before() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("behind_hint").await else {
        return;
    };
    let remind = |note: &str| Envelope::command(Remind::new(note.to_owned())).with_session_id("s");
    let note = |d: &cqrs_core::Delivery| d.envelope.message.decode::<Remind>().unwrap().note.clone();
    store
        .enqueue("q", vec![remind("a"), remind("b"), remind("c")])
        .await
        .unwrap();
    // The first marked behind, the others not: as wrong as the marks can be.
    sqlx::query("UPDATE cqrs_messages SET behind = (id = (SELECT min(id) FROM cqrs_messages))")
        .execute(store.pool())
        .await
        .unwrap();
    for expected in ["a", "b", "c"] {
        let taken = store.receive("q", 10).await.unwrap();
        assert_eq!(taken.iter().map(note).collect::<Vec<_>>(), [expected]);
        assert!(store.receive("q", 10).await.unwrap().is_empty(), "one at a time");
        store.complete(&taken[0]).await.unwrap();
    }
}

/// Consumers of many sessions complete their messages at once: each takes its own session's
/// next messages, in order; one whose delivery went stale (its lease ran out and the message
/// was delivered again) completes nothing and takes nothing.
#[tokio::test]
async fn completions_made_together_each_take_their_own_session_s_next_messages() {
    use cqrs_core::testing::sample::Remind;
    use cqrs_core::{Envelope, MessageQueue};
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("completions").await else {
        return;
    };
    for session in 0..24 {
        let envelopes = (0..3)
            .map(|n| {
                Envelope::command(Remind::new(format!("{session}-{n}")))
                    .with_session_id(format!("s{session}"))
            })
            .collect();
        store.enqueue("q", envelopes).await.unwrap();
    }
    let heads = store.receive("q", 100).await.unwrap();
    assert_eq!(heads.len(), 24, "one head per session");
    let mut stale = heads[0].clone();
    stale.delivery_count += 1;
    let before = store.batch_stats().completions;
    let settles = heads
        .iter()
        .skip(1)
        .map(|head| store.complete_and_next(std::slice::from_ref(head), 10))
        .chain(std::iter::once(
            store.complete_and_next(std::slice::from_ref(&stale), 10),
        ));
    let taken = futures::future::join_all(settles).await;
    let after = store.batch_stats().completions;
    assert_eq!(after.1 - before.1, 24, "every completion answered");
    assert!(
        after.0 - before.0 < 24,
        "completions share statements: {before:?} → {after:?}"
    );
    let note = |d: &cqrs_core::Delivery| d.envelope.message.decode::<Remind>().unwrap().note.clone();
    for (head, next) in heads.iter().skip(1).zip(&taken) {
        let session = head.envelope.metadata.session_id.clone().unwrap();
        let notes: Vec<String> = next.as_ref().unwrap().iter().map(note).collect();
        let expected: Vec<String> = (1..3).map(|n| format!("{}-{n}", &session[1..])).collect();
        assert_eq!(notes, expected, "{session}: its own next messages, in order");
    }
    assert!(
        taken[23].as_ref().unwrap().is_empty(),
        "a stale delivery takes nothing"
    );
    assert!(
        store.receive("q", 100).await.unwrap().is_empty(),
        "the stale one's session stays held by its live delivery"
    );
    store.complete_and_next(&heads[..1], 10).await.unwrap();
}

/// Saves of many processes at once share statements; of three saves of one process from the
/// same version, one wins and the others conflict, and only the winner's commands are stored.
#[tokio::test]
async fn process_saves_made_together_are_each_checked_on_their_own() {
    use cqrs_core::ProcessStore;
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres("saves").await else {
        return;
    };
    let ids: Vec<Uuid> = (0..16).map(|_| Uuid::now_v7()).collect();
    for round in 0..2_i64 {
        let expected = round - 1;
        let before = store.batch_stats().process_saves;
        // Every process saved once, and the first one by two more writers from the same
        // version: at least two of the three wait together for a statement.
        let saves = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("{i}-{round}")))
            .chain((0..2).map(|n| (ids[0], format!("rival{n}-{round}"))))
            .map(|(id, tag)| {
                let saved = store.save(
                    process(id, expected, None, &format!("{{\"by\":\"{tag}\"}}")),
                    vec![ping_command(tag.clone())],
                );
                async move { (tag, saved.await) }
            });
        let results = futures::future::join_all(saves).await;
        let after = store.batch_stats().process_saves;
        assert_eq!(after.1 - before.1, 18, "every save answered");
        assert!(
            after.0 - before.0 < 18,
            "saves share statements: {before:?} → {after:?}"
        );
        for (tag, result) in &results[1..16] {
            assert_eq!(
                *result.as_ref().unwrap(),
                round,
                "{tag}: saved at the next version"
            );
        }
        let same: Vec<&(String, _)> = [0, 16, 17].iter().map(|i| &results[*i]).collect();
        let winners: Vec<&String> = same.iter().filter(|r| r.1.is_ok()).map(|r| &r.0).collect();
        assert_eq!(
            winners.len(),
            1,
            "one of three saves from one version wins: {same:?}"
        );
        for (tag, result) in same.iter().filter(|r| r.1.is_err()) {
            assert!(result.as_ref().unwrap_err().is_conflict(), "{tag}: {result:?}");
        }
        let winner = winners[0];
        let loaded = ProcessStore::load(&store, "P", ids[0]).await.unwrap().unwrap();
        assert_eq!(
            loaded.record.state.as_ref(),
            format!("{{\"by\":\"{winner}\"}}").as_bytes()
        );
        let pending: Vec<&str> = loaded.pending.iter().map(|c| c.message_id.as_str()).collect();
        assert_eq!(
            pending.last(),
            Some(&winner.as_str()),
            "only the winner's command is stored"
        );
        for (tag, _) in same.iter().filter(|r| r.1.is_err()) {
            assert!(
                !pending.contains(&tag.as_str()),
                "{tag}: a conflicting save stores nothing"
            );
        }
    }
}

/// A running process's saves rewrite its row in place (heap-only updates: no index entry
/// written), where each moved `saved_seq`, a column of the key index, before migration 10.
/// Counted with PostgreSQL's table statistics.
#[tokio::test]
async fn a_running_process_s_saves_write_no_index_entry() {
    use cqrs_core::ProcessStore;
    let _shared = CLUSTER.read().await;
    let Some(store) = support::postgres_with("saves_in_place", |options| {
        options.vacuum_every(None).max_connections(2)
    })
    .await
    else {
        return;
    };
    let id = Uuid::now_v7();
    let key = Some("order-1".to_owned());
    for version in -1..3 {
        let saved = store
            .save(
                process(id, version, key.clone(), &format!("{{\"step\":{version}}}")),
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(saved, version + 1);
    }
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .unwrap();
    let (updates, in_place): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'cqrs_processes'",
    )
    .bind(store.schema())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (updates, in_place),
        (3, 3),
        "every save of the running process in place"
    );
}

/// A process of type `P` to save over `version` (-1: a new one), with `state` as its JSON.
fn process(id: Uuid, version: i64, key: Option<String>, state: &str) -> cqrs_core::ProcessRecord {
    cqrs_core::ProcessRecord {
        process_type: "P".into(),
        id,
        version,
        completed: false,
        key,
        codec: Codec::Json,
        schema_version: 1,
        state: cqrs_core::Bytes::copy_from_slice(state.as_bytes()),
    }
}

/// A stored `Ping` command with message id `id`.
fn ping_command(id: String) -> cqrs_core::StoredCommand {
    cqrs_core::StoredCommand {
        message_id: id.clone(),
        payload: cqrs_core::Payload {
            name: "Ping".into(),
            schema_version: 1,
            codec: Codec::Json,
            bytes: cqrs_core::Bytes::from_static(b"{}"),
        },
        metadata: cqrs_core::Metadata::with_id(id),
        stored_at: cqrs_core::chrono::Utc::now(),
    }
}
