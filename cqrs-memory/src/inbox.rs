use std::sync::Arc;

use cqrs_core::{InboxStore, Result};
use dashmap::DashSet;

/// An in-memory inbox: which message ids each handler has processed.
#[derive(Debug, Clone, Default)]
pub struct MemoryInbox {
    processed: Arc<DashSet<(String, String)>>,
}

impl MemoryInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }
}

impl InboxStore for MemoryInbox {
    async fn is_processed(&self, handler: &str, message_id: &str) -> Result<bool> {
        Ok(self
            .processed
            .contains(&(handler.to_owned(), message_id.to_owned())))
    }

    async fn mark_processed(&self, handler: &str, message_id: &str) -> Result<()> {
        self.processed.insert((handler.to_owned(), message_id.to_owned()));
        Ok(())
    }
}
