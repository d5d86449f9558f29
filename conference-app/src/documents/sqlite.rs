//! The read models on SQLite: one writer connection and a few readers, all `rusqlite`
//! connections used on the calling thread.
//!
//! The writes first went through a sqlx connection, whose every statement (the `BEGIN`, each
//! document, the checkpoint, the `COMMIT`) is a round trip to a worker thread of its own: under
//! load, that thread and the wake-ups of its channel took a seventh of the server's CPU. The
//! writer here runs a whole commit inline, behind an async lock so that the projections'
//! commits queue in the process instead of colliding on SQLite's write lock. Commits are not
//! synced (`synchronous = NORMAL`: the read models are rebuilt from the log, and a checkpoint
//! never runs ahead of the documents it covers, as both commit together), so a commit costs
//! no disk wait; SQLite's WAL checkpoints, every 1,000 pages written, sync the file.

use std::path::Path;
use std::time::Duration;

use cqrs_core::{Error, Result};
use cqrs_sql::rusqlite::{
    CachedStatement, Connection, ErrorCode, OpenFlags, Row, ToSql, Transaction, TransactionBehavior,
};
use cqrs_sql::{SqliteReaders, sqlite_error};
use tokio::sync::Mutex;

use super::{
    ADVANCE_CHECKPOINT, Checkpoint, DELETE, DROP_CHECKPOINT, DROP_MODEL, DUMP, FIND_IX1, FIND_IX2, GET,
    INSERT_CHECKPOINT, Index, LOAD_CHECKPOINT, LOAD_GENERATIONS, PUT, SET_GENERATION, Writes,
};

/// How long a statement waits for a lock held by another process (a rebuild, say).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two attempts at the write lock.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// The readers and the writer of the read models' SQLite file.
#[derive(Debug)]
pub(super) struct SqliteDocuments {
    readers: SqliteReaders,
    writer: Mutex<Connection>,
}

