//! The outbox publisher: appended events to the event bus.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::bus::EventBus;
use crate::clock::SharedClock;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
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
    /// Whether a pass first offers all its events to the bus in one call (in position order,
    /// so each stream's in version order) and marks them published in one write. A bus that
    /// costs a round trip per call (a database's topics) then costs one per pass. When that
    /// call fails, the pass goes on stream by stream, so that one stream the bus refuses
    /// holds back only itself; what a failed call had published already is published again
    /// (at least once, with the same message ids). Off, every pass goes stream by stream.
    pub whole_passes: bool,
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
            whole_passes: true,
        }
    }
}

/// The events of a pass by stream, each stream's in order, the streams in the order they first
/// appear.
fn by_stream(events: &[StoredEvent]) -> Vec<(&StreamId, Vec<&StoredEvent>)> {
    let mut streams: Vec<(&StreamId, Vec<&StoredEvent>)> = Vec::new();
    let mut slots: HashMap<&StreamId, usize> = HashMap::new();
    for event in events {
        let slot = *slots.entry(&event.stream_id).or_insert_with(|| {
            streams.push((&event.stream_id, Vec::new()));
            streams.len() - 1
        });
        streams[slot].1.push(event);
    }
    streams
}

/// Publishes the events of a store's outbox to an event bus:
///
/// - strictly in order within a stream (a pass's events in one call, in position order, when
///   [`PublisherConfig::whole_passes`] is on; else, or when that call fails, one call per
///   stream per pass, in version order; a stream's next events wait for the previous call);
/// - stream by stream, in parallel across streams, under an [`AdaptiveLimit`];
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
        let streams = by_stream(&events);
        let (accepted, first_error) = if self.config.whole_passes && self.publish_whole(&events).await {
            (streams, None)
        } else {
            self.publish_each(streams).await
        };
        let published: Vec<&StoredEvent> = accepted.into_iter().flat_map(|(_, events)| events).collect();
        self.store.mark_events_published(&published).await?;
        let published = published.len();
        metrics::counter!("cqrs_events_published_total").increment(published as u64);
        first_error.map_or(Ok(published), Err)
    }

    /// Offers a whole pass to the bus in one call; `false` when the bus refused it.
    async fn publish_whole(&self, events: &[StoredEvent]) -> bool {
        match self
            .publish_call(events.iter().map(StoredEvent::to_envelope).collect())
            .await
        {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "publishing a pass in one call failed; going stream by stream");
                false
            }
        }
    }

    /// Offers each stream's events in a call of its own, streams in parallel under the limit;
    /// answers the streams the bus accepted and the first failure.
    async fn publish_each<'e>(
        &self,
        streams: Vec<(&'e StreamId, Vec<&'e StoredEvent>)>,
    ) -> (Vec<(&'e StreamId, Vec<&'e StoredEvent>)>, Option<Error>) {
        // Each call waits for a permit of the limit, so at most its maximum run at once.
        let mut calls = FuturesUnordered::new();
        for stream in streams {
            calls.push(self.publish_stream(stream));
        }
        let mut accepted = Vec::new();
        let mut first_error = None;
        while let Some((stream, outcome)) = calls.next().await {
            match outcome {
                Ok(()) => accepted.push(stream),
                Err(error) => {
                    tracing::warn!(%error, "publishing a stream failed; it stays in the outbox");
                    first_error.get_or_insert(error);
                }
            }
        }
        (accepted, first_error)
    }

    /// One stream's events in one call; answers them with the outcome.
    async fn publish_stream<'e>(
        &self,
        stream: (&'e StreamId, Vec<&'e StoredEvent>),
    ) -> ((&'e StreamId, Vec<&'e StoredEvent>), Result<()>) {
        let envelopes = stream.1.iter().map(|e| e.to_envelope()).collect();
        let outcome = self.publish_call(envelopes).await;
        (stream, outcome)
    }

    /// One call to the bus, under the limit; the events are not marked.
    async fn publish_call(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let _permit = self.limit.acquire().await;
        let outcome = self.bus.publish(envelopes).await;
        self.limit.record(&outcome);
        outcome
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
