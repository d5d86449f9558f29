//! The inbox decorator: skip messages a handler has already processed.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::dispatch::{CommandHandler, EventHandler, MessageHandler};
use crate::envelope::{Envelope, Metadata};
use crate::error::Result;
use crate::message::{Command, Message};

/// Records which message ids each handler has processed.
pub trait InboxStore: Send + Sync + 'static {
    /// Whether `handler` has processed `message_id`.
    fn is_processed(&self, handler: &str, message_id: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Records that `handler` processed `message_id`.
    fn mark_processed(&self, handler: &str, message_id: &str) -> impl Future<Output = Result<()>> + Send;
}

impl<T: InboxStore> InboxStore for Arc<T> {
    fn is_processed(&self, handler: &str, message_id: &str) -> impl Future<Output = Result<bool>> + Send {
        (**self).is_processed(handler, message_id)
    }
    fn mark_processed(&self, handler: &str, message_id: &str) -> impl Future<Output = Result<()>> + Send {
        (**self).mark_processed(handler, message_id)
    }
}

/// Wraps a handler so that a message id it has already processed is skipped (opt-in
/// idempotency). Works for command handlers, event handlers and whole message handlers.
///
/// The id is recorded after the handler succeeds. A SQL inbox store records it in the
/// handler's own transaction; with a store that cannot, a crash between the two runs the
/// handler again on redelivery.
pub struct Inbox<H, S> {
    name: Arc<str>,
    handler: H,
    store: S,
}

impl<H, S> Inbox<H, S> {
    /// Wraps `handler`, recording under `name` (unique per handler) in `store`.
    pub fn new(name: impl Into<Arc<str>>, handler: H, store: S) -> Self {
        Self {
            name: name.into(),
            handler,
            store,
        }
    }

    /// The wrapped handler.
    pub fn get_ref(&self) -> &H {
        &self.handler
    }

    /// Unwraps the handler.
    pub fn into_inner(self) -> H {
        self.handler
    }

    async fn once(&self, metadata: &Metadata, run: impl Future<Output = Result<()>>) -> Result<()>
    where
        S: InboxStore,
    {
        if self.store.is_processed(&self.name, &metadata.message_id).await? {
            tracing::debug!(handler = %self.name, message_id = %metadata.message_id, "duplicate skipped");
            return Ok(());
        }
        run.await?;
        self.store.mark_processed(&self.name, &metadata.message_id).await
    }
}

impl<H, S> fmt::Debug for Inbox<H, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<E: Message, H: EventHandler<E>, S: InboxStore> EventHandler<E> for Inbox<H, S> {
    fn handle(&self, event: &E, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        self.once(metadata, self.handler.handle(event, metadata))
    }
}

impl<C: Command, H: CommandHandler<C>, S: InboxStore> CommandHandler<C> for Inbox<H, S> {
    fn handle(&self, command: &C, metadata: &Metadata) -> impl Future<Output = Result<()>> + Send {
        self.once(metadata, self.handler.handle(command, metadata))
    }
}

impl<H: MessageHandler, S: InboxStore> MessageHandler for Inbox<H, S> {
    fn handle(&self, envelope: &Envelope) -> impl Future<Output = Result<()>> + Send {
        self.once(&envelope.metadata, self.handler.handle(envelope))
    }
}
