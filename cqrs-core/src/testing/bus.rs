use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bus::{CommandBus, EventBus};
use crate::envelope::Envelope;
use crate::error::{Error, Result};

/// One call made on a [`RecordingBus`], with the message ids it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusCall {
    /// `send` of one envelope.
    Send(String),
    /// `send_batch` or `publish` of several envelopes.
    Batch(Vec<String>),
}

type Predicate = Box<dyn Fn(&Envelope) -> bool + Send + Sync>;

#[derive(Default)]
struct Inner {
    sent: Mutex<Vec<Envelope>>,
    calls: Mutex<Vec<BusCall>>,
    attempts: AtomicUsize,
    fail_attempts: Mutex<BTreeSet<usize>>,
    fail_if: Mutex<Option<Predicate>>,
    latency: Mutex<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// An in-memory command and event bus that records what it is given and fails when scripted
/// to: a scripted inner bus for decorator tests, a probe for outbox tests.
///
/// Attempts are counted per envelope, across sends, batches and publishes, from 1. A failing
/// envelope fails with a transient error, and a batch stops at it (earlier envelopes of the
/// batch count as sent). Clones share one recording.
#[derive(Clone, Default)]
pub struct RecordingBus {
    inner: Arc<Inner>,
}

impl fmt::Debug for RecordingBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingBus")
            .field("sent", &self.sent().len())
            .field("attempts", &self.attempts())
            .finish()
    }
}

impl RecordingBus {
    /// A bus that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the `n`-th envelope attempt from now on (1 = the next one) fail once.
    pub fn fail_attempt(&self, n: usize) {
        let base = self.attempts();
        self.inner.fail_attempts.lock().unwrap().insert(base + n);
    }

    /// Makes every envelope that matches `predicate` fail.
    pub fn fail_if(&self, predicate: impl Fn(&Envelope) -> bool + Send + Sync + 'static) {
        *self.inner.fail_if.lock().unwrap() = Some(Box::new(predicate));
    }

    /// Removes every scripted failure.
    pub fn heal(&self) {
        self.inner.fail_attempts.lock().unwrap().clear();
        *self.inner.fail_if.lock().unwrap() = None;
    }

    /// Makes each call take `latency` (to observe concurrency).
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap() = latency;
    }

    /// The envelopes accepted, in order.
    pub fn sent(&self) -> Vec<Envelope> {
        self.inner.sent.lock().unwrap().clone()
    }

    /// The message ids accepted, in order.
    pub fn sent_ids(&self) -> Vec<String> {
        self.sent().into_iter().map(|e| e.metadata.message_id).collect()
    }

    /// The calls made (accepted or not), in order.
    pub fn calls(&self) -> Vec<BusCall> {
        self.inner.calls.lock().unwrap().clone()
    }

    /// How many envelope attempts were made.
    pub fn attempts(&self) -> usize {
        self.inner.attempts.load(Ordering::SeqCst)
    }

    /// The most calls that were in progress at once.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets what was recorded (not the scripted failures).
    pub fn clear(&self) {
        self.inner.sent.lock().unwrap().clear();
        self.inner.calls.lock().unwrap().clear();
    }

    async fn accept(&self, call: BusCall, envelopes: Vec<Envelope>) -> Result<()> {
        self.inner.calls.lock().unwrap().push(call);
        let now = self.inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let latency = *self.inner.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let outcome = self.record(envelopes);
        self.inner.in_flight.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    fn record(&self, envelopes: Vec<Envelope>) -> Result<()> {
        for envelope in envelopes {
            let attempt = self.inner.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let scripted = self.inner.fail_attempts.lock().unwrap().remove(&attempt);
            let matched = self
                .inner
                .fail_if
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|p| p(&envelope));
            if scripted || matched {
                return Err(Error::transient(format!(
                    "scripted failure of {} (attempt {attempt})",
                    envelope.metadata.message_id
                )));
            }
            self.inner.sent.lock().unwrap().push(envelope);
        }
        Ok(())
    }
}

fn ids(envelopes: &[Envelope]) -> Vec<String> {
    envelopes.iter().map(|e| e.metadata.message_id.clone()).collect()
}

impl CommandBus for RecordingBus {
    async fn send(&self, envelope: Envelope) -> Result<()> {
        let call = BusCall::Send(envelope.metadata.message_id.clone());
        self.accept(call, vec![envelope]).await
    }

    async fn send_batch(&self, envelopes: Vec<Envelope>) -> Result<()> {
        self.accept(BusCall::Batch(ids(&envelopes)), envelopes).await
    }
}

impl EventBus for RecordingBus {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        self.accept(BusCall::Batch(ids(&events)), events).await
    }
}
