//! Event store, outbox and snapshots on SQLite.

use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AppendResult, Error, EventAppender, EventMetadata, EventOutbox, EventReader, ExpectedVersion, NewEvent,
    Payload, Result, Snapshot, SnapshotStore, StoredEvent, StreamId,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row};

use super::{SqliteStore, codec, sql, timestamp};
use crate::error::{corrupt, db};

/// Events per INSERT statement: 10 parameters each, well under SQLite's variable limit.
const ROWS_PER_INSERT: usize = 500;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(sql::INSERT_EVENTS.len() + rows * (sql::EVENT_ROW.len() + 2) + 20);
    sql.push_str(sql::INSERT_EVENTS);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(sql::EVENT_ROW);
    }
    sql.push_str(sql::RETURNING_POSITION);
    sql
}

fn event(row: &SqliteRow) -> Result<StoredEvent> {
    let event_id: String = row.try_get("event_id").map_err(db)?;
    let metadata: String = row.try_get("metadata").map_err(db)?;
    Ok(StoredEvent {
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event id", e))?,
        stream_id: StreamId::new(row.try_get::<String, _>("stream_id").map_err(db)?),
        stream_type: row.try_get("stream_type").map_err(db)?,
        version: row.try_get("version").map_err(db)?,
        position: row.try_get::<i64, _>("position").map_err(db)? as u64,
        payload: Payload {
            name: row.try_get("name").map_err(db)?,
            schema_version: row.try_get::<i64, _>("schema_version").map_err(db)? as u32,
            codec: codec(row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
        },
        metadata: serde_json::from_str::<EventMetadata>(&metadata)
            .map_err(|e| corrupt("event metadata", e))?,
        recorded_at: timestamp(row.try_get("recorded_at").map_err(db)?)?,
    })
}

fn events(rows: &[SqliteRow]) -> Result<Vec<StoredEvent>> {
    rows.iter().map(event).collect()
}

impl EventReader for SqliteStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::LOAD_STREAM)
            .bind(stream.as_str())
            .bind(from_version)
            .fetch_all(self.reader())
            .await
            .map_err(db)?;
        events(&rows)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::READ_ALL)
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(self.reader())
            .await
            .map_err(db)?;
        events(&rows)
    }
}

impl EventAppender for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let recorded_at = self.now_micros();
        let rows: Vec<(String, String)> = events
            .iter()
            .map(|e| {
                let metadata = serde_json::to_string(&e.metadata).map_err(Error::permanent)?;
                Ok((e.event_id.to_string(), metadata))
            })
            .collect::<Result<_>>()?;
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let actual: i64 = sqlx::query_scalar(sql::STREAM_VERSION)
            .bind(stream.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        if !expected.matches(actual) {
            return Err(Error::Conflict {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        let mut version = actual;
        let mut last_position = 0;
        for (chunk, ids) in events.chunks(ROWS_PER_INSERT).zip(rows.chunks(ROWS_PER_INSERT)) {
            let statement = insert_sql(chunk.len());
            let mut query = sqlx::query(AssertSqlSafe(statement));
            for (event, (event_id, metadata)) in chunk.iter().zip(ids) {
                version += 1;
                query = query
                    .bind(event_id.as_str())
                    .bind(stream.as_str())
                    .bind(stream_type)
                    .bind(version)
                    .bind(event.payload.name.as_str())
                    .bind(i64::from(event.payload.schema_version))
                    .bind(event.payload.codec.tag())
                    .bind(event.payload.bytes.as_ref())
                    .bind(metadata.as_str())
                    .bind(recorded_at);
            }
            let positions: Vec<i64> = query
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?
                .iter()
                .map(|row| row.try_get(0))
                .collect::<Result<_, _>>()
                .map_err(db)?;
            last_position = last_position.max(positions.into_iter().max().unwrap_or(0));
        }
        tx.commit().await.map_err(db)?;
        if !events.is_empty() {
            self.inner.appended.notify_one();
        }
        Ok(AppendResult {
            last_version: version,
            last_position: last_position as u64,
        })
    }
}

impl EventOutbox for SqliteStore {
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::UNPUBLISHED)
            .bind(limit as i64)
            .fetch_all(self.reader())
            .await
            .map_err(db)?;
        events(&rows)
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        sqlx::query(sql::MARK_PUBLISHED)
            .bind(stream.as_str())
            .bind(version)
            .execute(self.writer())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}

impl SnapshotStore for SqliteStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
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

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(sql::SAVE_SNAPSHOT)
            .bind(snapshot.stream_id.as_str())
            .bind(snapshot.version)
            .bind(i64::from(snapshot.schema_version))
            .bind(snapshot.codec.tag())
            .bind(snapshot.bytes.as_ref())
            .bind(snapshot.taken_at.timestamp_micros())
            .execute(self.writer())
            .await
            .map_err(db)?;
        Ok(())
    }
}