impl SqliteDocuments {
    /// Opens the file at `path` (created if missing) in WAL mode and runs `schema` on it.
    pub(super) fn open(path: &Path, schema: &[&str]) -> Result<Self> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let writer = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_error)?;
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;",
            )
            .map_err(sqlite_error)?;
        for statement in schema {
            writer.execute_batch(statement).map_err(sqlite_error)?;
        }
        // From now on a write that finds the lock taken waits asleep, not in the busy handler
        // on the tokio worker's thread (see `write`).
        writer.busy_timeout(Duration::ZERO).map_err(sqlite_error)?;
        Ok(Self {
            readers: SqliteReaders::new(path, 4).busy_timeout(BUSY_TIMEOUT),
            writer: Mutex::new(writer),
        })
    }

    /// Runs `work` on a reader.
    async fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.readers.read(work).await
    }

    /// Runs `work` in a transaction of the writer (taking SQLite's write lock at once), and
    /// commits it when `work` succeeds; rolls it back when it fails.
    ///
    /// While another process holds the write lock (a rebuild, say), the task sleeps between
    /// attempts, from 1 ms to 50 ms apart, for up to 10 s; then the error is transient. The
    /// other tasks of its thread run meanwhile.
    async fn write<T>(&self, work: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut writer = self.writer.lock().await;
        let deadline = tokio::time::Instant::now() + BUSY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let error = match writer.transaction_with_behavior(TransactionBehavior::Immediate) {
                Ok(tx) => {
                    let answer = work(&tx)?;
                    tx.commit().map_err(sqlite_error)?;
                    return Ok(answer);
                }
                Err(error) => error,
            };
            if error.sqlite_error_code() != Some(ErrorCode::DatabaseBusy)
                || tokio::time::Instant::now() + pause >= deadline
            {
                return Err(sqlite_error(error));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// Which generation of each model serves.
    pub(super) async fn generations(&self) -> Result<Vec<(String, i64)>> {
        self.read(|r| query(r, LOAD_GENERATIONS, &[], |row| Ok((row.get(0)?, row.get(1)?))))
            .await
    }

    /// Makes `generation` of `models` the one that serves, in one transaction.
    pub(super) async fn set_generation(&self, models: &[&str], generation: i64) -> Result<()> {
        self.write(|tx| {
            for model in models {
                execute(tx, SET_GENERATION, &[model, &generation])?;
            }
            Ok(())
        })
        .await
    }

    /// Deletes every document stored under `name`; answers how many.
    pub(super) async fn drop_model(&self, name: &str) -> Result<u64> {
        Ok(self.write(|tx| execute(tx, DROP_MODEL, &[&name])).await? as u64)
    }

    /// Deletes the checkpoint `name`.
    pub(super) async fn drop_checkpoint(&self, name: &str) -> Result<()> {
        self.write(|tx| execute(tx, DROP_CHECKPOINT, &[&name])).await?;
        Ok(())
    }

    /// Every document stored under `name`, as `(key, JSON)`, in key order.
    pub(super) async fn dump(&self, name: &str) -> Result<Vec<(String, String)>> {
        self.read(|r| query(r, DUMP, &[&name], |row| Ok((row.get(0)?, row.get(1)?))))
            .await
    }

    /// The document `key` stored under `model`.
    pub(super) async fn get(&self, model: &str, key: &str) -> Result<Option<super::Row>> {
        self.read(|r| first(r, GET, &[&model, &key], |row| document(row, 0)))
            .await
    }

    /// The `(key, document)` pairs of `model` whose `index` column is `value`.
    pub(super) async fn find(
        &self,
        index: Index,
        model: &str,
        value: &str,
    ) -> Result<Vec<(String, super::Row)>> {
        let sql = match index {
            Index::One => FIND_IX1,
            Index::Two => FIND_IX2,
        };
        self.read(|r| {
            query(r, sql, &[&model, &value], |row| {
                Ok((row.get(0)?, document(row, 1)?))
            })
        })
        .await
    }

    /// Applies `writes` and moves `checkpoint`, if any, in one transaction. A checkpoint moved
    /// by another runner first is a conflict, and nothing is written.
    pub(super) async fn commit(&self, writes: &Writes, checkpoint: Option<&Checkpoint<'_>>) -> Result<()> {
        self.write(|tx| {
            for ((model, key), row) in writes {
                match row {
                    Some(row) => execute(tx, PUT, &[model, key, &row.doc, &row.ix1, &row.ix2])?,
                    None => execute(tx, DELETE, &[model, key])?,
                };
            }
            if let Some(checkpoint) = checkpoint {
                let (position, read) = checkpoint.stored()?;
                let moved = match read {
                    None => execute(tx, INSERT_CHECKPOINT, &[&checkpoint.name, &position])?,
                    Some(read) => execute(tx, ADVANCE_CHECKPOINT, &[&checkpoint.name, &position, &read])?,
                };
                if moved != 1 {
                    return Err(checkpoint.conflict());
                }
            }
            Ok(())
        })
        .await
    }

    /// The stored position of checkpoint `name`.
    pub(super) async fn checkpoint(&self, name: &str) -> Result<Option<i64>> {
        self.read(|r| first(r, LOAD_CHECKPOINT, &[&name], |row| row.get(0)))
            .await
    }
}

/// The document in the columns `doc, ix1, ix2` of `row`, from column `first` on.
fn document(row: &Row<'_>, first: usize) -> cqrs_sql::rusqlite::Result<super::Row> {
    Ok(super::Row {
        doc: row.get(first)?,
        ix1: row.get(first + 1)?,
        ix2: row.get(first + 2)?,
    })
}

/// The names SQLite gives `$1`, `$2`, …: such a parameter is numbered in the order it first
/// appears in the text, not by its digits, so a statement shared with PostgreSQL that uses
/// `$2` before `$1` is bound by name.
const NUMBERED: [&str; 5] = ["$1", "$2", "$3", "$4", "$5"];

/// `sql` prepared once per connection, with `values` bound to `$1`, `$2`, … by name (see
/// [`NUMBERED`]); one value for each parameter, or an error.
fn prepared<'c>(db: &'c Connection, sql: &str, values: &[&dyn ToSql]) -> Result<CachedStatement<'c>> {
    let mut statement = db.prepare_cached(sql).map_err(sqlite_error)?;
    if values.len() != statement.parameter_count() || values.len() > NUMBERED.len() {
        return Err(Error::permanent(format!(
            "{} values for the {} parameters of {sql}",
            values.len(),
            statement.parameter_count()
        )));
    }
    for (name, value) in NUMBERED.iter().zip(values) {
        let index = statement
            .parameter_index(name)
            .map_err(sqlite_error)?
            .ok_or_else(|| Error::permanent(format!("no parameter {name} in {sql}")))?;
        statement.raw_bind_parameter(index, value).map_err(sqlite_error)?;
    }
    Ok(statement)
}

/// Runs `sql` with `values` (see [`prepared`]); answers how many rows it changed.
fn execute(db: &Connection, sql: &str, values: &[&dyn ToSql]) -> Result<usize> {
    prepared(db, sql, values)?.raw_execute().map_err(sqlite_error)
}

/// Runs the query `sql` with `values` (see [`prepared`]), converting each row with `convert`.
fn query<T>(
    db: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
    mut convert: impl FnMut(&Row<'_>) -> cqrs_sql::rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = prepared(db, sql, values)?;
    let mut rows = statement.raw_query();
    let mut converted = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        converted.push(convert(row).map_err(sqlite_error)?);
    }
    Ok(converted)
}

