//! What the store's `rusqlite` code shares: its error classification, statement helpers, and
//! running a call on the calling thread. The event log's [`readers`](super::readers) and the
//! [`writer`](super::writer) thread use `rusqlite` connections of their own rather than sqlx's,
//! whose every statement runs on a worker thread of its own and sends each row back through a
//! channel, duplicating every column value on the way: loading a 10,000-event stream that way
//! took 35 ms, a third of it allocation and a fifth thread hand-offs; read directly, 8 ms.

use cqrs_core::{Codec, Error, Result};
use rusqlite::{Connection, ErrorCode, Params, Row, RowIndex};

use crate::error::corrupt;

/// Runs `work` on the calling thread: inside `block_in_place` on a multi-thread tokio runtime
/// (so that the worker's other tasks move to another thread while it waits for the disk),
/// inline on a current-thread one.
pub(super) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Classifies a `rusqlite` failure like [`crate::error::db`] classifies sqlx's: a busy or
/// locked database is transient (worth a retry), the rest permanent. Public as
/// `cqrs_sql::sqlite_error`, for the work given to [`SqliteReaders::read`](super::SqliteReaders::read).
pub fn error(error: rusqlite::Error) -> Error {
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

/// The first row `statement` returns with `params`, converted; `None` when there is none. The
/// rows after it are not stepped.
pub(super) fn first<T>(
    db: &Connection,
    statement: &str,
    params: impl Params,
    convert: impl FnOnce(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut statement = db.prepare_cached(statement).map_err(error)?;
    let mut rows = statement.query(params).map_err(error)?;
    rows.next().map_err(error)?.map(convert).transpose()
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
