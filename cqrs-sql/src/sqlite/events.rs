//! Event store, outbox and snapshots on SQLite.

use std::sync::Arc;

use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AppendResult, Error, EventAppender, EventMetadata, EventOutbox, EventReader, ExpectedVersion, NewEvent,
    Payload, Result, SharedClock, Snapshot, SnapshotStore, StoredEvent, StreamId,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::Notify;

use super::{SqliteStore, codec, direct, sql, timestamp};
use crate::error::{corrupt, db};
use crate::group::{self, AppendRequest, BatchWriter};

/// Events per INSERT statement: 10 parameters each, well under SQLite's variable limit.
const ROWS_PER_INSERT: usize = 500;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(sql::INSERT_EVENTS.len() + rows * (sql::EVENT_ROW.len() + 2) + 20);
    sql.push_str(sql::INSERT_EVENTS);
    sql::push_rows(&mut sql, sql::EVENT_ROW, rows);
    sql.push_str(sql::RETURNING_POSITION);
    sql
}

/// One event from a row of [`sql::LOAD_STREAM`]'s columns, in their order.
fn event(row: &rusqlite::Row<'_>) -> Result<StoredEvent> {
    fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize, what: &str) -> Result<&'r str> {
        row.get_ref(column)
            .map_err(direct::error)?
            .as_str()
            .map_err(|e| corrupt(what, e))
    }
    fn integer(row: &rusqlite::Row<'_>, column: usize, what: &str) -> Result<i64> {
        row.get_ref(column)
            .map_err(direct::error)?
            .as_i64()
            .map_err(|e| corrupt(what, e))
    }
    let payload = row.get_ref(8).map_err(direct::error)?;
    Ok(StoredEvent {
        position: integer(row, 0, "position")? as u64,
        event_id: Uuid::parse_str(text(row, 1, "event id")?).map_err(|e| corrupt("event id", e))?,
        stream_id: StreamId::new(text(row, 2, "stream id")?),
        stream_type: text(row, 3, "stream type")?.to_owned(),
        version: integer(row, 4, "version")?,
        payload: Payload {
            name: text(row, 5, "event name")?.to_owned(),
            schema_version: integer(row, 6, "schema version")? as u32,
            codec: direct::codec(row, 7)?,
            bytes: payload
                .as_blob()
                .map_err(|e| corrupt("payload", e))?
                .to_vec()
                .into(),
        },
        metadata: serde_json::from_str::<EventMetadata>(text(row, 9, "event metadata")?)
            .map_err(|e| corrupt("event metadata", e))?,
        recorded_at: timestamp(integer(row, 10, "recorded time")?)?,
    })
}

impl SqliteStore {
    /// Runs a query of the event columns on a reader, decoding the rows as they are stepped.
    async fn read_events(&self, query: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEvent>> {
        self.read(|db| direct::query(db, query, params, event)).await
    }
}

impl EventReader for SqliteStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::LOAD_STREAM, (stream.as_str(), from_version))
            .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::READ_ALL, (after as i64, limit as i64))
            .await
    }
}

/// Writes batches of appends through the single writer connection, one `BEGIN IMMEDIATE`
/// transaction (and one durable commit) per batch.
#[derive(Clone)]
pub(super) struct SqliteAppender {
    pub(super) writer: SqlitePool,
    pub(super) clock: SharedClock,
    pub(super) appended: Arc<Notify>,
}

/// SQLite's limit on bound parameters per statement (32,766) leaves room for this many events
/// (8 parameters each) in a one-statement batch.
pub(super) const MAX_STATEMENT_EVENTS: usize = 3_000;

fn batch_sql(appends: usize, events: usize) -> String {
    let mut sql = String::with_capacity(800 + appends * 14 + events * 26);
    sql.push_str(sql::BATCH_APPEND_HEAD);
    sql::push_rows(&mut sql, sql::BATCH_APPEND_ROW, appends);
    sql.push_str(sql::BATCH_APPEND_ROWS);
    sql::push_rows(&mut sql, sql::BATCH_EVENT_ROW, events);
    sql.push_str(sql::BATCH_APPEND_TAIL);
    sql
}

