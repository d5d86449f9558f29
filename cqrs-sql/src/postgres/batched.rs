//! The store's operations that many tasks of a process ask for at once, served together (see
//! [`Coalescer`]): the requests that arrive while one statement runs go in the next, each
//! caller still answered on its own.
//!
//! - **Stream loads.** Every command handler loads its aggregate's stream, and every long poll
//!   of the web process reads the tail of an order's; under load, dozens at once.
//! - **Finds of processes by key.** A process manager's router finds the process of every
//!   message it routes.
//! - **Completions of delivered messages** (with the next messages of their sessions): every
//!   message a processor handles.
//! - **Process saves**, each with the commands it stores: a process manager saves its process
//!   for every message it handles. Each save is still checked against its own expected version.
//! - **Enqueues.** A process manager sends its commands, a router its replies: one statement
//!   and one commit each.
//! - **Removals of sent process commands.** A process manager's save stores its commands, the
//!   commands are sent, then removed: each removal was a statement and a transaction of its own.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Coalescer, Delivery, LoadedProcess, ProcessRecord, Result, SharedClock, StoredCommand, StoredEvent,
    StreamId, saturating_add,
};
use sqlx::Row;

use super::events::event;
use super::kept::{KeptConnections, OnKept};
use super::processes::loaded;
use super::sql;
use super::transport::{Enqueue, delivery, insert_messages};
use crate::error::db;

/// The most requests one statement takes.
const MAX_BATCH: usize = 1_024;
/// One statement of each kind at a time: while it runs, the next batch fills. Two at a time
/// made smaller batches, more statements for the same work, and fewer orders a second (4,000
/// orders alternated: 265.6, 267.9 and 313.5 with two; 313.3, 341.2 and 349.9 with one).
const IN_FLIGHT: usize = 1;
/// The connections of the reads: stream loads and process finds.
pub(super) const READ_CONNECTIONS: u32 = 2 * IN_FLIGHT as u32;

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

/// Deliveries of one session (or of none) to complete, and how many of the session's next
/// messages to lock for the same consumer.
#[derive(Debug)]
pub(super) struct Settle {
    pub(super) queue: String,
    pub(super) session: Option<String>,
    pub(super) ids: Vec<i64>,
    pub(super) counts: Vec<i32>,
    pub(super) max: i64,
}

/// A process to save with its commands (their metadata as JSON, in order).
#[derive(Debug)]
pub(super) struct Save {
    pub(super) record: ProcessRecord,
    pub(super) commands: Vec<StoredCommand>,
    pub(super) metadata: Vec<String>,
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
    pub(super) settles: Coalescer<Settle, Vec<Delivery>>,
    /// The version written (`None`: a conflict), and the record saved, for the error.
    pub(super) saves: Coalescer<Save, (Option<i64>, ProcessRecord)>,
}

impl Batched {
    /// Starts the tasks on the current tokio runtime: loads and finds on `reads`, saves,
    /// completions, enqueues and removals on `kept`; completions lock the next messages for
    /// `lease` from `clock`'s now.
    pub(super) fn start(
        kept: KeptConnections,
        reads: KeptConnections,
        clock: SharedClock,
        lease: Duration,
    ) -> Self {
        Self {
            saves: Coalescer::start("process saver", MAX_BATCH, IN_FLIGHT, {
                let kept = kept.clone();
                move |batch| save(kept.clone(), batch)
            }),
            settles: Coalescer::start("completer", MAX_BATCH, IN_FLIGHT, {
                let kept = kept.clone();
                move |batch| settle(kept.clone(), Arc::clone(&clock), lease, batch)
            }),
            removals: Coalescer::start("command remover", MAX_BATCH, IN_FLIGHT, {
                let kept = kept.clone();
                move |batch| remove(kept.clone(), batch)
            }),
            enqueues: Coalescer::start("enqueuer", MAX_BATCH, IN_FLIGHT, move |batch| {
                let kept = kept.clone();
                async move {
                    let count = batch.len();
                    let mut connection = kept.acquire().await.map_err(db)?;
                    insert_messages(&mut *connection, batch).await?;
                    connection.keep();
                    Ok(vec![(); count])
                }
            }),
            loads: Coalescer::start("stream loader", MAX_BATCH, IN_FLIGHT, {
                let reads = reads.clone();
                move |batch| load(reads.clone(), batch)
            }),
            finds: Coalescer::start("process finder", MAX_BATCH, IN_FLIGHT, move |batch| {
                find(reads.clone(), batch)
            }),
        }
    }
}

async fn remove(kept: KeptConnections, batch: Vec<Removal>) -> Result<Vec<()>> {
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
        .execute_on(&kept)
        .await
        .map_err(db)?;
    Ok(vec![(); batch.len()])
}

