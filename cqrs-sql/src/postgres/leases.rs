//! Leases on PostgreSQL: session-level advisory locks, all of a store's held on one connection
//! of their own.
//!
//! A lock lives as long as the connection: a holder that dies (or loses the network) releases
//! its locks when PostgreSQL notices the connection gone. One session can hold any number of
//! advisory locks, so a worker's leases (the publisher, the relay, each projection) share one
//! connection instead of taking one each from the server's `max_connections`. A task owns it:
//! it takes and releases the locks in the order asked, and checks the connection every
//! [`CHECK_EVERY`] while it holds any; when the check fails, every lease it held is reported
//! lost and the next acquisition connects anew.

use std::collections::HashMap;
use std::time::Duration;

use cqrs_core::{Error, Lease, Leases, Result};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot, watch};

use super::PgStore;
use crate::error::db;

/// How often the connection holding leases is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended($1, 0))";

/// Whether some session of this database holds the advisory lock of key `$1` (a `bigint` key
/// is split into `classid`, its high half, and `objid`, its low half, with `objsubid` 1).
const HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0))";

/// A lock taken: the holding's number, and the receiver that learns when it is lost.
type Taken = (u64, watch::Receiver<bool>);

enum Request {
    /// Take the lock of `key`: the holding's number and the receiver that learns when it is
    /// lost, or `None` when someone (this store included) holds it.
    Acquire {
        key: String,
        reply: oneshot::Sender<Result<Option<Taken>>>,
    },
    /// Release the lock of `key` if it is still held by holding `holding` (not lost, and not
    /// taken again since).
    Release { key: String, holding: u64 },
}

/// The handle of the task that holds a store's leases; the task ends (and its connection
/// closes, releasing every lock) when the handle is dropped.
#[derive(Debug)]
pub(super) struct LeaseHolder {
    sender: mpsc::UnboundedSender<Request>,
}

impl LeaseHolder {
    /// Starts the task on the current tokio runtime; it connects with `options` when first
    /// asked for a lease.
    pub(super) fn start(options: PgConnectOptions) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(hold(options, receiver));
        Self { sender }
    }
}

/// Releases its lock when dropped.
struct Held {
    key: String,
    holding: u64,
    sender: mpsc::UnboundedSender<Request>,
}

impl Drop for Held {
    fn drop(&mut self) {
        // A holder that has stopped has closed its connection, and the lock with it.
        let _ = self.sender.send(Request::Release {
            key: std::mem::take(&mut self.key),
            holding: self.holding,
        });
    }
}

impl Leases for PgStore {
    async fn try_acquire(&self, name: &str) -> Result<Option<Lease>> {
        // Advisory locks are database-wide: the schema keeps two systems in one database apart.
        let key = format!("cqrs-lease:{}:{name}", self.inner.schema);
        // A worker waiting for a held lease asks every second: a pooled query, and the holder
        // task stays free for the leases it holds.
        let held: bool = sqlx::query_scalar(HELD)
            .bind(&key)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        if held {
            return Ok(None);
        }
        let sender = &self.inner.leases.sender;
        let (reply, answer) = oneshot::channel();
        let stopped = || Error::transient("the lease holder has stopped");
        sender
            .send(Request::Acquire {
                key: key.clone(),
                reply,
            })
            .map_err(|_| stopped())?;
        let Some((holding, lost)) = answer.await.map_err(|_| stopped())?? else {
            return Ok(None);
        };
        let held = Held {
            key,
            holding,
            sender: sender.clone(),
        };
        Ok(Some(Lease::new(name, held, lost)))
    }
}

/// The locks held on one connection: for each, the holding's number and how its holder
/// learns of its loss.
#[derive(Default)]
struct Locks {
    conn: Option<PgConnection>,
    held: HashMap<String, (u64, watch::Sender<bool>)>,
    holdings: u64,
}

impl Locks {
    async fn acquire(&mut self, options: &PgConnectOptions, key: String) -> Result<Option<Taken>> {
        // Advisory locks are reentrant within a session: a second lease on a name this store
        // holds would be granted. It is someone else's to refuse.
        if self.held.contains_key(&key) {
            return Ok(None);
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            empty => empty.insert(PgConnection::connect_with(options).await.map_err(db)?),
        };
        let taken: bool = sqlx::query_scalar(TRY_LOCK)
            .bind(&key)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if !taken {
            return Ok(None);
        }
        let (lost, receiver) = watch::channel(false);
        self.holdings += 1;
        self.held.insert(key, (self.holdings, lost));
        Ok(Some((self.holdings, receiver)))
    }

    async fn release(&mut self, key: &str, holding: u64) {
        // A lease lost with its connection, perhaps taken again since: not this holding's.
        if self.held.get(key).is_none_or(|(h, _)| *h != holding) {
            return;
        }
        self.held.remove(key);
        let Some(conn) = &mut self.conn else {
            return;
        };
        let unlocked = sqlx::query_scalar::<_, bool>(UNLOCK)
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        if let Err(error) = unlocked {
            tracing::warn!(%error, "a lease's connection failed; every lease on it is lost");
            self.lose_all().await;
        }
    }

    /// Checks the connection while it holds locks; a failed check loses them all.
    async fn check(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if let Some(conn) = &mut self.conn
            && let Err(error) = conn.ping().await
        {
            tracing::warn!(%error, "the leases' connection failed; every lease on it is lost");
            self.lose_all().await;
        }
    }

    async fn lose_all(&mut self) {
        for (_, (_, lost)) in self.held.drain() {
            let _ = lost.send(true);
        }
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}

/// Serves acquisitions and releases in the order asked, checking the connection between them.
async fn hold(options: PgConnectOptions, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut locks = Locks::default();
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Some(Request::Acquire { key, reply }) => {
                    let acquired = locks.acquire(&options, key).await;
                    if acquired.is_err() {
                        // The connection may be broken: the locks it held are gone with it.
                        locks.lose_all().await;
                    }
                    let _ = reply.send(acquired);
                }
                Some(Request::Release { key, holding }) => locks.release(&key, holding).await,
                // The store is gone: closing the connection releases every lock.
                None => break,
            },
            _ = check.tick() => locks.check().await,
        }
    }
    locks.lose_all().await;
}
