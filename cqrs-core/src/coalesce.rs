//! Requests served together: a task takes the requests that arrive while earlier ones are
//! being served and serves them all in one call, each caller still waiting for its own answer.
//!
//! A backend whose every operation is a round trip to a database (a statement, its protocol
//! messages, two context switches) pays per trip rather than per row. Under load, many tasks
//! ask for the same kind of thing at once (a stream, a document); one statement that answers
//! all of them costs little more than one that answers one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::error::{Error, Result};

type Reply<R> = oneshot::Sender<Result<R>>;

/// Serves requests of type `T` with answers of type `R` in batches.
///
/// At most `in_flight` batches are served at once. A request that finds a batch slot free is
/// served at once (with whatever else arrived in the same instant); the requests that arrive
/// while every slot is busy wait for the next free one and go together. So an idle system
/// answers as fast as one call would, and a busy one makes fewer, larger calls.
///
/// The task is spawned on the current tokio runtime and ends when the `Coalescer` (every
/// clone of it) is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cqrs_core::Result<()> {
/// use cqrs_core::Coalescer;
///
/// // One "query" answers every key waiting.
/// let squares = Coalescer::start("squares", 64, 1, |keys: Vec<u64>| async move {
///     Ok(keys.iter().map(|k| k * k).collect())
/// });
/// let (a, b) = tokio::join!(squares.call(3), squares.call(4));
/// assert_eq!((a?, b?), (9, 16));
/// # Ok(())
/// # }
/// ```
pub struct Coalescer<T, R> {
    sender: mpsc::UnboundedSender<(T, Reply<R>)>,
    stats: Arc<Stats>,
    name: &'static str,
}

impl<T, R> Clone for Coalescer<T, R> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            stats: Arc::clone(&self.stats),
            name: self.name,
        }
    }
}

impl<T, R> std::fmt::Debug for Coalescer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (batches, requests) = self.stats();
        f.debug_struct("Coalescer")
            .field("name", &self.name)
            .field("batches", &batches)
            .field("requests", &requests)
            .finish()
    }
}

#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    requests: AtomicU64,
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// Starts the task. `serve` answers a batch of at most `max_batch` requests with one
    /// answer per request, in order, or fails them all; `name` says what stopped in the error
    /// a caller gets when the task is gone.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start<F, Fut>(name: &'static str, max_batch: usize, in_flight: usize, serve: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        tokio::spawn(serve_loop(
            receiver,
            serve,
            max_batch.max(1),
            in_flight.max(1),
            Arc::clone(&stats),
        ));
        Self { sender, stats, name }
    }

    /// Serves `request` with whatever others are waiting, and answers its own part.
    ///
    /// # Errors
    /// The batch's failure (a copy of it, see [`Error::duplicate`]); a transient failure when
    /// the task has stopped.
    pub async fn call(&self, request: T) -> Result<R> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((request, reply))
            .map_err(|_| Error::transient(format!("the {} coalescer has stopped", self.name)))?;
        answer
            .await
            .map_err(|_| Error::transient(format!("the {} coalescer stopped before answering", self.name)))?
    }
}

impl<T, R> Coalescer<T, R> {
    /// `(batches served, requests served)` so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }
}

async fn serve_loop<T, R, F, Fut>(
    mut receiver: mpsc::UnboundedReceiver<(T, Reply<R>)>,
    serve: F,
    max_batch: usize,
    in_flight: usize,
    stats: Arc<Stats>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<R>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        // While every slot is busy, requests accumulate in the channel for the next batch.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = receiver.recv().await else {
            return;
        };
        // Let the tasks woken in the same instant (one batch of deliveries, say) ask too.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
        let count = requests.len();
        let served = serve(requests);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let answers = served.await;
            drop(slot);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.requests.fetch_add(count as u64, Ordering::Relaxed);
            match answers {
                Ok(answers) if answers.len() == count => {
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The caller may have given up waiting.
                        let _ = reply.send(Ok(answer));
                    }
                }
                Ok(answers) => {
                    let error = Error::permanent(format!(
                        "a batch of {count} requests got {} answers",
                        answers.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(error.duplicate()));
                    }
                }
                Err(error) => {
                    for reply in replies {
                        let _ = reply.send(Err(error.duplicate()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// On one thread, a task runs only when the others yield: the test decides what has
    /// happened when the slot frees.
    #[tokio::test]
    async fn requests_that_wait_for_a_busy_slot_are_served_together() {
        let batches: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let (release, released) = tokio::sync::watch::channel(false);
        let coalescer = {
            let batches = Arc::clone(&batches);
            Coalescer::start("test", 100, 1, move |keys: Vec<u32>| {
                let batches = Arc::clone(&batches);
                let mut released = released.clone();
                async move {
                    batches.lock().unwrap().push(keys.clone());
                    // The first batch holds the only slot until released.
                    let _ = released.wait_for(|r| *r).await;
                    Ok(keys.into_iter().map(|k| k + 1).collect())
                }
            })
        };
        let first = tokio::spawn({
            let c = coalescer.clone();
            async move { c.call(0).await }
        });
        while batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let waiting: Vec<_> = (1..=10)
            .map(|k| {
                let c = coalescer.clone();
                tokio::spawn(async move { c.call(k).await })
            })
            .collect();
        // Each of the ten asks at its first poll; the only slot is still taken.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(batches.lock().unwrap().len(), 1);
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for (k, task) in (1..=10).zip(waiting) {
            assert_eq!(
                task.await.unwrap().unwrap(),
                k + 1,
                "each caller gets its own answer"
            );
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches[0], vec![0]);
        let rest: Vec<u32> = batches[1..].iter().flatten().copied().collect();
        assert_eq!(rest, (1..=10).collect::<Vec<_>>(), "in arrival order, each once");
        assert_eq!(batches.len(), 2, "the ten waited together: {batches:?}");
        assert_eq!(coalescer.stats(), (2, 11));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_caller_with_its_class() {
        let coalescer = Coalescer::start("failing", 10, 2, |_: Vec<u8>| async {
            Err::<Vec<u8>, _>(Error::transient("connection reset"))
        });
        let (a, b) = tokio::join!(coalescer.call(1), coalescer.call(2));
        assert!(a.unwrap_err().is_transient());
        assert!(b.unwrap_err().is_transient());
    }

    #[tokio::test]
    async fn a_batch_answered_short_fails_rather_than_mismatch() {
        let coalescer = Coalescer::start("short", 10, 1, |keys: Vec<u8>| async move {
            Ok(keys.into_iter().skip(1).collect::<Vec<u8>>())
        });
        let (a, b) = tokio::join!(coalescer.call(1), coalescer.call(2));
        let error = a.unwrap_err();
        assert_eq!(error.kind(), crate::ErrorKind::Permanent);
        assert!(error.to_string().contains("2 requests got 1 answers"), "{error}");
        assert!(b.is_err());
    }
}
