//! Message transport: queues and topics with subscriptions, sessions, scheduled delivery,
//! expiry, delivery counts and dead letters; and the buses that send through it.
//!
//! Semantics every backend keeps:
//! - a received message is invisible to other receivers until it is completed, abandoned
//!   (visible again after a delay) or dead-lettered;
//! - messages with a session id are delivered to one consumer at a time per session, in the
//!   order they were enqueued: a session's next message waits until the one before is settled,
//!   or comes with that one's completion, to the same consumer
//!   ([`MessageQueue::complete_and_next`]);
//! - a message with a `delay` is invisible until the delay has passed;
//! - each receive increments the message's delivery count, and settling is fenced by it: a
//!   delivery whose lock was lost (its lease ran out and the message was received again)
//!   settles nothing;
//! - a topic copies each published message to every subscription whose filter matches its name.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bus::{CommandBus, EventBus};
use crate::envelope::Envelope;
use crate::error::Result;

/// A message received from a queue, to be settled by exactly one of complete, abandon or
/// dead-letter.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The message's id in its queue.
    pub id: u64,
    /// The queue it came from.
    pub queue: String,
    /// The message, raw.
    pub envelope: Envelope,
    /// How many times it has been received, this time included (1 on the first delivery).
    pub delivery_count: u32,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When its time to live runs out, if it has one.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A message set aside for an operator.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The dead letter's id.
    pub id: u64,
    /// The queue it was taken from; a requeue puts it back there.
    pub queue: String,
    /// The message, raw.
    pub envelope: Envelope,
    /// Why it was dead-lettered.
    pub reason: String,
    /// How many times it had been delivered.
    pub delivery_count: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: DateTime<Utc>,
}

/// Which message names a subscription receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageFilter {
    /// Every message.
    All,
    /// Only messages with one of these names.
    Names(BTreeSet<String>),
}

impl MessageFilter {
    /// A filter for the given names.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::Names(names.into_iter().map(Into::into).collect())
    }

    /// Whether a message with this name passes.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Names(names) => names.contains(name),
        }
    }
}

/// The queue that holds the messages of `subscription` to `topic`.
pub fn subscription_queue(topic: &str, subscription: &str) -> String {
    format!("{topic}/{subscription}")
}

