//! The read models' documents: a projection's writes commit with its checkpoint, and only the
//! writes of events that succeeded.

use conference_app::documents::{Documents, Index, PerEvent, Row, UnitOfWork};
use cqrs_core::{CheckpointStore, Envelope, Error, MessageHandler, Metadata};

async fn open() -> (tempfile::TempDir, Documents) {
    let dir = tempfile::tempdir().unwrap();
    let documents = Documents::open_sqlite(&dir.path().join("read_models.db"))
        .await
        .unwrap();
    (dir, documents)
}

/// Documents in a fresh PostgreSQL schema, or `None` (with a notice) without the test URL.
async fn postgres() -> Option<(String, String)> {
    let Ok(url) = std::env::var("CQRS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CQRS_TEST_POSTGRES_REQUIRED").is_none(),
            "CQRS_TEST_POSTGRES_REQUIRED is set but CQRS_TEST_POSTGRES_URL is not"
        );
        eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; PostgreSQL documents test skipped");
        return None;
    };
    let schema = format!("cqrs_test_docs_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .execute(&admin)
        .await
        .unwrap();
    Some((url, schema))
}

fn row(value: &str, ix1: &str) -> Row {
    Row::new(&value.to_owned(), Some(ix1.to_owned()), None).unwrap()
}

#[tokio::test]
async fn plain_writes_commit_at_once_and_indexes_find_them() {
    let (_dir, documents) = open().await;
    let mut commits = documents.commits();
    documents.put("m", "a", row("A", "x")).await.unwrap();
    documents.put("m", "b", row("B", "x")).await.unwrap();
    documents.put("other", "c", row("C", "x")).await.unwrap();
    assert!(commits.has_changed().unwrap(), "waiters are told");
    assert_eq!(
        documents.get::<String>("m", "a").await.unwrap().as_deref(),
        Some("A")
    );
    let found: Vec<String> = documents.find("m", Index::One, "x").await.unwrap();
    assert_eq!(found, ["A", "B"]);
    documents.delete("m", "a").await.unwrap();
    documents.delete("m", "a").await.unwrap();
    assert_eq!(documents.get::<String>("m", "a").await.unwrap(), None);
    commits.mark_unchanged();
}

/// A handler that writes the event's message id (or deletes the row named after `del-`), then
/// fails when told to.
struct Writer {
    documents: Documents,
}

impl MessageHandler for Writer {
    async fn handle(&self, envelope: &Envelope) -> cqrs_core::Result<()> {
        let id = envelope.metadata.message_id.clone();
        if let Some(doomed) = id.strip_prefix("del-") {
            return self.documents.delete("m", doomed).await;
        }
        self.documents.put("m", &id, row(&id, "all")).await?;
        if id.starts_with("fail") {
            return Err(Error::transient("told to fail"));
        }
        Ok(())
    }
}

/// A [`Writer`] whose writes go to `unit`.
fn writer(unit: &UnitOfWork) -> PerEvent<Writer> {
    unit.wrap(Writer {
        documents: unit.documents().clone(),
    })
}

/// Another runner of projection `p` finds its checkpoint at `from`, handles the event `id`
/// and moves the checkpoint to `to`.
async fn another_runner_moves_the_checkpoint(documents: &Documents, id: &str, from: u64, to: u64) {
    let other = documents.unit_of_work();
    assert_eq!(other.load_checkpoint("p").await.unwrap(), Some(from));
    writer(&other).handle(&event(id)).await.unwrap();
    other.save_checkpoint("p", to).await.unwrap();
}

fn event(id: &str) -> Envelope {
    Envelope::from_parts(
        cqrs_core::AnyMessage::raw(cqrs_core::Payload {
            name: "E".into(),
            schema_version: 1,
            codec: cqrs_core::Codec::Json,
            bytes: cqrs_core::Bytes::from_static(b"{}"),
        }),
        Metadata::with_id(id),
    )
}

#[tokio::test]
async fn a_unit_of_work_commits_with_its_checkpoint_and_drops_failed_events() {
    let (_dir, documents) = open().await;
    unit_of_work_commits_with_its_checkpoint(documents).await;
}

