//! Process store and inbox on PostgreSQL.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Error, InboxStore, LoadedProcess, Metadata, Payload, ProcessRecord, ProcessStore, Result, StoredCommand,
    process_conflict,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::{PgStore, batched, codec, sql};
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

/// A process read by [`sql::LOAD_PROCESS`] or [`sql::FIND_PROCESSES_BY_KEY`]: its record and, as
/// arrays of the same row, its pending commands.
pub(super) fn loaded(row: &PgRow) -> Result<LoadedProcess> {
    fn column<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &'r PgRow,
        name: &str,
    ) -> Result<Vec<T>>
    where
        Vec<T>: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        Ok(row
            .try_get::<Option<Vec<T>>, _>(name)
            .map_err(db)?
            .unwrap_or_default())
    }
    let message_ids: Vec<String> = column(row, "message_ids")?;
    let names: Vec<String> = column(row, "names")?;
    let schema_versions: Vec<i32> = column(row, "schema_versions")?;
    let codecs: Vec<String> = column(row, "codecs")?;
    let payloads: Vec<Vec<u8>> = column(row, "payloads")?;
    let metadata: Vec<String> = column(row, "metadata")?;
    let stored_ats: Vec<DateTime<Utc>> = column(row, "stored_ats")?;
    let pending = message_ids
        .into_iter()
        .zip(names)
        .zip(schema_versions)
        .zip(codecs)
        .zip(payloads)
        .zip(metadata)
        .zip(stored_ats)
        .map(
            |((((((message_id, name), schema_version), codec), bytes), metadata), stored_at)| {
                Ok(StoredCommand {
                    message_id,
                    payload: Payload {
                        name,
                        schema_version: schema_version as u32,
                        codec: codec.parse().map_err(|e| corrupt("codec tag", e))?,
                        bytes: bytes.into(),
                    },
                    metadata: serde_json::from_str::<Metadata>(&metadata)
                        .map_err(|e| corrupt("command metadata", e))?,
                    stored_at,
                })
            },
        )
        .collect::<Result<_>>()?;
    Ok(LoadedProcess {
        record: record(row)?,
        pending,
    })
}

impl ProcessStore for PgStore {
    async fn load(&self, process_type: &str, id: Uuid) -> Result<Option<LoadedProcess>> {
        sqlx::query(sql::LOAD_PROCESS)
            .bind(process_type)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?
            .as_ref()
            .map(loaded)
            .transpose()
    }

    /// With whatever other finds of this process are waiting, in one statement: a process
    /// manager's router finds its process for every message it routes.
    async fn find_by_key(
        &self,
        process_type: &str,
        key: &str,
        include_completed: bool,
    ) -> Result<Option<LoadedProcess>> {
        let find = batched::FindByKey {
            process_type: process_type.to_owned(),
            key: key.to_owned(),
            include_completed,
        };
        self.inner.batched.finds.call(find).await
    }

    /// With whatever other saves of this process are waiting, in one statement
    /// (`sql::SAVE_PROCESSES`); on a conflict, a second one reads the version that is there,
    /// for the error.
    async fn save(&self, record: ProcessRecord, commands: Vec<StoredCommand>) -> Result<i64> {
        let expected = record.version;
        let metadata = commands
            .iter()
            .map(|c| serde_json::to_string(&c.metadata).map_err(Error::permanent))
            .collect::<Result<Vec<_>>>()?;
        let save = batched::Save {
            record,
            commands,
            metadata,
        };
        let (saved, record) = self.inner.batched.saves.call(save).await?;
        if let Some(version) = saved {
            return Ok(version);
        }
        let actual: Option<i64> = sqlx::query_scalar(sql::PROCESS_VERSION)
            .bind(record.process_type.as_str())
            .bind(record.id)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        Err(process_conflict(
            &record.process_type,
            record.id,
            expected,
            actual.unwrap_or(-1),
        ))
    }

    async fn remove_command(&self, process_type: &str, id: Uuid, message_id: &str) -> Result<()> {
        self.remove_commands(process_type, id, &[message_id.to_owned()])
            .await
    }

    async fn remove_commands(&self, process_type: &str, id: Uuid, message_ids: &[String]) -> Result<()> {
        if message_ids.is_empty() {
            return Ok(());
        }
        let removal = batched::Removal {
            process_type: process_type.to_owned(),
            id,
            message_ids: message_ids.to_vec(),
        };
        self.inner.batched.removals.call(removal).await
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
