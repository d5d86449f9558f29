//! Process store and inbox on SQLite.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    InboxStore, LoadedProcess, Metadata, Payload, ProcessRecord, ProcessStore, Result, StoredCommand,
    process_conflict,
};
use rusqlite::{Connection, OptionalExtension, params};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, codec, direct, sql, timestamp};
use crate::error::{corrupt, db};

fn record(row: &SqliteRow) -> Result<ProcessRecord> {
    let id: String = row.try_get("id").map_err(db)?;
    Ok(ProcessRecord {
        process_type: row.try_get("process_type").map_err(db)?,
        id: Uuid::parse_str(&id).map_err(|e| corrupt("process id", e))?,
        version: row.try_get("version").map_err(db)?,
        completed: row.try_get("completed").map_err(db)?,
        key: row.try_get("key").map_err(db)?,
        codec: codec(row, "codec")?,
        schema_version: row.try_get::<i64, _>("schema_version").map_err(db)? as u32,
        state: row.try_get::<Vec<u8>, _>("state").map_err(db)?.into(),
    })
}

fn command(row: &SqliteRow) -> Result<StoredCommand> {
    let metadata: String = row.try_get("metadata").map_err(db)?;
    Ok(StoredCommand {
        message_id: row.try_get("message_id").map_err(db)?,
        payload: Payload {
            name: row.try_get("name").map_err(db)?,
            schema_version: row.try_get::<i64, _>("schema_version").map_err(db)? as u32,
            codec: codec(row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
        },
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| corrupt("command metadata", e))?,
        stored_at: timestamp(row.try_get("stored_at").map_err(db)?)?,
    })
}

impl SqliteStore {
    /// The record in `row` with its pending commands, read in the same read transaction.
    async fn with_commands(
        tx: &mut Transaction<'static, Sqlite>,
        row: Option<SqliteRow>,
    ) -> Result<Option<LoadedProcess>> {
        let Some(row) = row else { return Ok(None) };
        let record = record(&row)?;
        let pending = sqlx::query(sql::PROCESS_COMMANDS)
            .bind(record.process_type.as_str())
            .bind(record.id.to_string())
            .fetch_all(&mut **tx)
            .await
            .map_err(db)?
            .iter()
            .map(command)
            .collect::<Result<_>>()?;
        Ok(Some(LoadedProcess { record, pending }))
    }
}

impl ProcessStore for SqliteStore {
    async fn load(&self, process_type: &str, id: Uuid) -> Result<Option<LoadedProcess>> {
        let mut tx = self.reader().begin().await.map_err(db)?;
        let row = sqlx::query(sql::LOAD_PROCESS)
            .bind(process_type)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        Self::with_commands(&mut tx, row).await
    }

    async fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> Result<Option<LoadedProcess>> {
        let mut tx = self.reader().begin().await.map_err(db)?;
        let row = sqlx::query(sql::FIND_PROCESS_BY_KEY)
            .bind(process_type)
            .bind(key)
            .bind(include_completed)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        Self::with_commands(&mut tx, row).await
    }

    async fn save(&self, record: ProcessRecord, commands: Vec<StoredCommand>) -> Result<i64> {
        let metadata: Vec<String> = commands
            .iter()
            .map(|c| serde_json::to_string(&c.metadata).map_err(cqrs_core::Error::permanent))
            .collect::<Result<_>>()?;
        let expected = record.version;
        let statements = 1 + commands.len();
        self.write(
            statements,
            Box::new(move |db| save_in(db, &record, &commands, &metadata)),
        )
        .await?;
        Ok(expected + 1)
    }

    async fn remove_command(&self, process_type: &str, id: Uuid, message_id: &str) -> Result<()> {
        self.execute(
            sql::REMOVE_PROCESS_COMMAND,
            (process_type.to_owned(), id.to_string(), message_id.to_owned()),
        )
        .await
        .map(drop)
    }