#[tokio::test]
async fn on_postgres_a_unit_of_work_commits_with_its_checkpoint_and_drops_failed_events() {
    if let Some((url, schema)) = postgres().await {
        let documents = Documents::connect_postgres(&url, &schema).await.unwrap();
        unit_of_work_commits_with_its_checkpoint(documents).await;
    }
}

async fn unit_of_work_commits_with_its_checkpoint(documents: Documents) {
    let unit = documents.unit_of_work();
    let handler = unit.wrap(Writer {
        documents: unit.documents().clone(),
    });
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), None);
    handler.handle(&event("e1")).await.unwrap();
    handler.handle(&event("fail-e2")).await.unwrap_err();
    handler.handle(&event("e3")).await.unwrap();

    // The projection reads its own writes; nobody else sees them yet.
    let own: Vec<String> = unit.documents().find("m", Index::One, "all").await.unwrap();
    assert_eq!(own, ["e1", "e3"], "the failed event's write is dropped");
    assert_eq!(documents.get::<String>("m", "e1").await.unwrap(), None);

    unit.save_checkpoint("p", 3).await.unwrap();
    let committed: Vec<String> = documents.find("m", Index::One, "all").await.unwrap();
    assert_eq!(committed, ["e1", "e3"]);
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), Some(3));
    assert_eq!(documents.get::<String>("m", "fail-e2").await.unwrap(), None);

    // A delete in a unit of work hides the row from the projection's own reads at once.
    handler.handle(&event("del-e1")).await.unwrap();
    handler.handle(&event("e4")).await.unwrap();
    let own: Vec<String> = unit.documents().find("m", Index::One, "all").await.unwrap();
    assert_eq!(own, ["e3", "e4"]);
    assert_eq!(
        documents.get::<String>("m", "e1").await.unwrap().as_deref(),
        Some("e1")
    );
    unit.save_checkpoint("p", 5).await.unwrap();
    assert_eq!(documents.get::<String>("m", "e1").await.unwrap(), None);
    let committed: Vec<String> = documents.find("m", Index::One, "all").await.unwrap();
    assert_eq!(committed, ["e3", "e4"], "a delete and a put in one commit");
}

/// A unit of work reads the documents it committed from memory (a projection's models are
/// written by it alone), until another runner moves the checkpoint.
#[tokio::test]
async fn a_unit_reads_what_it_committed_until_another_runner_moves_the_checkpoint() {
    let (_dir, documents) = open().await;
    let unit = documents.unit_of_work();
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), None);
    writer(&unit).handle(&event("e1")).await.unwrap();
    unit.save_checkpoint("p", 1).await.unwrap();

    // Changed behind the unit's back, which no projection does: this shows where it reads.
    documents.put("m", "e1", row("changed", "all")).await.unwrap();
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), Some(1));
    let e1 = async || unit.documents().get::<String>("m", "e1").await.unwrap();
    assert_eq!(
        e1().await.as_deref(),
        Some("e1"),
        "what it committed, without a query"
    );

    another_runner_moves_the_checkpoint(&documents, "e2", 1, 2).await;
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), Some(2));
    assert_eq!(
        e1().await.as_deref(),
        Some("changed"),
        "the checkpoint moved: read from the database again"
    );
}

/// A unit of work looks a value up by index once: later lookups are answered from what it
/// found, with its own writes since, pending or committed, until another runner moves the
/// checkpoint.
#[tokio::test]
async fn a_unit_looks_up_what_it_found_until_another_runner_moves_the_checkpoint() {
    let (_dir, documents) = open().await;
    documents.put("m", "a", row("a", "all")).await.unwrap();
    let unit = documents.unit_of_work();
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), None);
    let all = async || -> Vec<String> { unit.documents().find("m", Index::One, "all").await.unwrap() };
    assert_eq!(all().await, ["a"]);

    // Changed behind the unit's back, which no projection does: this shows where it reads.
    documents.put("m", "b", row("b", "all")).await.unwrap();
    assert_eq!(all().await, ["a"], "what it found, without a query");
    writer(&unit).handle(&event("e1")).await.unwrap();
    writer(&unit).handle(&event("del-a")).await.unwrap();
    assert_eq!(all().await, ["e1"], "with its pending writes");
    unit.save_checkpoint("p", 2).await.unwrap();
    assert_eq!(all().await, ["e1"], "and once they are committed");
    writer(&unit).handle(&event("e3")).await.unwrap();
    unit.save_checkpoint("p", 3).await.unwrap();
    assert_eq!(all().await, ["e1", "e3"]);

    another_runner_moves_the_checkpoint(&documents, "e4", 3, 4).await;
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), Some(4));
    assert_eq!(
        all().await,
        ["b", "e1", "e3", "e4"],
        "the checkpoint moved: looked up in the database again"
    );
}

