//! Checkpoints of catch-up subscriptions on PostgreSQL.

use cqrs_core::{CheckpointStore, Result};
use sqlx::PgConnection;

use super::{PgStore, sql};
use crate::error::db;

impl PgStore {
    /// Saves a checkpoint on `conn`, inside the caller's transaction: a projection that writes
    /// its rows and its checkpoint in one transaction applies each event exactly once.
    ///
    /// # Errors
    /// When the statement fails.
    pub async fn save_checkpoint_in(
        conn: &mut PgConnection,
        subscription: &str,
        position: u64,
    ) -> Result<()> {
        sqlx::query(sql::SAVE_CHECKPOINT)
            .bind(subscription)
            .bind(position as i64)
            .execute(conn)
            .await
            .map_err(db)?;
        Ok(())
    }
}

impl CheckpointStore for PgStore {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<u64>> {
        let position: Option<i64> = sqlx::query_scalar(sql::LOAD_CHECKPOINT)
            .bind(subscription)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        Ok(position.map(|p| p as u64))
    }

    async fn save_checkpoint(&self, subscription: &str, position: u64) -> Result<()> {
        let mut conn = self.pool().acquire().await.map_err(db)?;
        Self::save_checkpoint_in(&mut conn, subscription, position).await
    }
}
