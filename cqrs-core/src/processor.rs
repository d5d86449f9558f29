//! Processors: pull messages from a queue and hand them to a handler, at least once.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
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
use crate::dispatch::{BatchOutcome, MessageHandler};
use crate::envelope::Envelope;
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
    /// The most messages of one session taken at once, when the transport hands them over
    /// with the completion of the ones before: the handler gets them as one batch
    /// ([`MessageHandler::handle_batch`]), and they are completed together (default 32; 1
    /// takes them one by one).
    pub session_batch: usize,
    /// How long an idle processor waits before polling again when no wake-up arrives.
    pub poll_interval: Duration,
    /// How long a processor woken by an arrival waits before it receives, for the arrivals
    /// that follow to come in the same receive (default zero: at once). Under load, where
    /// each enqueue wakes every consumer of its queue, a few milliseconds make one receive of
    /// several messages out of several receives of one or two; each arrival waits that much
    /// longer. A processor that is not woken (polling, a retry coming due) does not linger.
    pub linger: Duration,
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
            session_batch: 32,
            poll_interval: Duration::from_millis(500),
            linger: Duration::ZERO,
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
/// - **Sessions** run serially inside (the transport hands a session to one consumer at a
///   time) and in parallel across, under an [`AdaptiveLimit`]. The task that completes a
///   session's messages goes on with the session's next ones when the transport hands them
///   over with the completion ([`MessageQueue::complete_and_next`]), up to
///   [`session_batch`](ProcessorConfig::session_batch) at once, as one batch for the handler
///   ([`MessageHandler::handle_batch`]); when one of them fails, it is retried and the ones
///   after it are given back untried ([`MessageQueue::release`]).
/// - **Receiving**: a receive that fills the room left is followed by another at once; one
///   that does not means the queue has nothing more for this consumer, so the next waits for a
///   wake-up ([`MessageQueue::wait`]), a message abandoned here coming due, or the poll
///   interval, while the tasks in hand run on. A busy consumer thus takes arrivals of other
///   sessions at once, and does not ask again each time a task finishes. Woken by an
///   arrival, it can wait a moment ([`linger`](ProcessorConfig::linger)) for the arrivals
///   that follow, to take them in the same receive.
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
        let mut settled = Tally::default();
        tokio::pin!(shutdown);
        'run: loop {
            while let Some(joined) = tasks.try_join_next() {
                settled.add(joined);
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
            let received = batch.len();
            for delivery in batch {
                let permit = inner.limit.acquire().await;
                let inner = Arc::clone(inner);
                tasks.spawn(async move {
                    let settled = inner.settle(delivery).await;
                    drop(permit);
                    settled
                });
            }
            if room > 0 && received == room {
                // A full batch: there may be more waiting.
                continue;
            }
            if until_idle {
                if received == 0 {
                    match tasks.join_next().await {
                        Some(joined) => settled.add(joined),
                        None => return Ok(settled.count),
                    }
                }
                continue;
            }
            if room == 0 {
                // No room: the next finished task makes some.
                tokio::select! {
                    Some(joined) = tasks.join_next() => settled.add(joined),
                    () = &mut shutdown => break,
                }
                continue;
            }
            // The queue had no more for this consumer: the tasks follow their own sessions, and
            // another receive would find nothing until messages arrive (a wake-up), one
            // abandoned here comes due, or the poll interval passes. Receiving again as each
            // task finishes would cost a query per message under load.
            let poll = tokio::time::Instant::now() + inner.config.poll_interval;
            let woken = inner.transport.wait(&inner.queue);
            tokio::pin!(woken);
            let woken = loop {
                let deadline = settled.next_retry().map_or(poll, |at| at.min(poll));
                tokio::select! {
                    Some(joined) = tasks.join_next() => settled.add(joined),
                    () = &mut woken => break true,
                    () = tokio::time::sleep_until(deadline) => break false,
                    () = &mut shutdown => break 'run,
                }
            };
            if woken && !inner.config.linger.is_zero() {
                // Let the arrivals that follow come in the same receive.
                tokio::select! {
                    () = tokio::time::sleep(inner.config.linger) => {}
                    () = &mut shutdown => break 'run,
                }
            }
            // The receive that follows takes the retries due by now.
            settled.forget_retries_due();
        }
        // Tasks in hand finish their message and stop following their sessions.
        inner.stopping.store(true, Ordering::Relaxed);
        while let Some(joined) = tasks.join_next().await {
            settled.add(joined);
        }
        inner.stopping.store(false, Ordering::Relaxed);
        Ok(settled.count)
    }
}

