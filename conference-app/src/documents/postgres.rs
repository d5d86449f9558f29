//! The read models on PostgreSQL: the event store's database, a pool of sqlx connections, and
//! every commit announced with `NOTIFY` so that the long polls of the other processes wake.
//!
//! Each statement is a round trip to the server, so a commit is one statement (`UNNEST` of
//! arrays for its documents, whatever their number, with its checkpoint and its announcement),
//! and the reads that wait together share one.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{Coalescer, Result};
use cqrs_sql::{KeptConnections, OnKept, PgNotifier, sqlx_error as db_error};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgRow};

use super::changes::{Announcement, Changes};
use super::{
    Checkpoint, DROP_CHECKPOINT, DROP_MODEL, DUMP, Index, LOAD_CHECKPOINT, LOAD_GENERATIONS, Row, SCHEMA,
    SET_GENERATION, Writes,
};

/// A projection's commit in one statement, so one round trip and one short transaction: the
/// checkpoint moved from where it was read (`$8`, the name, to `$9` from `$10`; inserted when
/// `$10` is NULL; none when `$8` is NULL), and only when it moved, the documents put (arrays of
/// models, keys, documents and index values, `$1` to `$5`), those deleted (models and keys, `$6`
/// and `$7`), and the commit announced (channel `$11`, payload `$12`). One row when it moved,
/// none when another runner moved it first.
///
/// The parts see the tables as they were before the statement, so they are kept apart: a
/// commit's documents are distinct, each put or deleted. A concurrent commit from the same read
/// position waits on the checkpoint's row, then finds it moved and writes nothing.
const COMMIT: &str = "WITH inserted AS (
        INSERT INTO rm_checkpoints (name, position)
        SELECT $8::text, $9::int8 WHERE $8::text IS NOT NULL AND $10::int8 IS NULL
        ON CONFLICT (name) DO NOTHING
        RETURNING 1
    ), advanced AS (
        UPDATE rm_checkpoints SET position = $9::int8 WHERE name = $8::text AND position = $10::int8
        RETURNING 1
    ), moved AS (
        SELECT WHERE $8::text IS NULL OR EXISTS (SELECT FROM inserted) OR EXISTS (SELECT FROM advanced)
    ), put AS (
        INSERT INTO rm_documents (model, key, doc, ix1, ix2)
        SELECT p.* FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS p, moved
        ON CONFLICT (model, key) DO UPDATE SET doc = excluded.doc, ix1 = excluded.ix1, ix2 = excluded.ix2
    ), gone AS (
        DELETE FROM rm_documents d USING UNNEST($6::text[], $7::text[]) AS g(model, key), moved
        WHERE d.model = g.model AND d.key = g.key
    )
    SELECT pg_notify($11, $12) FROM moved";
/// [`GET`](super::GET) for several documents: arrays of models and keys. Each row is a
/// document found and the ordinal of its request (from 1). `OFFSET 0` keeps each a lookup of
/// the primary key.
const GET_MANY: &str = "SELECT q.idx, d.doc, d.ix1, d.ix2
    FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS q(model, key, idx),
         LATERAL (SELECT doc, ix1, ix2 FROM rm_documents WHERE model = q.model AND key = q.key OFFSET 0) d";
/// [`FIND_IX1`](super::FIND_IX1) for several values: arrays of models and values; each row
/// is a document found and the ordinal of its request.
const FIND_IX1_MANY: &str = "SELECT q.idx, d.key, d.doc, d.ix1, d.ix2
    FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS q(model, value, idx),
         LATERAL (SELECT key, doc, ix1, ix2 FROM rm_documents WHERE model = q.model AND ix1 = q.value OFFSET 0) d";
/// [`FIND_IX2`](super::FIND_IX2) for several values, as [`FIND_IX1_MANY`].
const FIND_IX2_MANY: &str = "SELECT q.idx, d.key, d.doc, d.ix1, d.ix2
    FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS q(model, value, idx),
         LATERAL (SELECT key, doc, ix1, ix2 FROM rm_documents WHERE model = q.model AND ix2 = q.value OFFSET 0) d";
