//! The message transport on PostgreSQL: competing consumers across processes (FOR UPDATE SKIP
//! LOCKED), sessions held by one consumer at a time, leases, dead letters, topics, and LISTEN
//! wake-ups.

use std::collections::BTreeSet;
use std::time::Duration;

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::{
    AnyMessage, Codec, DeadLetter, DeadLetters, Delivery, Envelope, Error, MessageFilter, MessageQueue,
    Metadata, Payload, QueueDepths, Result, Topics, saturating_add,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::kept::OnKept;
use super::{PgStore, batched, codec, sql};
use crate::error::{corrupt, db};

/// Messages as the UNNEST columns of [`sql::ENQUEUE`] and [`sql::PUBLISH`].
#[derive(Default)]
pub(super) struct Columns {
    message_ids: Vec<String>,
    session_ids: Vec<Option<String>>,
    names: Vec<String>,
    schema_versions: Vec<i32>,
    codecs: Vec<&'static str>,
    payloads: Vec<Vec<u8>>,
    metadata: Vec<String>,
    visible_at: Vec<DateTime<Utc>>,
    expires_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns {
    pub(super) fn new(envelopes: Vec<Envelope>, now: DateTime<Utc>) -> Result<Self> {
        let mut c = Self::default();
        for envelope in envelopes {
            let payload = envelope.message.to_payload(Codec::Json)?;
            let md = &envelope.metadata;
            c.message_ids.push(md.message_id.clone());
            c.session_ids.push(md.session_id.clone());
            c.names.push(payload.name);
            c.schema_versions.push(payload.schema_version as i32);
            c.codecs.push(payload.codec.tag());
            c.payloads.push(payload.bytes.to_vec());
            c.metadata
                .push(serde_json::to_string(md).map_err(Error::permanent)?);
            c.visible_at
                .push(md.delay.map_or(now, |d| saturating_add(now, d)));
            c.expires_at
                .push(md.time_to_live.map(|ttl| saturating_add(now, ttl)));
        }
        Ok(c)
    }

    fn len(&self) -> usize {
        self.message_ids.len()
    }

    /// `other`'s messages after this one's.
    fn append(&mut self, mut other: Self) {
        self.message_ids.append(&mut other.message_ids);
        self.session_ids.append(&mut other.session_ids);
        self.names.append(&mut other.names);
        self.schema_versions.append(&mut other.schema_versions);
        self.codecs.append(&mut other.codecs);
        self.payloads.append(&mut other.payloads);
        self.metadata.append(&mut other.metadata);
        self.visible_at.append(&mut other.visible_at);
        self.expires_at.append(&mut other.expires_at);
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.message_ids)
            .bind(&self.session_ids)
            .bind(&self.names)
            .bind(&self.schema_versions)
            .bind(&self.codecs)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.visible_at)
            .bind(&self.expires_at)
    }
}

fn envelope(row: &PgRow) -> Result<Envelope> {
    let metadata: String = row.try_get("metadata").map_err(db)?;
    let metadata: Metadata = serde_json::from_str(&metadata).map_err(|e| corrupt("message metadata", e))?;
    let payload = Payload {
        name: row.try_get("name").map_err(db)?,
        schema_version: row.try_get::<i32, _>("schema_version").map_err(db)? as u32,
        codec: codec(row, "codec")?,
        bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
    };
    Ok(Envelope::from_parts(AnyMessage::raw(payload), metadata))
}

/// A locked message of `queue` (a row of `message_columns!`) as a delivery.
pub(super) fn delivery(row: &PgRow, queue: &str) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get::<i64, _>("id").map_err(db)? as u64,
        queue: queue.to_owned(),
        envelope: envelope(row)?,
        delivery_count: row.try_get::<i32, _>("delivery_count").map_err(db)? as u32,
        enqueued_at: row.try_get("enqueued_at").map_err(db)?,
        expires_at: row.try_get("expires_at").map_err(db)?,
    })
}

/// Locked messages of `queue` as deliveries, oldest first.
fn deliveries(rows: &[PgRow], queue: &str) -> Result<Vec<Delivery>> {
    let mut deliveries = rows
        .iter()
        .map(|row| delivery(row, queue))
        .collect::<Result<Vec<_>>>()?;
    deliveries.sort_by_key(|d| d.id);
    Ok(deliveries)
}

