//! `NOTIFY` sent apart from the writers' transactions, gathered into one statement a round.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::kept::{KeptConnections, OnKept};
use super::sql;

/// Sends PostgreSQL notifications for a process, apart from the transactions whose writes they
/// announce, and coalesced.
///
/// A transaction that notifies takes a cluster-wide lock at commit, which serializes the
/// commits of every notifying transaction; and each notification statement wakes every
/// listening connection and the process behind it. So [`notify`](Self::notify) only queues:
/// a task waits [`gather`](Self::start) after the first notification of a round, then sends
/// the round in one statement, keeping one notification per channel and key, the one queued
/// last. A notification is best effort, as every `NOTIFY` is: a listener that lost its
/// connection misses what was sent meanwhile, so listeners also poll.
///
/// Closing or dropping the notifier sends what is queued, then stops its task;
/// [`shutdown`](Self::shutdown) also waits for that last statement.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) {
/// use std::time::Duration;
/// use cqrs_sql::{KeptConnections, PgNotifier};
///
/// let notifier = PgNotifier::start(KeptConnections::new(pool, 1), Duration::from_millis(1));
/// // Queued within the same millisecond: one statement, and `orders` told of position 9 only.
/// notifier.notify("progress", "orders", "orders:8".to_owned());
/// notifier.notify("progress", "orders", "orders:9".to_owned());
/// notifier.notify("progress", "payments", "payments:4".to_owned());
/// # }
/// ```
#[derive(Debug)]
pub struct PgNotifier {
    shared: Arc<Shared>,
    /// The sending task, until [`shutdown`](Self::shutdown) waits for it.
    task: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Shared {
    round: Mutex<Round>,
    trigger: Notify,
    /// Statements run so far (sent, or failed).
    statements: AtomicU64,
}

/// What the next statement sends.
#[derive(Debug, Default)]
struct Round {
    /// (channel, key) → payload.
    notifications: BTreeMap<(&'static str, String), String>,
    /// The notifier was dropped: the task sends this round and stops.
    closed: bool,
}

impl PgNotifier {
    /// Starts a notifier that sends on `kept`'s connections, `gather` after the first
    /// notification of each round (zero: as soon as its task runs). Call it within a Tokio
    /// runtime: the task is spawned there.
    pub fn start(kept: KeptConnections, gather: Duration) -> Self {
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(Arc::clone(&shared), kept, gather));
        Self {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// Queues `payload` on `channel`, in place of anything queued under `key` on that channel
    /// and not sent yet.
    pub fn notify(&self, channel: &'static str, key: impl Into<String>, payload: String) {
        self.shared
            .lock()
            .notifications
            .insert((channel, key.into()), payload);
        self.shared.trigger.notify_one();
    }

    /// How many statements the notifier has run (sent, or failed).
    pub fn statements(&self) -> u64 {
        self.shared.statements.load(Ordering::Relaxed)
    }

    /// Sends what is queued, without waiting for the round's gathering, and stops: what is
    /// queued after that is never sent.
    pub fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.trigger.notify_one();
    }

    /// [`close`](Self::close)s, then waits until what was queued has been sent (or failed to
    /// be): call it before closing the connections it sends on.
    pub async fn shutdown(&self) {
        self.close();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            // The task never panics; an abort elsewhere leaves nothing to wait for.
            let _ = task.await;
        }
    }
}

impl Drop for PgNotifier {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn run(shared: Arc<Shared>, kept: KeptConnections, gather: Duration) {
    loop {
        shared.trigger.notified().await;
        if !gather.is_zero() && !shared.lock().closed {
            tokio::time::sleep(gather).await;
        }
        let (round, closed) = {
            let mut round = shared.lock();
            (std::mem::take(&mut round.notifications), round.closed)
        };
        if !round.is_empty() {
            let (channels, payloads): (Vec<&str>, Vec<String>) = round
                .into_iter()
                .map(|((channel, _), payload)| (channel, payload))
                .unzip();
            if let Err(error) = sqlx::query(sql::NOTIFY_MANY)
                .bind(channels)
                .bind(payloads)
                .execute_on(&kept)
                .await
            {
                tracing::warn!(%error, "could not notify other processes");
            }
            shared.statements.fetch_add(1, Ordering::Relaxed);
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use sqlx::postgres::{PgListener, PgPoolOptions};

    use super::{KeptConnections, PgNotifier};

    /// Notifications queued one after another, while the first's gathering lasts, go in one
    /// statement, each heard by the other processes' listeners; of those queued under one key,
    /// the last.
    #[tokio::test]
    async fn notifications_gathered_go_in_one_statement_the_last_of_each_key() {
        let Some(url) = crate::postgres::tests::url() else {
            return;
        };
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .unwrap();
        let channel = "cqrs_test_gathered";
        let mut listener = PgListener::connect_with(&pool).await.unwrap();
        listener.listen(channel).await.unwrap();
        let run = cqrs_core::uuid::Uuid::new_v4().simple().to_string();
        // Far longer than the notifications take to queue, so that the count does not depend
        // on how fast this machine runs them.
        let notifier = PgNotifier::start(KeptConnections::new(pool.clone(), 1), Duration::from_millis(500));

        for (key, payload) in [("a", "a1"), ("b", "b1"), ("c", "c1"), ("b", "b2"), ("d", "d1")] {
            notifier.notify(channel, key, format!("{run}:{payload}"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let expected: BTreeSet<String> = ["a1", "b2", "c1", "d1"]
            .iter()
            .map(|p| format!("{run}:{p}"))
            .collect();
        let heard = hear(&mut listener, &run, expected.len()).await;
        assert_eq!(heard, expected, "b's first payload was replaced by its last");
        // Heard at the statement's commit, counted once its answer is back.
        while notifier.statements() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(notifier.statements(), 1, "one statement for them all");

        // Dropped with a notification queued: it is sent all the same, gathering or not.
        notifier.notify(channel, "e", format!("{run}:e1"));
        drop(notifier);
        let heard = hear(&mut listener, &run, 1).await;
        assert_eq!(heard, BTreeSet::from([format!("{run}:e1")]));

        // Shut down: the last statement has run when `shutdown` returns.
        let notifier = PgNotifier::start(KeptConnections::new(pool.clone(), 1), Duration::from_secs(60));
        notifier.notify(channel, "f", format!("{run}:f1"));
        notifier.shutdown().await;
        assert_eq!(notifier.statements(), 1, "sent without waiting out the gathering");
        let heard = hear(&mut listener, &run, 1).await;
        assert_eq!(heard, BTreeSet::from([format!("{run}:f1")]));
    }

    /// The next `count` payloads of this run heard by `listener`, each once.
    async fn hear(listener: &mut PgListener, run: &str, count: usize) -> BTreeSet<String> {
        let mut heard = BTreeSet::new();
        while heard.len() < count {
            let notification = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                .await
                .expect("every notification is sent")
                .unwrap();
            if notification.payload().starts_with(run) {
                assert!(
                    heard.insert(notification.payload().to_owned()),
                    "a notification was sent twice"
                );
            }
        }
        heard
    }
}
