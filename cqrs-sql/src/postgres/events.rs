//! Event store, outbox and snapshots on PostgreSQL.

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::{
    AppendResult, Error, EventAppender, EventMetadata, EventOutbox, EventReader, ExpectedVersion, NewEvent,
    Payload, Result, SharedClock, Snapshot, SnapshotStore, StoredEvent, StreamId,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::Notify;

use super::group::BatchWriter;
use super::kept::{KeptConnections, OnKept};
use super::{PgStore, codec, sql};
use crate::error::{corrupt, db, is_unique_violation};
use crate::group::AppendRequest;

/// The most events one transaction can append: the position keeps 20 bits for the ordinal.
const MAX_EVENTS_PER_APPEND: usize = (1 << 20) - 1;

/// A row of `event_columns!` (every event query selects them in that order). Columns are read
/// by position: by name, each is a hash lookup, and that was a seventh of a load's decoding.
pub(super) fn event(row: &PgRow) -> Result<StoredEvent> {
    let metadata: &str = row.try_get(9).map_err(db)?;
    Ok(StoredEvent {
        position: row.try_get::<i64, _>(0).map_err(db)? as u64,
        event_id: row.try_get(1).map_err(db)?,
        stream_id: StreamId::new(row.try_get::<String, _>(2).map_err(db)?),
        stream_type: row.try_get(3).map_err(db)?,
        version: row.try_get(4).map_err(db)?,
        payload: Payload {
            name: row.try_get(5).map_err(db)?,
            schema_version: row.try_get::<i32, _>(6).map_err(db)? as u32,
            codec: codec(row, 7)?,
            bytes: row.try_get::<&[u8], _>(8).map_err(db)?.to_vec().into(),
        },
        metadata: serde_json::from_str::<EventMetadata>(metadata)
            .map_err(|e| corrupt("event metadata", e))?,
        recorded_at: row.try_get(10).map_err(db)?,
    })
}

fn events(rows: &[PgRow]) -> Result<Vec<StoredEvent>> {
    rows.iter().map(event).collect()
}

impl EventReader for PgStore {
    /// With whatever other loads of this process are waiting, in one statement.
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        self.inner
            .batched
            .loads
            .call((stream.clone(), from_version))
            .await
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = self
            .kept()
            .fetch_all_again(|| sqlx::query(sql::READ_ALL).bind(after as i64).bind(limit as i64))
            .await
            .map_err(db)?;
        events(&rows)
    }
}

/// Writes batches of appends to distinct streams in one statement.
#[derive(Clone)]
pub(super) struct PgAppender {
    /// Where appends are written: the group committer's own connections, or the store's kept
    /// ones when group commit is off.
    pub(super) kept: KeptConnections,
    pub(super) clock: SharedClock,
    /// Wakes this process's publishers.
    pub(super) appended: Arc<Notify>,
    /// Tells other processes' publishers.
    pub(super) notifier: Arc<super::Notifier>,
}