/// The first row of the query `sql` with `values` (see [`prepared`]), converted; `None` when
/// there is none. The rows after it are not stepped.
fn first<T>(
    db: &Connection,
    sql: &str,
    values: &[&dyn ToSql],
    convert: impl FnOnce(&Row<'_>) -> cqrs_sql::rusqlite::Result<T>,
) -> Result<Option<T>> {
    let mut statement = prepared(db, sql, values)?;
    let mut rows = statement.raw_query();
    let row = rows.next().map_err(sqlite_error)?;
    row.map(convert).transpose().map_err(sqlite_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index lookup seeks its index. A plan that walks the model's documents instead costs
    /// time in proportion to the model's size, which grows with every order.
    #[test]
    fn index_lookups_seek_their_index_on_sqlite() {
        let db = cqrs_sql::rusqlite::Connection::open_in_memory().unwrap();
        for statement in super::super::SCHEMA {
            db.execute(statement, ()).unwrap();
        }
        for (sql, index) in [
            (super::super::FIND_IX1, "rm_documents_ix1_set"),
            (super::super::FIND_IX2, "rm_documents_ix2_set"),
        ] {
            let mut explain = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = explain
                .query_map(("payment", "an order"), |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(plan.iter().any(|step| step.contains(index)), "{sql}: {plan:?}");
        }
    }

    /// A fresh file with `table`; the directory goes with the returned guard.
    fn documents(table: &str) -> (tempfile::TempDir, SqliteDocuments) {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDocuments::open(&dir.path().join("documents.db"), &[table]).unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn numbered_parameters_bind_by_their_digits_whatever_their_order() {
        let (_dir, db) = documents("CREATE TABLE t (name TEXT PRIMARY KEY, n BIGINT NOT NULL)");
        db.write(|tx| execute(tx, "INSERT INTO t (name, n) VALUES ($1, $2)", &[&"a", &1]))
            .await
            .unwrap();
        // `$2` comes first in the text: bound by position, "a" would go to `n`.
        let moved = db
            .write(|tx| {
                execute(
                    tx,
                    "UPDATE t SET n = $2 WHERE name = $1 AND n = $3",
                    &[&"a", &5, &1],
                )
            })
            .await
            .unwrap();
        assert_eq!(moved, 1);
        let rows = db
            .read(|r| {
                query(r, "SELECT name, n FROM t WHERE n = $1", &[&5], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
            })
            .await
            .unwrap();
        assert_eq!(rows, [("a".to_owned(), 5)]);
    }

    /// On a runtime of one thread, a write waits for another connection's write lock asleep,
    /// so the task that releases it runs. (Waiting in SQLite's busy handler, it would hold the
    /// only thread until the timeout.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_waits_for_another_connection_s_lock_without_holding_the_thread() {
        let (dir, db) = documents("CREATE TABLE t (n BIGINT PRIMARY KEY)");
        let other = Connection::open(dir.path().join("documents.db")).unwrap();
        other
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (n) VALUES (1);")
            .unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            other.execute_batch("COMMIT").unwrap();
        });
        db.write(|tx| execute(tx, "INSERT INTO t (n) VALUES ($1)", &[&2]))
            .await
            .unwrap();
        release.await.unwrap();
        let rows = db
            .read(|r| query(r, "SELECT n FROM t ORDER BY n", &[], |row| row.get::<_, i64>(0)))
            .await
            .unwrap();
        assert_eq!(rows, [1, 2]);
    }

    #[tokio::test]
    async fn a_statement_given_too_few_or_too_many_values_is_refused() {
        let (_dir, db) = documents("CREATE TABLE t (n BIGINT PRIMARY KEY, m BIGINT)");
        for values in [&[&1 as &dyn ToSql][..], &[&1, &2, &3]] {
            let refused = db
                .write(|tx| execute(tx, "INSERT INTO t (n, m) VALUES ($1, $2)", values))
                .await
                .unwrap_err();
            assert!(refused.to_string().contains("parameters"), "{refused}");
        }
        let count = db
            .read(|r| first(r, "SELECT count(*) FROM t", &[], |row| row.get::<_, i64>(0)))
            .await
            .unwrap();
        assert_eq!(count, Some(0));
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let (_dir, db) = documents("CREATE TABLE t (n BIGINT PRIMARY KEY)");
        let failed = db
            .write(|tx| {
                execute(tx, "INSERT INTO t (n) VALUES ($1)", &[&1])?;
                execute(tx, "INSERT INTO t (n) VALUES ($1)", &[&1])
            })
            .await;
        assert!(failed.is_err(), "the second insert breaks the key");
        let count = db
            .read(|r| query(r, "SELECT count(*) FROM t", &[], |row| row.get::<_, i64>(0)))
            .await
            .unwrap();
        assert_eq!(count, [0]);
    }
}