async fn load(kept: KeptConnections, batch: Vec<Load>) -> Result<Vec<Vec<StoredEvent>>> {
    let (streams, versions): (Vec<&str>, Vec<i64>) = batch
        .iter()
        .map(|(stream, from)| (stream.as_str(), *from))
        .unzip();
    let rows = kept
        .fetch_all_again(|| sqlx::query(sql::LOAD_STREAMS).bind(&streams).bind(&versions))
        .await
        .map_err(db)?;
    let mut loaded = vec![Vec::new(); batch.len()];
    for row in &rows {
        let idx: i64 = row.try_get(sql::LOAD_STREAMS_REQUEST).map_err(db)?;
        loaded[request(idx, batch.len(), "a stream load")?].push(event(row)?);
    }
    Ok(loaded)
}

async fn find(kept: KeptConnections, batch: Vec<FindByKey>) -> Result<Vec<Option<LoadedProcess>>> {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for f in &batch {
        columns.0.push(f.process_type.as_str());
        columns.1.push(f.key.as_str());
        columns.2.push(f.include_completed);
    }
    let rows = kept
        .fetch_all_again(|| {
            sqlx::query(sql::FIND_PROCESSES_BY_KEY)
                .bind(&columns.0)
                .bind(&columns.1)
                .bind(&columns.2)
        })
        .await
        .map_err(db)?;
    let mut found: Vec<Option<LoadedProcess>> = batch.iter().map(|_| None).collect();
    for row in &rows {
        let idx: i64 = row.try_get("idx").map_err(db)?;
        found[request(idx, batch.len(), "a process find")?] = Some(loaded(row)?);
    }
    Ok(found)
}

/// The place in a batch of `count` requests of request `idx` (counted from 1, as `WITH
/// ORDINALITY` counts); `what` names the statement in the error for an ordinal out of range.
fn request(idx: i64, count: usize, what: &str) -> Result<usize> {
    usize::try_from(idx - 1)
        .ok()
        .filter(|i| *i < count)
        .ok_or_else(|| cqrs_core::Error::permanent(format!("{what} answered request {idx}")))
}

async fn settle(
    kept: KeptConnections,
    clock: SharedClock,
    lease: Duration,
    batch: Vec<Settle>,
) -> Result<Vec<Vec<Delivery>>> {
    let (mut queues, mut sessions, mut maxes) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ids, mut counts, mut owners) = (Vec::new(), Vec::new(), Vec::new());
    for (idx, settle) in (1_i64..).zip(&batch) {
        queues.push(settle.queue.as_str());
        sessions.push(settle.session.as_deref());
        maxes.push(settle.max);
        ids.extend_from_slice(&settle.ids);
        counts.extend_from_slice(&settle.counts);
        owners.extend(std::iter::repeat_n(idx, settle.ids.len()));
    }
    let now = clock.now();
    let rows = sqlx::query(sql::COMPLETE_AND_NEXT)
        .bind(&queues)
        .bind(&sessions)
        .bind(&maxes)
        .bind(&ids)
        .bind(&counts)
        .bind(&owners)
        .bind(now)
        .bind(saturating_add(now, lease))
        .fetch_all_on(&kept)
        .await
        .map_err(db)?;
    let mut next: Vec<Vec<Delivery>> = batch.iter().map(|_| Vec::new()).collect();
    for row in &rows {
        let idx: i64 = row.try_get("idx").map_err(db)?;
        let i = request(idx, batch.len(), "a completion")?;
        next[i].push(delivery(row, &batch[i].queue)?);
    }
    for deliveries in &mut next {
        deliveries.sort_by_key(|d| d.id);
    }
    Ok(next)
}

/// `batch` split into rounds, one statement each, run one after the other: each request goes,
/// with its place in `batch`, into the first round after every round holding an earlier
/// request of the same `key`, whose requests' `weight` stays within `budget` (a round always
/// takes one). So two requests of one key never share a statement, and run in arrival order.
pub(super) fn rounds<T, K: Eq + Hash>(
    batch: Vec<T>,
    key: impl Fn(&T) -> K,
    weight: impl Fn(&T) -> usize,
    budget: usize,
) -> Vec<Vec<(usize, T)>> {
    let mut rounds: Vec<(Vec<(usize, T)>, usize)> = Vec::new();
    // The round after the last one holding each key.
    let mut after: HashMap<K, usize> = HashMap::new();
    for (place, request) in batch.into_iter().enumerate() {
        let (key, weight) = (key(&request), weight(&request));
        let first = after.get(&key).copied().unwrap_or(0);
        let round = (first..rounds.len())
            .find(|&r| rounds[r].1 + weight <= budget)
            .unwrap_or_else(|| {
                rounds.push((Vec::new(), 0));
                rounds.len() - 1
            });
        rounds[round].0.push((place, request));
        rounds[round].1 += weight;
        after.insert(key, round + 1);
    }
    rounds.into_iter().map(|(round, _)| round).collect()
}

