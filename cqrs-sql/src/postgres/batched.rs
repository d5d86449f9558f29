//! The store's operations that many tasks of a process ask for at once, served together (see
//! [`Coalescer`]): the requests that arrive while one statement runs go in the next, each
//! caller still answered on its own.
//!
//! - **Stream loads.** Every command handler loads its aggregate's stream, and every long poll
//!   of the web process reads the tail of an order's; under load, dozens at once.
//! - **Removals of sent process commands.** A process manager's save stores its commands, the
//!   commands are sent, then removed: each removal was a statement and a transaction of its own.

use cqrs_core::uuid::Uuid;
use cqrs_core::{Coalescer, Result, StoredEvent, StreamId};
use sqlx::{PgPool, Row};

use super::events::event;
use super::sql;
use crate::error::db;

/// The most requests one statement takes.
const MAX_BATCH: usize = 1_024;
/// Removals run one statement at a time: they only need to be done, not soon.
const REMOVALS_IN_FLIGHT: usize = 1;
/// Stream loads wait for their answer: a few statements at once keep the wait short while
/// the next batch fills.
pub(super) const LOADS_IN_FLIGHT: usize = 2;

/// One process's sent commands to remove.
#[derive(Debug)]
pub(super) struct Removal {
    pub(super) process_type: String,
    pub(super) id: Uuid,
    pub(super) message_ids: Vec<String>,
}

/// A stream to load from a version on.
pub(super) type Load = (StreamId, i64);

/// The coalescers; their tasks end when this is dropped.
#[derive(Debug)]
pub(super) struct Batched {
    pub(super) removals: Coalescer<Removal, ()>,
    pub(super) loads: Coalescer<Load, Vec<StoredEvent>>,
}

impl Batched {
    /// Starts the tasks on the current tokio runtime: loads on `reads` (connections set to
    /// generic plans, see [`super::PgStore::connect_with`]), removals on `pool`.
    pub(super) fn start(pool: PgPool, reads: PgPool) -> Self {
        Self {
            removals: Coalescer::start("command remover", MAX_BATCH, REMOVALS_IN_FLIGHT, move |batch| {
                remove(pool.clone(), batch)
            }),
            loads: Coalescer::start("stream loader", MAX_BATCH, LOADS_IN_FLIGHT, move |batch| {
                load(reads.clone(), batch)
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
        // The requests' ordinals, from 1.
        let idx: i64 = row.try_get(sql::LOAD_STREAMS_REQUEST).map_err(db)?;
        let request = usize::try_from(idx - 1)
            .ok()
            .and_then(|i| loaded.get_mut(i))
            .ok_or_else(|| cqrs_core::Error::permanent(format!("a stream load answered request {idx}")))?;
        request.push(event(row)?);
    }
    Ok(loaded)
}
