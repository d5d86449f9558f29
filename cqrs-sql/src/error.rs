//! Mapping sqlx errors to the framework's classification.

use cqrs_core::Error;

/// Classifies a sqlx failure as the stores do: connection-level trouble (a lost connection, a
/// pool timeout) and a busy SQLite database are transient, the rest permanent. Unique
/// violations are turned into conflicts by the callers that know the stream. Exported as
/// [`sqlx_error`](crate::sqlx_error), for an application's own statements on the same databases.
pub fn db(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::transient(error),
        sqlx::Error::Database(e) if is_busy(e.as_ref()) => Error::transient(error),
        _ => Error::permanent(error),
    }
}

/// SQLite reports a locked database with primary result codes 5 (`SQLITE_BUSY`) and 6
/// (`SQLITE_LOCKED`), extended codes keep the primary code in their low byte.
fn is_busy(error: &dyn sqlx::error::DatabaseError) -> bool {
    error
        .code()
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Whether `error` is a unique-key violation.
#[cfg(feature = "postgres")]
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// A stored value that cannot be read back (a corrupt column, an unknown codec tag).
pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::permanent(format!("stored {what} is unreadable: {detail}"))
}
