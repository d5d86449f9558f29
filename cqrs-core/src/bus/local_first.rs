//! The local-first (synchronous) decorator.

use std::sync::Arc;

use tower_layer::Layer;

use super::CommandBus;
use crate::dispatch::CommandDispatcher;
use crate::envelope::Envelope;
use crate::error::Result;

/// Handles a command in-process when a local handler exists; forwards it unchanged to the
/// inner bus when there is none, or when the local handler fails, so it is not lost.
///
/// In a batch, commands are handled locally in order up to the first that is unhandled or
/// fails; that one and all after it are forwarded together, in order, as one batch.
///
/// Local handling ignores delivery delays, so an envelope with a `delay` is always forwarded.
#[derive(Debug, Clone)]
pub struct LocalFirst<B> {
    local: Arc<CommandDispatcher>,
    inner: B,
}

impl<B> LocalFirst<B> {
    /// Wraps `inner`, handling what `local` can.
    pub fn new(local: Arc<CommandDispatcher>, inner: B) -> Self {
        Self { local, inner }
    }

    /// The inner bus.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The local dispatcher.
    pub fn local(&self) -> &CommandDispatcher {
        &self.local
    }

    /// Unwraps the inner bus.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Handles `envelope` locally; `true` if that succeeded.
    async fn handled_locally(&self, envelope: &Envelope) -> bool {
        if envelope.metadata.delay.is_some() {
            return false;
        }
        let Some(call) = self.local.try_dispatch(envelope) else {
            return false;
        };
        match call.await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(
                    message = envelope.name(),
                    message_id = %envelope.metadata.message_id,
                    %error,
                    "local handler failed; forwarding to the bus"
                );
                false
            }
        }
    }
}

impl<B: CommandBus> CommandBus for LocalFirst<B> {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        if self.handled_locally(&envelope).await {
            return Ok(());
        }
        self.inner.send(envelope).await
    }

    async fn send_batch(&self, mut envelopes: Vec<Envelope>) -> Result<()> {
        let mut handled = 0;
        while handled < envelopes.len() && self.handled_locally(&envelopes[handled]).await {
            handled += 1;
        }
        if handled == envelopes.len() {
            return Ok(());
        }
        let rest = envelopes.split_off(handled);
        self.inner.send_batch(rest).await
    }
}

/// Builds [`LocalFirst`] decorators.
#[derive(Debug, Clone)]
pub struct LocalFirstLayer {
    local: Arc<CommandDispatcher>,
}

impl LocalFirstLayer {
    /// A layer handling what `local` can.
    pub fn new(local: Arc<CommandDispatcher>) -> Self {
        Self { local }
    }
}

impl<B> Layer<B> for LocalFirstLayer {
    type Service = LocalFirst<B>;
    fn layer(&self, inner: B) -> LocalFirst<B> {
        LocalFirst::new(Arc::clone(&self.local), inner)
    }
}
