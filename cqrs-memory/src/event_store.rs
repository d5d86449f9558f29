use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cqrs_core::{
    AppendResult, Error, EventAppender, EventOutbox, EventReader, ExpectedVersion, NewEvent, Result,
    SharedClock, StoredEvent, StreamId, SystemClock,
};
use tokio::sync::Notify;

#[derive(Default)]
struct Stream {
    /// Indexes into `Log::events`, in version order.
    events: Vec<usize>,
    /// The last version marked published (−1: none).
    published: i64,
}

#[derive(Default)]
struct Log {
    events: Vec<Arc<StoredEvent>>,
    streams: HashMap<StreamId, Stream>,
    unpublished: BTreeSet<u64>,
}

struct Inner {
    log: Mutex<Log>,
    appended: Notify,
    clock: SharedClock,
}

/// An in-memory event store with a global log and an outbox.
///
/// [`EventOutbox::appended`] wakes one waiter (the store's publisher), and keeps the wake-up
/// if nobody is waiting yet.
///
/// One mutex guards the log, so appends are atomic and the global position is gap-free and in
/// commit order; it is never held across an `.await`.
#[derive(Clone)]
pub struct MemoryEventStore {
    inner: Arc<Inner>,
}

impl MemoryEventStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// An empty store stamping events with `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Inner {
                log: Mutex::new(Log::default()),
                appended: Notify::new(),
                clock,
            }),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.inner.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of events in the global log.
    pub fn len(&self) -> usize {
        self.log().events.len()
    }

    /// Whether the store holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let log = self.log();
        f.debug_struct("MemoryEventStore")
            .field("events", &log.events.len())
            .field("streams", &log.streams.len())
            .field("unpublished", &log.unpublished.len())
            .finish()
    }
}

impl EventReader for MemoryEventStore {
    async fn load(&self, stream: &StreamId, from_version: i64) -> Result<Vec<StoredEvent>> {
        let log = self.log();
        let Some(s) = log.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let from = usize::try_from(from_version.max(0)).unwrap_or(usize::MAX);
        Ok(s.events
            .iter()
            .skip(from)
            .map(|&i| StoredEvent::clone(&log.events[i]))
            .collect())
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>> {
        let log = self.log();
        let from = usize::try_from(after).unwrap_or(usize::MAX);
        Ok(log
            .events
            .iter()
            .skip(from)
            .take(limit)
            .map(|e| StoredEvent::clone(e))
            .collect())
    }
}

impl EventAppender for MemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        stream_type: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let recorded_at = self.inner.clock.now();
        let mut log = self.log();
        let actual = log.streams.get(stream).map_or(-1, |s| s.events.len() as i64 - 1);
        if !expected.matches(actual) {
            return Err(Error::Conflict {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        if events.is_empty() {
            return Ok(AppendResult {
                last_version: actual,
                last_position: 0,
            });
        }
        let mut version = actual;
        let mut indexes = Vec::with_capacity(events.len());
        for event in events {
            version += 1;
            let index = log.events.len();
            let position = index as u64 + 1;
            log.events.push(Arc::new(StoredEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                stream_type: stream_type.to_owned(),
                version,
                position,
                payload: event.payload,
                metadata: event.metadata,
                recorded_at,
            }));
            log.unpublished.insert(position);
            indexes.push(index);
        }
        let last_position = log.events.len() as u64;
        let entry = log.streams.entry(stream.clone()).or_insert_with(|| Stream {
            events: Vec::new(),
            published: -1,
        });
        entry.events.extend(indexes);
        drop(log);
        // A stored permit: a publisher that is between two passes still wakes up.
        self.inner.appended.notify_one();
        Ok(AppendResult {
            last_version: version,
            last_position,
        })
    }
}

impl EventOutbox for MemoryEventStore {
    async fn unpublished(&self, limit: usize) -> Result<Vec<StoredEvent>> {
        let log = self.log();
        Ok(log
            .unpublished
            .iter()
            .take(limit)
            .map(|&p| StoredEvent::clone(&log.events[p as usize - 1]))
            .collect())
    }

    async fn mark_published(&self, stream: &StreamId, version: i64) -> Result<()> {
        let mut log = self.log();
        let Log {
            streams,
            unpublished,
            events,
            ..
        } = &mut *log;
        let Some(s) = streams.get_mut(stream) else {
            return Ok(());
        };
        let upto = version.min(s.events.len() as i64 - 1);
        for v in (s.published + 1)..=upto {
            unpublished.remove(&events[s.events[v as usize]].position);
        }
        s.published = s.published.max(upto);
        Ok(())
    }

    async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}