/// The fences of `deliveries` as the arrays a fenced statement takes: ids and delivery counts.
fn fences(deliveries: &[Delivery]) -> (Vec<i64>, Vec<i32>) {
    deliveries
        .iter()
        .map(|d| (d.id as i64, d.delivery_count as i32))
        .unzip()
}

fn dead_letter(row: &PgRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get::<i64, _>("id").map_err(db)? as u64,
        queue: row.try_get("queue").map_err(db)?,
        envelope: envelope(row)?,
        reason: row.try_get("reason").map_err(db)?,
        delivery_count: row.try_get::<i32, _>("delivery_count").map_err(db)? as u32,
        dead_lettered_at: row.try_get("dead_lettered_at").map_err(db)?,
    })
}

/// Messages for queues, as one enqueue of [`MessageQueue::enqueue`] asks (see
/// [`insert_messages`]).
pub(super) struct Enqueue {
    pub(super) queue: String,
    pub(super) columns: Columns,
    pub(super) now: DateTime<Utc>,
}

/// Writes the messages of `enqueues` in one statement, each enqueue's in its order and the
/// enqueues in theirs; enqueued at the first one's time.
pub(super) async fn insert_messages<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    enqueues: Vec<Enqueue>,
) -> Result<()> {
    let Some(now) = enqueues.first().map(|e| e.now) else {
        return Ok(());
    };
    let mut queues = Vec::new();
    let mut all = Columns::default();
    for enqueue in enqueues {
        queues.extend(std::iter::repeat_n(enqueue.queue, enqueue.columns.len()));
        all.append(enqueue.columns);
    }
    all.bind(sqlx::query(sql::ENQUEUE).bind(queues).bind(now))
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

impl PgStore {
    /// Wakes this process's consumers of `queue` and, through NOTIFY, every other process's.
    ///
    /// Settling calls it too when it frees messages for others (a completion that does not
    /// follow its session, a release, an abandon): the process that settled may be saturated,
    /// so an idle process should take them now rather than at its next poll. Notifications are
    /// coalesced and sent by a background task, so this adds no statement to the settle itself.
    fn wake(&self, queue: &str) {
        self.wake_here(queue);
        self.inner.notifier.notify(sql::MESSAGES_CHANNEL, queue);
    }

    /// Wakes this process's consumers of `queue` only.
    fn wake_here(&self, queue: &str) {
        self.inner.wakers.get(queue).notify_one();
    }

    async fn settle(
        &self,
        statement: &'static str,
        delivery: &Delivery,
        visible_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut query = sqlx::query(statement)
            .bind(delivery.id as i64)
            .bind(delivery.delivery_count as i32);
        if let Some(visible_at) = visible_at {
            query = query.bind(visible_at);
        }
        query.execute_on(self.kept()).await.map_err(db)?;
        self.wake(&delivery.queue);
        Ok(())
    }

    fn clock_now(&self) -> DateTime<Utc> {
        self.inner.appender.clock.now()
    }
}

impl MessageQueue for PgStore {
    async fn enqueue(&self, queue: &str, envelopes: Vec<Envelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = self.clock_now();
        // Messages all delivered later wake nobody: no consumer could take them now, and
        // consumers poll.
        let due_now = envelopes.iter().any(|e| !e.metadata.is_delayed());
        let enqueue = Enqueue {
            queue: queue.to_owned(),
            columns: Columns::new(envelopes, now)?,
            now,
        };
        // With whatever other enqueues of this process are waiting, in one statement.
        self.inner.batched.enqueues.call(enqueue).await?;
        if due_now {
            self.wake(queue);
        }
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = self.clock_now();
        // Run again if its connection was lost: a first run that did lock messages (and lost
        // the answer) leaves them to come back when their lease runs out.
        let rows = self
            .kept()
            .fetch_all_again(|| {
                sqlx::query(sql::RECEIVE)
                    .bind(queue)
                    .bind(now)
                    .bind(saturating_add(now, self.inner.lease))
                    .bind(max as i64)
            })
            .await
            .map_err(db)?;
        deliveries(&rows, queue)
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        self.settle(sql::COMPLETE, delivery, None).await
    }

    /// The completions and the session's next messages in one statement
    /// (`sql::COMPLETE_AND_NEXT`), with whatever other completions of this process are waiting.
    /// While this consumer follows the session, its completions free nothing for the others:
    /// they are woken only when it stops following.
    async fn complete_and_next(&self, completed: &[Delivery], max: usize) -> Result<Vec<Delivery>> {
        let Some(last) = completed.last() else {
            return Ok(Vec::new());
        };
        let (ids, counts) = fences(completed);
        let settle = batched::Settle {
            queue: last.queue.clone(),
            session: last.envelope.metadata.session_id.clone(),
            ids,
            counts,
            max: max as i64,
        };
        let next = self.inner.batched.settles.call(settle).await?;
        // A session not followed (`max` 0) is up for grabs: every consumer is woken. One
        // followed to its end took the run of due messages that its statement's snapshot saw;
        // a message enqueued for it between that snapshot and the commit found the session
        // held, so this process's consumers look again (its enqueue woke the others already).
        if max == 0 {
            self.wake(&last.queue);
        } else if next.is_empty() {
            self.wake_here(&last.queue);
        }
        Ok(next)
    }

    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        let Some(last) = deliveries.last() else {
            return Ok(());
        };
        let (ids, counts) = fences(deliveries);
        sqlx::query(sql::RELEASE)
            .bind(ids)
            .bind(counts)
            .bind(self.clock_now())
            .execute_on(self.kept())
            .await
            .map_err(db)?;
        self.wake(&last.queue);
        Ok(())
    }

    async fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> Result<()> {
        let visible_at = saturating_add(self.clock_now(), retry_after);
        self.settle(sql::ABANDON, delivery, Some(visible_at)).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        sqlx::query(sql::DEAD_LETTER)
            .bind(delivery.id as i64)
            .bind(delivery.delivery_count as i32)
            .bind(reason)
            .bind(self.clock_now())
            .execute(self.pool())
            .await
            .map_err(db)?;
        self.wake(&delivery.queue);
        Ok(())
    }

    async fn wait(&self, queue: &str) {
        self.inner.wakers.get(queue).notified().await;
    }
}

