use std::sync::Arc;

use cqrs_core::{Result, Snapshot, SnapshotStore, StreamId};
use dashmap::DashMap;

/// An in-memory snapshot store: the latest snapshot per stream.
#[derive(Debug, Clone, Default)]
pub struct MemorySnapshotStore {
    snapshots: Arc<DashMap<StreamId, Snapshot>>,
}

impl MemorySnapshotStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of streams with a snapshot.
    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    /// Whether no snapshot is stored.
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }
}

impl SnapshotStore for MemorySnapshotStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(self.snapshots.get(stream).map(|s| s.clone()))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.snapshots.insert(snapshot.stream_id.clone(), snapshot);
        Ok(())
    }
}
