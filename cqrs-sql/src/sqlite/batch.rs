//! Group commit for every other write: queue settles, enqueues, outbox marks, process saves,
//! checkpoints. Writes that arrive while a batch is being written are written together in the
//! next transaction, each in a savepoint of its own when it has several statements, and each
//! answered with its own result once the batch has committed (a failed write rolls back only
//! itself; a failed commit fails them all).
//!
//! On one SQLite file every durable commit is a trip through the one writer and an `fsync`;
//! an order through the conference system makes dozens of small writes, and committing them
//! one by one made the writer, not the CPU, the limit.
//!
//! A batch runs on the direct path ([`direct`]): its statements are stepped on the calling
//! thread, not handed one by one to sqlx's worker thread. Through sqlx, every statement of a
//! batch cost two thread hand-offs, and those hand-offs were the largest cost of a loaded server.

use cqrs_core::{Error, Result};
use rusqlite::Connection;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::direct;
use crate::error::db;
use crate::group::shared_failure;

/// A write to run inside a batch, on the writer's connection.
pub(super) type WriteFn<T> = Box<dyn FnOnce(&Connection) -> Result<T> + Send + 'static>;

/// One queued write, its type erased.
trait Job: Send {
    /// Runs the write on `db`, inside the batch's transaction.
    fn run(&mut self, db: &Connection);
    /// Answers the caller: its own result if the batch committed, else the batch's failure.
    fn finish(self: Box<Self>, committed: std::result::Result<(), &Error>);
}

struct Typed<T> {
    write: Option<WriteFn<T>>,
    /// Several statements: run in a savepoint, so a failure rolls back only this write.
    savepoint: bool,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
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
            Err(error) => Err(shared_failure(error)),
        };
        // The caller may have stopped waiting.
        let _ = self.reply.send(answer);
    }
}

/// The handle writes go through; the batch task ends when every handle is dropped.
pub(super) struct WriteBatcher {
    sender: mpsc::UnboundedSender<Box<dyn Job>>,
}

impl WriteBatcher {
    /// Starts the batch task on `writer` (the pool of the one writer connection), with at
    /// most `max_writes` writes per transaction (1: every write commits alone).
    pub(super) fn start(writer: SqlitePool, max_writes: usize) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(writer, receiver, max_writes.max(1)));
        Self { sender }
    }

    /// Runs `write` in the next batch and answers its result once the batch has committed.
    /// `statements > 1` runs it in a savepoint of its own.
    pub(super) async fn write<T: Send + 'static>(&self, statements: usize, write: WriteFn<T>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let job = Typed {
            write: Some(write),
            savepoint: statements > 1,
            result: None,
            reply,
        };
        self.sender
            .send(Box::new(job))
            .map_err(|_| Error::transient("the SQLite writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::transient("the SQLite writer stopped before answering"))?
    }
}

async fn batch_loop(
    writer: SqlitePool,
    mut receiver: mpsc::UnboundedReceiver<Box<dyn Job>>,
    max_writes: usize,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_writes);
    while let Some(first) = receiver.recv().await {
        batch.push(first);
        // Let writers woken together queue up too.
        tokio::task::yield_now().await;
        while batch.len() < max_writes {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = write_batch(&writer, &mut batch).await;
        let committed = committed.as_ref().map(|_| ());
        for job in batch.drain(..) {
            job.finish(committed);
        }
    }
}

/// Runs a transaction-control statement, prepared once per batch (parsing one each time cost
/// more than running it).
fn control(db: &Connection, statement: &str) -> rusqlite::Result<()> {
    db.prepare_cached(statement)?.execute([]).map(drop)
}

/// One transaction for the whole batch, stepped on the direct path.
async fn write_batch(writer: &SqlitePool, batch: &mut [Box<dyn Job>]) -> Result<()> {
    let mut conn = writer.acquire().await.map_err(db)?;
    direct::run(&mut conn, |db| {
        if let Err(error) = control(db, "BEGIN IMMEDIATE") {
            // A transaction left open by an interrupted batch: end it and start again.
            let _ = db.execute_batch("ROLLBACK");
            control(db, "BEGIN IMMEDIATE").map_err(|_| direct::error(error))?;
        }
        for job in batch.iter_mut() {
            job.run(db);
        }
        if let Err(error) = control(db, "COMMIT") {
            let _ = db.execute_batch("ROLLBACK");
            return Err(direct::error(error));
        }
        Ok(())
    })
    .await
}