impl Topics for PgStore {
    async fn subscribe(&self, topic: &str, subscription: &str, filter: MessageFilter) -> Result<()> {
        let names: Option<Vec<String>> = match filter {
            MessageFilter::All => None,
            MessageFilter::Names(names) => Some(names.into_iter().collect()),
        };
        sqlx::query(sql::SUBSCRIBE)
            .bind(topic)
            .bind(subscription)
            .bind(names)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = self.clock_now();
        let columns = Columns::new(envelopes, now)?;
        let queues = columns
            .bind(sqlx::query(sql::PUBLISH).bind(topic).bind(now))
            .fetch_all_on(self.kept())
            .await
            .map_err(db)?
            .iter()
            .map(|row| row.try_get::<String, _>("queue").map_err(db))
            .collect::<Result<BTreeSet<String>>>()?;
        for queue in queues {
            self.wake(&queue);
        }
        Ok(())
    }
}

impl QueueDepths for PgStore {
    async fn queue_depths(&self) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::QUEUE_DEPTHS)
            .fetch_all(self.pool())
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(queue, n)| (queue, n.max(0) as u64))
            .collect())
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(sql::DEAD_LETTER_COUNT)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        Ok(count.max(0) as u64)
    }
}

impl DeadLetters for PgStore {
    async fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        sqlx::query(sql::DEAD_LETTERS)
            .bind(queue)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await
            .map_err(db)?
            .iter()
            .map(dead_letter)
            .collect()
    }

    async fn requeue(&self, id: u64) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        let row = sqlx::query(sql::TAKE_DEAD_LETTER)
            .bind(id as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::NotFound {
                entity: "DeadLetter".to_owned(),
                id: id.to_string(),
            })?;
        let letter = dead_letter(&row)?;
        // Back as it was first sent, but due now: a requeue is an operator's explicit retry.
        let mut envelope = letter.envelope;
        envelope.metadata.delay = None;
        let now = self.clock_now();
        let enqueue = Enqueue {
            queue: letter.queue.clone(),
            columns: Columns::new(vec![envelope], now)?,
            now,
        };
        insert_messages(&mut *tx, vec![enqueue]).await?;
        tx.commit().await.map_err(db)?;
        self.wake(&letter.queue);
        Ok(())
    }
}
