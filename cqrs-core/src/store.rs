//! Event-store traits and the records they exchange.
//!
//! The capabilities are split: [`EventReader`] (load a stream, read the global log),
//! [`EventAppender`] (append with an expected version), and [`EventOutbox`] (the events not
//! yet published). [`EventStore`] is implemented for everything that reads and appends.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{Envelope, Metadata, Source};
use crate::error::Result;
use crate::message::{AnyMessage, Payload};

/// The id of a stream of events.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    /// A stream id from any string.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The stream of an aggregate: `<type>-<uuid>`, e.g. `Order-0190…`.
    pub fn for_aggregate(aggregate_type: &str, id: Uuid) -> Self {
        Self(format!("{aggregate_type}-{id}"))
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UUID at the end of an aggregate's stream id, if there is one.
    pub fn aggregate_id(&self) -> Option<Uuid> {
        let tail = self.0.get(self.0.len().checked_sub(36)?..)?;
        Uuid::parse_str(tail).ok()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for StreamId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// The version a writer expects a stream to be at.
///
/// Versions count from 0 (the first event); a stream with no events is at −1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the current version.
    Any,
    /// Append only if the stream's last version is exactly this (−1: the stream is empty).
    Exact(i64),
}

impl ExpectedVersion {
    /// The stream must not exist yet.
    pub const NO_STREAM: Self = Self::Exact(-1);

    /// Whether a stream at `actual` satisfies this expectation.
    pub fn matches(self, actual: i64) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Causality recorded with each stored event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// The conversation the event belongs to (for a command handler: the command id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The message whose handling produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Free-form headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl EventMetadata {
    /// Events caused by handling the message described by `cause`: correlated with it and
    /// caused by it (the correlation rule of the domain: events carry the command's id).
    pub fn caused_by(cause: &Metadata) -> Self {
        Self {
            correlation_id: Some(cause.message_id.clone()),
            causation_id: Some(cause.message_id.clone()),
            headers: BTreeMap::new(),
        }
    }

    /// Events correlated with `correlation_id` and nothing else.
    pub fn correlated(correlation_id: Option<String>) -> Self {
        Self {
            correlation_id,
            ..Self::default()
        }
    }
}

impl From<Option<String>> for EventMetadata {
    fn from(correlation_id: Option<String>) -> Self {
        Self::correlated(correlation_id)
    }
}

impl From<&Metadata> for EventMetadata {
    fn from(cause: &Metadata) -> Self {
        Self::caused_by(cause)
    }
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// A unique id for the event.
    pub event_id: Uuid,
    /// The serialized event.
    pub payload: Payload,
    /// Its causality.
    pub metadata: EventMetadata,
}

/// An event as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// The event's unique id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// The type of the stream's owner (e.g. the aggregate type).
    pub stream_type: String,
    /// Its version in the stream.
    pub version: i64,
    /// Its position in the global log (from 1, increasing).
    pub position: u64,
    /// The serialized event: name, schema version, codec, bytes.
    pub payload: Payload,
    /// Its causality.
    pub metadata: EventMetadata,
    /// When it was appended.
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The envelope this event is published in: message id `<stream>:<version>` (deterministic,
    /// so a re-send is a recognisable duplicate), session id the stream id (so subscribers see
    /// a stream in order), correlation and causation from the stored metadata.
    pub fn to_envelope(&self) -> Envelope {
        let metadata = Metadata {
            message_id: format!("{}:{}", self.stream_id, self.version),
            correlation_id: self.metadata.correlation_id.clone(),
            causation_id: self.metadata.causation_id.clone(),
            session_id: Some(self.stream_id.to_string()),
            headers: self.metadata.headers.clone(),
            source: Some(Source {
                stream_id: self.stream_id.clone(),
                version: self.version,
                position: self.position,
            }),
            ..Metadata::default()
        };
        Envelope::from_parts(AnyMessage::raw(self.payload.clone()), metadata)
    }
}

/// What an append wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub last_version: i64,
    /// The global position of the last event written (0 when nothing was written).
    pub last_position: u64,
}

