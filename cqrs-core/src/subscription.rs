//! Catch-up subscriptions: read the global log from a checkpoint, in order, and hand each
//! matching event to a handler.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// returns how many were handed to the handler. A page shorter than the page size is taken
    /// as the end (events appended meanwhile wait for the next call).
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
            if page.len() < self.page_size {
                return Ok(handled);
            }
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

/// The global log shared by several catch-up subscriptions that follow it together (the read
/// models of one process): a read that one of the last pages fetched from the store covers is
/// answered from that page, so that subscriptions woken by the same publication cost one query
/// instead of one each. Concurrent misses wait for one fetch ("single flight").
///
/// A page is a consistent prefix of the log as the store returned it, so what a gap-safe store
/// guarantees holds for its suffixes, and the log up to a page's last event never changes. A
/// page answers a read that starts inside it with the events it holds after that start. Only
/// the end of the log moves: a page that was the end when fetched says so until
/// [`invalidate`](Self::invalidate) is called (on each publication); after that, a read it
/// does not answer in full goes on from its last event, in another page or the store. A
/// subscription that was behind when the log grew thus reads from the store only the events no
/// page holds. Without the invalidation, a subscription may be told the log ends where the
/// last page did, until its next read after one. The last
/// [`SHARED_PAGES`](Self::SHARED_PAGES) pages are kept.
///
/// Clones share the pages.
pub struct SharedLog<S> {
    inner: S,
    last: Arc<tokio::sync::Mutex<std::collections::VecDeque<Page>>>,
    /// Bumped by [`SharedLog::invalidate`]; a page says the log ends with it only in the
    /// generation it was fetched in.
    generation: Arc<AtomicU64>,
}

impl<S: Clone> Clone for SharedLog<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            last: Arc::clone(&self.last),
            generation: Arc::clone(&self.generation),
        }
    }
}

impl<S> fmt::Debug for SharedLog<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLog").finish_non_exhaustive()
    }
}

/// A page read from the store (or gathered from pages and the store): the events after
/// `after`, at most `limit` of them.
struct Page {
    after: u64,
    limit: usize,
    events: Arc<[StoredEvent]>,
    generation: u64,
}

impl Page {
    /// Up to `limit` of the events after `after`, when this page holds some, and whether they
    /// answer the whole read: `limit` of them, or the rest of the log when this page was its end
    /// in the current `generation`.
    fn covers(&self, after: u64, limit: usize, generation: u64) -> Option<(&[StoredEvent], bool)> {
        if after < self.after {
            return None;
        }
        let start = self.events.partition_point(|e| e.position <= after);
        let rest = &self.events[start..];
        if rest.is_empty() {
            return None;
        }
        let was_the_end = self.events.len() < self.limit;
        let whole = rest.len() >= limit || (was_the_end && generation == self.generation);
        Some((&rest[..rest.len().min(limit)], whole))
    }
}

impl<S> SharedLog<S> {
    /// How many of the last pages fetched are kept.
    pub const SHARED_PAGES: usize = 8;

    /// Shares `inner`'s global log.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            last: Arc::new(tokio::sync::Mutex::new(std::collections::VecDeque::new())),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The log has grown: the next read goes to the store (a fetch under way when this is
    /// called answers only its own reader).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl<S: EventReader> EventReader for SharedLog<S> {
    fn load(
        &self,
        stream: &crate::store::StreamId,
        from_version: i64,
    ) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send {
        self.inner.load(stream, from_version)
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let mut pages = self.last.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        let mut events: Vec<StoredEvent> = Vec::new();
        let mut from = after;
        while let Some((held, whole)) = pages
            .iter()
            .filter_map(|page| page.covers(from, limit - events.len(), generation))
            .max_by_key(|(held, whole)| (*whole, held.len()))
        {
            events.extend_from_slice(held);
            if whole {
                return Ok(events);
            }
            from = events.last().map_or(from, |e| e.position);
        }
        events.extend(self.inner.read_all(from, limit - events.len()).await?);
        if pages.len() == Self::SHARED_PAGES {
            pages.pop_front();
        }
        pages.push_back(Page {
            after,
            limit,
            events: events.clone().into(),
            generation,
        });
        Ok(events)
    }
}
