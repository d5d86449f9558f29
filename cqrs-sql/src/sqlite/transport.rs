//! The message transport on SQLite: queues with sessions, delays, expiry, leases and dead
//! letters, and topics with filtered subscriptions.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::transport::subscription_queue;
use cqrs_core::{
    AnyMessage, Codec, DeadLetter, DeadLetters, Delivery, Envelope, Error, MessageFilter, MessageQueue,
    Metadata, Payload, QueueDepths, Result, Topics, saturating_add,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};
use tokio::sync::Notify;

use super::{SqliteStore, codec, sql, timestamp};
use crate::error::{corrupt, db};

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

async fn insert(conn: &mut SqliteConnection, queue: &str, messages: &[Outgoing], now: i64) -> Result<()> {
    for chunk in messages.chunks(ROWS_PER_INSERT) {
        let mut statement = String::from(sql::ENQUEUE);
        sql::push_rows(&mut statement, sql::MESSAGE_ROW, chunk.len());
        let mut query = sqlx::query(AssertSqlSafe(statement));
        for m in chunk {
            query = query
                .bind(queue)
                .bind(m.message_id.as_str())
                .bind(m.session_id.as_deref())
                .bind(m.payload.name.as_str())
                .bind(i64::from(m.payload.schema_version))
                .bind(m.payload.codec.tag())
                .bind(m.payload.bytes.as_ref())
                .bind(m.metadata.as_str())
                .bind(now)
                .bind(m.visible_at)
                .bind(m.expires_at);
        }
        query.execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

fn envelope(row: &SqliteRow) -> Result<Envelope> {
    let metadata: String = row.try_get("metadata").map_err(db)?;
    let metadata: Metadata = serde_json::from_str(&metadata).map_err(|e| corrupt("message metadata", e))?;
    let payload = Payload {
        name: row.try_get("name").map_err(db)?,
        schema_version: row.try_get::<i64, _>("schema_version").map_err(db)? as u32,
        codec: codec(row, "codec")?,
        bytes: row.try_get::<Vec<u8>, _>("payload").map_err(db)?.into(),
    };
    Ok(Envelope::from_parts(AnyMessage::raw(payload), metadata))
}

fn dead_letter(row: &SqliteRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: row.try_get::<i64, _>("id").map_err(db)? as u64,
        queue: row.try_get("queue").map_err(db)?,
        envelope: envelope(row)?,
        reason: row.try_get("reason").map_err(db)?,
        delivery_count: row.try_get::<i64, _>("delivery_count").map_err(db)? as u32,
        dead_lettered_at: timestamp(row.try_get("dead_lettered_at").map_err(db)?)?,
    })
}

/// Copies `messages` into the queue of each subscription of `topic` whose filter names them;
/// returns the queues written to.
async fn fan_out(
    conn: &mut SqliteConnection,
    topic: &str,
    messages: &[Outgoing],
    now: i64,
) -> Result<Vec<String>> {
    let subscriptions = sqlx::query(sql::SUBSCRIPTIONS)
        .bind(topic)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    let mut queues = Vec::new();
    for row in &subscriptions {
        let subscription: String = row.try_get("subscription").map_err(db)?;
        let names: Option<String> = row.try_get("names").map_err(db)?;
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
        let copies: Vec<Outgoing> = matching
            .into_iter()
            .map(|m| Outgoing {
                message_id: m.message_id.clone(),
                session_id: m.session_id.clone(),
                payload: m.payload.clone(),
                metadata: m.metadata.clone(),
                visible_at: m.visible_at,
                expires_at: m.expires_at,
            })
            .collect();
        insert(conn, &queue, &copies, now).await?;
        queues.push(queue);
    }
    Ok(queues)
}

