//! Persistent snapshots of aggregates (serialized mementos).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::codec::Codec;
use crate::error::Result;
use crate::store::StreamId;

/// A serialized memento of a stream's aggregate at a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The version the memento was captured at.
    pub version: i64,
    /// The memento type's schema version.
    pub schema_version: u32,
    /// The codec the memento was written with.
    pub codec: Codec,
    /// The encoded memento.
    pub bytes: Bytes,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Stores the latest snapshot of each stream.
///
/// Snapshots are a disposable cache: losing one only costs a replay.
pub trait SnapshotStore: Send + Sync {
    /// The latest snapshot of `stream`, if any.
    fn load_snapshot(&self, stream: &StreamId) -> impl Future<Output = Result<Option<Snapshot>>> + Send;

    /// Stores `snapshot`, replacing an older one of the same stream.
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<()>> + Send;
}

impl<T: SnapshotStore> SnapshotStore for Arc<T> {
    fn load_snapshot(&self, stream: &StreamId) -> impl Future<Output = Result<Option<Snapshot>>> + Send {
        (**self).load_snapshot(stream)
    }
    fn save_snapshot(&self, snapshot: Snapshot) -> impl Future<Output = Result<()>> + Send {
        (**self).save_snapshot(snapshot)
    }
}

/// A snapshot store that keeps nothing; the default when persistent snapshots are off.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSnapshots;

impl SnapshotStore for NoSnapshots {
    async fn load_snapshot(&self, _stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(None)
    }
    async fn save_snapshot(&self, _snapshot: Snapshot) -> Result<()> {
        Ok(())
    }
}
