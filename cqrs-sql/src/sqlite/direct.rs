//! Direct SQLite calls: the rows of a stream, of the global log and of the outbox are stepped
//! through `rusqlite` on the handle of a pooled sqlx reader, locked out of sqlx's worker thread
//! meanwhile; and the helpers the [`writer`](super::writer) thread's `rusqlite` code shares.
//!
//! sqlx runs each statement on a worker thread of its own and sends every row back through a
//! channel, duplicating every column value on the way. Loading a 10,000-event stream that way
//! took 35 ms, a third of it allocation and a fifth thread hand-offs; read directly, 8 ms.
//!
//! This module holds the crate's only `unsafe` line: wrapping the locked handle in a
//! `rusqlite::Connection` that does not own it.

use cqrs_core::{Codec, Error, Result};
use rusqlite::{Connection, ErrorCode, Params, Row, RowIndex};
use sqlx::SqliteConnection;

use crate::error::{corrupt, db};

/// Runs `work` with a `rusqlite` connection on `conn`'s handle, locked for the duration.
///
/// The work runs on the calling thread: inside `block_in_place` on a multi-thread tokio
/// runtime (it may wait for the disk), inline on a current-thread one.
pub(super) async fn run<T>(
    conn: &mut SqliteConnection,
    work: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    let mut locked = conn.lock_handle().await.map_err(db)?;
    let raw = locked.as_raw_handle();
    blocking(|| {
        // SAFETY: `raw` is the open handle of `conn`, and `locked` keeps sqlx's worker thread
        // off it until after `direct` is dropped at the end of this closure. `from_handle`
        // does not take ownership: dropping `direct` finalizes only the statements it
        // prepared and leaves the handle open for sqlx.
        #[allow(unsafe_code)]
        let direct = unsafe { Connection::from_handle(raw.as_ptr()) }.map_err(error)?;
        work(&direct)
    })
}

fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Classifies a `rusqlite` failure like [`db`] classifies sqlx's: a busy or locked database
/// is transient, the rest permanent.
pub(super) fn error(error: rusqlite::Error) -> Error {
    match error.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::transient(error),
        _ => Error::permanent(error),
    }
}

/// Runs `statement` (prepared once per connection wrapper) with `params`, converting each row
/// with `convert` as it is stepped.
pub(super) fn query<T>(
    db: &Connection,
    statement: &str,
    params: impl Params,
    mut convert: impl FnMut(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = db.prepare_cached(statement).map_err(error)?;
    let mut rows = statement.query(params).map_err(error)?;
    let mut converted = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        converted.push(convert(row)?);
    }
    Ok(converted)
}

/// Whether `error` is a unique-key (or primary-key) violation.
pub(super) fn is_unique_violation(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Column `column` (a name or an index) of `row`, converted; a missing column or a value of
/// the wrong type is a permanent error.
pub(super) fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, column: impl RowIndex) -> Result<T> {
    row.get(column).map_err(error)
}

/// The codec named by the tag in column `column`, read without copying it.
pub(super) fn codec(row: &Row<'_>, column: impl RowIndex) -> Result<Codec> {
    row.get_ref(column)
        .map_err(error)?
        .as_str()
        .map_err(|e| corrupt("codec tag", e))?
        .parse()
        .map_err(|e| corrupt("codec tag", e))
}