impl SqliteAppender {
    async fn try_write(&self, batch: &[AppendRequest]) -> Result<Vec<Result<AppendResult>>> {
        let events: usize = batch.iter().map(|r| r.events.len()).sum();
        let results = if events == 0 || events > MAX_STATEMENT_EVENTS {
            self.write_in_transaction(batch).await?
        } else {
            self.write_in_one_statement(batch, events).await?
        };
        if results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|a| a.last_position > 0))
        {
            self.appended.notify_one();
        }
        Ok(results)
    }

    /// The common case: every append of the batch in one autocommit statement (atomic), one
    /// round trip to SQLite and one durable commit.
    async fn write_in_one_statement(
        &self,
        batch: &[AppendRequest],
        events: usize,
    ) -> Result<Vec<Result<AppendResult>>> {
        let recorded_at = self.clock.now().timestamp_micros();
        let mut query = sqlx::query(AssertSqlSafe(batch_sql(batch.len(), events)));
        for (idx, request) in batch.iter().enumerate() {
            query = query
                .bind(idx as i64)
                .bind(request.stream.as_str())
                .bind(request.stream_type.as_str())
                .bind(match request.expected {
                    ExpectedVersion::Any => None,
                    ExpectedVersion::Exact(v) => Some(v),
                });
        }
        for (idx, request) in batch.iter().enumerate() {
            for (n, event) in request.events.iter().enumerate() {
                let metadata = serde_json::to_string(&event.metadata).map_err(Error::permanent)?;
                query = query
                    .bind(idx as i64)
                    .bind(n as i64 + 1)
                    .bind(event.event_id.to_string())
                    .bind(event.payload.name.as_str())
                    .bind(i64::from(event.payload.schema_version))
                    .bind(event.payload.codec.tag())
                    .bind(event.payload.bytes.to_vec())
                    .bind(metadata);
            }
        }
        let rows = query
            .bind(recorded_at)
            .fetch_all(&self.writer)
            .await
            .map_err(db)?;
        let mut written: std::collections::HashMap<String, AppendResult> = std::collections::HashMap::new();
        for row in &rows {
            let stream: String = row.try_get("stream_id").map_err(db)?;
            let position: i64 = row.try_get("position").map_err(db)?;
            let version: i64 = row.try_get("version").map_err(db)?;
            let entry = written.entry(stream).or_insert(AppendResult {
                last_version: version,
                last_position: 0,
            });
            entry.last_version = entry.last_version.max(version);
            entry.last_position = entry.last_position.max(position as u64);
        }
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            results.push(match written.remove(request.stream.as_str()) {
                Some(result) => Ok(result),
                None => {
                    let actual: i64 = sqlx::query_scalar(sql::STREAM_VERSION)
                        .bind(request.stream.as_str())
                        .fetch_one(&self.writer)
                        .await
                        .map_err(db)?;
                    if request.events.is_empty() && request.expected.matches(actual) {
                        Ok(AppendResult {
                            last_version: actual,
                            last_position: 0,
                        })
                    } else {
                        Err(Error::Conflict {
                            stream: request.stream.to_string(),
                            expected: request.expected,
                            actual,
                        })
                    }
                }
            });
        }
        Ok(results)
    }

    /// Batches too large for one statement: a `BEGIN IMMEDIATE` transaction, appends checked and
    /// inserted one after the other in chunks.
    async fn write_in_transaction(&self, batch: &[AppendRequest]) -> Result<Vec<Result<AppendResult>>> {
        let recorded_at = self.clock.now().timestamp_micros();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let mut results = Vec::with_capacity(batch.len());
        for request in batch {
            results.push(append_in(&mut tx, request, recorded_at).await?);
        }
        tx.commit().await.map_err(db)?;
        Ok(results)
    }
}