#[tokio::test]
async fn two_runners_of_one_projection_never_both_commit_a_range() {
    let (_dir, documents) = open().await;
    two_runners_never_both_commit(documents).await;
}

#[tokio::test]
async fn on_postgres_two_runners_of_one_projection_never_both_commit_a_range() {
    if let Some((url, schema)) = postgres().await {
        let documents = Documents::connect_postgres(&url, &schema).await.unwrap();
        two_runners_never_both_commit(documents).await;
    }
}

/// Two runners commit from the same checkpoint at the same time, first where none was stored
/// yet, then from a stored one: each time one of them writes, the other is refused and wrote
/// nothing.
#[tokio::test]
async fn on_postgres_two_runners_committing_at_once_never_both_write() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let documents = Documents::connect_postgres(&url, &schema).await.unwrap();
    let other = Documents::connect_postgres(&url, &schema).await.unwrap();
    for (round, from) in [(1_u64, None), (2, Some(1))] {
        let (first, second) = (documents.unit_of_work(), other.unit_of_work());
        for unit in [&first, &second] {
            assert_eq!(unit.load_checkpoint("p").await.unwrap(), from);
        }
        let (a, b) = (format!("first-{round}"), format!("second-{round}"));
        writer(&first).handle(&event(&a)).await.unwrap();
        writer(&second).handle(&event(&b)).await.unwrap();
        let (first_saved, second_saved) = tokio::join!(
            first.save_checkpoint("p", round),
            second.save_checkpoint("p", round)
        );
        let (winner, loser, loser_error) = match (first_saved, second_saved) {
            (Ok(()), Err(error)) => (a, b, error),
            (Err(error), Ok(())) => (b, a, error),
            other => panic!("exactly one commit must pass: {other:?}"),
        };
        assert!(loser_error.is_conflict(), "{loser_error}");
        assert_eq!(documents.checkpoint("p").await.unwrap(), Some(round));
        let fresh = Documents::connect_postgres_unlistening(&url, &schema)
            .await
            .unwrap();
        assert_eq!(
            fresh.get::<String>("m", &winner).await.unwrap(),
            Some(winner.clone())
        );
        assert_eq!(
            fresh.get::<String>("m", &loser).await.unwrap(),
            None,
            "{loser} was written"
        );
    }
}

async fn two_runners_never_both_commit(documents: Documents) {
    let (first, second) = (documents.unit_of_work(), documents.unit_of_work());
    for unit in [&first, &second] {
        assert_eq!(unit.load_checkpoint("p").await.unwrap(), None);
    }
    writer(&first).handle(&event("from-first")).await.unwrap();
    writer(&second).handle(&event("from-second")).await.unwrap();
    first.save_checkpoint("p", 1).await.unwrap();
    let err = second.save_checkpoint("p", 1).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(
        documents.get::<String>("m", "from-second").await.unwrap(),
        None,
        "rolled back"
    );
    // The loser starts again from the winner's checkpoint.
    assert_eq!(second.load_checkpoint("p").await.unwrap(), Some(1));
    writer(&second).handle(&event("next")).await.unwrap();
    second.save_checkpoint("p", 2).await.unwrap();
    assert_eq!(documents.checkpoint("p").await.unwrap(), Some(2));
    writer(&first).handle(&event("stale")).await.unwrap();
    assert!(first.save_checkpoint("p", 2).await.unwrap_err().is_conflict());
    assert_eq!(documents.get::<String>("m", "stale").await.unwrap(), None);
}

