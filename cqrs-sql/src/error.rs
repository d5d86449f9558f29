//! Mapping sqlx errors to the framework's classification.

use cqrs_core::Error;

/// Classifies a sqlx failure as the stores do: connection-level trouble (a lost connection, a
/// pool timeout), a busy SQLite database and a PostgreSQL error that a retry can get past (the
/// server shutting down or not yet accepting connections, a serialization failure, a
/// deadlock, too many connections) are transient; the rest is permanent. Unique violations
/// are turned into conflicts by the callers that know the stream. Exported as
/// [`sqlx_error`](crate::sqlx_error), for an application's own statements on the same databases.
///
/// On PostgreSQL, a lost connection (an I/O error, or the server terminating it) also has
/// every connection of the process idle since checked before its next use (see
/// [`pg_pool_options`](crate::pg_pool_options)).
pub fn db(error: sqlx::Error) -> Error {
    #[cfg(feature = "postgres")]
    if is_connection_lost(&error) {
        crate::postgres::connection_lost();
    }
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::transient(error),
        sqlx::Error::Database(e) if is_busy(e.as_ref()) || is_passing(e.as_ref()) => Error::transient(error),
        _ => Error::permanent(error),
    }
}

/// SQLite reports a locked database with primary result codes 5 (`SQLITE_BUSY`) and 6
/// (`SQLITE_LOCKED`); extended codes keep the primary code in their low byte. Only SQLite's
/// codes are read so: PostgreSQL's are SQLSTATEs, and `42501` (insufficient privilege) has a
/// low byte of 5 too.
#[cfg(feature = "sqlite")]
fn is_busy(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
        && error
            .code()
            .and_then(|code| code.parse::<i64>().ok())
            .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

#[cfg(not(feature = "sqlite"))]
fn is_busy(_: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

/// The PostgreSQL errors that pass: class 08 (connection exception), `40001` (serialization
/// failure), `40P01` (deadlock detected), `53300` (too many connections) and class 57P
/// (`admin_shutdown`, `crash_shutdown`, `cannot_connect_now`, …: the server going down or
/// coming up).
#[cfg(feature = "postgres")]
fn is_passing(error: &dyn sqlx::error::DatabaseError) -> bool {
    pg_code(error).is_some_and(|code| is_lost_session(&code) || matches!(&*code, "40001" | "40P01" | "53300"))
}

/// The SQLSTATE of a PostgreSQL error (`None` for another database's).
#[cfg(feature = "postgres")]
fn pg_code(error: &dyn sqlx::error::DatabaseError) -> Option<std::borrow::Cow<'_, str>> {
    error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|_| error.code())
}

/// Class 08 (connection exception) and class 57P (the server terminating the session).
#[cfg(feature = "postgres")]
fn is_lost_session(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

#[cfg(not(feature = "postgres"))]
fn is_passing(_: &dyn sqlx::error::DatabaseError) -> bool {
    false
}

/// Whether `error` says the connection is gone: an I/O error, or PostgreSQL's class 08
/// (connection exception) or 57P (the server terminating the session).
#[cfg(feature = "postgres")]
pub(crate) fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(e) => pg_code(e.as_ref()).is_some_and(|code| is_lost_session(&code)),
        _ => false,
    }
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
