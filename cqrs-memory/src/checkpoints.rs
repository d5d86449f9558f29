use std::sync::Arc;

use cqrs_core::{CheckpointStore, Result};
use dashmap::DashMap;

/// In-memory checkpoints of catch-up subscriptions.
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpoints {
    positions: Arc<DashMap<String, u64>>,
}

impl MemoryCheckpoints {
    /// No checkpoint yet.
    pub fn new() -> Self {
        Self::default()
    }
}

impl CheckpointStore for MemoryCheckpoints {
    async fn load_checkpoint(&self, subscription: &str) -> Result<Option<u64>> {
        Ok(self.positions.get(subscription).map(|p| *p))
    }

    async fn save_checkpoint(&self, subscription: &str, position: u64) -> Result<()> {
        self.positions.insert(subscription.to_owned(), position);
        Ok(())
    }
}
