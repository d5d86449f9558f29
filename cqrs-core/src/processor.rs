//! Processors: pull messages from a queue and hand them to a handler, at least once.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::dispatch::MessageHandler;
use crate::error::{Error, Result};
use crate::limit::{AdaptiveLimit, LimitConfig};
use crate::transport::{Delivery, MessageQueue};

/// Settings of a [`Processor`].
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// A message that has failed this many deliveries is dead-lettered (default 5).
    pub max_deliveries: u32,
    /// The delay before a failed message is delivered again, by delivery count.
    pub backoff: Backoff,
    /// How many times a handler that failed with a concurrency conflict is run again at once,
    /// within the same delivery, before the message is abandoned to the backoff (default 3).
    ///
    /// A conflict means another writer (often another process, with this one's cached
    /// aggregate out of date) got there first and nothing was written; the repository has
    /// dropped its stale memento, so running again at once usually succeeds. Abandoning instead
    /// would hold the message's session for the backoff delay and until a consumer polls again.
    pub conflict_retries: u32,
    /// The most messages received in one call.
    pub batch_size: usize,
    /// How long an idle processor waits before polling again when no wake-up arrives.
    pub poll_interval: Duration,
    /// Bounds of the adaptive concurrency limit.
    pub limit: LimitConfig,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            max_deliveries: 5,
            conflict_retries: 3,
            backoff: Backoff {
                initial: Duration::from_millis(100),
                ..Backoff::default()
            },
            batch_size: 64,
            poll_interval: Duration::from_millis(500),
            limit: LimitConfig::default(),
        }
    }
}

struct Inner<Q, H> {
    queue: String,
    transport: Q,
    handler: H,
    config: ProcessorConfig,
    clock: SharedClock,
    limit: AdaptiveLimit,
    /// Set while a run drains its tasks after shutdown: they stop following their sessions.
    stopping: AtomicBool,
}

/// Pulls from one queue and dispatches each message to a [`MessageHandler`].
///
/// - **At least once**: a message is completed only after its handler succeeded.
/// - **Retry with backoff**: a failed (or panicking) handler abandons the message, which comes
///   back after the backoff delay for its delivery count.
/// - **Dead letters**: after `max_deliveries` failed deliveries; at once for a message that
///   cannot be decoded or has no handler; unprocessed for one whose time to live ran out.
/// - **Sessions** run serially inside (the transport hands out one message per session at a
///   time) and in parallel across, under an [`AdaptiveLimit`]. The task that completes a
///   session's message goes on with the session's next one when the transport hands it over
///   with the completion ([`MessageQueue::complete_and_next`]).
pub struct Processor<Q, H> {
    inner: Arc<Inner<Q, H>>,
}

impl<Q, H> Clone for Processor<Q, H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<Q, H> fmt::Debug for Processor<Q, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Processor")
            .field("queue", &self.inner.queue)
            .field("config", &self.inner.config)
            .field("limit", &self.inner.limit)
            .finish()
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

