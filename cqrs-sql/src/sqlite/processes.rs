//! Process store and inbox on SQLite.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    InboxStore, LoadedProcess, Metadata, Payload, ProcessRecord, ProcessStore, Result, StoredCommand,
    process_conflict,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, codec, sql, timestamp};
use crate::error::{corrupt, db, is_unique_violation};

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

    async fn current_version(conn: &mut sqlx::SqliteConnection, process_type: &str, id: &str) -> Result<i64> {
        let version: Option<i64> = sqlx::query_scalar(sql::PROCESS_VERSION)
            .bind(process_type)
            .bind(id)
            .fetch_optional(conn)
            .await
            .map_err(db)?;
        Ok(version.unwrap_or(-1))
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
            Box::new(move |conn| Box::pin(Self::save_in(conn, record, commands, metadata))),
        )
        .await?;
        Ok(expected + 1)
    }

    async fn remove_command(&self, process_type: &str, id: Uuid, message_id: &str) -> Result<()> {
        self.execute(
            sqlx::query(sql::REMOVE_PROCESS_COMMAND)
                .bind(process_type.to_owned())
                .bind(id.to_string())
                .bind(message_id.to_owned()),
        )
        .await
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

impl SqliteStore {
    /// The state and the new commands of a process, with the version check, on `tx` (the
    /// writer's batch).
    async fn save_in(
        tx: &mut sqlx::SqliteConnection,
        record: ProcessRecord,
        commands: Vec<StoredCommand>,
        metadata: Vec<String>,
    ) -> Result<()> {
        let id = record.id.to_string();
        let expected = record.version;
        let written = if expected == -1 {
            sqlx::query(sql::INSERT_PROCESS)
                .bind(record.process_type.as_str())
                .bind(id.as_str())
                .bind(record.completed)
                .bind(record.key.as_deref())
                .bind(record.codec.tag())
                .bind(i64::from(record.schema_version))
                .bind(record.state.as_ref())
                .execute(&mut *tx)
                .await
        } else {
            sqlx::query(sql::UPDATE_PROCESS)
                .bind(record.completed)
                .bind(record.key.as_deref())
                .bind(record.codec.tag())
                .bind(i64::from(record.schema_version))
                .bind(record.state.as_ref())
                .bind(record.process_type.as_str())
                .bind(id.as_str())
                .bind(expected)
                .execute(&mut *tx)
                .await
        };
        let conflict = match written {
            Ok(done) => done.rows_affected() == 0,
            Err(error) if is_unique_violation(&error) => true,
            Err(error) => return Err(db(error)),
        };
        if conflict {
            let actual = Self::current_version(tx, &record.process_type, &id).await?;
            return Err(process_conflict(
                &record.process_type,
                record.id,
                expected,
                actual,
            ));
        }
        for (command, metadata) in commands.iter().zip(&metadata) {
            sqlx::query(sql::INSERT_PROCESS_COMMAND)
                .bind(record.process_type.as_str())
                .bind(id.as_str())
                .bind(command.message_id.as_str())
                .bind(command.payload.name.as_str())
                .bind(i64::from(command.payload.schema_version))
                .bind(command.payload.codec.tag())
                .bind(command.payload.bytes.as_ref())
                .bind(metadata.as_str())
                .bind(command.stored_at.timestamp_micros())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        Ok(())
    }
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
        let (handler, message_id) = (handler.to_owned(), message_id.to_owned());
        self.write(
            1,
            Box::new(move |conn| {
                Box::pin(async move { Self::mark_processed_in(conn, &handler, &message_id).await })
            }),
        )
        .await
    }
}
