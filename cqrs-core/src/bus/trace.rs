//! The tracing decorator.

use tower_layer::Layer;
use tracing::Instrument;

use super::{CommandBus, EventBus};
use crate::envelope::Envelope;
use crate::error::Result;

fn span_for(envelope: &Envelope) -> tracing::Span {
    let md = &envelope.metadata;
    tracing::info_span!(
        "message",
        name = envelope.name(),
        message_id = %md.message_id,
        correlation_id = md.correlation_id.as_deref().unwrap_or(""),
        causation_id = md.causation_id.as_deref().unwrap_or(""),
        session_id = md.session_id.as_deref().unwrap_or(""),
    )
}

/// Opens a tracing span per message with its name, message id, correlation, causation and
/// session ids, and logs failures inside it. A batch gets a span of its own, with one child
/// span per message recorded in it.
#[derive(Debug, Clone)]
pub struct Trace<B> {
    inner: B,
}

impl<B> Trace<B> {
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

fn record_batch(kind: &'static str, envelopes: &[Envelope]) -> tracing::Span {
    let span = tracing::info_span!("batch", kind, size = envelopes.len());
    span.in_scope(|| {
        for envelope in envelopes {
            span_for(envelope).in_scope(|| tracing::trace!("queued in batch"));
        }
    });
    span
}

fn logged(outcome: Result<()>) -> Result<()> {
    if let Err(error) = &outcome {
        tracing::warn!(%error, "failed");
    }
    outcome
}

impl<B: CommandBus> CommandBus for Trace<B> {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        let span = span_for(&envelope);
        let outcome = self.inner.send(envelope).instrument(span.clone()).await;
        span.in_scope(|| logged(outcome))
    }

    async fn send_batch(&self, envelopes: Vec<Envelope>) -> Result<()> {
        let span = record_batch("commands", &envelopes);
        let outcome = self.inner.send_batch(envelopes).instrument(span.clone()).await;
        span.in_scope(|| logged(outcome))
    }
}

impl<B: EventBus> EventBus for Trace<B> {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        let span = record_batch("events", &events);
        let outcome = self.inner.publish(events).instrument(span.clone()).await;
        span.in_scope(|| logged(outcome))
    }
}

/// Builds [`Trace`] decorators.
#[derive(Debug, Clone, Default)]
pub struct TraceLayer;

impl TraceLayer {
    /// A tracing layer.
    pub fn new() -> Self {
        Self
    }
}

impl<B> Layer<B> for TraceLayer {
    type Service = Trace<B>;
    fn layer(&self, inner: B) -> Trace<B> {
        Trace::new(inner)
    }
}