/// Point-to-point queues.
pub trait MessageQueue: Send + Sync {
    /// Enqueues envelopes, all or nothing, in order. Typed messages are serialized (JSON).
    fn enqueue(&self, queue: &str, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send;

    /// Receives up to `max` messages that are due, respecting sessions.
    fn receive(&self, queue: &str, max: usize) -> impl Future<Output = Result<Vec<Delivery>>> + Send;

    /// Removes a handled message.
    fn complete(&self, delivery: &Delivery) -> impl Future<Output = Result<()>> + Send;

    /// Removes handled messages of one session (`deliveries`, received by this consumer, in
    /// order) and, where the backend can do both in one trip, receives up to `max` of the
    /// session's next due messages for the same consumer: consecutive, in order, each locked as
    /// by [`receive`](Self::receive). The session stays held until every one of them is settled
    /// (or its lock runs out), so the consumer may handle them as one batch; those it does not
    /// handle it gives back with [`release`](Self::release).
    ///
    /// A session handled this way costs one trip per batch instead of two per message. The
    /// answer is empty when `max` is 0, when the session has no message due, when any of
    /// `deliveries` had lost its lock (another consumer may hold the session now; those that
    /// had not are still completed), or when the backend does not combine the two; the next
    /// message then comes from a later [`receive`](Self::receive).
    ///
    /// The default completes each delivery in turn and answers nothing.
    fn complete_and_next(
        &self,
        deliveries: &[Delivery],
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>>> + Send {
        let _ = max;
        async move {
            for delivery in deliveries {
                self.complete(delivery).await?;
            }
            Ok(Vec::new())
        }
    }

    /// Gives back messages received but not handled (the rest of a session's batch after one
    /// of them failed): visible again at once and, since they were not tried, with this
    /// delivery not counted. Fenced like settling: a delivery whose lock was lost changes
    /// nothing.
    ///
    /// The default abandons each with no delay, which counts the delivery: a backend whose
    /// [`complete_and_next`](Self::complete_and_next) hands messages over should override it.
    fn release(&self, deliveries: &[Delivery]) -> impl Future<Output = Result<()>> + Send {
        async move {
            for delivery in deliveries {
                self.abandon(delivery, Duration::ZERO).await?;
            }
            Ok(())
        }
    }

    /// Makes a message visible again after `retry_after`.
    fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> impl Future<Output = Result<()>> + Send;

    /// Moves a message to the dead letters with a reason.
    fn dead_letter(&self, delivery: &Delivery, reason: &str) -> impl Future<Output = Result<()>> + Send;

    /// Resolves when messages may have arrived on `queue` (a hint: callers also poll).
    fn wait(&self, queue: &str) -> impl Future<Output = ()> + Send;
}

/// Publish/subscribe on top of queues: each subscription is a queue named by
/// [`subscription_queue`].
pub trait Topics: MessageQueue {
    /// Creates (or updates the filter of) a subscription to `topic`.
    fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        filter: MessageFilter,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Copies each envelope to every matching subscription of `topic`, all or nothing.
    fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send;
}

/// How many messages the queues and the dead-letter store hold, for monitoring: counted where
/// they are stored, without reading them.
pub trait QueueDepths: Send + Sync {
    /// Every queue that holds messages (due, scheduled for later, or being handled; not dead
    /// letters), with how many, in queue-name order.
    fn queue_depths(&self) -> impl Future<Output = Result<Vec<(String, u64)>>> + Send;

    /// How many dead letters wait, all queues together.
    fn dead_letter_count(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// The dead-letter store: list and requeue.
pub trait DeadLetters: Send + Sync {
    /// Up to `limit` dead letters, oldest first, of one queue or of all.
    fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send;

    /// Puts a dead letter back on its queue, with its delivery count reset.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) for an unknown id.
    fn requeue(&self, id: u64) -> impl Future<Output = Result<()>> + Send;
}

impl<T: MessageQueue> MessageQueue for Arc<T> {
    fn enqueue(&self, queue: &str, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send {
        (**self).enqueue(queue, envelopes)
    }
    fn receive(&self, queue: &str, max: usize) -> impl Future<Output = Result<Vec<Delivery>>> + Send {
        (**self).receive(queue, max)
    }
    fn complete(&self, delivery: &Delivery) -> impl Future<Output = Result<()>> + Send {
        (**self).complete(delivery)
    }
    fn complete_and_next(
        &self,
        deliveries: &[Delivery],
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>>> + Send {
        (**self).complete_and_next(deliveries, max)
    }
    fn release(&self, deliveries: &[Delivery]) -> impl Future<Output = Result<()>> + Send {
        (**self).release(deliveries)
    }
    fn abandon(&self, delivery: &Delivery, retry_after: Duration) -> impl Future<Output = Result<()>> + Send {
        (**self).abandon(delivery, retry_after)
    }
    fn dead_letter(&self, delivery: &Delivery, reason: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).dead_letter(delivery, reason)
    }
    fn wait(&self, queue: &str) -> impl Future<Output = ()> + Send {
        (**self).wait(queue)
    }
}

impl<T: Topics> Topics for Arc<T> {
    fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        filter: MessageFilter,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).subscribe(topic, subscription, filter)
    }
    fn publish(&self, topic: &str, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send {
        (**self).publish(topic, envelopes)
    }
}

impl<T: DeadLetters> DeadLetters for Arc<T> {
    fn dead_letters(
        &self,
        queue: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>>> + Send {
        (**self).dead_letters(queue, limit)
    }
    fn requeue(&self, id: u64) -> impl Future<Output = Result<()>> + Send {
        (**self).requeue(id)
    }
}

/// A command bus that enqueues commands on a transport: each command name may be routed to its
/// own queue, the rest go to a default queue.
#[derive(Debug, Clone)]
pub struct QueueBus<T> {
    transport: T,
    default_queue: String,
    routes: HashMap<String, String>,
}

impl<T: MessageQueue> QueueBus<T> {
    /// A bus sending every command to `default_queue`.
    pub fn new(transport: T, default_queue: impl Into<String>) -> Self {
        Self {
            transport,
            default_queue: default_queue.into(),
            routes: HashMap::new(),
        }
    }

    /// Sends commands named `name` to `queue`.
    #[must_use]
    pub fn route(mut self, name: impl Into<String>, queue: impl Into<String>) -> Self {
        self.routes.insert(name.into(), queue.into());
        self
    }

    /// The queue a command with this name goes to.
    pub fn queue_for(&self, name: &str) -> &str {
        self.routes.get(name).unwrap_or(&self.default_queue)
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.transport
    }
}

impl<T: MessageQueue> CommandBus for QueueBus<T> {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        let queue = self.queue_for(envelope.name()).to_owned();
        self.transport.enqueue(&queue, vec![envelope]).await
    }

    /// Enqueues consecutive commands for the same queue together, in order.
    async fn send_batch(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let mut run: Vec<Envelope> = Vec::new();
        let mut run_queue = String::new();
        for envelope in envelopes {
            let queue = self.queue_for(envelope.name());
            if !run.is_empty() && queue != run_queue {
                self.transport
                    .enqueue(&run_queue, std::mem::take(&mut run))
                    .await?;
            }
            run_queue = queue.to_owned();
            run.push(envelope);
        }
        if run.is_empty() {
            return Ok(());
        }
        self.transport.enqueue(&run_queue, run).await
    }
}

/// An event bus that publishes to a topic of a transport.
#[derive(Debug, Clone)]
pub struct TopicBus<T> {
    transport: T,
    topic: String,
}

impl<T: Topics> TopicBus<T> {
    /// A bus publishing to `topic`.
    pub fn new(transport: T, topic: impl Into<String>) -> Self {
        Self {
            transport,
            topic: topic.into(),
        }
    }

    /// The transport.
    pub fn get_ref(&self) -> &T {
        &self.transport
    }
}

impl<T: Topics> EventBus for TopicBus<T> {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        self.transport.publish(&self.topic, events).await
    }
}
