//! Checkpoints of catch-up subscriptions on SQLite.

use cqrs_core::{CheckpointStore, Result};
use sqlx::SqliteConnection;

use super::{SqliteStore, direct, sql};
use crate::error::db;

impl SqliteStore {
    /// Saves a checkpoint on `conn`, inside the caller's transaction: a projection that writes
    /// its rows and its checkpoint in one transaction applies each event exactly once.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn save_checkpoint_in(
        conn: &mut SqliteConnection,
        subscription: &str,
        position: u64,
    ) -> Result<()> {
        sqlx::query(sql::SAVE_CHECKPOINT)
            .bind(subscription)
            .bind(position as i64)
            .bind(cqrs_core::chrono::Utc::now().timestamp_micros())
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl CheckpointStore for SqliteStore {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<u64>> {
        let position: Option<i64> = self
            .read(|db| {
                direct::first(db, sql::LOAD_CHECKPOINT, [subscription], |row| {
                    direct::get(row, 0)
                })
            })
            .await?;
        Ok(position.map(|p| p as u64))
    }

    async fn save_checkpoint(&self, subscription: &str, position: u64) -> Result<()> {
        self.execute(
            sql::SAVE_CHECKPOINT,
            (subscription.to_owned(), position as i64, self.now_micros()),
        )
        .await
        .map(drop)
    }
}