/// Reads streams and the global log.
pub trait EventReader: Send + Sync {
    /// The events of `stream` with a version ≥ `from_version`, in version order.
    fn load(
        &self,
        stream: &StreamId,
        from_version: i64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send;

    /// Up to `limit` events of the global log with a position > `after`, in position order.
    fn read_all(&self, after: u64, limit: usize) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send;
}

/// Appends to streams.
pub trait EventAppender: Send + Sync {
    /// Appends `events` to `stream`, all or nothing, if the stream is at `expected`.
    ///
    /// The events are also entered in the store's outbox, in the same atomic step.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) carrying the stream, the expected and the
    /// actual version, when the stream is not at `expected`; nothing is written then.
    fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send;
}

/// An event store: reads and appends.
pub trait EventStore: EventReader + EventAppender {}

impl<T: EventReader + EventAppender> EventStore for T {}

/// The events appended but not yet published.
pub trait EventOutbox: Send + Sync {
    /// Up to `limit` unpublished events, in position order.
    fn unpublished(&self, limit: usize) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send;

    /// Records that the events of `stream` up to and including `version` were published.
    fn mark_published(&self, stream: &StreamId, version: i64) -> impl Future<Output = Result<()>> + Send;

    /// Records, for each `(stream, version)`, that the events of that stream up to and
    /// including that version were published. The default marks them one at a time; a backend
    /// where each call is a round trip does them in one.
    fn mark_published_many(&self, marks: &[(StreamId, i64)]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for (stream, version) in marks {
                self.mark_published(stream, *version).await?;
            }
            Ok(())
        }
    }

    /// Records that `events` were published: events as [`unpublished`](Self::unpublished)
    /// answered them, each stream's a run of its oldest unpublished ones. The default marks each
    /// stream up to its last version among them ([`mark_published_many`](Self::mark_published_many));
    /// a backend whose outbox is keyed by position removes exactly these events' entries, and
    /// one whose outbox is a position in the log moves it past them (holding back the events it
    /// passes that are not among them), with no walk down each stream.
    fn mark_events_published(&self, events: &[&StoredEvent]) -> impl Future<Output = Result<()>> + Send {
        let mut last: std::collections::HashMap<&StreamId, i64> = std::collections::HashMap::new();
        for event in events {
            let version = last.entry(&event.stream_id).or_insert(event.version);
            *version = (*version).max(event.version);
        }
        let marks: Vec<(StreamId, i64)> = last.into_iter().map(|(stream, v)| (stream.clone(), v)).collect();
        async move { self.mark_published_many(&marks).await }
    }

    /// Resolves when events may have been appended since the last call (a hint: callers also
    /// poll at a bounded interval).
    fn appended(&self) -> impl Future<Output = ()> + Send;
}

impl<T: EventReader> EventReader for Arc<T> {
    fn load(
        &self,
        stream: &StreamId,
        from_version: i64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send {
        (**self).load(stream, from_version)
    }
    fn read_all(&self, after: u64, limit: usize) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send {
        (**self).read_all(after, limit)
    }
}

impl<T: EventAppender> EventAppender for Arc<T> {
    fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendResult>> + Send {
        (**self).append(stream, stream_type, expected, events)
    }
}

impl<T: EventOutbox> EventOutbox for Arc<T> {
    fn unpublished(&self, limit: usize) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send {
        (**self).unpublished(limit)
    }
    fn mark_published(&self, stream: &StreamId, version: i64) -> impl Future<Output = Result<()>> + Send {
        (**self).mark_published(stream, version)
    }
    fn mark_published_many(&self, marks: &[(StreamId, i64)]) -> impl Future<Output = Result<()>> + Send {
        (**self).mark_published_many(marks)
    }
    fn mark_events_published(&self, events: &[&StoredEvent]) -> impl Future<Output = Result<()>> + Send {
        (**self).mark_events_published(events)
    }
    fn appended(&self) -> impl Future<Output = ()> + Send {
        (**self).appended()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_stream_ids_round_trip() {
        let id = Uuid::now_v7();
        let stream = StreamId::for_aggregate("Order", id);
        assert_eq!(stream.as_str(), format!("Order-{id}"));
        assert_eq!(stream.aggregate_id(), Some(id));
        assert_eq!(StreamId::from("short").aggregate_id(), None);
    }

    #[test]
    fn expected_versions() {
        assert!(ExpectedVersion::NO_STREAM.matches(-1));
        assert!(!ExpectedVersion::Exact(3).matches(4));
        assert!(ExpectedVersion::Any.matches(17));
    }
}
