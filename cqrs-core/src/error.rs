//! The framework's error type and its classification.

use std::error::Error as StdError;

use crate::codec::CodecError;
use crate::store::ExpectedVersion;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a failure should be treated by retry policies.
///
/// Policies decide from this, never from an error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// An optimistic-concurrency conflict: reload and try again.
    Conflict,
    /// The infrastructure failed for now (connection lost, timeout): try again later.
    Transient,
    /// Trying again will not help.
    Permanent,
}

/// Every failure the framework reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An append or save found another version than the one expected.
    #[error("concurrency conflict on `{stream}`: expected version {expected}, actual {actual}")]
    Conflict {
        /// The stream or document that was written.
        stream: String,
        /// The version the writer expected.
        expected: ExpectedVersion,
        /// The version found (−1 for a stream that does not exist).
        actual: i64,
    },
    /// An aggregate or entity does not exist. Displays as `<entity>: <id>`.
    #[error("{entity}: {id}")]
    NotFound {
        /// The entity type, e.g. the aggregate type name.
        entity: String,
        /// The id that was looked up.
        id: String,
    },
    /// A payload could not be encoded or decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A stored or received message has a name no registered type claims.
    #[error("unknown message name `{0}`")]
    UnknownMessage(String),
    /// A command was dispatched but no handler is registered for it.
    #[error("no handler registered for `{0}`")]
    NoHandler(String),
    /// A second handler (or a second Rust type) was registered for one message name.
    #[error("`{0}` is already registered")]
    AlreadyRegistered(String),
    /// A handler panicked; the panic message is kept.
    #[error("handler panicked: {0}")]
    Panicked(String),
    /// A stored stream is not a valid history (a gap in versions, a wrong stream).
    #[error("corrupt stream `{stream}`: {reason}")]
    Corrupt {
        /// The stream that was read.
        stream: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A rule of the domain refused the operation. Permanent.
    #[error(transparent)]
    Domain(BoxError),
    /// The infrastructure failed for now; retrying may succeed.
    #[error("transient failure: {0}")]
    Transient(#[source] BoxError),
    /// The infrastructure failed in a way retrying will not fix.
    #[error("{0}")]
    Permanent(#[source] BoxError),
}

impl Error {
    /// Wraps a domain error (a rule refused the operation).
    pub fn domain(error: impl Into<BoxError>) -> Self {
        Self::Domain(error.into())
    }

    /// Wraps an infrastructure error that is worth retrying.
    pub fn transient(error: impl Into<BoxError>) -> Self {
        Self::Transient(error.into())
    }

    /// Wraps an infrastructure error that is not worth retrying.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self::Permanent(error.into())
    }

    /// How retry policies should treat this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::Transient(_) => ErrorKind::Transient,
            _ => ErrorKind::Permanent,
        }
    }

    /// `true` for an optimistic-concurrency conflict.
    pub fn is_conflict(&self) -> bool {
        self.kind() == ErrorKind::Conflict
    }

    /// `true` for a failure that retrying may fix.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// `true` when retrying may help: a conflict or a transient failure.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Conflict | ErrorKind::Transient)
    }

    /// `true` when a message can never be handled as it is (it does not decode, or nobody
    /// handles it): processors dead-letter it at once instead of retrying.
    pub fn is_undeliverable(&self) -> bool {
        matches!(
            self,
            Self::Codec(_) | Self::UnknownMessage(_) | Self::NoHandler(_)
        )
    }

    /// A copy of this error for each caller of a batch that failed as a whole (a group commit,
    /// a [`Coalescer`](crate::Coalescer) call): a conflict keeps its details, any other error
    /// keeps its class (transient or permanent) and its text, not its source.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Conflict {
                stream,
                expected,
                actual,
            } => Self::Conflict {
                stream: stream.clone(),
                expected: *expected,
                actual: *actual,
            },
            Self::Transient(inner) => Self::transient(inner.to_string()),
            e => Self::permanent(e.to_string()),
        }
    }

    /// The domain error inside, if this is [`Error::Domain`] holding an `E`.
    pub fn as_domain<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            Self::Domain(inner) => inner.downcast_ref::<E>(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("sold out")]
    struct SoldOut;

    #[test]
    fn classification_drives_retries() {
        let conflict = Error::Conflict {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2,
        };
        assert!(conflict.is_conflict() && conflict.is_retryable());
        assert!(Error::transient("down").is_retryable());
        let domain = Error::domain(SoldOut);
        assert!(!domain.is_retryable());
        assert!(domain.as_domain::<SoldOut>().is_some());
        assert_eq!(domain.to_string(), "sold out");
        assert!(Error::UnknownMessage("X".into()).is_undeliverable());
        assert!(!Error::transient("down").is_undeliverable());
    }

    #[test]
    fn a_duplicate_keeps_the_class_and_the_text() {
        let conflict = Error::Conflict {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(1),
            actual: 2,
        };
        assert!(matches!(
            conflict.duplicate(),
            Error::Conflict { ref stream, expected: ExpectedVersion::Exact(1), actual: 2 } if stream == "s"
        ));
        let transient = Error::transient("connection reset").duplicate();
        assert!(transient.is_transient());
        assert_eq!(transient.to_string(), "transient failure: connection reset");
        let permanent = Error::domain(SoldOut).duplicate();
        assert_eq!(permanent.kind(), ErrorKind::Permanent);
        assert_eq!(permanent.to_string(), "sold out");
    }

    #[test]
    fn not_found_names_type_and_id() {
        let e = Error::NotFound {
            entity: "Order".into(),
            id: "42".into(),
        };
        assert_eq!(e.to_string(), "Order: 42");
    }
}
