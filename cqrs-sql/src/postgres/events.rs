//! Event store, outbox and snapshots on PostgreSQL.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::{
    AppendResult, Error, EventAppender, EventMetadata, EventOutbox, EventReader, ExpectedVersion, NewEvent,
    Payload, Result, Snapshot, SnapshotStore, StoredEvent, StreamId,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{PgStore, codec, sql};
use crate::error::{corrupt, db, is_unique_violation};

/// The most events one transaction can append: the position keeps 20 bits for the ordinal.
const MAX_EVENTS_PER_APPEND: usize = (1 << 20) - 1;

fn event(row: &PgRow) -> Result<StoredEvent> {
    let metadata: String = row.try_get("metadata").map_err(db)?;
    Ok(StoredEvent {
        event_id: row.try_get("event_id").map_err(db)?,
        stream_id: StreamId::new(row.try_get::<String, _>("stream_id").map_err(db)?),
        stream_type: row.try_get("stream_type").map_err(db)?,
        version: row.try_get("version").map_err(db)?,
        position: row.try_get::<i64, _>("position").map_err(db)? as u64,
        payload: Payload {
            name: row.try_get("name").map_err(db)?,
            schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
            codec: codec(row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
        },
        metadata: serde_json::from_str::<EventMetadata>(&metadata)
            .map_err(|e| corrupt("event metadata", e))?,
        recorded_at: row.try_get("recorded_at").map_err(db)?,
    })
}

fn events(rows: &[PgRow]) -> Result<Vec<StoredEvent>> {
    rows.iter().map(event).collect()
}

impl PgStore {
    async fn stream_version(&self, stream: &StreamId) -> Result<i64> {
        sqlx::query_scalar(sql::STREAM_VERSION)
            .bind(stream.as_str())
            .fetch_one(self.pool())
            .await
            .map_err(db)
    }
}

impl EventReader for PgStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::LOAD_STREAM)
            .bind(stream.as_str())
            .bind(from_version)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        events(&rows)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::READ_ALL)
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        events(&rows)
    }
}

impl EventAppender for PgStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let expected_version = match expected {
            ExpectedVersion::Any => None,
            ExpectedVersion::Exact(v) => Some(v),
        };
        if events.is_empty() {
            let actual = self.stream_version(stream).await?;
            if !expected.matches(actual) {
                return Err(Error::Conflict {
                    stream: stream.to_string(),
                    expected,
                    actual,
                });
            }
            return Ok(AppendResult {
                last_version: actual,
                last_position: 0,
            });
        }
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(Error::permanent(format!(
                "an append holds at most {MAX_EVENTS_PER_APPEND} events, not {}",
                events.len()
            )));
        }
        let n = events.len();
        let (mut ids, mut names, mut schemas, mut codecs, mut payloads, mut metadata) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for event in events {
            ids.push(event.event_id);
            names.push(event.payload.name);
            schemas.push(event.payload.schema_version as i32);
            codecs.push(event.payload.codec.tag());
            payloads.push(event.payload.bytes.to_vec());
            metadata.push(serde_json::to_string(&event.metadata).map_err(Error::permanent)?);
        }
        let outcome = sqlx::query(sql::APPEND)
            .bind(stream.as_str())
            .bind(stream_type)
            .bind(expected_version)
            .bind(&ids)
            .bind(&names)
            .bind(&schemas)
            .bind(&codecs)
            .bind(&payloads)
            .bind(&metadata)
            .bind(self.now())
            .fetch_one(self.pool())
            .await;
        let row = match outcome {
            Ok(row) => row,
            // Another writer appended the same version between our check and our insert.
            Err(error) if is_unique_violation(&error) => {
                let actual = self.stream_version(stream).await?;
                return Err(Error::Conflict {
                    stream: stream.to_string(),
                    expected,
                    actual,
                });
            }
            Err(error) => return Err(db(error)),
        };
        let actual: i64 = row.try_get("actual").map_err(db)?;
        let last_position: Option<i64> = row.try_get("last_position").map_err(db)?;
        let last_version: Option<i64> = row.try_get("last_version").map_err(db)?;
        match (last_position, last_version) {
            (Some(position), Some(version)) => Ok(AppendResult {
                last_version: version,
                last_position: position as u64,
            }),
            _ => Err(Error::Conflict {
                stream: stream.to_string(),
                expected,
                actual,
            }),
        }
    }
}

impl EventOutbox for PgStore {
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(sql::UNPUBLISHED)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        events(&rows)
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        sqlx::query(sql::MARK_PUBLISHED)
            .bind(stream.as_str())
            .bind(version)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}

impl SnapshotStore for PgStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let Some(row) = sqlx::query(sql::LOAD_SNAPSHOT)
            .bind(stream.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: row.try_get("version").map_err(db)?,
            schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
            codec: codec(&row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("bytes").map_err(db)?.into(),
            taken_at: row.try_get::<DateTime<Utc>, _>("taken_at").map_err(db)?,
        }))
    }

    async fn save(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(sql::SAVE_SNAPSHOT)
            .bind(snapshot.stream_id.as_str())
            .bind(snapshot.version)
            .bind(snapshot.schema_version as i32)
            .bind(snapshot.codec.tag())
            .bind(snapshot.bytes.as_ref())
            .bind(snapshot.taken_at)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}
