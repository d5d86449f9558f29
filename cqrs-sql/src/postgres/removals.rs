//! Sent process commands removed together: a process manager's save stores its commands, the
//! commands are sent, then removed. Each removal was a statement and a transaction of its own;
//! now a task takes the removals that arrive while one statement runs and removes them all in
//! the next. Each caller still waits for its own removal.

use std::sync::Arc;

use cqrs_core::Result;
use cqrs_core::uuid::Uuid;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::group::{Stats, ask};
use super::sql;
use crate::error::db;
use crate::group::shared_failure;

/// The most removals one statement takes.
const MAX_BATCH: usize = 1_024;

/// One process's sent commands to remove.
#[derive(Debug)]
struct Removal {
    process_type: String,
    id: Uuid,
    message_ids: Vec<String>,
}

type Reply = oneshot::Sender<Result<()>>;

/// The handle removals go through; its task ends when it is dropped.
#[derive(Debug)]
pub(super) struct Removals {
    sender: mpsc::UnboundedSender<(Removal, Reply)>,
    stats: Arc<Stats>,
}

impl Removals {
    /// Starts the task, on the current tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stats = Arc::default();
        tokio::spawn(run(pool, receiver, Arc::clone(&stats)));
        Self { sender, stats }
    }

    /// Removes `message_ids` of process `(process_type, id)`, with whatever other removals are
    /// waiting; resolves once they are removed.
    pub(super) async fn remove(&self, process_type: &str, id: Uuid, message_ids: &[String]) -> Result<()> {
        let removal = Removal {
            process_type: process_type.to_owned(),
            id,
            message_ids: message_ids.to_vec(),
        };
        ask(&self.sender, removal, "command remover").await
    }

    /// `(statements, removals)` so far.
    pub(super) fn stats(&self) -> (u64, u64) {
        self.stats.get()
    }
}

async fn run(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<(Removal, Reply)>, stats: Arc<Stats>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (mut types, mut ids, mut messages) = (Vec::new(), Vec::new(), Vec::new());
        for (removal, _) in &batch {
            for message_id in &removal.message_ids {
                types.push(removal.process_type.as_str());
                ids.push(removal.id);
                messages.push(message_id.as_str());
            }
        }
        let removed = sqlx::query(sql::REMOVE_SENT_COMMANDS)
            .bind(&types)
            .bind(&ids)
            .bind(&messages)
            .execute(&pool)
            .await
            .map(drop)
            .map_err(db);
        stats.written(batch.len());
        for (_, reply) in batch {
            // The caller may have given up waiting; the removal stands either way.
            let _ = reply.send(match &removed {
                Ok(()) => Ok(()),
                Err(error) => Err(shared_failure(error)),
            });
        }
    }
}
