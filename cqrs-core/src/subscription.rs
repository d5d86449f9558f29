//! Catch-up subscriptions: read the global log from a checkpoint, in order, and hand each
//! matching event to a handler.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::dispatch::MessageHandler;
use crate::error::Result;
use crate::store::{EventReader, StoredEvent};
use crate::transport::MessageFilter;

/// Where each named subscription has got to in the global log.
pub trait CheckpointStore: Send + Sync {
    /// The position of the last event `subscription` handled, if any.
    fn load_checkpoint(&self, subscription: &str) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Records that `subscription` handled every event up to `position`.
    fn save_checkpoint(&self, subscription: &str, position: u64) -> impl Future<Output = Result<()>> + Send;
}

impl<T: CheckpointStore> CheckpointStore for Arc<T> {
    fn load_checkpoint(&self, subscription: &str) -> impl Future<Output = Result<Option<u64>>> + Send {
        (**self).load_checkpoint(subscription)
    }
    fn save_checkpoint(&self, subscription: &str, position: u64) -> impl Future<Output = Result<()>> + Send {
        (**self).save_checkpoint(subscription, position)
    }
}

/// A subscription that catches up with the global log from its checkpoint and then follows it.
///
/// - Events are handed over in log order (so each stream in version order), one at a time, as
///   envelopes ([`StoredEvent::to_envelope`]); events the filter does not name are skipped.
/// - The checkpoint is saved after each page of events: at least once. A SQL projection that
///   must apply each event exactly once saves its checkpoint in its own transaction instead
///   (see `cqrs-sql`), and uses this runner's `from` position only to start.
/// - A handler failure stops the subscription at that event: it is retried with backoff, never
///   skipped, because a read model must not miss an event.
pub struct CatchUp<S, C, H> {
    name: String,
    store: S,
    checkpoints: C,
    handler: H,
    filter: MessageFilter,
    page_size: usize,
    poll_interval: Duration,
    backoff: Backoff,
}

impl<S, C, H> fmt::Debug for CatchUp<S, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchUp")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl<S: EventReader, C: CheckpointStore, H: MessageHandler> CatchUp<S, C, H> {
    /// A subscription named `name` (the checkpoint's key) receiving every event.
    pub fn new(name: impl Into<String>, store: S, checkpoints: C, handler: H) -> Self {
        Self {
            name: name.into(),
            store,
            checkpoints,
            handler,
            filter: MessageFilter::All,
            page_size: 500,
            poll_interval: Duration::from_millis(250),
            backoff: Backoff::default(),
        }
    }

    /// Receives only the events `filter` names (the others still advance the checkpoint).
    #[must_use]
    pub fn filter(mut self, filter: MessageFilter) -> Self {
        self.filter = filter;
        self
    }

    /// How many events are read (and checkpointed) at a time.
    #[must_use]
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// How often an idle subscription looks for new events.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Handles every event after the checkpoint, up to the end of the log as it is now, and
    /// returns how many were handed to the handler.
    ///
    /// # Errors
    /// A store failure, or the first handler failure; the checkpoint then stays before the
    /// failed event.
    pub async fn catch_up(&self) -> Result<usize> {
        let mut after = self.checkpoints.load_checkpoint(&self.name).await?.unwrap_or(0);
        let mut handled = 0;
        loop {
            let page = self.store.read_all(after, self.page_size).await?;
            let Some(last) = page.last().map(|e| e.position) else {
                return Ok(handled);
            };
            let outcome = self.handle_page(&page, &mut after, &mut handled).await;
            if after > 0 {
                self.checkpoints.save_checkpoint(&self.name, after).await?;
            }
            outcome?;
            debug_assert_eq!(after, last);
        }
    }

    async fn handle_page(&self, page: &[StoredEvent], after: &mut u64, handled: &mut usize) -> Result<()> {
        for event in page {
            if self.filter.matches(&event.payload.name) {
                self.handler.handle(&event.to_envelope()).await?;
                *handled += 1;
            }
            *after = event.position;
        }
        Ok(())
    }

    /// Catches up, then follows the log until `shutdown` resolves, polling when idle and
    /// retrying failures with backoff.
    ///
    /// # Errors
    /// None today: failures are logged and retried.
    pub async fn run_until(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let mut failures = 0;
        loop {
            let wait = match self.catch_up().await {
                Ok(_) => {
                    failures = 0;
                    self.poll_interval
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(subscription = %self.name, %error, failures, "subscription stopped at an event; retrying");
                    self.backoff.delay(failures)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return Ok(()),
            }
        }
    }
}