#[tokio::test]
async fn pages_that_write_nothing_cost_no_commit_and_are_stored_later() {
    let (_dir, documents) = open().await;
    let unit = documents.unit_of_work();
    assert_eq!(unit.load_checkpoint("p").await.unwrap(), None);
    unit.wrap(Writer {
        documents: unit.documents().clone(),
    })
    .handle(&event("first"))
    .await
    .unwrap();
    unit.save_checkpoint("p", 1).await.unwrap();

    // Pages whose events wrote nothing: known at once, stored later.
    let mut commits = documents.commits();
    commits.borrow_and_update();
    unit.save_checkpoint("p", 5).await.unwrap();
    unit.save_checkpoint("p", 9).await.unwrap();
    assert!(commits.has_changed().unwrap(), "the waiters hear of the progress");
    assert_eq!(
        documents.checkpoint("p").await.unwrap(),
        Some(1),
        "nothing committed"
    );
    assert_eq!(documents.known_checkpoint("p").await.unwrap(), Some(9));
    assert_eq!(
        unit.load_checkpoint("p").await.unwrap(),
        Some(9),
        "resumes where it got to"
    );
    unit.store_skipped("p", std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        documents.checkpoint("p").await.unwrap(),
        Some(1),
        "not old enough yet"
    );
    unit.store_skipped("p", std::time::Duration::ZERO).await.unwrap();
    assert_eq!(documents.checkpoint("p").await.unwrap(), Some(9));

    // Another runner moved the checkpoint meanwhile: the skipped position is forgotten.
    let other = documents.unit_of_work();
    assert_eq!(other.load_checkpoint("p").await.unwrap(), Some(9));
    unit.save_checkpoint("p", 12).await.unwrap();
    other
        .wrap(Writer {
            documents: other.documents().clone(),
        })
        .handle(&event("other"))
        .await
        .unwrap();
    other.save_checkpoint("p", 10).await.unwrap();
    assert_eq!(
        unit.load_checkpoint("p").await.unwrap(),
        Some(10),
        "the other's, not 12"
    );
}

/// A projection's pages that write nothing are announced to the other processes, the
/// furthest position of each projection, though the database holds none of them.
#[tokio::test]
async fn on_postgres_the_other_processes_hear_of_progress_that_wrote_nothing() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let web = Documents::connect_postgres(&url, &schema).await.unwrap();
    let (p, q) = (worker.unit_of_work(), worker.unit_of_work());
    for (unit, name) in [(&p, "p"), (&q, "q")] {
        assert_eq!(unit.load_checkpoint(name).await.unwrap(), None);
        writer(unit)
            .handle(&event(&format!("first-{name}")))
            .await
            .unwrap();
        unit.save_checkpoint(name, 1).await.unwrap();
    }
    assert_eq!(
        web.known_checkpoint("p").await.unwrap(),
        Some(1),
        "read from the database"
    );
    assert_eq!(
        web.known_checkpoint("q").await.unwrap(),
        Some(1),
        "read from the database"
    );

    let mut commits = web.commits();
    commits.borrow_and_update();
    for position in 2..=20 {
        p.save_checkpoint("p", position).await.unwrap();
        q.save_checkpoint("q", position + 100).await.unwrap();
    }
    while web.known_checkpoint("p").await.unwrap() != Some(20)
        || web.known_checkpoint("q").await.unwrap() != Some(120)
    {
        tokio::time::timeout(std::time::Duration::from_secs(10), commits.changed())
            .await
            .expect("the progress is announced")
            .unwrap();
    }
    for name in ["p", "q"] {
        assert_eq!(
            worker.checkpoint(name).await.unwrap(),
            Some(1),
            "nothing committed"
        );
    }
}

#[tokio::test]
async fn on_postgres_a_commit_wakes_the_other_processes_waiters_of_what_it_wrote() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    // Two handles with pools of their own, as two processes would have.
    let web = Documents::connect_postgres(&url, &schema).await.unwrap();
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let mut woken = web.commits();
    let mut watching_k = web.watch(&["m"], "k");
    let mut watching_other = web.watch(&["m"], "other");
    woken.mark_unchanged();
    watching_k.mark_seen();
    watching_other.mark_seen();
    worker.put("m", "k", row("v", "x")).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    tokio::time::timeout(wait, woken.changed())
        .await
        .expect("the other process is told of the commit")
        .unwrap();
    tokio::time::timeout(wait, watching_k.changed())
        .await
        .expect("the waiter of the document written wakes");
    assert_eq!(web.get::<String>("m", "k").await.unwrap().as_deref(), Some("v"));
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), watching_other.changed())
            .await
            .is_err(),
        "a waiter of another document sleeps on"
    );
}