impl PgAppender {
    async fn try_write(&self, batch: &[AppendRequest]) -> Result<Vec<Result<AppendResult>>, sqlx::Error> {
        let total: usize = batch.iter().map(|r| r.events.len()).sum();
        let mut appends = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut events = (
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
            Vec::with_capacity(total),
        );
        for (idx, request) in batch.iter().enumerate() {
            let idx = idx as i32;
            appends.0.push(idx);
            appends.1.push(request.stream.as_str());
            appends.2.push(request.stream_type.as_str());
            appends.3.push(match request.expected {
                ExpectedVersion::Any => None,
                ExpectedVersion::Exact(v) => Some(v),
            });
            for (n, event) in (1..).zip(&request.events) {
                events.0.push(idx);
                events.1.push(n as i64);
                events.2.push(event.event_id);
                events.3.push(event.payload.name.as_str());
                events.4.push(event.payload.schema_version as i32);
                events.5.push(event.payload.codec.tag());
                events.6.push(event.payload.bytes.as_ref());
                // Optional strings and a string map: serializing cannot fail.
                events
                    .7
                    .push(serde_json::to_string(&event.metadata).unwrap_or_default());
            }
        }
        let rows = sqlx::query(sql::APPEND_BATCH)
            .bind(&appends.0)
            .bind(&appends.1)
            .bind(&appends.2)
            .bind(&appends.3)
            .bind(&events.0)
            .bind(&events.1)
            .bind(&events.2)
            .bind(&events.3)
            .bind(&events.4)
            .bind(&events.5)
            .bind(&events.6)
            .bind(&events.7)
            .bind(self.clock.now())
            .fetch_all_on(&self.kept)
            .await?;
        if total > 0 {
            self.appended.notify_one();
            self.notifier.notify(sql::CHANNEL, "");
        }
        // An event's position is the transaction's id shifted left by 20 bits plus the event's
        // ordinal in the batch (from 1, over every append's events, passed or not).
        let mut ordinal = 0;
        let mut results = Vec::with_capacity(batch.len());
        for (row, request) in rows.iter().zip(batch) {
            let actual: i64 = row.try_get("actual")?;
            let xact: i64 = row.try_get("xact")?;
            let count = request.events.len();
            ordinal += count as i64;
            results.push(if !request.expected.matches(actual) {
                Err(Error::Conflict {
                    stream: request.stream.to_string(),
                    expected: request.expected,
                    actual,
                })
            } else if count == 0 {
                Ok(AppendResult {
                    last_version: actual,
                    last_position: 0,
                })
            } else {
                Ok(AppendResult {
                    last_version: actual + count as i64,
                    last_position: ((xact << 20) + ordinal) as u64,
                })
            });
        }
        Ok(results)
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<i64> {
        // On a connection of `kept`: the group committer's own are all kept at times.
        let mut connection = self.kept.acquire().await.map_err(db)?;
        let version = sqlx::query_scalar(sql::STREAM_VERSION)
            .bind(stream.as_str())
            .fetch_one(&mut *connection)
            .await
            .map_err(db)?;
        connection.keep();
        Ok(version)
    }
}

impl PgAppender {
    /// One append alone: a unique violation means another writer won the race.
    async fn write_one(&self, request: &AppendRequest) -> Result<AppendResult> {
        match self.try_write(std::slice::from_ref(request)).await {
            Ok(mut results) => results.pop().expect("one result per append"),
            Err(error) if is_unique_violation(&error) => Err(Error::Conflict {
                stream: request.stream.to_string(),
                expected: request.expected,
                actual: self.stream_version(&request.stream).await?,
            }),
            Err(error) => Err(db(error)),
        }
    }
}

impl BatchWriter for PgAppender {
    async fn write(&self, batch: &[AppendRequest]) -> Vec<Result<AppendResult>> {
        match self.try_write(batch).await {
            Ok(results) => results,
            // Another process appended to one of the streams between our check and our insert:
            // the statement failed whole, so write the appends one by one and let only the
            // loser fail.
            Err(error) if is_unique_violation(&error) => {
                let mut results = Vec::with_capacity(batch.len());
                for request in batch {
                    results.push(self.write_one(request).await);
                }
                results
            }
            Err(error) => {
                let error = db(error);
                batch.iter().map(|_| Err(error.duplicate())).collect()
            }
        }
    }
}

impl EventAppender for PgStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(Error::permanent(format!(
                "an append holds at most {MAX_EVENTS_PER_APPEND} events, not {}",
                events.len()
            )));
        }
        let request = AppendRequest {
            stream: stream.clone(),
            stream_type: stream_type.to_owned(),
            expected,
            events,
        };
        match &self.inner.group {
            Some(group) => group.append(request).await,
            None => self.inner.appender.write_one(&request).await,
        }
    }
}

/// How soon a publisher looks again for events that committed while an older transaction ran.
///
/// The outbox answers events gap-safe: none while a transaction that could still commit one
/// before it runs. Such a transaction may append nothing (an enqueue, a process save), and then
/// no notification follows its end; so while a pass saw events waiting, [`appended`] resolves
/// after a short wait as well, doubling with each pass that saw them still waiting.
///
/// [`appended`]: EventOutbox::appended
#[derive(Debug, Default)]
pub(super) struct WaitingEvents {
    /// The passes in a row that saw committed events waiting above the gap-safe bound.
    passes: AtomicU32,
}