/// A delivery from a row of [`sql::RECEIVE`]'s columns.
fn received(row: &SqliteRow, queue: &str) -> Result<Delivery> {
    Ok(Delivery {
        id: row.try_get::<i64, _>("id").map_err(db)? as u64,
        queue: queue.to_owned(),
        envelope: envelope(row)?,
        delivery_count: row.try_get::<i64, _>("delivery_count").map_err(db)? as u32,
        enqueued_at: timestamp(row.try_get("enqueued_at").map_err(db)?)?,
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")
            .map_err(db)?
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

    /// Runs a fenced settle statement (a no-op for a delivery whose lock was lost).
    async fn settle(
        &self,
        statement: &'static str,
        delivery: &Delivery,
        visible_at: Option<i64>,
    ) -> Result<()> {
        let mut query = sqlx::query(statement);
        if let Some(visible_at) = visible_at {
            query = query.bind(visible_at);
        }
        self.execute(
            query
                .bind(delivery.id as i64)
                .bind(i64::from(delivery.delivery_count)),
        )
        .await?;
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
        let messages = outgoing(envelopes, now)?;
        let statements = messages.len().div_ceil(ROWS_PER_INSERT);
        let name = queue.to_owned();
        self.write(
            statements,
            Box::new(move |conn| {
                Box::pin(async move { insert(conn, &name, &messages, now.timestamp_micros()).await })
            }),
        )
        .await?;
        self.wake(queue);
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = self.now();
        let locked_until = saturating_add(now, self.inner.lease).timestamp_micros();
        let name = queue.to_owned();
        let rows = self
            .write(
                1,
                Box::new(move |conn| {
                    Box::pin(async move {
                        sqlx::query(sql::RECEIVE)
                            .bind(name)
                            .bind(now.timestamp_micros())
                            .bind(locked_until)
                            .bind(max as i64)
                            .fetch_all(conn)
                            .await
                            .map_err(db)
                    })
                }),
            )
            .await?;
        let mut deliveries = rows
            .iter()
            .map(|row| received(row, queue))
            .collect::<Result<Vec<_>>>()?;
        deliveries.sort_by_key(|d| d.id);
        Ok(deliveries)
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        self.settle(sql::COMPLETE, delivery, None).await
    }

    /// One trip through the writer: the fenced delete and, if it deleted, the session's next
    /// message locked for this consumer.
    async fn complete_and_next(&self, delivery: &Delivery) -> Result<Option<Delivery>> {
        let Some(session) = delivery.envelope.metadata.session_id.clone() else {
            return self.complete(delivery).await.map(|()| None);
        };
        let now = self.now();
        let locked_until = saturating_add(now, self.inner.lease).timestamp_micros();
        let (id, count, queue) = (
            delivery.id as i64,
            i64::from(delivery.delivery_count),
            delivery.queue.clone(),
        );
        let row = self
            .write(
                2,
                Box::new(move |conn| {
                    Box::pin(async move {
                        let completed = sqlx::query(sql::COMPLETE)
                            .bind(id)
                            .bind(count)
                            .execute(&mut *conn)
                            .await
                            .map_err(db)?;
                        if completed.rows_affected() == 0 {
                            return Ok(None);
                        }
                        sqlx::query(sql::RECEIVE_IN_SESSION)
                            .bind(queue)
                            .bind(now.timestamp_micros())
                            .bind(locked_until)
                            .bind(session)
                            .fetch_optional(conn)
                            .await
                            .map_err(db)
                    })
                }),
            )
            .await?;
        self.wake(&delivery.queue);
        row.map(|row| received(&row, &delivery.queue)).transpose()
    }

    async fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> Result<()> {
        let visible_at = saturating_add(self.now(), retry_after).timestamp_micros();
        self.settle(sql::ABANDON, delivery, Some(visible_at)).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        let (id, count) = (delivery.id as i64, i64::from(delivery.delivery_count));
        let (reason, now) = (reason.to_owned(), self.now_micros());
        self.write(
            2,
            Box::new(move |conn| {
                Box::pin(async move {
                    let moved = sqlx::query(sql::DEAD_LETTER)
                        .bind(reason)
                        .bind(now)
                        .bind(id)
                        .bind(count)
                        .execute(&mut *conn)
                        .await
                        .map_err(db)?;
                    if moved.rows_affected() > 0 {
                        sqlx::query(sql::COMPLETE)
                            .bind(id)
                            .bind(count)
                            .execute(&mut *conn)
                            .await
                            .map_err(db)?;
                    }
                    Ok(())
                })
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
        sqlx::query(sql::SUBSCRIBE)
            .bind(topic)
            .bind(subscription)
            .bind(names)
            .execute(self.writer())
            .await
            .map_err(db)?;
        Ok(())
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
                Box::new(move |conn| {
                    Box::pin(
                        async move { fan_out(conn, &topic_name, &messages, now.timestamp_micros()).await },
                    )
                }),
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
        let rows: Vec<(String, i64)> = sqlx::query_as(sql::QUEUE_DEPTHS)
            .fetch_all(self.reader())
            .await
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(queue, n)| (queue, n.max(0) as u64))
            .collect())
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(sql::DEAD_LETTER_COUNT)
            .fetch_one(self.reader())
            .await
            .map_err(db)?;
        Ok(count.max(0) as u64)
    }
}

impl DeadLetters for SqliteStore {
    async fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        sqlx::query(sql::DEAD_LETTERS)
            .bind(queue)
            .bind(limit as i64)
            .fetch_all(self.reader())
            .await
            .map_err(db)?
            .iter()
            .map(dead_letter)
            .collect()
    }

    async fn requeue(&self, id: u64) -> Result<()> {
        let now = self.now();
        let mut tx = self.writer().begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        let row = sqlx::query(sql::DEAD_LETTER_BY_ID)
            .bind(id as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| Error::NotFound {
                entity: "DeadLetter".to_owned(),
                id: id.to_string(),
            })?;
        let letter = dead_letter(&row)?;
        let messages = outgoing(vec![letter.envelope], now)?;
        // Back as it was first sent, but due now: a requeue is an operator's explicit retry.
        let messages: Vec<Outgoing> = messages
            .into_iter()
            .map(|m| Outgoing {
                visible_at: now.timestamp_micros(),
                ..m
            })
            .collect();
        insert(&mut tx, &letter.queue, &messages, now.timestamp_micros()).await?;
        sqlx::query(sql::REMOVE_DEAD_LETTER)
            .bind(id as i64)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.wake(&letter.queue);
        Ok(())
    }
}