impl<Q, H> Processor<Q, H>
where
    Q: MessageQueue + 'static,
    H: MessageHandler + 'static,
{
    /// A processor of `queue` with the default settings.
    pub fn new(transport: Q, queue: impl Into<String>, handler: H, clock: SharedClock) -> Self {
        Self::with_config(transport, queue, handler, clock, ProcessorConfig::default())
    }

    /// A processor of `queue` with the given settings.
    pub fn with_config(
        transport: Q,
        queue: impl Into<String>,
        handler: H,
        clock: SharedClock,
        config: ProcessorConfig,
    ) -> Self {
        let limit = AdaptiveLimit::new(config.limit, Arc::clone(&clock));
        Self {
            inner: Arc::new(Inner {
                queue: queue.into(),
                transport,
                handler,
                config,
                clock,
                limit,
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// The concurrency limit in use.
    pub fn limit(&self) -> &AdaptiveLimit {
        &self.inner.limit
    }

    /// Handles every message that is due now, including immediate redeliveries, and returns
    /// how many deliveries were settled. Tests use it to step a processor deterministically.
    ///
    /// # Errors
    /// When the transport fails to receive.
    pub async fn process_available(&self) -> Result<usize> {
        self.drive(std::future::pending::<()>(), true).await
    }

    /// Runs until `shutdown` resolves, then waits for the messages in hand to be settled.
    ///
    /// Transport failures are logged and retried after the poll interval.
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal errors.
    pub async fn run_until(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        self.drive(shutdown, false).await.map(drop)
    }

    async fn drive(&self, shutdown: impl Future<Output = ()> + Send, until_idle: bool) -> Result<usize> {
        let inner = &self.inner;
        let mut tasks = JoinSet::new();
        let mut settled = 0;
        tokio::pin!(shutdown);
        loop {
            while let Some(joined) = tasks.try_join_next() {
                settled += joined.unwrap_or(1);
            }
            let room = inner.limit.available().min(inner.config.batch_size);
            let batch = if room == 0 {
                Vec::new()
            } else {
                match inner.transport.receive(&inner.queue, room).await {
                    Ok(batch) => batch,
                    Err(error) if until_idle => return Err(error),
                    Err(error) => {
                        tracing::warn!(queue = %inner.queue, %error, "receive failed");
                        inner.limit.transient();
                        tokio::select! {
                            () = tokio::time::sleep(inner.config.poll_interval) => continue,
                            () = &mut shutdown => break,
                        }
                    }
                }
            };
            if batch.is_empty() {
                if tasks.is_empty() {
                    if until_idle {
                        return Ok(settled);
                    }
                    tokio::select! {
                        () = inner.transport.wait(&inner.queue) => {}
                        () = tokio::time::sleep(inner.config.poll_interval) => {}
                        () = &mut shutdown => break,
                    }
                } else {
                    tokio::select! {
                        Some(joined) = tasks.join_next() => settled += joined.unwrap_or(1),
                        () = &mut shutdown, if !until_idle => break,
                    }
                }
                continue;
            }
            for delivery in batch {
                let permit = inner.limit.acquire().await;
                let inner = Arc::clone(inner);
                tasks.spawn(async move {
                    let settled = inner.settle(delivery).await;
                    drop(permit);
                    settled
                });
            }
        }
        // Tasks in hand finish their message and stop following their sessions.
        inner.stopping.store(true, Ordering::Relaxed);
        while let Some(joined) = tasks.join_next().await {
            settled += joined.unwrap_or(1);
        }
        inner.stopping.store(false, Ordering::Relaxed);
        Ok(settled)
    }
}

impl<Q: MessageQueue, H: MessageHandler> Inner<Q, H> {
    /// Handles `delivery` and settles it; a completed session message is followed by the
    /// session's next one where the transport hands it over with the completion
    /// ([`MessageQueue::complete_and_next`]). Returns how many messages it settled.
    async fn settle(&self, mut delivery: Delivery) -> usize {
        let mut settled = 1;
        while let Some(next) = self.settle_one(&delivery).await {
            delivery = next;
            settled += 1;
        }
        settled
    }

    async fn settle_one(&self, delivery: &Delivery) -> Option<Delivery> {
        let name = delivery.envelope.name().to_owned();
        let outcome = self.run_handler(delivery).await;
        let mut next = None;
        let (label, settled) = match outcome {
            Ok(()) => {
                self.limit.success();
                let follow =
                    delivery.envelope.metadata.session_id.is_some() && !self.stopping.load(Ordering::Relaxed);
                let completed = if follow {
                    self.transport
                        .complete_and_next(delivery)
                        .await
                        .map(|following| next = following)
                } else {
                    self.transport.complete(delivery).await
                };
                ("completed", completed)
            }
            Err(Settle::DeadLetter(reason)) => (
                "dead_lettered",
                self.transport.dead_letter(delivery, &reason).await,
            ),
            Err(Settle::Retry(error)) => {
                self.limit.record::<()>(&Err(error));
                let delay = self.config.backoff.delay(delivery.delivery_count);
                ("retried", self.transport.abandon(delivery, delay).await)
            }
        };
        metrics::counter!("cqrs_processor_messages_total", "queue" => self.queue.clone(), "name" => name, "outcome" => label)
            .increment(1);
        if let Err(error) = settled {
            // The message stays (or becomes) visible again: it will be redelivered.
            tracing::error!(queue = %self.queue, id = delivery.id, %error, "could not settle a delivery");
        }
        next
    }

    async fn run_handler(&self, delivery: &Delivery) -> Result<(), Settle> {
        let envelope = &delivery.envelope;
        if delivery.expires_at.is_some_and(|at| at <= self.clock.now()) {
            tracing::info!(queue = %self.queue, message = envelope.name(), "time to live elapsed; dead-lettered unprocessed");
            return Err(Settle::DeadLetter(
                "expired: time to live elapsed before delivery".to_owned(),
            ));
        }
        let mut conflicts = 0;
        let outcome = loop {
            let outcome = AssertUnwindSafe(self.handler.handle(envelope))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(Error::Panicked(panic_message(&*panic))));
            match outcome {
                Err(error) if error.is_conflict() && conflicts < self.config.conflict_retries => {
                    conflicts += 1;
                    tracing::debug!(queue = %self.queue, message = envelope.name(), %error, conflicts, "conflict; running the handler again");
                    metrics::counter!("cqrs_processor_conflict_retries_total", "queue" => self.queue.clone())
                        .increment(1);
                }
                outcome => break outcome,
            }
        };
        let Err(error) = outcome else { return Ok(()) };
        if error.is_undeliverable() {
            tracing::warn!(queue = %self.queue, message = envelope.name(), %error, "undeliverable; dead-lettered");
            return Err(Settle::DeadLetter(format!("undeliverable: {error}")));
        }
        if delivery.delivery_count >= self.config.max_deliveries {
            tracing::warn!(queue = %self.queue, message = envelope.name(), %error, deliveries = delivery.delivery_count, "dead-lettered after repeated failures");
            return Err(Settle::DeadLetter(format!(
                "failed {} deliveries; last error: {error}",
                delivery.delivery_count
            )));
        }
        tracing::debug!(queue = %self.queue, message = envelope.name(), %error, deliveries = delivery.delivery_count, "handler failed; will retry");
        Err(Settle::Retry(error))
    }
}

enum Settle {
    DeadLetter(String),
    Retry(Error),
}