/// What a task did with the deliveries in its hands: how many it settled, and when the message
/// it abandoned to a retry, if any, is due again (a task stops following its session there).
#[derive(Default)]
struct Settled {
    count: usize,
    retry_at: Option<tokio::time::Instant>,
}

/// What a run's tasks did: how many deliveries they settled, and when the messages they
/// abandoned are due again (those not yet received since).
#[derive(Default)]
struct Tally {
    count: usize,
    retries: BinaryHeap<Reverse<tokio::time::Instant>>,
}

impl Tally {
    /// Adds what a task did (a task that panicked outside the handler settled its message
    /// at least).
    fn add(&mut self, joined: Result<Settled, tokio::task::JoinError>) {
        let joined = joined.unwrap_or(Settled {
            count: 1,
            retry_at: None,
        });
        self.count += joined.count;
        self.retries.extend(joined.retry_at.map(Reverse));
    }

    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.retries.peek().map(|at| at.0)
    }

    fn forget_retries_due(&mut self) {
        let now = tokio::time::Instant::now();
        while self.retries.peek().is_some_and(|at| at.0 <= now) {
            self.retries.pop();
        }
    }
}

impl<Q: MessageQueue, H: MessageHandler> Inner<Q, H> {
    /// Handles `delivery` and settles it; a completed session message is followed by the
    /// session's next ones where the transport hands them over with the completion
    /// ([`MessageQueue::complete_and_next`]). Returns how many messages it settled, and when
    /// the one it abandoned, if any, is due again.
    async fn settle(&self, delivery: Delivery) -> Settled {
        let mut batch = vec![delivery];
        let mut settled = Settled::default();
        while !batch.is_empty() {
            let (done, next) = self.settle_batch(&batch).await;
            settled.count += done.count;
            settled.retry_at = settled.retry_at.or(done.retry_at);
            batch = next;
        }
        settled
    }

    /// Handles `batch` (one message, or consecutive messages of one session) in order and
    /// settles each: the handled ones are completed together, a failed one abandoned to its
    /// retry with the ones after it released untried. Returns how many it settled (released
    /// ones are not) and when the abandoned one is due again, and the session's next messages
    /// when the transport hands them over with the completion.
    async fn settle_batch(&self, batch: &[Delivery]) -> (Settled, Vec<Delivery>) {
        let mut handled: Vec<Delivery> = Vec::with_capacity(batch.len());
        let mut rest = batch;
        let mut conflicts = 0;
        let mut retry_at = None;
        while let Some(first) = rest.first() {
            if self.expired(first) {
                tracing::info!(queue = %self.queue, message = first.envelope.name(), "time to live elapsed; dead-lettered unprocessed");
                self.dead_letter(first, "expired: time to live elapsed before delivery")
                    .await;
                rest = &rest[1..];
                continue;
            }
            let run = rest.iter().position(|d| self.expired(d)).unwrap_or(rest.len());
            let outcome = self.run_handler(&rest[..run]).await;
            let done = outcome.handled.min(run);
            for delivery in &rest[..done] {
                self.limit.success();
                self.count(delivery, "completed");
            }
            handled.extend_from_slice(&rest[..done]);
            rest = &rest[done..];
            let error = match outcome.error {
                Some(error) if !rest.is_empty() => error,
                _ if done > 0 => continue,
                _ => Error::permanent("the handler handled none of the messages it was given"),
            };
            let failed = &rest[0];
            match self.classify(failed, error, &mut conflicts) {
                None => {}
                Some(Settle::DeadLetter(reason)) => {
                    self.dead_letter(failed, &reason).await;
                    rest = &rest[1..];
                }
                Some(Settle::Retry(error)) => {
                    self.limit.record::<()>(&Err(error));
                    let delay = self.config.backoff.delay(failed.delivery_count);
                    self.report(failed, self.transport.abandon(failed, delay).await);
                    retry_at = Some(tokio::time::Instant::now() + delay);
                    self.count(failed, "retried");
                    rest = &rest[1..];
                    if let Some(first_untried) = rest.first() {
                        let released = self.transport.release(rest).await;
                        self.report(first_untried, released);
                    }
                    break;
                }
            }
        }
        let settled = Settled {
            count: batch.len() - rest.len(),
            retry_at,
        };
        let Some(last) = handled.last() else {
            return (settled, Vec::new());
        };
        if last.envelope.metadata.session_id.is_none() {
            let completed = self.transport.complete(last).await;
            self.report(last, completed);
            return (settled, Vec::new());
        }
        let follow = retry_at.is_none() && !self.stopping.load(Ordering::Relaxed);
        let max = if follow { self.config.session_batch } else { 0 };
        match self.transport.complete_and_next(&handled, max).await {
            Ok(next) => (settled, next),
            Err(error) => {
                self.report(last, Err(error));
                (settled, Vec::new())
            }
        }
    }