impl BatchWriter for SqliteAppender {
    async fn write(&self, batch: &[AppendRequest]) -> Vec<Result<AppendResult>> {
        match self.try_write(batch).await {
            Ok(results) => results,
            Err(error) => batch.iter().map(|_| Err(group::shared_failure(&error))).collect(),
        }
    }
}

/// One append inside the batch's transaction: the outer error aborts the batch, the inner one
/// (a conflict) fails only this append.
async fn append_in(
    tx: &mut Transaction<'static, Sqlite>,
    request: &AppendRequest,
    recorded_at: i64,
) -> Result<Result<AppendResult>> {
    let stream = request.stream.as_str();
    let actual: i64 = sqlx::query_scalar(sql::STREAM_VERSION)
        .bind(stream)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
    if !request.expected.matches(actual) {
        return Ok(Err(Error::Conflict {
            stream: stream.to_owned(),
            expected: request.expected,
            actual,
        }));
    }
    let mut version = actual;
    let mut last_position = 0;
    for chunk in request.events.chunks(ROWS_PER_INSERT) {
        let mut query = sqlx::query(AssertSqlSafe(insert_sql(chunk.len())));
        for event in chunk {
            version += 1;
            let metadata = serde_json::to_string(&event.metadata).map_err(Error::permanent)?;
            query = query
                .bind(event.event_id.to_string())
                .bind(stream)
                .bind(request.stream_type.as_str())
                .bind(version)
                .bind(event.payload.name.as_str())
                .bind(i64::from(event.payload.schema_version))
                .bind(event.payload.codec.tag())
                .bind(event.payload.bytes.to_vec())
                .bind(metadata);
            query = query.bind(recorded_at);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db)? {
            last_position = last_position.max(row.try_get::<i64, _>(0).map_err(db)?);
        }
    }
    Ok(Ok(AppendResult {
        last_version: version,
        last_position: last_position as u64,
    }))
}

impl EventAppender for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let request = AppendRequest {
            stream: stream.clone(),
            stream_type: stream_type.to_owned(),
            expected,
            events,
        };
        match &self.inner.group {
            Some(group) => group.append(request).await,
            None => {
                let mut results = self.inner.appender.write(std::slice::from_ref(&request)).await;
                results.pop().expect("one result per append")
            }
        }
    }
}

impl EventOutbox for SqliteStore {
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::UNPUBLISHED, [limit as i64]).await
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        self.execute(sql::MARK_PUBLISHED, (stream.as_str().to_owned(), version))
            .await
            .map(drop)
    }

    /// One write of the batch, a statement per stream.
    async fn mark_published_many(&self, marks: &[(StreamId, i64)]) -> Result<()> {
        let marks = marks
            .iter()
            .map(|(stream, version)| (stream.as_str().to_owned(), *version))
            .collect();
        self.execute_each(sql::MARK_PUBLISHED, marks).await.map(drop)
    }

    async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}

impl SnapshotStore for SqliteStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let Some(row) = sqlx::query(sql::LOAD_SNAPSHOT)
            .bind(stream.as_str())
            .fetch_optional(self.reader())
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: row.try_get("version").map_err(db)?,
            schema_version: row.try_get::<i64, _>("schema_version").map_err(db)? as u32,
            codec: codec(&row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("bytes").map_err(db)?.into(),
            taken_at: timestamp(row.try_get("taken_at").map_err(db)?)?,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.execute(
            sql::SAVE_SNAPSHOT,
            (
                snapshot.stream_id.as_str().to_owned(),
                snapshot.version,
                i64::from(snapshot.schema_version),
                snapshot.codec.tag(),
                snapshot.bytes.to_vec(),
                snapshot.taken_at.timestamp_micros(),
            ),
        )
        .await
        .map(drop)
    }
}
