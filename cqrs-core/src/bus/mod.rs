//! Command and event buses, and the decorators that wrap them.
//!
//! A bus sends envelopes; a decorator wraps a bus, implements the same trait and adds one
//! behaviour. Decorators are built from layers ([`tower_layer::Layer`]), composed with a
//! [`BusBuilder`]: the first layer added is the outermost, so it sees a message first.
//!
//! | decorator | behaviour |
//! |---|---|
//! | [`LocalFirst`] | handle in-process when a local handler exists, else (or on failure) forward |
//! | [`Retry`] | retry conflicts and transient failures with exponential backoff and jitter |
//! | [`Trace`] | a tracing span per message with its name and ids |
//! | [`Metrics`] | counters and latency histograms per message name |

mod local_first;
mod metrics;
mod retry;
mod trace;

use std::future::Future;
use std::sync::Arc;

use tower_layer::{Identity, Layer, Stack};

pub use self::local_first::{LocalFirst, LocalFirstLayer};
pub use self::metrics::{Metrics, MetricsLayer};
pub use self::retry::{Retry, RetryLayer};
pub use self::trace::{Trace, TraceLayer};

use crate::backoff::Backoff;
use crate::dispatch::{CommandDispatcher, EventDispatcher};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::message::Command;

/// Sends commands, one or a batch.
pub trait CommandBus: Send + Sync {
    /// Sends one command envelope.
    fn send(&self, envelope: Envelope) -> impl Future<Output = Result<()>> + Send;

    /// Sends envelopes in order. The default sends them one by one and stops at the first
    /// failure.
    fn send_batch(&self, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send {
        async move {
            for envelope in envelopes {
                self.send(envelope).await?;
            }
            Ok(())
        }
    }
}

/// Publishes events.
pub trait EventBus: Send + Sync {
    /// Publishes events, in order.
    fn publish(&self, events: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send;
}

/// Conveniences over any [`CommandBus`].
pub trait CommandBusExt: CommandBus {
    /// Wraps `command` in an [`Envelope::command`] and sends it.
    fn send_command<C: Command>(&self, command: C) -> impl Future<Output = Result<()>> + Send {
        self.send(Envelope::command(command))
    }
}

impl<B: CommandBus + ?Sized> CommandBusExt for B {}

impl<B: CommandBus> CommandBus for Arc<B> {
    fn send(&self, envelope: Envelope) -> impl Future<Output = Result<()>> + Send {
        (**self).send(envelope)
    }
    fn send_batch(&self, envelopes: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send {
        (**self).send_batch(envelopes)
    }
}

impl<B: EventBus> EventBus for Arc<B> {
    fn publish(&self, events: Vec<Envelope>) -> impl Future<Output = Result<()>> + Send {
        (**self).publish(events)
    }
}

/// The dispatcher is the simplest command bus: it handles every command in-process, and fails
/// with [`Error::NoHandler`] for one it does not know.
impl CommandBus for CommandDispatcher {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        self.dispatch(&envelope).await
    }
}

/// The dispatcher is the simplest event bus: it calls the local handlers of each event.
impl EventBus for EventDispatcher {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        for event in &events {
            self.dispatch(event).await?;
        }
        Ok(())
    }
}

/// A command bus with nowhere to send: every command fails with [`Error::NoHandler`]. The inner
/// bus of a [`LocalFirst`] in a process that has no transport.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unrouted;

impl CommandBus for Unrouted {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        Err(Error::NoHandler(envelope.name().to_owned()))
    }
}

/// Composes bus layers; the first layer added is the outermost (sees a message first).
///
/// ```
/// use std::sync::Arc;
/// use cqrs_core::{Backoff, BusBuilder, CommandDispatcher, Unrouted};
///
/// let local = Arc::new(CommandDispatcher::new());
/// // trace → local-first → retry → (the transport)
/// let bus = BusBuilder::new()
///     .trace()
///     .local_first(local)
///     .retry(Backoff::default())
///     .build(Unrouted);
/// # let _ = bus;
/// ```
#[derive(Debug, Clone)]
pub struct BusBuilder<L> {
    layer: L,
}

impl BusBuilder<Identity> {
    /// A builder with no layer.
    pub fn new() -> Self {
        Self {
            layer: Identity::new(),
        }
    }
}

impl Default for BusBuilder<Identity> {
    fn default() -> Self {
        Self::new()
    }
}

impl<L> BusBuilder<L> {
    /// Adds a layer inside the ones already added.
    pub fn layer<T>(self, layer: T) -> BusBuilder<Stack<T, L>> {
        BusBuilder {
            layer: Stack::new(layer, self.layer),
        }
    }

    /// Adds a [`LocalFirst`] layer.
    pub fn local_first(self, local: Arc<CommandDispatcher>) -> BusBuilder<Stack<LocalFirstLayer, L>> {
        self.layer(LocalFirstLayer::new(local))
    }

    /// Adds a [`Retry`] layer.
    pub fn retry(self, policy: Backoff) -> BusBuilder<Stack<RetryLayer, L>> {
        self.layer(RetryLayer::new(policy))
    }

    /// Adds a [`Trace`] layer.
    pub fn trace(self) -> BusBuilder<Stack<TraceLayer, L>> {
        self.layer(TraceLayer::new())
    }

    /// Adds a [`Metrics`] layer.
    pub fn metrics(self) -> BusBuilder<Stack<MetricsLayer, L>> {
        self.layer(MetricsLayer::new())
    }

    /// Wraps `inner` in the layers.
    pub fn build<B>(&self, inner: B) -> L::Service
    where
        L: Layer<B>,
    {
        self.layer.layer(inner)
    }
}
