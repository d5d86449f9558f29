//! What both backends' group commit share: an append as the batch writer sees it, and the
//! failure each append of a failed batch gets. Appends that arrive while a batch is being
//! written are written together in the next transaction, each still checked against its own
//! expected version and answered with its own result (PostgreSQL: [`crate::postgres`]'s
//! committer task; SQLite: its writer thread).

use cqrs_core::{Error, ExpectedVersion, NewEvent, StreamId};

/// One append, as the batch writer sees it.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamId,
    pub(crate) stream_type: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
}

/// The same failure for every append of a batch that failed as a whole, keeping its class.
pub(crate) fn shared_failure(error: &Error) -> Error {
    match error {
        Error::Conflict {
            stream,
            expected,
            actual,
        } => Error::Conflict {
            stream: stream.clone(),
            expected: *expected,
            actual: *actual,
        },
        e if e.is_transient() => Error::transient(e.to_string()),
        e => Error::permanent(e.to_string()),
    }
}
