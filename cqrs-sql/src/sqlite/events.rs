//! Event store, outbox and snapshots on SQLite.

use std::collections::{HashMap, HashSet};

use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AppendResult, Error, EventAppender, EventMetadata, EventOutbox, EventReader, ExpectedVersion, NewEvent,
    Payload, Result, Snapshot, SnapshotStore, StoredEvent, StreamId,
};
use rusqlite::Connection;

use super::batch::control;
use super::{SqliteStore, direct, sql, timestamp};
use crate::error::corrupt;
use crate::group::AppendRequest;

/// Events per INSERT statement: 10 parameters each, well under SQLite's variable limit.
const ROWS_PER_INSERT: usize = 500;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(sql::INSERT_EVENTS.len() + rows * (sql::EVENT_ROW.len() + 2) + 20);
    sql.push_str(sql::INSERT_EVENTS);
    sql::push_rows(&mut sql, sql::EVENT_ROW, rows);
    sql.push_str(sql::RETURNING_POSITION);
    sql
}

/// One event from a row of [`sql::LOAD_STREAM`]'s columns, in their order.
fn event(row: &rusqlite::Row<'_>) -> Result<StoredEvent> {
    fn text<'r>(row: &'r rusqlite::Row<'_>, column: usize, what: &str) -> Result<&'r str> {
        row.get_ref(column)
            .map_err(direct::error)?
            .as_str()
            .map_err(|e| corrupt(what, e))
    }
    fn integer(row: &rusqlite::Row<'_>, column: usize, what: &str) -> Result<i64> {
        row.get_ref(column)
            .map_err(direct::error)?
            .as_i64()
            .map_err(|e| corrupt(what, e))
    }
    let payload = row.get_ref(8).map_err(direct::error)?;
    Ok(StoredEvent {
        position: integer(row, 0, "position")? as u64,
        event_id: Uuid::parse_str(text(row, 1, "event id")?).map_err(|e| corrupt("event id", e))?,
        stream_id: StreamId::new(text(row, 2, "stream id")?),
        stream_type: text(row, 3, "stream type")?.to_owned(),
        version: integer(row, 4, "version")?,
        payload: Payload {
            name: text(row, 5, "event name")?.to_owned(),
            schema_version: integer(row, 6, "schema version")? as u32,
            codec: direct::codec(row, 7)?,
            bytes: payload
                .as_blob()
                .map_err(|e| corrupt("payload", e))?
                .to_vec()
                .into(),
        },
        metadata: serde_json::from_str::<EventMetadata>(text(row, 9, "event metadata")?)
            .map_err(|e| corrupt("event metadata", e))?,
        recorded_at: timestamp(integer(row, 10, "recorded time")?)?,
    })
}

impl SqliteStore {
    /// Runs a query of the event columns on a reader, decoding the rows as they are stepped.
    async fn read_events(&self, query: &str, params: impl rusqlite::Params) -> Result<Vec<StoredEvent>> {
        self.read(|db| direct::query(db, query, params, event)).await
    }
}

impl EventReader for SqliteStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::LOAD_STREAM, (stream.as_str(), from_version))
            .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::READ_ALL, (after as i64, limit as i64))
            .await
    }
}

/// SQLite's limit on bound parameters per statement (32,766) leaves room for this many events
/// (8 parameters each) in a one-statement batch.
pub(super) const MAX_STATEMENT_EVENTS: usize = 3_000;

fn batch_sql(appends: usize, events: usize) -> String {
    let mut sql = String::with_capacity(800 + appends * 14 + events * 26);
    sql.push_str(sql::BATCH_APPEND_HEAD);
    sql::push_rows(&mut sql, sql::BATCH_APPEND_ROW, appends);
    sql.push_str(sql::BATCH_APPEND_ROWS);
    sql::push_rows(&mut sql, sql::BATCH_EVENT_ROW, events);
    sql.push_str(sql::BATCH_APPEND_TAIL);
    sql
}

