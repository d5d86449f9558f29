//! Process store and inbox on SQLite.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    InboxStore, LoadedProcess, Metadata, Payload, ProcessRecord, ProcessStore, Result, StoredCommand,
    process_conflict,
};
use rusqlite::{Connection, OptionalExtension, params};

use super::{SqliteStore, direct, sql, timestamp};
use crate::error::{corrupt, db};

fn record(row: &rusqlite::Row<'_>) -> Result<ProcessRecord> {
    let id: String = direct::get(row, "id")?;
    Ok(ProcessRecord {
        process_type: direct::get(row, "process_type")?,
        id: Uuid::parse_str(&id).map_err(|e| corrupt("process id", e))?,
        version: direct::get(row, "version")?,
        completed: direct::get(row, "completed")?,
        key: direct::get(row, "key")?,
        codec: direct::codec(row, "codec")?,
        schema_version: direct::get::<i64>(row, "schema_version")? as u32,
        state: direct::get::<Vec<u8>>(row, "state")?.into(),
    })
}

fn command(row: &rusqlite::Row<'_>) -> Result<StoredCommand> {
    let metadata: String = direct::get(row, "metadata")?;
    Ok(StoredCommand {
        message_id: direct::get(row, "message_id")?,
        payload: Payload {
            name: direct::get(row, "name")?,
            schema_version: direct::get::<i64>(row, "schema_version")? as u32,
            codec: direct::codec(row, "codec")?,
            bytes: direct::get::<Vec<u8>>(row, "payload")?.into(),
        },
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| corrupt("command metadata", e))?,
        stored_at: timestamp(direct::get(row, "stored_at")?)?,
    })
}

impl SqliteStore {
    /// The process `query` finds with `params`, and its pending commands, read in one read
    /// transaction.
    async fn load_process(
        &self,
        query: &'static str,
        params: impl rusqlite::Params,
    ) -> Result<Option<LoadedProcess>> {
        self.read(|db| {
            let tx = db.unchecked_transaction().map_err(direct::error)?;
            let Some(record) = direct::first(&tx, query, params, record)? else {
                return Ok(None);
            };
            let pending = direct::query(
                &tx,
                sql::PROCESS_COMMANDS,
                (record.process_type.as_str(), record.id.to_string()),
                command,
            )?;
            Ok(Some(LoadedProcess { record, pending }))
        })
        .await
    }
}

impl ProcessStore for SqliteStore {
    async fn load(&self, process_type: &str, id: Uuid) -> Result<Option<LoadedProcess>> {
        self.load_process(sql::LOAD_PROCESS, (process_type, id.to_string()))
            .await
    }

    async fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> Result<Option<LoadedProcess>> {
        self.load_process(sql::FIND_PROCESS_BY_KEY, (process_type, key, include_completed))
            .await
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
        let params = (stored_before.timestamp_micros(), limit as i64);
        self.read(|db| {
            direct::query(db, sql::PROCESSES_WITH_PENDING, params, |row| {
                let id: String = direct::get(row, "id")?;
                Ok((
                    direct::get(row, "process_type")?,
                    Uuid::parse_str(&id).map_err(|e| corrupt("process id", e))?,
                ))
            })
        })
        .await
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
        self.read(|db| {
            db.prepare_cached(sql::INBOX_CONTAINS)
                .and_then(|mut query| query.query_row((handler, message_id), |row| row.get(0)))
                .map_err(direct::error)
        })
        .await
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
