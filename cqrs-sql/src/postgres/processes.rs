//! Process store and inbox on PostgreSQL.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Error, InboxStore, LoadedProcess, Metadata, Payload, ProcessRecord, ProcessStore, Result, StoredCommand,
    process_conflict,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{PgStore, codec, sql};
use crate::error::{corrupt, db};

fn record(row: &PgRow) -> Result<ProcessRecord> {
    Ok(ProcessRecord {
        process_type: row.try_get("process_type").map_err(db)?,
        id: row.try_get("id").map_err(db)?,
        version: row.try_get("version").map_err(db)?,
        completed: row.try_get("completed").map_err(db)?,
        key: row.try_get("key").map_err(db)?,
        codec: codec(row, "codec")?,
        schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
        state: row.try_get::<Vec<u8>, _>("state").map_err(db)?.into(),
    })
}

fn command(row: &PgRow) -> Result<StoredCommand> {
    let metadata: String = row.try_get("metadata").map_err(db)?;
    Ok(StoredCommand {
        message_id: row.try_get("message_id").map_err(db)?,
        payload: Payload {
            name: row.try_get("name").map_err(db)?,
            schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
            codec: codec(row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
        },
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| corrupt("command metadata", e))?,
        stored_at: row.try_get("stored_at").map_err(db)?,
    })
}

/// The record in `row` with its pending commands, read in the same (repeatable-read)
/// transaction so they belong together.
async fn with_commands(conn: &mut PgConnection, row: Option<PgRow>) -> Result<Option<LoadedProcess>> {
    let Some(row) = row else { return Ok(None) };
    let record = record(&row)?;
    let pending = sqlx::query(sql::PROCESS_COMMANDS)
        .bind(record.process_type.as_str())
        .bind(record.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(command)
        .collect::<Result<_>>()?;
    Ok(Some(LoadedProcess { record, pending }))
}

const SNAPSHOT_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

impl ProcessStore for PgStore {
    async fn load(&self, process_type: &str, id: Uuid) -> Result<Option<LoadedProcess>> {
        let mut tx = self.pool().begin_with(SNAPSHOT_READ).await.map_err(db)?;
        let row = sqlx::query(sql::LOAD_PROCESS)
            .bind(process_type)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let loaded = with_commands(&mut tx, row).await?;
        tx.commit().await.map_err(db)?;
        Ok(loaded)
    }

    async fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> Result<Option<LoadedProcess>> {
        let mut tx = self.pool().begin_with(SNAPSHOT_READ).await.map_err(db)?;
        let row = sqlx::query(sql::FIND_PROCESS_BY_KEY)
            .bind(process_type)
            .bind(key)
            .bind(include_completed)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let loaded = with_commands(&mut tx, row).await?;
        tx.commit().await.map_err(db)?;
        Ok(loaded)
    }

    async fn save(&self, record: ProcessRecord, commands: Vec<StoredCommand>) -> Result<i64> {
        let expected = record.version;
        let mut tx = self.pool().begin().await.map_err(db)?;
        let written = if expected == -1 {
            sqlx::query(sql::INSERT_PROCESS)
                .bind(record.process_type.as_str())
                .bind(record.id)
                .bind(record.completed)
                .bind(record.key.as_deref())
                .bind(record.codec.tag())
                .bind(record.schema_version as i32)
                .bind(record.state.as_ref())
                .execute(&mut *tx)
                .await
        } else {
            sqlx::query(sql::UPDATE_PROCESS)
                .bind(record.process_type.as_str())
                .bind(record.id)
                .bind(record.completed)
                .bind(record.key.as_deref())
                .bind(record.codec.tag())
                .bind(record.schema_version as i32)
                .bind(record.state.as_ref())
                .bind(expected)
                .execute(&mut *tx)
                .await
        }
        .map_err(db)?;
        if written.rows_affected() == 0 {
            let actual: Option<i64> = sqlx::query_scalar(sql::PROCESS_VERSION)
                .bind(record.process_type.as_str())
                .bind(record.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            return Err(process_conflict(
                &record.process_type,
                record.id,
                expected,
                actual.unwrap_or(-1),
            ));
        }
        if !commands.is_empty() {
            let mut columns = (
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
                Vec::new(),
            );
            for c in &commands {
                columns.0.push(c.message_id.as_str());
                columns.1.push(c.payload.name.as_str());
                columns.2.push(c.payload.schema_version as i32);
                columns.3.push(c.payload.codec.tag());
                columns.4.push(c.payload.bytes.as_ref());
                columns
                    .5
                    .push(serde_json::to_string(&c.metadata).map_err(Error::permanent)?);
                columns.6.push(c.stored_at);
            }
            sqlx::query(sql::INSERT_PROCESS_COMMANDS)
                .bind(record.process_type.as_str())
                .bind(record.id)
                .bind(&columns.0)
                .bind(&columns.1)
                .bind(&columns.2)
                .bind(&columns.3)
                .bind(&columns.4)
                .bind(&columns.5)
                .bind(&columns.6)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(expected + 1)
    }

    async fn remove_command(&self, process_type: &str, id: Uuid, message_id: &str) -> Result<()> {
        sqlx::query(sql::REMOVE_PROCESS_COMMAND)
            .bind(process_type)
            .bind(id)
            .bind(message_id)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn with_pending(&self, stored_before: DateTime<Utc>, limit: usize) -> Result<Vec<(String, Uuid)>> {
        sqlx::query(sql::PROCESSES_WITH_PENDING)
            .bind(stored_before)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("process_type").map_err(db)?,
                    row.try_get("id").map_err(db)?,
                ))
            })
            .collect()
    }
}

impl PgStore {
    /// Records in the inbox, on `conn`, that `handler` processed `message_id`: inside the
    /// handler's own transaction, so its effects and the record commit together.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn mark_processed_in(conn: &mut PgConnection, handler: &str, message_id: &str) -> Result<()> {
        sqlx::query(sql::INBOX_RECORD)
            .bind(handler)
            .bind(message_id)
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl InboxStore for PgStore {
    async fn is_processed(&self, handler: &str, message_id: &str) -> Result<bool> {
        sqlx::query_scalar(sql::INBOX_CONTAINS)
            .bind(handler)
            .bind(message_id)
            .fetch_one(self.pool())
            .await
            .map_err(db)
    }

    async fn mark_processed(&self, handler: &str, message_id: &str) -> Result<()> {
        let mut conn = self.pool().acquire().await.map_err(db)?;
        Self::mark_processed_in(&mut conn, handler, message_id).await
    }
}
