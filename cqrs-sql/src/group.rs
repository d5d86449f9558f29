//! What both backends' group commit share: an append as the batch writer sees it. Appends
//! that arrive while a batch is being written are written together in the next transaction,
//! each still checked against its own expected version and answered with its own result, or
//! with a copy of the batch's failure ([`cqrs_core::Error::duplicate`]) (PostgreSQL:
//! [`crate::postgres`]'s committer task; SQLite: its writer thread).

use cqrs_core::{ExpectedVersion, NewEvent, StreamId};

/// One append, as the batch writer sees it.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    pub(crate) stream: StreamId,
    pub(crate) stream_type: String,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
}
