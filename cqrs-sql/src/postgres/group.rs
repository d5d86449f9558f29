//! Group commit on PostgreSQL (store and forward): the appends that arrive while batches are
//! being written are written together (a [`Coalescer`]), several batches in flight at once,
//! since concurrent PostgreSQL commits overlap. Appends to one stream never share a statement:
//! a batch is written in [`rounds`], each append after every earlier one to its stream.

use std::future::Future;
use std::sync::Arc;

use cqrs_core::{AppendResult, Coalescer, Result};

use super::batched::{in_rounds, rounds};
use crate::group::AppendRequest;

/// The most appends one batch gathers.
const MAX_APPENDS: usize = 4_096;

/// Writes a batch of appends to distinct streams in one transaction.
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// One result per request, in order. A conflict fails only its own append.
    fn write(&self, batch: &[AppendRequest]) -> impl Future<Output = Vec<Result<AppendResult>>> + Send;
}

/// The handle appends go through; the committer task ends when it is dropped.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    appends: Coalescer<AppendRequest, Result<AppendResult>>,
}

impl GroupCommit {
    /// Starts the committer: a statement holds at most `max_events` events (but always at
    /// least one append), and at most `in_flight` batches are written at once (1 for a
    /// database with a single writer; more where concurrent commits overlap, as on
    /// PostgreSQL).
    pub(crate) fn start<W: BatchWriter>(writer: W, max_events: usize, in_flight: usize) -> Self {
        let writer = Arc::new(writer);
        let appends = Coalescer::start("group committer", MAX_APPENDS, in_flight, move |batch| {
            let writer = Arc::clone(&writer);
            async move {
                let rounds = rounds(
                    batch,
                    |append: &AppendRequest| append.stream.clone(),
                    |append| append.events.len(),
                    max_events,
                );
                let written = in_rounds(rounds, |round| async {
                    let results = writer.write(&round).await;
                    Ok(round.into_iter().zip(results).collect())
                })
                .await?;
                Ok(written.into_iter().map(|(_, result)| result).collect())
            }
        });
        Self { appends }
    }

    /// Queues an append and waits for its own result.
    pub(crate) async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        self.appends.call(request).await?
    }

    /// `(batches written, appends written)` so far.
    pub(crate) fn stats(&self) -> (u64, u64) {
        self.appends.stats()
    }
}