    /// One write of the batch, a statement per command.
    async fn remove_commands(&self, process_type: &str, id: Uuid, message_ids: &[String]) -> Result<()> {
        let removals = message_ids
            .iter()
            .map(|message_id| (process_type.to_owned(), id.to_string(), message_id.clone()))
            .collect();
        self.execute_each(sql::REMOVE_PROCESS_COMMAND, removals)
            .await
            .map(drop)
    }

    async fn with_pending(&self, stored_before: DateTime<Utc>, limit: usize) -> Result<Vec<(String, Uuid)>> {
        sqlx::query(sql::PROCESSES_WITH_PENDING)
            .bind(stored_before.timestamp_micros())
            .bind(limit as i64)
            .fetch_all(self.reader())
            .await
            .map_err(db)?
            .iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(db)?;
                Ok((
                    row.try_get("process_type").map_err(db)?,
                    Uuid::parse_str(&id).map_err(|e| corrupt("process id", e))?,
                ))
            })
            .collect()
    }
}

/// The state and the new commands of a process, with the version check, on the writer's batch.
fn save_in(
    db: &Connection,
    record: &ProcessRecord,
    commands: &[StoredCommand],
    metadata: &[String],
) -> Result<()> {
    let id = record.id.to_string();
    let expected = record.version;
    let written = if expected == -1 {
        db.prepare_cached(sql::INSERT_PROCESS).and_then(|mut insert| {
            insert.execute(params![
                record.process_type,
                id,
                record.completed,
                record.key,
                record.codec.tag(),
                record.schema_version,
                record.state.as_ref(),
            ])
        })
    } else {
        db.prepare_cached(sql::UPDATE_PROCESS).and_then(|mut update| {
            update.execute(params![
                record.completed,
                record.key,
                record.codec.tag(),
                record.schema_version,
                record.state.as_ref(),
                record.process_type,
                id,
                expected,
            ])
        })
    };
    let conflict = match written {
        Ok(changed) => changed == 0,
        Err(error) if direct::is_unique_violation(&error) => true,
        Err(error) => return Err(direct::error(error)),
    };
    if conflict {
        let actual = db
            .prepare_cached(sql::PROCESS_VERSION)
            .and_then(|mut current| {
                current
                    .query_row(params![record.process_type, id], |row| row.get(0))
                    .optional()
            })
            .map_err(direct::error)?
            .unwrap_or(-1);
        return Err(process_conflict(
            &record.process_type,
            record.id,
            expected,
            actual,
        ));
    }
    let mut insert = db
        .prepare_cached(sql::INSERT_PROCESS_COMMAND)
        .map_err(direct::error)?;
    for (command, metadata) in commands.iter().zip(metadata) {
        insert
            .execute(params![
                record.process_type,
                id,
                command.message_id,
                command.payload.name,
                command.payload.schema_version,
                command.payload.codec.tag(),
                command.payload.bytes.as_ref(),
                metadata,
                command.stored_at.timestamp_micros(),
            ])
            .map_err(direct::error)?;
    }
    Ok(())
}

impl SqliteStore {
    /// Records in the inbox, on `conn`, that `handler` processed `message_id`: inside the
    /// handler's own transaction, so its effects and the record commit together.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn mark_processed_in(
        conn: &mut sqlx::SqliteConnection,
        handler: &str,
        message_id: &str,
    ) -> Result<()> {
        sqlx::query(sql::INBOX_RECORD)
            .bind(handler)
            .bind(message_id)
            .bind(cqrs_core::chrono::Utc::now().timestamp_micros())
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl InboxStore for SqliteStore {
    async fn is_processed(&self, handler: &str, message_id: &str) -> Result<bool> {
        sqlx::query_scalar(sql::INBOX_CONTAINS)
            .bind(handler)
            .bind(message_id)
            .fetch_one(self.reader())
            .await
            .map_err(db)
    }

    async fn mark_processed(&self, handler: &str, message_id: &str) -> Result<()> {
        self.execute(
            sql::INBOX_RECORD,
            (handler.to_owned(), message_id.to_owned(), self.now_micros()),
        )
        .await
        .map(drop)
    }
}
