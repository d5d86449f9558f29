//! The writes other than appends (queue settles, enqueues, outbox marks, process saves,
//! checkpoints) as the [`writer`](super::writer) batches them: each in a savepoint of its own
//! when it has several statements, and each answered with its own result once the batch has
//! committed (a failed write rolls back only itself; a failed commit fails them all).
//!
//! On one SQLite file every durable commit is a trip through the one writer and an `fsync`;
//! an order through the conference system makes dozens of small writes, and committing them
//! one by one made the writer, not the CPU, the limit.

use cqrs_core::{Error, Result};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::direct;

/// A write to run inside a batch, on the writer's connection.
pub(super) type WriteFn<T> = Box<dyn FnOnce(&Connection) -> Result<T> + Send + 'static>;

/// One queued write, its type erased.
pub(super) trait Job: Send {
    /// Runs the write on `db`, inside the batch's transaction.
    fn run(&mut self, db: &Connection);
    /// Answers the caller: its own result if the batch committed, else the batch's failure.
    fn finish(self: Box<Self>, committed: std::result::Result<(), &Error>);
}

/// A write and the caller waiting for its result.
pub(super) struct Typed<T> {
    write: Option<WriteFn<T>>,
    /// Several statements: run in a savepoint, so a failure rolls back only this write.
    savepoint: bool,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T> Typed<T> {
    /// The job for `write`, and the answer its caller waits for. `statements > 1` runs it in a
    /// savepoint of its own.
    pub(super) fn new(statements: usize, write: WriteFn<T>) -> (Self, oneshot::Receiver<Result<T>>) {
        let (reply, answer) = oneshot::channel();
        let job = Self {
            write: Some(write),
            savepoint: statements > 1,
            result: None,
            reply,
        };
        (job, answer)
    }
}

impl<T: Send + 'static> Job for Typed<T> {
    fn run(&mut self, db: &Connection) {
        let Some(write) = self.write.take() else { return };
        if self.savepoint
            && let Err(error) = control(db, "SAVEPOINT write")
        {
            self.result = Some(Err(direct::error(error)));
            return;
        }
        let result = write(db);
        if self.savepoint {
            let end = if result.is_ok() {
                control(db, "RELEASE write")
            } else {
                control(db, "ROLLBACK TO write").and_then(|()| control(db, "RELEASE write"))
            };
            if let Err(error) = end {
                self.result = Some(Err(direct::error(error)));
                return;
            }
        }
        self.result = Some(result);
    }

    fn finish(self: Box<Self>, committed: std::result::Result<(), &Error>) {
        let answer = match committed {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(Error::transient("the write was not run"))),
            Err(error) => Err(error.duplicate()),
        };
        // The caller may have stopped waiting.
        let _ = self.reply.send(answer);
    }
}

/// Runs a transaction-control statement, prepared once per batch (parsing one each time cost
/// more than running it).
pub(super) fn control(db: &Connection, statement: &str) -> rusqlite::Result<()> {
    db.prepare_cached(statement)?.execute([]).map(drop)
}