/// How the writer writes a batch's appends, in arrival order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// These appends (to distinct streams, with at most [`MAX_STATEMENT_EVENTS`] events in
    /// all) in one statement.
    Statement(Vec<usize>),
    /// This append on its own: no events (a version check), or too many for one statement.
    Alone(usize),
}

/// Splits a batch's appends into statements: an append to a stream already in the statement
/// being built starts the next one, so each stream's appends apply in the order they came.
pub(super) fn plan(appends: &[AppendRequest]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut current = Vec::new();
    let mut streams = HashSet::new();
    let mut events = 0;
    for (idx, append) in appends.iter().enumerate() {
        let n = append.events.len();
        let alone = n == 0 || n > MAX_STATEMENT_EVENTS;
        if !current.is_empty()
            && (alone || streams.contains(&append.stream) || events + n > MAX_STATEMENT_EVENTS)
        {
            steps.push(Step::Statement(std::mem::take(&mut current)));
            streams.clear();
            events = 0;
        }
        if alone {
            steps.push(Step::Alone(idx));
        } else {
            current.push(idx);
            streams.insert(&append.stream);
            events += n;
        }
    }
    if !current.is_empty() {
        steps.push(Step::Statement(current));
    }
    steps
}

/// Runs the `steps` of [`plan`]: one result per append, in order. Inside a transaction
/// (`in_transaction`), each step runs in a savepoint, so a failed statement rolls back only
/// itself; a statement of several appends that fails for another reason than a busy database
/// is tried again append by append, so that the one at fault alone fails. `Err` when SQLite
/// rolled the whole transaction back.
pub(super) fn run(
    db: &Connection,
    appends: &[AppendRequest],
    steps: &[Step],
    recorded_at: i64,
    in_transaction: bool,
) -> Result<Vec<Result<AppendResult>>> {
    let mut results: Vec<Option<Result<AppendResult>>> = appends.iter().map(|_| None).collect();
    let attempt = |indices: &[usize], results: &mut Vec<Option<Result<AppendResult>>>| match isolated(
        db,
        in_transaction,
        |db| statement(db, appends, indices, recorded_at),
    ) {
        Ok(written) => {
            for (&idx, result) in indices.iter().zip(written) {
                results[idx] = Some(result);
            }
            true
        }
        Err(error) if indices.len() > 1 && !error.is_transient() => false,
        Err(error) => {
            for &idx in indices {
                results[idx] = Some(Err(error.duplicate()));
            }
            true
        }
    };
    for step in steps {
        match step {
            Step::Statement(indices) => {
                if !attempt(indices, &mut results) {
                    for &idx in indices {
                        attempt(&[idx], &mut results);
                    }
                }
            }
            Step::Alone(idx) => {
                results[*idx] = Some(
                    isolated(db, in_transaction, |db| {
                        append_alone(db, &appends[*idx], recorded_at)
                    })
                    .and_then(|result| result),
                );
            }
        }
        if in_transaction && db.is_autocommit() {
            return Err(Error::transient("SQLite rolled the batch's transaction back"));
        }
    }
    Ok(results
        .into_iter()
        .map(|result| result.expect("every append is in a step"))
        .collect())
}

/// Runs `work` in a savepoint inside a transaction (rolled back alone if it fails), or as is.
fn isolated<T>(
    db: &Connection,
    in_transaction: bool,
    work: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    if !in_transaction {
        return work(db);
    }
    control(db, "SAVEPOINT append").map_err(direct::error)?;
    let result = work(db);
    let end = if result.is_ok() {
        control(db, "RELEASE append")
    } else {
        control(db, "ROLLBACK TO append").and_then(|()| control(db, "RELEASE append"))
    };
    if db.is_autocommit() {
        // The transaction is gone: the caller sees it.
        return result;
    }
    end.map_err(direct::error)?;
    result
}