/// Leaves half of each page of the documents free for the next versions of its rows, so that a
/// write that changes no index value rewrites the row in place (a heap-only update: no index
/// entry written). With full pages, a quarter of the updates of a load run were heap-only, and
/// two thirds with this: 11 pages read or written a document instead of 14. Set once, on a
/// table without it: an `ALTER TABLE` at every start would take the table's lock each time.
const ROOM_FOR_UPDATES: &str = "DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = 'rm_documents'::regclass
                   AND 'fillfactor=50' = ANY (reloptions)) THEN
        ALTER TABLE rm_documents SET (fillfactor = 50);
    END IF;
END $$";
/// The most reads one statement takes.
const MAX_READS: usize = 1_024;
/// One statement of each kind of read at a time, as the store's (see `cqrs-sql`'s
/// `postgres/batched.rs`): while it runs, the next batch fills.
const READS_IN_FLIGHT: usize = 1;
/// The most connections kept between statements (see [`KeptConnections`]), of the 7 the
/// listener leaves of the pool's 8: the coalesced reads, the commits, the checkpoint reads and
/// the progress announcements.
const KEPT_CONNECTIONS: usize = 5;

/// The channel on which commits are announced to every process (payload: an
/// [`Announcement`]).
const COMMITS_CHANNEL: &str = "conference_read_models";
/// The channel on which publishers announce that they published events (payload: the schema
/// and the announcing process's token, a line each), so that the projections of every worker
/// catch up at once.
const PUBLISHED_CHANNEL: &str = "conference_published";
/// How long the progress of a round of pages that wrote nothing gathers before it is
/// announced. The six projections, woken together by a publish, mostly announce together; one
/// by one, their announcements were as many statements as the commits of every page that wrote.
const PROGRESS_GATHER: Duration = Duration::from_millis(1);

/// A document to read: model and key; or model and index value.
type Read = (String, String);

/// The pool on the read models' schema, and the schema whose commits it announces.
///
/// Reads go through coalescers (see [`Coalescer`]): the web process's long polls and handlers
/// ask for dozens of documents at once under load, and one statement answers all that wait.
#[derive(Debug)]
pub(super) struct PostgresDocuments {
    pool: PgPool,
    /// Connections of `pool` kept between the reads, the commits and the checkpoint reads.
    kept: KeptConnections,
    schema: Arc<str>,
    /// This process's publication announcement: the schema, then a token of this process, so
    /// that its listener tells its own from the others'.
    published: Arc<str>,
    gets: Coalescer<Read, Option<Row>>,
    finds: [Coalescer<Read, Vec<(String, Row)>>; 2],
    /// Announces the progress of projections whose pages wrote nothing.
    progress: PgNotifier,
}