    fn expired(&self, delivery: &Delivery) -> bool {
        delivery.expires_at.is_some_and(|at| at <= self.clock.now())
    }

    fn count(&self, delivery: &Delivery, outcome: &'static str) {
        metrics::counter!("cqrs_processor_messages_total", "queue" => self.queue.clone(), "name" => delivery.envelope.name().to_owned(), "outcome" => outcome)
            .increment(1);
    }

    /// Logs a settle that failed: the message stays (or becomes) visible again and will be
    /// redelivered.
    fn report(&self, delivery: &Delivery, settled: Result<()>) {
        if let Err(error) = settled {
            tracing::error!(queue = %self.queue, id = delivery.id, %error, "could not settle a delivery");
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) {
        let moved = self.transport.dead_letter(delivery, reason).await;
        self.report(delivery, moved);
        self.count(delivery, "dead_lettered");
    }

    /// Runs the handler on `run` (no panic escapes: one fails the first message).
    async fn run_handler(&self, run: &[Delivery]) -> BatchOutcome {
        let envelopes: Vec<&Envelope> = run.iter().map(|d| &d.envelope).collect();
        AssertUnwindSafe(self.handler.handle_batch(&envelopes))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| BatchOutcome::failed(0, Error::Panicked(panic_message(&*panic))))
    }

    /// What to do with a delivery whose handler failed with `error`: nothing yet (`None`: a
    /// conflict, to run again at once), dead-letter it, or retry it after the backoff.
    fn classify(&self, delivery: &Delivery, error: Error, conflicts: &mut u32) -> Option<Settle> {
        let envelope = &delivery.envelope;
        if error.is_conflict() && *conflicts < self.config.conflict_retries {
            *conflicts += 1;
            tracing::debug!(queue = %self.queue, message = envelope.name(), %error, conflicts, "conflict; running the handler again");
            metrics::counter!("cqrs_processor_conflict_retries_total", "queue" => self.queue.clone())
                .increment(1);
            return None;
        }
        if error.is_undeliverable() {
            tracing::warn!(queue = %self.queue, message = envelope.name(), %error, "undeliverable; dead-lettered");
            return Some(Settle::DeadLetter(format!("undeliverable: {error}")));
        }
        if delivery.delivery_count >= self.config.max_deliveries {
            tracing::warn!(queue = %self.queue, message = envelope.name(), %error, deliveries = delivery.delivery_count, "dead-lettered after repeated failures");
            return Some(Settle::DeadLetter(format!(
                "failed {} deliveries; last error: {error}",
                delivery.delivery_count
            )));
        }
        tracing::debug!(queue = %self.queue, message = envelope.name(), %error, deliveries = delivery.delivery_count, "handler failed; will retry");
        Some(Settle::Retry(error))
    }
}

enum Settle {
    DeadLetter(String),
    Retry(Error),
}
