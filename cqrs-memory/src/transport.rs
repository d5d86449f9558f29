use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::transport::subscription_queue;
use cqrs_core::{
    AnyMessage, Codec, DeadLetter, DeadLetters, Delivery, Envelope, Error, MessageFilter, MessageQueue,
    QueueDepths, Result, SharedClock, SystemClock, Topics, saturating_add,
};
use dashmap::DashMap;
use tokio::sync::Notify;

#[derive(Debug)]
struct Item {
    envelope: Envelope,
    enqueued_at: DateTime<Utc>,
    visible_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    delivery_count: u32,
    in_flight: bool,
}

#[derive(Debug, Default)]
struct Queue {
    items: BTreeMap<u64, Item>,
    busy_sessions: HashSet<String>,
}

#[derive(Default)]
struct QueueState {
    queue: Mutex<Queue>,
    arrived: Notify,
}

impl Queue {
    /// Marks item `id` in flight (its session busy) with one more delivery, and answers it.
    fn take(&mut self, id: u64, queue: &str) -> Delivery {
        let item = self.items.get_mut(&id).expect("taken from the map");
        item.in_flight = true;
        item.delivery_count += 1;
        let delivery = Delivery {
            id,
            queue: queue.to_owned(),
            envelope: item.envelope.clone(),
            delivery_count: item.delivery_count,
            enqueued_at: item.enqueued_at,
            expires_at: item.expires_at,
        };
        if let Some(session) = &delivery.envelope.metadata.session_id {
            self.busy_sessions.insert(session.clone());
        }
        delivery
    }
}

/// How a delivery is settled.
#[derive(Clone, Copy)]
enum Outcome {
    /// Removed (completed or dead-lettered).
    Remove,
    /// Visible again after a delay.
    RetryAfter(Duration),
    /// Visible again at once, this delivery not counted.
    Release,
}

impl QueueState {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Inner {
    queues: DashMap<String, Arc<QueueState>>,
    subscriptions: DashMap<String, Vec<(String, MessageFilter)>>,
    dead: Mutex<BTreeMap<u64, DeadLetter>>,
    ids: AtomicU64,
    clock: SharedClock,
}

/// An in-memory transport: queues, topics with filtered subscriptions, sessions, scheduled
/// delivery, time to live, delivery counts and a dead-letter store.
///
/// Messages are serialized (JSON) when enqueued, exactly as a durable transport would, so
/// handlers see the same raw envelopes with every backend.
#[derive(Clone)]
pub struct MemoryTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryTransport")
            .field("queues", &self.inner.queues.len())
            .field("subscriptions", &self.inner.subscriptions.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryTransport {
    /// An empty transport on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// An empty transport whose delays and expiries follow `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: DashMap::new(),
                subscriptions: DashMap::new(),
                dead: Mutex::new(BTreeMap::new()),
                ids: AtomicU64::new(1),
                clock,
            }),
        }
    }

    fn queue(&self, name: &str) -> Arc<QueueState> {
        if let Some(q) = self.inner.queues.get(name) {
            return Arc::clone(&q);
        }
        Arc::clone(&self.inner.queues.entry(name.to_owned()).or_default())
    }

    fn dead(&self) -> MutexGuard<'_, BTreeMap<u64, DeadLetter>> {
        self.inner.dead.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of messages in `queue`, in flight or not.
    pub fn depth(&self, queue: &str) -> usize {
        self.inner.queues.get(queue).map_or(0, |q| q.lock().items.len())
    }

    /// Serializes envelopes into queue items, before anything is stored (all or nothing).
    fn items(&self, envelopes: Vec<Envelope>) -> Result<Vec<Item>> {
        let now = self.inner.clock.now();
        envelopes
            .into_iter()
            .map(|envelope| {
                let payload = envelope.message.to_payload(Codec::Json)?;
                let metadata = envelope.metadata;
                Ok(Item {
                    visible_at: metadata.delay.map_or(now, |d| saturating_add(now, d)),
                    expires_at: metadata.time_to_live.map(|ttl| saturating_add(now, ttl)),
                    envelope: Envelope::from_parts(AnyMessage::raw(payload), metadata),
                    enqueued_at: now,
                    delivery_count: 0,
                    in_flight: false,
                })
            })
            .collect()
    }

    fn push(&self, queue: &str, items: Vec<Item>) {
        let state = self.queue(queue);
        {
            let mut q = state.lock();
            for item in items {
                q.items
                    .insert(self.inner.ids.fetch_add(1, Ordering::SeqCst), item);
            }
        }
        state.arrived.notify_one();
    }

    /// Settles a delivered item and frees its session; answers the item if it was removed.
    /// Fenced: `None`, and nothing changed, if this delivery of it is not in flight.
    fn settle(&self, delivery: &Delivery, outcome: Outcome) -> Option<Item> {
        let state = self.queue(&delivery.queue);
        let outcome = {
            let mut q = state.lock();
            // Fenced: a delivery settles only the receive it came from.
            let in_flight = q
                .items
                .get(&delivery.id)
                .is_some_and(|i| i.in_flight && i.delivery_count == delivery.delivery_count);
            if !in_flight {
                return None;
            }
            if let Some(session) = &delivery.envelope.metadata.session_id {
                q.busy_sessions.remove(session);
            }
            let after = match outcome {
                Outcome::Remove => return q.items.remove(&delivery.id),
                Outcome::RetryAfter(after) => after,
                Outcome::Release => Duration::ZERO,
            };
            let visible_at = saturating_add(self.inner.clock.now(), after);
            let item = q.items.get_mut(&delivery.id).expect("checked above");
            item.in_flight = false;
            item.visible_at = visible_at;
            if matches!(outcome, Outcome::Release) {
                item.delivery_count -= 1;
            }
            None
        };
        state.arrived.notify_one();
        outcome
    }
}