impl PostgresDocuments {
    /// Connects to the database at `url`, in `schema`, and creates the tables if missing.
    pub(super) async fn connect(url: &str, schema: &str) -> Result<Self> {
        let search_path = format!("SET search_path TO \"{}\"", schema.replace('"', ""));
        let pool = cqrs_sql::pg_pool_options()
            .max_connections(8)
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(search_path)).await?;
                    Ok(())
                })
            })
            // As the event store's connections: statements over arrays planned once, not at
            // every execution, and nothing compiled.
            .connect_with(
                PgConnectOptions::from_str(url)
                    .map_err(db_error)?
                    .options([("jit", "off"), ("plan_cache_mode", "force_generic_plan")]),
            )
            .await
            .map_err(db_error)?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await.map_err(db_error)?;
        }
        sqlx::raw_sql(ROOM_FOR_UPDATES)
            .execute(&pool)
            .await
            .map_err(db_error)?;
        // The coalesced reads (one statement of each kind at a time), the commits and the
        // checkpoint reads of a projection runner or two: a connection for each.
        let kept = KeptConnections::new(pool.clone(), KEPT_CONNECTIONS);
        let gets = Coalescer::start("document reader", MAX_READS, READS_IN_FLIGHT, {
            let kept = kept.clone();
            move |reads| get_many(kept.clone(), reads)
        });
        let finds = [FIND_IX1_MANY, FIND_IX2_MANY].map(|sql| {
            let kept = kept.clone();
            Coalescer::start("document finder", MAX_READS, READS_IN_FLIGHT, move |reads| {
                find_many(kept.clone(), sql, reads)
            })
        });
        let published = format!("{schema}\n{}", uuid::Uuid::now_v7().simple()).into();
        let schema: Arc<str> = schema.into();
        let progress = PgNotifier::start(kept.clone(), PROGRESS_GATHER);
        Ok(Self {
            pool,
            kept,
            schema,
            published,
            gets,
            finds,
            progress,
        })
    }

    /// Tells `changes` of the commits and publications the other processes announce, from a task
    /// of its own that listens for as long as the process runs (and reconnects when the
    /// connection drops).
    pub(super) async fn listen(&self, changes: Arc<Changes>) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db_error)?;
        listener
            .listen_all([COMMITS_CHANNEL, PUBLISHED_CHANNEL])
            .await
            .map_err(db_error)?;
        let schema = Arc::clone(&self.schema);
        let own = Arc::clone(&self.published);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) if notification.channel() == PUBLISHED_CHANNEL => {
                        // Another process's, of this schema: this process's own woke its
                        // projections already.
                        let payload = notification.payload();
                        if payload != &*own && payload.split_once('\n').is_some_and(|(of, _)| of == &*schema)
                        {
                            changes.published_elsewhere();
                        }
                    }
                    Ok(notification) => {
                        if let Some(announcement) = Announcement::read(notification.payload(), &schema) {
                            changes.committed_elsewhere(&announcement);
                        }
                    }
                    Err(error) => {
                        // Commits may have gone unannounced meanwhile.
                        changes.forget();
                        tracing::warn!(%error, "LISTEN connection for read-model commits lost; reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(())
    }

    /// Which generation of each model serves.
    pub(super) async fn generations(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(LOAD_GENERATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    /// Makes `generation` of `models` the one that serves, in one transaction.
    pub(super) async fn set_generation(&self, models: &[&str], generation: i64) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for model in models {
            sqlx::query(SET_GENERATION)
                .bind(*model)
                .bind(generation)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }

    /// Deletes every document stored under `name`; answers how many.
    pub(super) async fn drop_model(&self, name: &str) -> Result<u64> {
        Ok(sqlx::query(DROP_MODEL)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_error)?
            .rows_affected())
    }

    /// Deletes the checkpoint `name`.
    pub(super) async fn drop_checkpoint(&self, name: &str) -> Result<()> {
        sqlx::query(DROP_CHECKPOINT)
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Every document stored under `name`, as `(key, JSON)`, in key order.
    pub(super) async fn dump(&self, name: &str) -> Result<Vec<(String, String)>> {
        sqlx::query_as(DUMP)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    /// The document `key` stored under `model`, read with whatever other reads wait.
    pub(super) async fn get(&self, model: &str, key: &str) -> Result<Option<Row>> {
        self.gets.call((model.to_owned(), key.to_owned())).await
    }

    /// The `(key, document)` pairs of `model` whose `index` column is `value`, read with
    /// whatever other lookups of that index wait.
    pub(super) async fn find(&self, index: Index, model: &str, value: &str) -> Result<Vec<(String, Row)>> {
        let finds = match index {
            Index::One => &self.finds[0],
            Index::Two => &self.finds[1],
        };
        finds.call((model.to_owned(), value.to_owned())).await
    }

    /// Applies `writes` and moves `checkpoint`, if any, in one statement ([`COMMIT`]) that also
    /// announces them to the other processes. A checkpoint moved by another runner first is a
    /// conflict, and nothing is written.
    pub(super) async fn commit(&self, writes: &Writes, checkpoint: Option<&Checkpoint<'_>>) -> Result<()> {
        let (mut models, mut keys, mut docs, mut ix1s, mut ix2s) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut gone_models, mut gone_keys) = (vec![], vec![]);
        for ((model, key), row) in writes {
            match row {
                Some(row) => {
                    models.push(model.as_str());
                    keys.push(key.as_str());
                    docs.push(row.doc.as_str());
                    ix1s.push(row.ix1.as_deref());
                    ix2s.push(row.ix2.as_deref());
                }
                None => {
                    gone_models.push(model.as_str());
                    gone_keys.push(key.as_str());
                }
            }
        }
        let stored = checkpoint.map(Checkpoint::stored).transpose()?;
        let announcement = Announcement::write(
            &self.schema,
            checkpoint.map(|c| (c.name, c.position)),
            writes.keys().map(|(model, key)| (model.as_str(), key.as_str())),
        );
        let moved = sqlx::query(COMMIT)
            .bind(models)
            .bind(keys)
            .bind(docs)
            .bind(ix1s)
            .bind(ix2s)
            .bind(gone_models)
            .bind(gone_keys)
            .bind(checkpoint.map(|c| c.name))
            .bind(stored.map(|(position, _)| position))
            .bind(stored.and_then(|(_, read)| read))
            .bind(COMMITS_CHANNEL)
            .bind(announcement)
            .fetch_all_on(&self.kept)
            .await
            .map_err(db_error)?;
        match (moved.len(), checkpoint) {
            (1, _) => Ok(()),
            (_, Some(checkpoint)) => Err(checkpoint.conflict()),
            (rows, None) => Err(cqrs_core::Error::permanent(format!(
                "a commit without a checkpoint answered {rows} rows"
            ))),
        }
    }

    /// Announces, soon, that projection `checkpoint` applied the log up to `position` without
    /// writing: with the other projections' progress of the moment, in one statement, each
    /// projection once, at the position it announced last (a projection's runner announces its
    /// positions in order). Best effort: a lost announcement only delays a waiter until the
    /// next one.
    pub(super) fn announce_applied(&self, checkpoint: &str, position: u64) {
        let announcement = Announcement::write(&self.schema, Some((checkpoint, position)), []);
        self.progress.notify(COMMITS_CHANNEL, checkpoint, announcement);
    }

    /// Announces, soon, that a publisher of this process published events: once a round, with
    /// the projections' progress of the moment.
    pub(super) fn announce_published(&self) {
        self.progress
            .notify(PUBLISHED_CHANNEL, "published", self.published.to_string());
    }

    /// The stored position of checkpoint `name`.
    pub(super) async fn checkpoint(&self, name: &str) -> Result<Option<i64>> {
        let rows = self
            .kept
            .fetch_all_again(|| sqlx::query(LOAD_CHECKPOINT).bind(name))
            .await
            .map_err(db_error)?;
        rows.first()
            .map(|row| row.try_get::<i64, _>(0))
            .transpose()
            .map_err(db_error)
    }
}

/// The models and keys (or values) of `reads`, as the two arrays of a `…_MANY` statement.
fn columns(reads: &[Read]) -> (Vec<&str>, Vec<&str>) {
    reads.iter().map(|(m, k)| (m.as_str(), k.as_str())).unzip()
}

/// Which request (counted from 1 in column 0 of `row`) of the `count` asked a row answers.
fn request(row: &PgRow, count: usize) -> Result<usize> {
    let idx: i64 = row.get(0);
    usize::try_from(idx - 1)
        .ok()
        .filter(|i| *i < count)
        .ok_or_else(|| cqrs_core::Error::permanent(format!("a document read answered request {idx}")))
}

async fn get_many(kept: KeptConnections, reads: Vec<Read>) -> Result<Vec<Option<Row>>> {
    let (models, keys) = columns(&reads);
    let rows = kept
        .fetch_all_again(|| sqlx::query(GET_MANY).bind(&models).bind(&keys))
        .await
        .map_err(db_error)?;
    let mut found = vec![None; reads.len()];
    for r in &rows {
        found[request(r, reads.len())?] = Some(row(r, 1));
    }
    Ok(found)
}

async fn find_many(
    kept: KeptConnections,
    sql: &'static str,
    reads: Vec<Read>,
) -> Result<Vec<Vec<(String, Row)>>> {
    let (models, values) = columns(&reads);
    let rows = kept
        .fetch_all_again(|| sqlx::query(sql).bind(&models).bind(&values))
        .await
        .map_err(db_error)?;
    let mut found = vec![Vec::new(); reads.len()];
    for r in &rows {
        found[request(r, reads.len())?].push((r.get(1), row(r, 2)));
    }
    Ok(found)
}

/// The document in the columns `doc, ix1, ix2` of `row`, from column `first` on.
fn row(row: &PgRow, first: usize) -> Row {
    Row {
        doc: row.get(first),
        ix1: row.get(first + 1),
        ix2: row.get(first + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test database, or `None` (with a notice) without `CQRS_TEST_POSTGRES_URL`.
    fn url() -> Option<String> {
        let url = std::env::var("CQRS_TEST_POSTGRES_URL").ok();
        if url.is_none() {
            assert!(
                std::env::var_os("CQRS_TEST_POSTGRES_REQUIRED").is_none(),
                "CQRS_TEST_POSTGRES_REQUIRED is set but CQRS_TEST_POSTGRES_URL is not"
            );
            eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; PostgreSQL index test skipped");
        }
        url
    }

    /// A schema holding the documents table as it was before its index columns were indexed
    /// only where set: connecting replaces the full indexes, and each lookup, planned once for
    /// every value (as the pool plans), seeks its new index.
    #[tokio::test]
    async fn index_lookups_seek_indexes_of_the_set_values_only() {
        let Some(url) = url() else { return };
        let schema = format!("cqrs_test_ix_{}", uuid::Uuid::new_v4().simple());
        let admin = PgPool::connect(&url).await.unwrap();
        let in_schema = |sql: &str| sqlx::AssertSqlSafe(format!("SET search_path TO \"{schema}\"; {sql}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::raw_sql(in_schema(
            "CREATE TABLE rm_documents (model TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL, \
             ix1 TEXT, ix2 TEXT, PRIMARY KEY (model, key)); \
             CREATE INDEX rm_documents_ix1 ON rm_documents (model, ix1); \
             CREATE INDEX rm_documents_ix2 ON rm_documents (model, ix2)",
        ))
        .execute(&admin)
        .await
        .unwrap();

        PostgresDocuments::connect(&url, &schema).await.unwrap();

        let indexes: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname <> \
             'rm_documents_pkey' AND tablename = 'rm_documents' ORDER BY 1",
        )
        .bind(&schema)
        .fetch_all(&admin)
        .await
        .unwrap();
        let names: Vec<&str> = indexes.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["rm_documents_ix1_set", "rm_documents_ix2_set"]);
        assert!(indexes[0].1.ends_with("WHERE (ix1 IS NOT NULL)"), "{indexes:?}");
        assert!(indexes[1].1.ends_with("WHERE (ix2 IS NOT NULL)"), "{indexes:?}");

        let mut conn = admin.acquire().await.unwrap();
        sqlx::raw_sql(in_schema(
            "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; SET enable_bitmapscan = off",
        ))
        .execute(&mut *conn)
        .await
        .unwrap();
        for (n, (sql, index)) in [
            (FIND_IX1_MANY, "rm_documents_ix1_set"),
            (FIND_IX2_MANY, "rm_documents_ix2_set"),
        ]
        .into_iter()
        .enumerate()
        {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "PREPARE find{n} (text[], text[]) AS {sql}"
            )))
            .execute(&mut *conn)
            .await
            .unwrap();
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "EXPLAIN EXECUTE find{n} ('{{payment}}', '{{an order}}')"
            )))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
            assert!(plan.iter().any(|line| line.contains(index)), "{sql}: {plan:#?}");
        }
        drop(conn);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA \"{schema}\" CASCADE")))
            .execute(&admin)
            .await
            .unwrap();
    }
}
