//! The retry decorator.

use tower_layer::Layer;

use super::{CommandBus, EventBus};
use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::error::Result;

/// Retries sends that fail with a conflict or a transient error, with exponential backoff and
/// jitter, up to the policy's `max_retries`. Other errors are returned at once.
///
/// A retried batch is sent again whole: messages are delivered at least once.
#[derive(Debug, Clone)]
pub struct Retry<B> {
    inner: B,
    policy: Backoff,
}

impl<B> Retry<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, policy: Backoff) -> Self {
        Self { inner, policy }
    }

    /// The inner bus.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the inner bus.
    pub fn into_inner(self) -> B {
        self.inner
    }

    async fn run<F, Fut>(&self, mut attempt_once: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let mut retries = 0;
        loop {
            match attempt_once().await {
                Err(error) if error.is_retryable() && retries < self.policy.max_retries => {
                    retries += 1;
                    let delay = self.policy.delay(retries);
                    tracing::debug!(%error, retries, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
                outcome => return outcome,
            }
        }
    }
}

impl<B: CommandBus> CommandBus for Retry<B> {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        self.run(|| self.inner.send(envelope.clone())).await
    }

    async fn send_batch(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.run(|| self.inner.send_batch(envelopes.clone())).await
    }
}

impl<B: EventBus> EventBus for Retry<B> {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        self.run(|| self.inner.publish(events.clone())).await
    }
}

/// Builds [`Retry`] decorators.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Backoff,
}

impl RetryLayer {
    /// A layer retrying with `policy`.
    pub fn new(policy: Backoff) -> Self {
        Self { policy }
    }
}

impl<B> Layer<B> for RetryLayer {
    type Service = Retry<B>;
    fn layer(&self, inner: B) -> Retry<B> {
        Retry::new(inner, self.policy)
    }
}
