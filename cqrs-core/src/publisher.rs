//! The outbox publisher: appended events to the event bus.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;

use crate::bus::EventBus;
use crate::clock::SharedClock;
use crate::error::Result;
use crate::limit::{AdaptiveLimit, LimitConfig};
use crate::store::{EventOutbox, StoredEvent, StreamId};

/// Settings of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The most unpublished events read per pass.
    pub batch_size: usize,
    /// How long an idle publisher waits before polling again when no wake-up arrives.
    pub poll_interval: Duration,
    /// Bounds of the adaptive limit on streams published concurrently.
    pub limit: LimitConfig,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            poll_interval: Duration::from_millis(500),
            limit: LimitConfig {
                min: 4,
                max: 64,
                ..LimitConfig::default()
            },
        }
    }
}

/// Publishes the events of a store's outbox to an event bus:
///
/// - strictly in order within a stream (one publish call per stream per pass, in version order,
///   and a stream's next events wait for the previous call);
/// - in parallel across streams, under an [`AdaptiveLimit`];
/// - with deterministic message ids `<stream>:<version>` ([`StoredEvent::to_envelope`]), so a
///   re-send after a crash is recognisable as a duplicate;
/// - events are marked published only after the bus accepted them: whatever a crash left
///   unpublished is published on the next start.
pub struct Publisher<S, B> {
    store: S,
    bus: B,
    config: PublisherConfig,
    limit: AdaptiveLimit,
}

impl<S, B> fmt::Debug for Publisher<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<S: EventOutbox, B: EventBus> Publisher<S, B> {
    /// A publisher with the default settings.
    pub fn new(store: S, bus: B, clock: SharedClock) -> Self {
        Self::with_config(store, bus, clock, PublisherConfig::default())
    }

    /// A publisher with the given settings.
    pub fn with_config(store: S, bus: B, clock: SharedClock, config: PublisherConfig) -> Self {
        Self {
            limit: AdaptiveLimit::new(config.limit, clock),
            store,
            bus,
            config,
        }
    }

    /// The concurrency limit in use.
    pub fn limit(&self) -> &AdaptiveLimit {
        &self.limit
    }

    /// One pass: publishes up to a batch of unpublished events and returns how many were
    /// published.
    ///
    /// # Errors
    /// The first failure, after every stream of the pass has been tried; the events of a failed
    /// stream stay unpublished.
    pub async fn publish_pending(&self) -> Result<usize> {
        let events = self.store.unpublished(self.config.batch_size).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut streams: Vec<(StreamId, Vec<StoredEvent>)> = Vec::new();
        let mut slots: HashMap<StreamId, usize> = HashMap::new();
        for event in events {
            let slot = *slots.entry(event.stream_id.clone()).or_insert_with(|| {
                streams.push((event.stream_id.clone(), Vec::new()));
                streams.len() - 1
            });
            streams[slot].1.push(event);
        }
        let outcomes: Vec<Result<usize>> = futures::stream::iter(streams)
            .map(|(stream, events)| self.publish_stream(stream, events))
            .buffer_unordered(self.config.limit.max.max(1))
            .collect()
            .await;
        let mut published = 0;
        let mut first_error = None;
        for outcome in outcomes {
            match outcome {
                Ok(n) => published += n,
                Err(error) => {
                    tracing::warn!(%error, "publishing a stream failed; it stays in the outbox");
                    first_error.get_or_insert(error);
                }
            }
        }
        metrics::counter!("cqrs_events_published_total").increment(published as u64);
        first_error.map_or(Ok(published), Err)
    }

    async fn publish_stream(&self, stream: StreamId, events: Vec<StoredEvent>) -> Result<usize> {
        let _permit = self.limit.acquire().await;
        let count = events.len();
        let last = events.last().map_or(-1, |e| e.version);
        let envelopes = events.iter().map(StoredEvent::to_envelope).collect();
        let outcome = self.bus.publish(envelopes).await;
        self.limit.record(&outcome);
        outcome?;
        self.store.mark_published(&stream, last).await?;
        Ok(count)
    }

    /// Publishes until `shutdown` resolves: first whatever is left from before, then new events
    /// as the store signals them (polling at the configured interval as a fallback).
    ///
    /// # Errors
    /// None today: failures are logged and retried.
    pub async fn run_until(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            let wait = match self.publish_pending().await {
                Ok(0) => self.config.poll_interval,
                Ok(_) => continue,
                Err(_) => self.config.poll_interval,
            };
            tokio::select! {
                () = self.store.appended() => {}
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}
