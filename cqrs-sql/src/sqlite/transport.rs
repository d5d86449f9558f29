//! The message transport on SQLite: queues with sessions, delays, expiry, leases and dead
//! letters, and topics with filtered subscriptions.

use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::transport::subscription_queue;
use cqrs_core::{
    AnyMessage, Codec, DeadLetter, DeadLetters, Delivery, Envelope, Error, MessageFilter, MessageQueue,
    Metadata, Payload, QueueDepths, Result, Topics, saturating_add,
};
use rusqlite::types::ToSql;
use rusqlite::{Connection, Row, params, params_from_iter};
use tokio::sync::Notify;

use super::direct::{self, get};
use super::{SqliteStore, sql, timestamp};
use crate::error::corrupt;

/// Messages per INSERT statement: 11 parameters each.
const ROWS_PER_INSERT: usize = 500;

/// A message ready to insert.
struct Outgoing {
    message_id: String,
    session_id: Option<String>,
    payload: Payload,
    metadata: String,
    visible_at: i64,
    expires_at: Option<i64>,
}

fn outgoing(
    envelopes: Vec<Envelope>,
    now: cqrs_core::chrono::DateTime<cqrs_core::chrono::Utc>,
) -> Result<Vec<Outgoing>> {
    envelopes
        .into_iter()
        .map(|envelope| {
            let metadata = &envelope.metadata;
            Ok(Outgoing {
                message_id: metadata.message_id.clone(),
                session_id: metadata.session_id.clone(),
                payload: envelope.message.to_payload(Codec::Json)?,
                metadata: serde_json::to_string(metadata).map_err(Error::permanent)?,
                visible_at: metadata
                    .delay
                    .map_or(now, |d| saturating_add(now, d))
                    .timestamp_micros(),
                expires_at: metadata
                    .time_to_live
                    .map(|ttl| saturating_add(now, ttl).timestamp_micros()),
            })
        })
        .collect()
}

/// Inserts `messages` (owned or borrowed) into `queue`, up to [`ROWS_PER_INSERT`] per statement.
fn insert<M: Borrow<Outgoing>>(db: &Connection, queue: &str, messages: &[M], now: i64) -> Result<()> {
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let mut statement = String::from(sql::ENQUEUE);
        sql::push_rows(&mut statement, sql::MESSAGE_ROW, chunk.len());
        let chunk: Vec<&Outgoing> = chunk.iter().map(Borrow::borrow).collect();
        let columns: Vec<(&str, &[u8])> = chunk
            .iter()
            .map(|m| (m.payload.codec.tag(), m.payload.bytes.as_ref()))
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 11);
        for (m, (codec, bytes)) in chunk.iter().zip(&columns) {
            values.extend([
                &queue as &dyn ToSql,
                &m.message_id,
                &m.session_id,
                &m.payload.name,
                &m.payload.schema_version,
                codec,
                bytes,
                &m.metadata,
                &now,
                &m.visible_at,
                &m.expires_at,
            ]);
        }
        db.prepare_cached(&statement)
            .and_then(|mut insert| insert.execute(params_from_iter(values)))
            .map_err(direct::error)?;
    }
    Ok(())
}

fn envelope(row: &Row<'_>) -> Result<Envelope> {
    let metadata: String = get(row, "metadata")?;
    let metadata: Metadata = serde_json::from_str(&metadata).map_err(|e| corrupt("message metadata", e))?;
    let payload = Payload {
        name: get(row, "name")?,
        schema_version: get(row, "schema_version")?,
        codec: direct::codec(row, "codec")?,
        bytes: get::<Vec<u8>>(row, "payload")?.into(),
    };
    Ok(Envelope::from_parts(AnyMessage::raw(payload), metadata))
}

fn dead_letter(row: &Row<'_>) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: get::<i64>(row, "id")? as u64,
        queue: get(row, "queue")?,
        envelope: envelope(row)?,
        reason: get(row, "reason")?,
        delivery_count: get(row, "delivery_count")?,
        dead_lettered_at: timestamp(get(row, "dead_lettered_at")?)?,
    })
}