/// The appends at `indices` (distinct streams, each with events) in one statement: each
/// inserts all its events or, when its expected version does not match, none.
fn statement(
    db: &Connection,
    appends: &[AppendRequest],
    indices: &[usize],
    recorded_at: i64,
) -> Result<Vec<Result<AppendResult>>> {
    let events: usize = indices.iter().map(|&idx| appends[idx].events.len()).sum();
    let mut statement = db
        .prepare_cached(&batch_sql(indices.len(), events))
        .map_err(direct::error)?;
    let mut param = 0;
    let mut bind = |statement: &mut rusqlite::CachedStatement<'_>, value: &dyn rusqlite::ToSql| {
        param += 1;
        statement.raw_bind_parameter(param, value).map_err(direct::error)
    };
    for (k, &idx) in indices.iter().enumerate() {
        let append = &appends[idx];
        bind(&mut statement, &(k as i64))?;
        bind(&mut statement, &append.stream.as_str())?;
        bind(&mut statement, &append.stream_type.as_str())?;
        bind(
            &mut statement,
            &match append.expected {
                ExpectedVersion::Any => None,
                ExpectedVersion::Exact(v) => Some(v),
            },
        )?;
    }
    let mut id = Uuid::encode_buffer();
    for (k, &idx) in indices.iter().enumerate() {
        for (n, event) in appends[idx].events.iter().enumerate() {
            let metadata = serde_json::to_string(&event.metadata).map_err(Error::permanent)?;
            bind(&mut statement, &(k as i64))?;
            bind(&mut statement, &(n as i64 + 1))?;
            bind(
                &mut statement,
                &&*event.event_id.hyphenated().encode_lower(&mut id),
            )?;
            bind(&mut statement, &event.payload.name.as_str())?;
            bind(&mut statement, &i64::from(event.payload.schema_version))?;
            bind(&mut statement, &event.payload.codec.tag())?;
            bind(&mut statement, &&event.payload.bytes[..])?;
            bind(&mut statement, &metadata)?;
        }
    }
    bind(&mut statement, &recorded_at)?;
    let mut written: Vec<Option<AppendResult>> = vec![None; indices.len()];
    let slot: HashMap<&str, usize> = indices
        .iter()
        .enumerate()
        .map(|(k, &idx)| (appends[idx].stream.as_str(), k))
        .collect();
    let mut rows = statement.raw_query();
    while let Some(row) = rows.next().map_err(direct::error)? {
        let position: i64 = direct::get(row, 0)?;
        let version: i64 = direct::get(row, 2)?;
        let stream = row
            .get_ref(1)
            .map_err(direct::error)?
            .as_str()
            .map_err(|e| corrupt("stream id", e))?;
        let Some(&k) = slot.get(stream) else {
            return Err(corrupt("appended stream id", stream));
        };
        let entry = written[k].get_or_insert(AppendResult {
            last_version: version,
            last_position: 0,
        });
        entry.last_version = entry.last_version.max(version);
        entry.last_position = entry.last_position.max(position as u64);
    }
    drop(rows);
    indices
        .iter()
        .zip(written)
        .map(|(&idx, written)| match written {
            Some(result) => Ok(Ok(result)),
            None => {
                let append = &appends[idx];
                Ok(Err(Error::Conflict {
                    stream: append.stream.to_string(),
                    expected: append.expected,
                    actual: stream_version(db, &append.stream)?,
                }))
            }
        })
        .collect()
}

fn stream_version(db: &Connection, stream: &StreamId) -> Result<i64> {
    db.prepare_cached(sql::STREAM_VERSION)
        .and_then(|mut statement| statement.query_row([stream.as_str()], |row| row.get(0)))
        .map_err(direct::error)
}