impl WaitingEvents {
    /// The first look again, after a pass that saw events waiting.
    const FIRST: Duration = Duration::from_millis(1);
    /// The longest wait between looks (a publisher also polls at its own interval).
    const LONGEST: Duration = Duration::from_millis(256);

    /// Records what a pass saw.
    fn record(&self, waiting: bool) {
        if waiting {
            self.passes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.passes.store(0, Ordering::Relaxed);
        }
    }

    /// How long after the last pass to look again without a notification, if at all.
    fn next_look(&self) -> Option<Duration> {
        let passes = self.passes.load(Ordering::Relaxed);
        let doubled = |passes: u32| 1u32.checked_shl(passes - 1).unwrap_or(u32::MAX);
        (passes > 0).then(|| Self::FIRST.saturating_mul(doubled(passes)).min(Self::LONGEST))
    }
}

impl EventOutbox for PgStore {
    /// One statement: the held-back events, then those above the outbox's position, gap-safe.
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        let rows = self
            .kept()
            .fetch_all_again(|| sqlx::query(sql::UNPUBLISHED).bind(limit as i64))
            .await
            .map_err(db)?;
        let mut waiting = false;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row without an event says whether events wait for older transactions.
            if row.try_get::<Option<i64>, _>(0).map_err(db)?.is_none() {
                waiting = row.try_get::<bool, _>(sql::UNPUBLISHED_WAITING).map_err(db)?;
            } else {
                events.push(event(row)?);
            }
        }
        self.inner.waiting.record(waiting);
        // Already in order but for where the row without an event came: a union's branches
        // come in no order SQL promises.
        events.sort_by_key(|e| e.position);
        Ok(events)
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        self.mark_published_many(&[(stream.clone(), version)]).await
    }

    /// One statement, whatever the number of streams.
    async fn mark_published_many(&self, marks: &[(StreamId, i64)]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let (streams, versions): (Vec<&str>, Vec<i64>) = marks
            .iter()
            .map(|(stream, version)| (stream.as_str(), *version))
            .unzip();
        sqlx::query(sql::MARK_PUBLISHED)
            .bind(streams)
            .bind(versions)
            .execute_on(self.kept())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// One statement that moves the outbox's position past the events, without
    /// `MARK_PUBLISHED`'s walk down each stream: one row updated, unless the pass held events
    /// back.
    async fn mark_events_published(&self, events: &[&StoredEvent]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let positions: Vec<i64> = events.iter().map(|e| e.position as i64).collect();
        sqlx::query(sql::ADVANCE_PUBLISHED)
            .bind(positions)
            .execute_on(self.kept())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// On an append of this process or a notification of another's; and, while the last pass
    /// saw events waiting for older transactions, after a short wait: 1 ms, doubling with each
    /// such pass up to 256 ms.
    async fn appended(&self) {
        match self.inner.waiting.next_look() {
            None => self.inner.appended.notified().await,
            Some(after) => {
                tokio::select! {
                    () = self.inner.appended.notified() => {}
                    () = tokio::time::sleep(after) => {}
                }
            }
        }
    }
}

impl SnapshotStore for PgStore {
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let Some(row) = sqlx::query(sql::LOAD_SNAPSHOT)
            .bind(stream.as_str())
            .fetch_optional(self.pool())
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            stream_id: stream.clone(),
            version: row.try_get("version").map_err(db)?,
            schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
            codec: codec(&row, "codec")?,
            bytes: row.try_get::<Vec<u8>, _>("bytes").map_err(db)?.into(),
            taken_at: row.try_get::<DateTime<Utc>, _>("taken_at").map_err(db)?,
        }))
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(sql::SAVE_SNAPSHOT)
            .bind(snapshot.stream_id.as_str())
            .bind(snapshot.version)
            .bind(snapshot.schema_version as i32)
            .bind(snapshot.codec.tag())
            .bind(snapshot.bytes.as_ref())
            .bind(snapshot.taken_at)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use cqrs_core::testing::sample::{InventoryEvent, SeatsAdded};
    use cqrs_core::uuid::Uuid;
    use cqrs_core::{Codec, EventMetadata, EventSet, ExpectedVersion, NewEvent, StreamId};
    use sqlx::{PgConnection, Postgres, Transaction};

    use crate::error::is_unique_violation;
    use crate::group::AppendRequest;
    use crate::postgres::{PgOptions, PgStore};

    fn new_event() -> NewEvent {
        let event: InventoryEvent = SeatsAdded {
            seat_type: 1,
            quantity: 1,
        }
        .into();
        NewEvent {
            event_id: Uuid::now_v7(),
            payload: event.encode(Codec::Json).unwrap(),
            metadata: EventMetadata::default(),
        }
    }

    fn first_append(stream: &str) -> AppendRequest {
        AppendRequest {
            stream: StreamId::new(stream),
            stream_type: "Test".to_owned(),
            expected: ExpectedVersion::Exact(-1),
            events: vec![new_event()],
        }
    }

    /// Another writer's first event of `stream`, the `ordinal`-th of its transaction.
    async fn insert_first(other: &mut PgConnection, stream: &str, ordinal: i64) -> Result<(), sqlx::Error> {
        let event = new_event();
        sqlx::query(
            "INSERT INTO cqrs_events (position, event_id, stream_id, stream_type, version, name, \
             schema_version, codec, payload, metadata, recorded_at) \
             VALUES ((pg_current_xact_id()::text::bigint << 20) + $1, $2, $3, 'Test', 0, $4, 1, 'json', $5, '{}', now())",
        )
        .bind(ordinal)
        .bind(event.event_id)
        .bind(stream)
        .bind(&event.payload.name)
        .bind(event.payload.bytes.as_ref())
        .execute(other)
        .await
        .map(|_| ())
    }

    async fn waiting_for(other: &mut Transaction<'_, Postgres>, store: &PgStore) -> bool {
        let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
            .fetch_one(&mut **other)
            .await
            .unwrap();
        let waiters: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted \
             AND transactionid::text::bigint = $1",
        )
        .bind(xid)
        .fetch_one(store.pool())
        .await
        .unwrap();
        waiters > 0
    }

    /// A batch appending to streams `b` and `a` races another writer that appends to `a`, then
    /// `b`. The batch inserts in the streams' order: it waits for the other writer's entry of
    /// `a` while holding none of `b`, so the other writer goes on, and the batch fails on a
    /// unique violation (the appends are then tried one by one) once it commits. Inserted in the
    /// batch's order, each waited for the other: a deadlock, broken after a second by failing
    /// the batch with a transient error.
    #[tokio::test]
    async fn batches_racing_for_the_same_streams_wait_rather_than_deadlock() {
        let Some(url) = crate::postgres::tests::url() else {
            return;
        };
        let schema = format!("cqrs_test_append_order_{}", Uuid::now_v7().simple());
        let store = PgStore::connect_with(PgOptions::new(url).schema(schema))
            .await
            .unwrap();
        let mut other = store.pool().begin().await.unwrap();
        insert_first(&mut other, "a", 1).await.unwrap();

        let appender = store.inner.appender.clone();
        let batch = tokio::spawn(async move {
            appender
                .try_write(&[first_append("b"), first_append("a")])
                .await
                .map(|_| ())
        });
        for _ in 0..1000 {
            if waiting_for(&mut other, &store).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(waiting_for(&mut other, &store).await, "the batch waits for `a`");

        insert_first(&mut other, "b", 2)
            .await
            .expect("the waiting batch holds no entry of `b`");
        other.commit().await.unwrap();
        let error = batch
            .await
            .unwrap()
            .expect_err("`a` and `b` have their first events");
        assert!(
            is_unique_violation(&error),
            "a unique violation, not a deadlock: {error}"
        );
    }
}
