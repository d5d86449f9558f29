//! The store's operations that many tasks of a process ask for at once, served together (see
//! [`Coalescer`]): the requests that arrive while one statement runs go in the next, each
//! caller still answered on its own.
//!
//! - **Stream loads.** Every command handler loads its aggregate's stream, and every long poll
//!   of the web process reads the tail of an order's; under load, dozens at once.
//! - **Finds of processes by key.** A process manager's router finds the process of every
//!   message it routes.
//! - **Enqueues.** A process manager sends its commands, a router its replies: one statement
//!   and one commit each.
//! - **Removals of sent process commands.** A process manager's save stores its commands, the
//!   commands are sent, then removed: each removal was a statement and a transaction of its own.

use cqrs_core::uuid::Uuid;
use cqrs_core::{Coalescer, LoadedProcess, Result, StoredEvent, StreamId};
use sqlx::{PgPool, Row};

use super::events::event;
use super::processes::loaded;
use super::sql;
use super::transport::{Enqueue, insert_messages};
use crate::error::db;

/// The most requests one statement takes.
const MAX_BATCH: usize = 1_024;
/// Removals run one statement at a time: they only need to be done, not soon.
const REMOVALS_IN_FLIGHT: usize = 1;
/// Enqueues wait for their commit: a few at once overlap their flushes.
const ENQUEUES_IN_FLIGHT: usize = 2;
/// Stream loads and process finds wait for their answer: a few statements at once keep the wait short while
/// the next batch fills.
const LOADS_IN_FLIGHT: usize = 2;
/// The connections of the reads: stream loads and process finds.
pub(super) const READ_CONNECTIONS: u32 = 2 * LOADS_IN_FLIGHT as u32;

/// One process's sent commands to remove.
#[derive(Debug)]
pub(super) struct Removal {
    pub(super) process_type: String,
    pub(super) id: Uuid,
    pub(super) message_ids: Vec<String>,
}

/// A process to find by its key.
#[derive(Debug)]
pub(super) struct FindByKey {
    pub(super) process_type: String,
    pub(super) key: String,
    pub(super) include_completed: bool,
}

/// A stream to load from a version on.
pub(super) type Load = (StreamId, i64);

/// The coalescers; their tasks end when this is dropped.
#[derive(Debug)]
pub(super) struct Batched {
    pub(super) removals: Coalescer<Removal, ()>,
    pub(super) loads: Coalescer<Load, Vec<StoredEvent>>,
    pub(super) finds: Coalescer<FindByKey, Option<LoadedProcess>>,
    pub(super) enqueues: Coalescer<Enqueue, ()>,
}

impl Batched {
    /// Starts the tasks on the current tokio runtime: loads and finds on `reads`, enqueues and
    /// removals on `pool`.
    pub(super) fn start(pool: PgPool, reads: PgPool) -> Self {
        Self {
            removals: Coalescer::start("command remover", MAX_BATCH, REMOVALS_IN_FLIGHT, {
                let pool = pool.clone();
                move |batch| remove(pool.clone(), batch)
            }),
            enqueues: Coalescer::start("enqueuer", MAX_BATCH, ENQUEUES_IN_FLIGHT, move |batch| {
                let pool = pool.clone();
                async move {
                    let count = batch.len();
                    insert_messages(&pool, batch).await?;
                    Ok(vec![(); count])
                }
            }),
            loads: Coalescer::start("stream loader", MAX_BATCH, LOADS_IN_FLIGHT, {
                let reads = reads.clone();
                move |batch| load(reads.clone(), batch)
            }),
            finds: Coalescer::start("process finder", MAX_BATCH, LOADS_IN_FLIGHT, move |batch| {
                find(reads.clone(), batch)
            }),
        }
    }
}

async fn remove(pool: PgPool, batch: Vec<Removal>) -> Result<Vec<()>> {
    let (mut types, mut ids, mut messages) = (Vec::new(), Vec::new(), Vec::new());
    for removal in &batch {
        for message_id in &removal.message_ids {
            types.push(removal.process_type.as_str());
            ids.push(removal.id);
            messages.push(message_id.as_str());
        }
    }
    sqlx::query(sql::REMOVE_SENT_COMMANDS)
        .bind(&types)
        .bind(&ids)
        .bind(&messages)
        .execute(&pool)
        .await
        .map_err(db)?;
    Ok(vec![(); batch.len()])
}

async fn load(pool: PgPool, batch: Vec<Load>) -> Result<Vec<Vec<StoredEvent>>> {
    let (streams, versions): (Vec<&str>, Vec<i64>) = batch
        .iter()
        .map(|(stream, from)| (stream.as_str(), *from))
        .unzip();
    let rows = sqlx::query(sql::LOAD_STREAMS)
        .bind(&streams)
        .bind(&versions)
        .fetch_all(&pool)
        .await
        .map_err(db)?;
    let mut loaded = vec![Vec::new(); batch.len()];
    for row in &rows {
        let idx: i64 = row.try_get(sql::LOAD_STREAMS_REQUEST).map_err(db)?;
        answer(&mut loaded, idx, "a stream load")?.push(event(row)?);
    }
    Ok(loaded)
}

async fn find(pool: PgPool, batch: Vec<FindByKey>) -> Result<Vec<Option<LoadedProcess>>> {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for f in &batch {
        columns.0.push(f.process_type.as_str());
        columns.1.push(f.key.as_str());
        columns.2.push(f.include_completed);
    }
    let rows = sqlx::query(sql::FIND_PROCESSES_BY_KEY)
        .bind(&columns.0)
        .bind(&columns.1)
        .bind(&columns.2)
        .fetch_all(&pool)
        .await
        .map_err(db)?;
    let mut found: Vec<Option<LoadedProcess>> = batch.iter().map(|_| None).collect();
    for row in &rows {
        let idx: i64 = row.try_get("idx").map_err(db)?;
        *answer(&mut found, idx, "a process find")? = Some(loaded(row)?);
    }
    Ok(found)
}

/// The answer to request `idx` (counted from 1) of `answers`; `what` names the statement in
/// the error for an ordinal out of range.
fn answer<'a, T>(answers: &'a mut [T], idx: i64, what: &str) -> Result<&'a mut T> {
    usize::try_from(idx - 1)
        .ok()
        .and_then(|i| answers.get_mut(i))
        .ok_or_else(|| cqrs_core::Error::permanent(format!("{what} answered request {idx}")))
}