#[tokio::test]
async fn on_sqlite_another_process_s_commit_is_read_at_once() {
    let (dir, documents) = open().await;
    documents.put("m", "k", row("v1", "x")).await.unwrap();
    assert_eq!(
        documents.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(documents.get::<String>("m", "absent").await.unwrap(), None);
    // Another handle on the same file (the load tool, a rebuild) commits without telling this
    // one: no cache may hide it.
    let other = Documents::open_sqlite(&dir.path().join("read_models.db"))
        .await
        .unwrap();
    other.put("m", "k", row("v2", "x")).await.unwrap();
    other.put("m", "absent", row("there", "x")).await.unwrap();
    assert_eq!(
        documents.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("v2")
    );
    assert_eq!(
        documents.get::<String>("m", "absent").await.unwrap().as_deref(),
        Some("there")
    );
}

/// Sets document `m/k` to `"unseen"` behind every process's back: no commit of `Documents`,
/// so no announcement.
async fn write_unannounced(url: &str, schema: &str) {
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE \"{schema}\".rm_documents SET doc = '\"unseen\"' WHERE model = 'm' AND key = 'k'"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn on_postgres_a_document_read_stays_cached_until_a_commit_anywhere_writes_it() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let web = Documents::connect_postgres(&url, &schema).await.unwrap();
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    let mut watching = web.watch(&["m"], "k");
    assert_eq!(web.get::<String>("m", "k").await.unwrap(), None);
    watching.mark_seen();
    worker.put("m", "k", row("v1", "x")).await.unwrap();
    tokio::time::timeout(wait, watching.changed())
        .await
        .expect("the announcement arrives");
    assert_eq!(
        web.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("v1"),
        "the announcement dropped the absent document read before"
    );
    // Written behind every process's back (no announcement): the web still shows what it read.
    write_unannounced(&url, &schema).await;
    assert_eq!(web.get::<String>("m", "k").await.unwrap().as_deref(), Some("v1"));
    // A commit naming too many documents for its announcement drops every cached one.
    let unit = worker.unit_of_work();
    let handler = unit.wrap(Writer {
        documents: unit.documents().clone(),
    });
    assert_eq!(unit.load_checkpoint("bulk").await.unwrap(), None);
    for i in 0..300 {
        let id = format!("a-rather-long-document-key-{i:04}");
        handler.handle(&event(&id)).await.unwrap();
    }
    watching.mark_seen();
    unit.save_checkpoint("bulk", 300).await.unwrap();
    tokio::time::timeout(wait, watching.changed())
        .await
        .expect("an announcement without names wakes every waiter");
    assert_eq!(
        web.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("unseen"),
        "read again after an announcement that named no documents"
    );
}

/// Documents that do not listen hear of no other process's commit, so they keep nothing
/// cached: each read is the database's answer of the moment.
#[tokio::test]
async fn on_postgres_documents_that_do_not_listen_read_the_database_every_time() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let tool = Documents::connect_postgres_unlistening(&url, &schema)
        .await
        .unwrap();
    worker.put("m", "k", row("v1", "x")).await.unwrap();
    assert_eq!(tool.get::<String>("m", "k").await.unwrap().as_deref(), Some("v1"));
    // Written behind every process's back: no announcement, yet the next read sees it.
    write_unannounced(&url, &schema).await;
    assert_eq!(
        tool.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("unseen")
    );
    // Its own commits it still reads back, and finds by index.
    tool.put("m", "k2", row("v2", "y")).await.unwrap();
    assert_eq!(
        tool.get::<String>("m", "k2").await.unwrap().as_deref(),
        Some("v2")
    );
}