/// An append written on its own, inside the batch's transaction: its version checked, then
/// its events inserted in chunks. The outer error aborts it, the inner one (a conflict) fails
/// only this append.
fn append_alone(db: &Connection, request: &AppendRequest, recorded_at: i64) -> Result<Result<AppendResult>> {
    let stream = request.stream.as_str();
    let actual = stream_version(db, &request.stream)?;
    if !request.expected.matches(actual) {
        return Ok(Err(Error::Conflict {
            stream: stream.to_owned(),
            expected: request.expected,
            actual,
        }));
    }
    let mut version = actual;
    let mut last_position = 0;
    for chunk in request.events.chunks(ROWS_PER_INSERT) {
        let mut statement = db
            .prepare_cached(&insert_sql(chunk.len()))
            .map_err(direct::error)?;
        let mut values: Vec<Box<dyn rusqlite::ToSql>> = Vec::with_capacity(chunk.len() * 10);
        for event in chunk {
            version += 1;
            let metadata = serde_json::to_string(&event.metadata).map_err(Error::permanent)?;
            values.push(Box::new(event.event_id.to_string()));
            values.push(Box::new(stream.to_owned()));
            values.push(Box::new(request.stream_type.clone()));
            values.push(Box::new(version));
            values.push(Box::new(event.payload.name.clone()));
            values.push(Box::new(i64::from(event.payload.schema_version)));
            values.push(Box::new(event.payload.codec.tag()));
            values.push(Box::new(event.payload.bytes.to_vec()));
            values.push(Box::new(metadata));
            values.push(Box::new(recorded_at));
        }
        let mut rows = statement
            .query(rusqlite::params_from_iter(values))
            .map_err(direct::error)?;
        while let Some(row) = rows.next().map_err(direct::error)? {
            last_position = last_position.max(direct::get::<i64>(row, 0)?);
        }
    }
    Ok(Ok(AppendResult {
        last_version: version,
        last_position: last_position as u64,
    }))
}

impl EventAppender for SqliteStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner
            .writer
            .append(AppendRequest {
                stream: stream.clone(),
                stream_type: stream_type.to_owned(),
                expected,
                events,
            })
            .await
    }
}

impl EventOutbox for SqliteStore {
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        self.read_events(sql::UNPUBLISHED, [limit as i64]).await
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        self.execute(sql::MARK_PUBLISHED, (stream.as_str().to_owned(), version))
            .await
            .map(drop)
    }

    /// One write of the batch, a statement per stream.
    async fn mark_published_many(&self, marks: &[(StreamId, i64)]) -> Result<()> {
        let marks = marks
            .iter()
            .map(|(stream, version)| (stream.as_str().to_owned(), *version))
            .collect();
        self.execute_each(sql::MARK_PUBLISHED, marks).await.map(drop)
    }

    /// One write of the batch, each event's entry removed by its position.
    async fn mark_events_published(&self, events: &[&StoredEvent]) -> Result<()> {
        let positions = events.iter().map(|e| (e.position as i64,)).collect();
        self.execute_each(sql::REMOVE_PUBLISHED, positions)
            .await
            .map(drop)
    }

    async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}

impl SnapshotStore for SqliteStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        self.read(|db| {
            direct::first(db, sql::LOAD_SNAPSHOT, [stream.as_str()], |row| {
                Ok(Snapshot {
                    stream_id: stream.clone(),
                    version: direct::get(row, "version")?,
                    schema_version: direct::get::<i64>(row, "schema_version")? as u32,
                    codec: direct::codec(row, "codec")?,
                    bytes: direct::get::<Vec<u8>>(row, "bytes")?.into(),
                    taken_at: timestamp(direct::get(row, "taken_at")?)?,
                })
            })
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.execute(
            sql::SAVE_SNAPSHOT,
            (
                snapshot.stream_id.as_str().to_owned(),
                snapshot.version,
                i64::from(snapshot.schema_version),
                snapshot.codec.tag(),
                snapshot.bytes.to_vec(),
                snapshot.taken_at.timestamp_micros(),
            ),
        )
        .await
        .map(drop)
    }
}
