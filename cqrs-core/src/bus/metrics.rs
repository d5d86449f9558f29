//! The metrics decorator, over the `metrics` facade.

use std::time::Instant;

use tower_layer::Layer;

use super::{CommandBus, EventBus};
use crate::envelope::Envelope;
use crate::error::Result;

/// Counts messages and measures send latency, per message name:
///
/// - `cqrs_bus_messages_total{direction, name, outcome}` (counter; `outcome` is `ok` or the
///   error kind: `conflict`, `transient`, `permanent`);
/// - `cqrs_bus_send_seconds{direction}` (histogram, per send or batch).
///
/// Install any `metrics` recorder (e.g. a Prometheus exporter) to collect them.
#[derive(Debug, Clone)]
pub struct Metrics<B> {
    inner: B,
}

impl<B> Metrics<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self { inner }
    }

    /// The inner bus.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the inner bus.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

fn record(direction: &'static str, names: Vec<String>, started: Instant, outcome: &Result<()>) {
    let label = match outcome {
        Ok(()) => "ok",
        Err(error) => match error.kind() {
            crate::ErrorKind::Conflict => "conflict",
            crate::ErrorKind::Transient => "transient",
            crate::ErrorKind::Permanent => "permanent",
        },
    };
    for name in names {
        metrics::counter!("cqrs_bus_messages_total", "direction" => direction, "name" => name, "outcome" => label)
            .increment(1);
    }
    metrics::histogram!("cqrs_bus_send_seconds", "direction" => direction)
        .record(started.elapsed().as_secs_f64());
}

fn names(envelopes: &[Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.name().to_owned()).collect()
}

impl<B: CommandBus> CommandBus for Metrics<B> {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        let name = vec![envelope.name().to_owned()];
        let started = Instant::now();
        let outcome = self.inner.send(envelope).await;
        record("command", name, started, &outcome);
        outcome
    }

    async fn send_batch(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let names = names(&envelopes);
        let started = Instant::now();
        let outcome = self.inner.send_batch(envelopes).await;
        record("command", names, started, &outcome);
        outcome
    }
}

impl<B: EventBus> EventBus for Metrics<B> {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        let names = names(&events);
        let started = Instant::now();
        let outcome = self.inner.publish(events).await;
        record("event", names, started, &outcome);
        outcome
    }
}

/// Builds [`Metrics`] decorators.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer;

impl MetricsLayer {
    /// A metrics layer.
    pub fn new() -> Self {
        Self
    }
}

impl<B> Layer<B> for MetricsLayer {
    type Service = Metrics<B>;
    fn layer(&self, inner: B) -> Metrics<B> {
        Metrics::new(inner)
    }
}
