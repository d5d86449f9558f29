//! Leases on PostgreSQL: a session-level advisory lock held by a connection of its own.
//!
//! The lock lives as long as the connection: a holder that dies (or loses the network) releases
//! it when PostgreSQL notices the connection gone. The holder checks its connection every
//! [`CHECK_EVERY`]; when the check fails it reports the lease lost.

use std::time::Duration;

use cqrs_core::{Lease, Leases, Result};
use sqlx::{Connection, PgConnection};
use tokio::sync::{oneshot, watch};

use super::PgStore;
use crate::error::db;

/// How often a held lease's connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";

/// Whether some session of this database holds the advisory lock of key `$1` (a `bigint` key
/// is split into `classid`, its high half, and `objid`, its low half, with `objsubid` 1).
const HELD: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
     AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0))";

impl Leases for PgStore {
    async fn try_acquire(&self, name: &str) -> Result<Option<Lease>> {
        // Advisory locks are database-wide: the schema keeps two systems in one database apart.
        let key = format!("cqrs-lease:{}:{name}", self.inner.schema);
        // A worker waiting for a held lease asks every second: a pooled query, not a new
        // connection each time.
        let held: bool = sqlx::query_scalar(HELD)
            .bind(&key)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        if held {
            return Ok(None);
        }
        let options = self.pool().connect_options();
        let mut conn = PgConnection::connect_with(&options).await.map_err(db)?;
        let taken: bool = sqlx::query_scalar(TRY_LOCK)
            .bind(&key)
            .fetch_one(&mut conn)
            .await
            .map_err(db)?;
        if !taken {
            let _ = conn.close().await;
            return Ok(None);
        }
        let (lost, lost_receiver) = watch::channel(false);
        let (release, released) = oneshot::channel::<()>();
        tokio::spawn(hold(conn, released, lost));
        Ok(Some(Lease::new(name, release, lost_receiver)))
    }
}

/// Keeps the lock's connection until the lease is dropped, checking it meanwhile.
async fn hold(mut conn: PgConnection, mut released: oneshot::Receiver<()>, lost: watch::Sender<bool>) {
    loop {
        tokio::select! {
            // The lease was dropped: closing the connection releases the lock.
            _ = &mut released => break,
            () = tokio::time::sleep(CHECK_EVERY) => {
                if let Err(error) = conn.ping().await {
                    tracing::warn!(%error, "a lease's connection failed; the lease is lost");
                    let _ = lost.send(true);
                    return;
                }
            }
        }
    }
    let _ = conn.close().await;
}
