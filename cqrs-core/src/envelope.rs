//! Envelopes: a message plus the metadata that travels with it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::message::{AnyMessage, Command, Message};
use crate::store::StreamId;

/// Where a published event comes from: its stream, version and global position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The stream the event was appended to.
    pub stream_id: StreamId,
    /// The event's version in its stream (0 for the first event).
    pub version: i64,
    /// The event's position in the global log.
    pub position: u64,
}

/// Metadata of a message: identity, causality and transport hints.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Unique id of this message. For a command it is the command id; for a published event
    /// it is `<stream>:<version>`, so a re-send is recognisable as a duplicate.
    pub message_id: String,
    /// The conversation this message belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message whose handling caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// Messages that share a session id are handled one at a time, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Deliver no earlier than this long after sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// If not consumed within this long after sending, dead-letter it unprocessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<Duration>,
    /// Free-form headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// For events read from a store: where they come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

impl Metadata {
    /// Metadata with the given message id and nothing else.
    pub fn with_id(message_id: impl Into<String>) -> Self {
        Self {
            message_id: message_id.into(),
            ..Self::default()
        }
    }

    /// Whether the message is to be delivered later (a non-zero [`delay`](Self::delay)): a
    /// transport need not wake its consumers for it.
    pub fn is_delayed(&self) -> bool {
        self.delay.is_some_and(|d| !d.is_zero())
    }
}

/// A message with its metadata.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The message, typed or raw.
    pub message: AnyMessage,
    /// Its metadata.
    pub metadata: Metadata,
}

impl Envelope {
    /// Wraps a command: the message id is the command id, the session id the command's.
    pub fn command<C: Command>(command: C) -> Self {
        let metadata = Metadata {
            message_id: command.command_id().to_string(),
            session_id: command.session_id(),
            ..Metadata::default()
        };
        Self {
            message: AnyMessage::new(command),
            metadata,
        }
    }

    /// Wraps any message with a fresh time-ordered (v7) message id.
    pub fn message<M: Message>(message: M) -> Self {
        Self::from_parts(
            AnyMessage::new(message),
            Metadata::with_id(Uuid::now_v7().to_string()),
        )
    }

    /// Assembles an envelope.
    pub fn from_parts(message: AnyMessage, metadata: Metadata) -> Self {
        Self { message, metadata }
    }

    /// The message name.
    pub fn name(&self) -> &str {
        self.message.name()
    }

    /// Marks this message as caused by `parent`: the causation id becomes the parent's message
    /// id, and the correlation id, unless already set, the parent's correlation id (or its
    /// message id when it has none). This is how correlation flows through a conversation.
    #[must_use]
    pub fn caused_by(mut self, parent: &Metadata) -> Self {
        self.metadata.causation_id = Some(parent.message_id.clone());
        if self.metadata.correlation_id.is_none() {
            self.metadata.correlation_id = Some(
                parent
                    .correlation_id
                    .clone()
                    .unwrap_or_else(|| parent.message_id.clone()),
            );
        }
        self
    }

    /// Sets the correlation id.
    #[must_use]
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the session id.
    #[must_use]
    pub fn with_session_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.session_id = Some(id.into());
        self
    }

    /// Delays delivery.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.metadata.delay = Some(delay);
        self
    }

    /// Limits how long the message may wait before it is consumed.
    #[must_use]
    pub fn with_time_to_live(mut self, ttl: Duration) -> Self {
        self.metadata.time_to_live = Some(ttl);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.headers.insert(key.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Reserve {
        id: Uuid,
        conference: Uuid,
    }
    impl Message for Reserve {
        const NAME: &'static str = "Reserve";
    }
    impl Command for Reserve {
        fn command_id(&self) -> Uuid {
            self.id
        }
        fn session_id(&self) -> Option<String> {
            Some(format!("Seats_{}", self.conference))
        }
    }

    #[test]
    fn commands_carry_their_id_and_session() {
        let cmd = Reserve {
            id: Uuid::now_v7(),
            conference: Uuid::nil(),
        };
        let id = cmd.id;
        let env = Envelope::command(cmd);
        assert_eq!(env.metadata.message_id, id.to_string());
        assert_eq!(
            env.metadata.session_id.as_deref(),
            Some("Seats_00000000-0000-0000-0000-000000000000")
        );
    }

    #[test]
    fn causation_and_correlation_propagate() {
        let root = Metadata::with_id("m1");
        let child = Envelope::message(Reserve {
            id: Uuid::nil(),
            conference: Uuid::nil(),
        })
        .caused_by(&root);
        assert_eq!(child.metadata.causation_id.as_deref(), Some("m1"));
        assert_eq!(child.metadata.correlation_id.as_deref(), Some("m1"));
        let grandchild = Envelope::message(Reserve {
            id: Uuid::nil(),
            conference: Uuid::nil(),
        })
        .caused_by(&child.metadata);
        assert_eq!(grandchild.metadata.causation_id, Some(child.metadata.message_id));
        assert_eq!(grandchild.metadata.correlation_id.as_deref(), Some("m1"));
        let explicit = Envelope::message(Reserve {
            id: Uuid::nil(),
            conference: Uuid::nil(),
        })
        .with_correlation_id("c")
        .caused_by(&root);
        assert_eq!(explicit.metadata.correlation_id.as_deref(), Some("c"));
    }
}