/// Runs `write` on each of `rounds` in turn (see [`rounds`]); `write` answers each request of
/// its round, paired with it. The answers come in the order of the batch.
pub(super) async fn in_rounds<T, R, Fut>(
    rounds: Vec<Vec<(usize, T)>>,
    write: impl Fn(Vec<T>) -> Fut,
) -> Result<Vec<(T, R)>>
where
    Fut: Future<Output = Result<Vec<(T, R)>>>,
{
    let mut answers = Vec::new();
    for round in rounds {
        let (places, requests): (Vec<usize>, Vec<T>) = round.into_iter().unzip();
        answers.extend(places.into_iter().zip(write(requests).await?));
    }
    answers.sort_by_key(|(place, _)| *place);
    Ok(answers.into_iter().map(|(_, answer)| answer).collect())
}

/// Saves `batch`: two saves of a process never share a statement, so that one of them
/// conflicts.
async fn save(kept: KeptConnections, batch: Vec<Save>) -> Result<Vec<(Option<i64>, ProcessRecord)>> {
    let rounds = rounds(
        batch,
        |save| (save.record.process_type.clone(), save.record.id),
        |_| 1,
        usize::MAX,
    );
    let saved = in_rounds(rounds, |round| async {
        let saved = save_round(&kept, &round).await?;
        Ok(round.into_iter().zip(saved).collect())
    })
    .await?;
    Ok(saved
        .into_iter()
        .map(|(save, saved)| (saved, save.record))
        .collect())
}

/// One statement of [`sql::SAVE_PROCESSES`] for saves of distinct processes: the version each
/// wrote, or `None`.
async fn save_round(kept: &KeptConnections, round: &[Save]) -> Result<Vec<Option<i64>>> {
    let mut p = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut c = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (owner, save) in (1_i64..).zip(round) {
        let r = &save.record;
        p.0.push(r.process_type.as_str());
        p.1.push(r.id);
        p.2.push(r.completed);
        p.3.push(r.key.as_deref());
        p.4.push(r.codec.tag());
        p.5.push(r.schema_version as i32);
        p.6.push(r.state.as_ref());
        p.7.push(r.version);
        for (command, metadata) in save.commands.iter().zip(&save.metadata) {
            c.0.push(command.message_id.as_str());
            c.1.push(command.payload.name.as_str());
            c.2.push(command.payload.schema_version as i32);
            c.3.push(command.payload.codec.tag());
            c.4.push(command.payload.bytes.as_ref());
            c.5.push(metadata.as_str());
            c.6.push(command.stored_at);
            c.7.push(owner);
        }
    }
    let rows = sqlx::query(sql::SAVE_PROCESSES)
        .bind(&p.0)
        .bind(&p.1)
        .bind(&p.2)
        .bind(&p.3)
        .bind(&p.4)
        .bind(&p.5)
        .bind(&p.6)
        .bind(&p.7)
        .bind(&c.0)
        .bind(&c.1)
        .bind(&c.2)
        .bind(&c.3)
        .bind(&c.4)
        .bind(&c.5)
        .bind(&c.6)
        .bind(&c.7)
        .fetch_all_on(kept)
        .await
        .map_err(db)?;
    let mut saved = vec![None; round.len()];
    for row in &rows {
        let idx: i64 = row.try_get("idx").map_err(db)?;
        saved[request(idx, round.len(), "a process save")?] = row.try_get("saved").map_err(db)?;
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::rounds;

    #[test]
    fn rounds_keep_a_key_s_requests_apart_in_order_and_within_the_budget() {
        // (key, weight)
        let batch = vec![("a", 2), ("b", 2), ("a", 1), ("c", 3), ("a", 1), ("d", 1)];
        let split = rounds(batch, |r| r.0, |r| r.1, 4);
        let keys: Vec<Vec<(usize, &str)>> = split
            .iter()
            .map(|round| round.iter().map(|(place, r)| (*place, r.0)).collect())
            .collect();
        assert_eq!(
            keys,
            [
                vec![(0, "a"), (1, "b")],
                vec![(2, "a"), (3, "c")],
                vec![(4, "a"), (5, "d")],
            ]
        );
        let oversized = rounds(vec![("a", 9)], |r| r.0, |r| r.1, 4);
        assert_eq!(oversized.len(), 1, "a round always takes one request");
    }
}