impl MessageQueue for MemoryTransport {
    async fn enqueue(&self, queue: &str, envelopes: Vec<Envelope>) -> Result<()> {
        let items = self.items(envelopes)?;
        self.push(queue, items);
        Ok(())
    }

    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Delivery>> {
        let now = self.inner.clock.now();
        let state = self.queue(queue);
        let mut q = state.lock();
        let mut picked = Vec::new();
        let mut seen_sessions: HashSet<String> = HashSet::new();
        for (&id, item) in &q.items {
            if picked.len() >= max {
                break;
            }
            let session = item.envelope.metadata.session_id.as_deref();
            if let Some(session) = session {
                // Only a session's oldest message may go, and only when the session is idle.
                if q.busy_sessions.contains(session) || !seen_sessions.insert(session.to_owned()) {
                    continue;
                }
            }
            if !item.in_flight && item.visible_at <= now {
                picked.push(id);
            }
        }
        Ok(picked.into_iter().map(|id| q.take(id, queue)).collect())
    }

    async fn complete(&self, delivery: &Delivery) -> Result<()> {
        self.settle(delivery, Outcome::Remove);
        Ok(())
    }

    /// Completes the deliveries and, if every one still held its lock, takes the session's
    /// leading due messages for the same consumer.
    async fn complete_and_next(&self, deliveries: &[Delivery], max: usize) -> Result<Vec<Delivery>> {
        let mut held = true;
        for delivery in deliveries {
            held &= self.settle(delivery, Outcome::Remove).is_some();
        }
        let (Some(last), true, 1..) = (deliveries.last(), held, max) else {
            return Ok(Vec::new());
        };
        let Some(session) = last.envelope.metadata.session_id.as_deref() else {
            return Ok(Vec::new());
        };
        let now = self.inner.clock.now();
        let state = self.queue(&last.queue);
        let mut q = state.lock();
        if q.busy_sessions.contains(session) {
            return Ok(Vec::new());
        }
        let picked: Vec<u64> = q
            .items
            .iter()
            .filter(|(_, item)| item.envelope.metadata.session_id.as_deref() == Some(session))
            .take_while(|(_, item)| !item.in_flight && item.visible_at <= now)
            .take(max)
            .map(|(&id, _)| id)
            .collect();
        Ok(picked.into_iter().map(|id| q.take(id, &last.queue)).collect())
    }

    async fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> Result<()> {
        self.settle(delivery, Outcome::RetryAfter(retry_after));
        Ok(())
    }

    /// Visible again at once, with the delivery count as it was before they were taken.
    async fn release(&self, deliveries: &[Delivery]) -> Result<()> {
        for delivery in deliveries {
            self.settle(delivery, Outcome::Release);
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        if let Some(item) = self.settle(delivery, Outcome::Remove) {
            let id = self.inner.ids.fetch_add(1, Ordering::SeqCst);
            self.dead().insert(
                id,
                DeadLetter {
                    id,
                    queue: delivery.queue.clone(),
                    envelope: item.envelope,
                    reason: reason.to_owned(),
                    delivery_count: item.delivery_count,
                    dead_lettered_at: self.inner.clock.now(),
                },
            );
        }
        Ok(())
    }

    async fn wait(&self, queue: &str) {
        self.queue(queue).arrived.notified().await;
    }
}

impl Topics for MemoryTransport {
    async fn subscribe(&self, topic: &str, subscription: &str, filter: MessageFilter) -> Result<()> {
        let mut subs = self.inner.subscriptions.entry(topic.to_owned()).or_default();
        match subs.iter_mut().find(|(name, _)| name == subscription) {
            Some((_, existing)) => *existing = filter,
            None => subs.push((subscription.to_owned(), filter)),
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> Result<()> {
        let subscriptions = match self.inner.subscriptions.get(topic) {
            Some(subs) => subs.clone(),
            None => return Ok(()),
        };
        let items = self.items(envelopes)?;
        for (subscription, filter) in subscriptions {
            let copies: Vec<Item> = items
                .iter()
                .filter(|item| filter.matches(item.envelope.name()))
                .map(|item| Item {
                    envelope: item.envelope.clone(),
                    ..*item
                })
                .collect();
            if !copies.is_empty() {
                self.push(&subscription_queue(topic, &subscription), copies);
            }
        }
        Ok(())
    }
}

impl QueueDepths for MemoryTransport {
    async fn queue_depths(&self) -> Result<Vec<(String, u64)>> {
        let mut depths: Vec<(String, u64)> = self
            .inner
            .queues
            .iter()
            .map(|entry| (entry.key().clone(), entry.value().lock().items.len() as u64))
            .filter(|(_, n)| *n > 0)
            .collect();
        depths.sort();
        Ok(depths)
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        Ok(self.dead().len() as u64)
    }
}

impl DeadLetters for MemoryTransport {
    async fn dead_letters(&self, queue: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .dead()
            .values()
            .filter(|d| queue.is_none_or(|q| d.queue == q))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn requeue(&self, id: u64) -> Result<()> {
        let letter = self.dead().remove(&id).ok_or_else(|| Error::NotFound {
            entity: "DeadLetter".to_owned(),
            id: id.to_string(),
        })?;
        let now = self.inner.clock.now();
        let item = Item {
            expires_at: letter
                .envelope
                .metadata
                .time_to_live
                .map(|ttl| saturating_add(now, ttl)),
            envelope: letter.envelope,
            enqueued_at: now,
            visible_at: now,
            delivery_count: 0,
            in_flight: false,
        };
        self.push(&letter.queue, vec![item]);
        Ok(())
    }
}