/// Reads that arrive together share a statement on PostgreSQL; each gets its own answer.
#[tokio::test]
async fn on_postgres_reads_made_together_each_get_their_own_documents() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let web = Documents::connect_postgres(&url, &schema).await.unwrap();
    for i in 0..40 {
        // Documents 0..40 of model "m"; each is in group i % 4 of the first index and in
        // group i % 5 of the second.
        let row = Row::new(
            &format!("v{i}"),
            Some(format!("g{}", i % 4)),
            Some(format!("h{}", i % 5)),
        )
        .unwrap();
        worker.put("m", &format!("k{i}"), row).await.unwrap();
    }
    let keys: Vec<String> = (0..48).map(|i| format!("k{i}")).collect();
    let got = futures::future::join_all(keys.iter().map(|key| web.get::<String>("m", key))).await;
    for (i, got) in got.into_iter().enumerate() {
        let expected = (i < 40).then(|| format!("v{i}"));
        assert_eq!(got.unwrap(), expected, "document k{i}");
    }
    let finds = (0..4)
        .map(|g| (Index::One, format!("g{g}")))
        .chain((0..6).map(|h| (Index::Two, format!("h{h}"))));
    let finds: Vec<_> = finds.collect();
    let found = futures::future::join_all(
        finds
            .iter()
            .map(|(index, value)| web.find::<String>("m", *index, value)),
    )
    .await;
    for ((index, value), found) in finds.iter().zip(found) {
        let (modulo, group) = match index {
            Index::One => (4, &value[1..]),
            Index::Two => (5, &value[1..]),
        };
        let group: usize = group.parse().unwrap();
        let mut expected: Vec<String> = (0..40)
            .filter(|i| i % modulo == group)
            .map(|i| format!("v{i}"))
            .collect();
        // In key order: "k1" < "k10" < "k11" …
        expected.sort_by_key(|v| format!("k{}", &v[1..]));
        assert_eq!(found.unwrap(), expected, "{index:?} = {value}");
    }
}

/// On PostgreSQL each page of the documents keeps half its room for the next versions of its
/// rows, so that a document written again with the same index values is rewritten in place (a
/// heap-only update, no index entry written); a second process's connect finds it set.
#[tokio::test]
async fn on_postgres_the_documents_keep_room_to_be_rewritten_in_place() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let documents = Documents::connect_postgres(&url, &schema).await.unwrap();
    let again = Documents::connect_postgres(&url, &schema).await.unwrap();
    documents.put("m", "k", row("v1", "x")).await.unwrap();
    again.put("m", "k", row("v2", "x")).await.unwrap();
    assert_eq!(
        documents.get::<String>("m", "k").await.unwrap().as_deref(),
        Some("v2")
    );
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let options: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(c.reloptions) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'rm_documents'",
    )
    .bind(&schema)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(options, ["fillfactor=50"]);
}

/// A publisher's announcement reaches the other processes that listen, and not its own
/// (whose projections it woke already), nor those of another schema.
#[tokio::test]
async fn on_postgres_the_other_processes_hear_that_events_were_published() {
    let Some((url, schema)) = postgres().await else {
        return;
    };
    let wait = std::time::Duration::from_secs(10);
    let publisher = Documents::connect_postgres(&url, &schema).await.unwrap();
    let worker = Documents::connect_postgres(&url, &schema).await.unwrap();
    let (_, another) = postgres().await.unwrap();
    let other_schema = Documents::connect_postgres(&url, &another).await.unwrap();
    let (mut own, mut elsewhere, unrelated) = (
        publisher.publications_elsewhere(),
        worker.publications_elsewhere(),
        other_schema.publications_elsewhere(),
    );
    let mut commits = publisher.commits();
    commits.borrow_and_update();

    publisher.announce_published();
    tokio::time::timeout(wait, elsewhere.changed())
        .await
        .expect("the other worker hears of it")
        .unwrap();
    // A commit announced after it: once the publisher hears of that, it has heard its own
    // announcement too (a listener hears them in order).
    worker.put("fence", "1", row("fence", "f")).await.unwrap();
    tokio::time::timeout(wait, commits.changed())
        .await
        .expect("the publisher hears of the commit")
        .unwrap();
    assert!(
        !own.has_changed().unwrap(),
        "the publisher does not count its own"
    );

    worker.announce_published();
    tokio::time::timeout(wait, own.changed())
        .await
        .expect("the publisher hears the worker's")
        .unwrap();
    assert!(
        !unrelated.has_changed().unwrap(),
        "another schema's publications are not its"
    );
}
