//! Group commit on PostgreSQL (store and forward): a task gathers the appends that arrive while
//! batches are being written and writes them together, several batches in flight at once, since
//! concurrent PostgreSQL commits overlap.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cqrs_core::{AppendResult, Error, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::group::AppendRequest;

/// Writes a batch of appends to distinct streams in one transaction.
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// One result per request, in order. A conflict fails only its own append.
    fn write(&self, batch: &[AppendRequest]) -> impl Future<Output = Vec<Result<AppendResult>>> + Send;
}

type Reply = oneshot::Sender<Result<AppendResult>>;

/// Counters of the group committer.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    batches: AtomicU64,
    requests: AtomicU64,
}

impl Stats {
    /// `(batches written, requests written)`.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    /// A batch of `requests` written.
    pub(crate) fn written(&self, requests: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
    }
}

/// Hands `request` to a batching task over `sender` and waits for its own answer; a task that
/// has stopped (named by `task`) is a transient failure.
pub(crate) async fn ask<T, R>(
    sender: &mpsc::UnboundedSender<(T, oneshot::Sender<Result<R>>)>,
    request: T,
    task: &str,
) -> Result<R> {
    let (reply, answer) = oneshot::channel();
    sender
        .send((request, reply))
        .map_err(|_| Error::transient(format!("the {task} has stopped")))?;
    answer
        .await
        .map_err(|_| Error::transient(format!("the {task} stopped before answering")))?
}

/// The handle appends go through; the committer task ends when it is dropped.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    sender: mpsc::UnboundedSender<(AppendRequest, Reply)>,
    stats: Arc<Stats>,
}

impl GroupCommit {
    /// Starts the committer: a batch holds at most `max_events` events (but always at least
    /// one append), and at most `in_flight` batches are written at once (1 for a database with
    /// a single writer; more where concurrent commits overlap, as on PostgreSQL).
    pub(crate) fn start<W: BatchWriter>(writer: W, max_events: usize, in_flight: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(commit_loop(
            Arc::new(writer),
            receiver,
            max_events,
            in_flight.max(1),
            Arc::clone(&stats),
        ));
        Self { sender, stats }
    }

    /// Queues an append and waits for its own result.
    pub(crate) async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        ask(&self.sender, request, "group committer").await
    }

    /// `(batches written, appends written)` so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        self.stats.get()
    }
}

async fn commit_loop<W: BatchWriter>(
    writer: Arc<W>,
    mut receiver: mpsc::UnboundedReceiver<(AppendRequest, Reply)>,
    max_events: usize,
    in_flight: usize,
    stats: Arc<Stats>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut waiting: VecDeque<(AppendRequest, Reply)> = VecDeque::new();
    loop {
        // While every slot is busy, appends accumulate into the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        if waiting.is_empty() {
            match receiver.recv().await {
                Some(item) => waiting.push_back(item),
                None => return,
            }
            // Let writers that were just answered (or woken together) queue up too.
            tokio::task::yield_now().await;
        }
        while let Ok(item) = receiver.try_recv() {
            waiting.push_back(item);
        }
        // Take appends in arrival order, skipping (for the next batch) a second append to a
        // stream already in this one, up to the event budget.
        let mut batch = Vec::new();
        let mut streams = HashSet::new();
        let mut events = 0;
        let mut later = VecDeque::new();
        while let Some((request, reply)) = waiting.pop_front() {
            let fits = batch.is_empty() || events + request.events.len() <= max_events;
            if fits && !streams.contains(&request.stream) {
                streams.insert(request.stream.clone());
                events += request.events.len();
                batch.push((request, reply));
            } else {
                later.push_back((request, reply));
            }
        }
        waiting = later;
        let (writer, stats) = (Arc::clone(&writer), Arc::clone(&stats));
        tokio::spawn(async move {
            let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let results = writer.write(&requests).await;
            drop(slot);
            stats.written(requests.len());
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have given up waiting; its append stands either way.
                let _ = reply.send(result);
            }
        });
    }
}