/// Copies `messages` into the queue of each subscription of `topic` whose filter names them;
/// returns the queues written to.
fn fan_out(db: &Connection, topic: &str, messages: &[Outgoing], now: i64) -> Result<Vec<String>> {
    let subscriptions = db
        .prepare_cached(sql::SUBSCRIPTIONS)
        .and_then(|mut select| {
            select
                .query_map([topic], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(direct::error)?;
    let mut queues = Vec::new();
    for (subscription, names) in subscriptions {
        let filter = match names {
            None => MessageFilter::All,
            Some(json) => MessageFilter::Names(
                serde_json::from_str(&json).map_err(|e| corrupt("subscription filter", e))?,
            ),
        };
        let matching: Vec<&Outgoing> = messages
            .iter()
            .filter(|m| filter.matches(&m.payload.name))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let queue = subscription_queue(topic, &subscription);
        insert(db, &queue, &matching, now)?;
        queues.push(queue);
    }
    Ok(queues)
}

/// A delivery's id and delivery count: what a fenced settle statement matches.
fn fence(delivery: &Delivery) -> [i64; 2] {
    [delivery.id as i64, i64::from(delivery.delivery_count)]
}

/// The fences of several deliveries.
fn fences(deliveries: &[Delivery]) -> Vec<[i64; 2]> {
    deliveries.iter().map(fence).collect()
}

/// Runs a receiving statement (one of [`sql::RECEIVE`]'s columns) and answers the messages it
/// locked, oldest first.
fn lock(db: &Connection, statement: &str, params: impl rusqlite::Params) -> Result<Vec<Delivery>> {
    let mut deliveries = direct::query(db, statement, params, received)?;
    deliveries.sort_by_key(|d| d.id);
    Ok(deliveries)
}

/// A delivery from a row of [`sql::RECEIVE`]'s columns.
fn received(row: &Row<'_>) -> Result<Delivery> {
    Ok(Delivery {
        id: get::<i64>(row, "id")? as u64,
        queue: get(row, "queue")?,
        envelope: envelope(row)?,
        delivery_count: get(row, "delivery_count")?,
        enqueued_at: timestamp(get(row, "enqueued_at")?)?,
        expires_at: get::<Option<i64>>(row, "expires_at")?
            .map(timestamp)
            .transpose()?,
    })
}

impl SqliteStore {
    fn waker(&self, queue: &str) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(wakers.entry(queue.to_owned()).or_default())
    }

    fn wake(&self, queue: &str) {
        self.waker(queue).notify_one();
    }

    /// Runs a fenced settle statement, its values ending with the delivery's id and count (a
    /// no-op for a delivery whose lock was lost).
    async fn settle(&self, statement: &'static str, delivery: &Delivery, mut values: Vec<i64>) -> Result<()> {
        values.extend(fence(delivery));
        self.execute(statement, params_from_iter(values)).await?;
        self.wake(&delivery.queue);
        Ok(())
    }
}

impl MessageQueue for SqliteStore {
    async fn enqueue(&self, queue: &str, envelopes: Vec<Envelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = self.now();
        // Messages all delivered later wake nobody: no consumer could take them now, and
        // consumers poll.
        let due_now = envelopes.iter().any(|e| !e.metadata.is_delayed());
        let messages = outgoing(envelopes, now)?;
        let statements = messages.len().div_ceil(ROWS_PER_INSERT);
        let name = queue.to_owned();
        self.write(
            statements,
            Box::new(move |db| insert(db, &name, &messages, now.timestamp_micros())),
        )
        .await?;
        if due_now {
            self.wake(queue);
        }
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = self.now();
        let locked_until = saturating_add(now, self.inner.lease).timestamp_micros();
        let name = queue.to_owned();
        self.write(
            1,
            Box::new(move |db| {
                lock(
                    db,
                    sql::RECEIVE,
                    params![name, now.timestamp_micros(), locked_until, max as i64],
                )
            }),
        )
        .await
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        self.settle(sql::COMPLETE, delivery, Vec::new()).await
    }

    /// One trip through the writer: the fenced deletes and, if every one deleted, the
    /// session's leading due messages locked for this consumer.
    async fn complete_and_next(&self, deliveries: &[Delivery], max: usize) -> Result<Vec<Delivery>> {
        let Some(last) = deliveries.last() else {
            return Ok(Vec::new());
        };
        let session = last.envelope.metadata.session_id.clone().filter(|_| max > 0);
        let now = self.now();
        let locked_until = saturating_add(now, self.inner.lease).timestamp_micros();
        let fences = fences(deliveries);
        let queue = last.queue.clone();
        let next = self
            .write(
                fences.len() + usize::from(session.is_some()),
                Box::new(move |db| {
                    let mut complete = db.prepare_cached(sql::COMPLETE).map_err(direct::error)?;
                    let mut completed = 0;
                    for fence in &fences {
                        completed += complete.execute(*fence).map_err(direct::error)?;
                    }
                    let Some(session) = session.filter(|_| completed == fences.len()) else {
                        return Ok(Vec::new());
                    };
                    let now = now.timestamp_micros();
                    lock(
                        db,
                        sql::RECEIVE_IN_SESSION,
                        params![queue, now, locked_until, session, max as i64],
                    )
                }),
            )
            .await?;
        // A session not followed (`max` 0) is up for grabs. One followed to its end has
        // nothing due left: the writer runs one transaction at a time, so a message enqueued
        // after this one committed found the session free, and its enqueue woke the consumers.
        if max == 0 {
            self.wake(&last.queue);
        }
        Ok(next)
    }

    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        let Some(last) = deliveries.last() else {
            return Ok(());
        };
        self.execute_each(sql::RELEASE, fences(deliveries)).await?;
        self.wake(&last.queue);
        Ok(())
    }

    async fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> Result<()> {
        let visible_at = saturating_add(self.now(), retry_after).timestamp_micros();
        self.settle(sql::ABANDON, delivery, vec![visible_at]).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let [id, count] = fence(delivery);
        let (reason, now) = (reason.to_owned(), self.now_micros());
        self.write(
            2,
            Box::new(move |db| {
                let moved = db
                    .prepare_cached(sql::DEAD_LETTER)
                    .and_then(|mut dead| dead.execute(params![reason, now, id, count]))
                    .map_err(direct::error)?;
                if moved > 0 {
                    db.prepare_cached(sql::COMPLETE)
                        .and_then(|mut complete| complete.execute([id, count]))
                        .map_err(direct::error)?;
                }
                Ok(())
            }),
        )
        .await?;
        self.wake(&delivery.queue);
        Ok(())
    }

    async fn wait(&self, queue: &str) {
        self.waker(queue).notified().await;
    }
}

impl Topics for SqliteStore {
    async fn subscribe(&self, topic: &str, subscription: &str, filter: MessageFilter) -> Result<()> {
        let names = match filter {
            MessageFilter::All => None,
            MessageFilter::Names(names) => Some(serde_json::to_string(&names).map_err(Error::permanent)?),
        };
        self.execute(sql::SUBSCRIBE, (topic.to_owned(), subscription.to_owned(), names))
            .await
            .map(drop)
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        let now = self.now();
        let messages = outgoing(envelopes, now)?;
        let topic_name = topic.to_owned();
        // Several statements: in a savepoint, so a failure leaves no queue half-filled.
        let queues = self
            .write(
                2,
                Box::new(move |db| fan_out(db, &topic_name, &messages, now.timestamp_micros())),
            )
            .await?;
        for queue in queues {
            self.wake(&queue);
        }
        Ok(())
    }
}

impl QueueDepths for SqliteStore {
    async fn queue_depths(&self) -> Result<Vec<(String, u64)>> {
        self.read(|db| {
            direct::query(db, sql::QUEUE_DEPTHS, [], |row| {
                Ok((direct::get(row, 0)?, direct::get::<i64>(row, 1)?.max(0) as u64))
            })
        })
        .await
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        let count: i64 = self
            .read(|db| {
                db.prepare_cached(sql::DEAD_LETTER_COUNT)
                    .and_then(|mut count| count.query_row([], |row| row.get(0)))
                    .map_err(direct::error)
            })
            .await?;
        Ok(count.max(0) as u64)
    }
}

impl DeadLetters for SqliteStore {
    async fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        self.read(|db| direct::query(db, sql::DEAD_LETTERS, params![queue, limit as i64], dead_letter))
            .await
    }

    async fn requeue(&self, id: u64) -> Result<()> {
        let now = self.now();
        let queue = self
            .write(
                3,
                Box::new(move |db| {
                    let letter = db
                        .prepare_cached(sql::DEAD_LETTER_BY_ID)
                        .and_then(|mut select| {
                            select.query([id as i64])?.next().map(|row| row.map(dead_letter))
                        })
                        .map_err(direct::error)?
                        .transpose()?
                        .ok_or_else(|| Error::NotFound {
                            entity: "DeadLetter".to_owned(),
                            id: id.to_string(),
                        })?;
                    // Back as it was first sent, but due now: an operator's explicit retry.
                    let messages: Vec<Outgoing> = outgoing(vec![letter.envelope], now)?
                        .into_iter()
                        .map(|m| Outgoing {
                            visible_at: now.timestamp_micros(),
                            ..m
                        })
                        .collect();
                    insert(db, &letter.queue, &messages, now.timestamp_micros())?;
                    db.prepare_cached(sql::REMOVE_DEAD_LETTER)
                        .and_then(|mut remove| remove.execute([id as i64]))
                        .map_err(direct::error)?;
                    Ok(letter.queue)
                }),
            )
            .await?;
        self.wake(&queue);
        Ok(())
    }
}
