//! The read models on PostgreSQL: the event store's database, a pool of sqlx connections, and
//! every commit announced with `NOTIFY` so that the long polls of the other processes wake.
//!
//! Each statement is a round trip to the server, so a commit writes all its documents in one
//! statement for the puts and one for the deletes (`UNNEST` of arrays), whatever their number.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::Result;
use cqrs_sql::sqlx_error as db_error;
use sqlx::Row as _;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};

use super::changes::{Announcement, Changes};
use super::{
    ADVANCE_CHECKPOINT, Checkpoint, DROP_CHECKPOINT, DROP_MODEL, DUMP, GET, INSERT_CHECKPOINT,
    LOAD_CHECKPOINT, LOAD_GENERATIONS, Row, SCHEMA, SET_GENERATION, Writes,
};

/// [`PUT`](super::PUT) for several documents, as arrays of models, keys, documents and index
/// values.
const PUT_MANY: &str = "INSERT INTO rm_documents (model, key, doc, ix1, ix2)
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
    ON CONFLICT (model, key) DO UPDATE SET doc = excluded.doc, ix1 = excluded.ix1, ix2 = excluded.ix2";
/// [`DELETE`](super::DELETE) for several documents: arrays of models and keys.
const DELETE_MANY: &str = "DELETE FROM rm_documents d USING UNNEST($1::text[], $2::text[]) AS g(model, key)
    WHERE d.model = g.model AND d.key = g.key";
/// The channel on which commits are announced to every process (payload: an
/// [`Announcement`]).
const COMMITS_CHANNEL: &str = "conference_read_models";
const NOTIFY_COMMIT: &str = "SELECT pg_notify($1, $2)";

/// The pool on the read models' schema, and the schema whose commits it announces.
#[derive(Debug)]
pub(super) struct PostgresDocuments {
    pool: PgPool,
    schema: Arc<str>,
}

impl PostgresDocuments {
    /// Connects to the database at `url`, in `schema`, and creates the tables if missing.
    pub(super) async fn connect(url: &str, schema: &str) -> Result<Self> {
        let search_path = format!("SET search_path TO \"{}\"", schema.replace('"', ""));
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .after_connect(move |conn, _| {
                let search_path = search_path.clone();
                Box::pin(async move {
                    sqlx::Executor::execute(conn, sqlx::AssertSqlSafe(search_path)).await?;
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(db_error)?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await.map_err(db_error)?;
        }
        Ok(Self {
            pool,
            schema: schema.into(),
        })
    }

    /// Tells `changes` of the commits the other processes announce, from a task of its own
    /// that listens for as long as the process runs (and reconnects when the connection drops).
    pub(super) async fn listen(&self, changes: Arc<Changes>) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db_error)?;
        listener.listen(COMMITS_CHANNEL).await.map_err(db_error)?;
        let schema = Arc::clone(&self.schema);
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
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

    /// The document `key` stored under `model`.
    pub(super) async fn get(&self, model: &str, key: &str) -> Result<Option<Row>> {
        Ok(sqlx::query(GET)
            .bind(model)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .map(|r| row(&r, 0)))
    }

    /// The `(key, document)` pairs that the index lookup `sql` finds for `model` and `value`.
    pub(super) async fn find(
        &self,
        sql: &'static str,
        model: &str,
        value: &str,
    ) -> Result<Vec<(String, Row)>> {
        Ok(sqlx::query(sql)
            .bind(model)
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(|r| (r.get(0), row(r, 1)))
            .collect())
    }

    /// Applies `writes` and moves `checkpoint`, if any, in one transaction that also announces
    /// them to the other processes. A checkpoint moved by another runner first is a conflict,
    /// and nothing is written.
    pub(super) async fn commit(&self, writes: &Writes, checkpoint: Option<&Checkpoint<'_>>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        write_rows(&mut tx, writes).await?;
        if let Some(checkpoint) = checkpoint {
            let (position, read) = checkpoint.stored()?;
            let moved = match read {
                None => sqlx::query(INSERT_CHECKPOINT)
                    .bind(checkpoint.name)
                    .bind(position),
                Some(read) => sqlx::query(ADVANCE_CHECKPOINT)
                    .bind(checkpoint.name)
                    .bind(position)
                    .bind(read),
            }
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
            .rows_affected();
            if moved != 1 {
                return Err(checkpoint.conflict());
            }
        }
        sqlx::query(NOTIFY_COMMIT)
            .bind(COMMITS_CHANNEL)
            .bind(Announcement::write(
                &self.schema,
                checkpoint.map(|c| (c.name, c.position)),
                writes.keys().map(|(model, key)| (model.as_str(), key.as_str())),
            ))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// Announces that projection `checkpoint` applied the log up to `position` without writing.
    pub(super) async fn announce_applied(&self, checkpoint: &str, position: u64) -> Result<()> {
        sqlx::query(NOTIFY_COMMIT)
            .bind(COMMITS_CHANNEL)
            .bind(Announcement::write(
                &self.schema,
                Some((checkpoint, position)),
                [],
            ))
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The stored position of checkpoint `name`.
    pub(super) async fn checkpoint(&self, name: &str) -> Result<Option<i64>> {
        sqlx::query_scalar(LOAD_CHECKPOINT)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)
    }
}

/// Applies `writes` within a commit's transaction: one statement for the puts and one for the
/// deletes, whatever their number, as each statement is a round trip to the server.
async fn write_rows(tx: &mut sqlx::PgConnection, writes: &Writes) -> Result<()> {
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
    if !models.is_empty() {
        sqlx::query(PUT_MANY)
            .bind(models)
            .bind(keys)
            .bind(docs)
            .bind(ix1s)
            .bind(ix2s)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    if !gone_models.is_empty() {
        sqlx::query(DELETE_MANY)
            .bind(gone_models)
            .bind(gone_keys)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    Ok(())
}

/// The document in the columns `doc, ix1, ix2` of `row`, from column `first` on.
fn row(row: &PgRow, first: usize) -> Row {
    Row {
        doc: row.get(first),
        ix1: row.get(first + 1),
        ix2: row.get(first + 2),
    }
}
