//! Connections kept between statements, out of sqlx's pool: see [`KeptConnections`].

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::{connection_lost, must_check};
use crate::error::is_connection_lost;

/// How long a connection is kept before it goes back to the pool.
const RETURN_AFTER: Duration = Duration::from_secs(60);

/// Connections of a pool kept between statements. Clones share them.
///
/// A connection that goes back to a sqlx pool is checked on the way in, with a round trip to
/// the server (a `Sync` message, answered by `ReadyForQuery`), in a task spawned for it; with
/// sqlx's default settings it is checked again on the way out. Under load, where a statement
/// of each kind runs every few milliseconds, that was two round trips more for every statement,
/// each waking the server's backend and this process. [`KeptConnections`] holds on to the
/// connections its statements ran on: one whose statement succeeded is handed to the next
/// statement as it is. One whose statement failed, or whose future was dropped halfway, goes
/// back to the pool, which checks it and discards it when broken.
///
/// A kept connection that sat idle for longer than 10 s is checked before it is handed out
/// (the server or the network may have dropped it meanwhile), and every connection goes back
/// to the pool after a minute in use, so that the pool's own limits (the connections'
/// lifetime) still apply. A kept connection that the server dropped less than 10 s after its
/// last statement fails the next one, as a pooled connection dropped right after its check
/// would, with an error that [`sqlx_error`](crate::sqlx_error) classifies as transient, and
/// the connection is not kept. That failure, seen by [`sqlx_error`](crate::sqlx_error) (or by
/// a check), has every connection of the process idle since checked before its next use, kept
/// or pooled ([`pg_pool_options`](crate::pg_pool_options)): a server that dropped them all
/// costs a failed statement or two, not one a connection.
///
/// The connections it keeps stay taken from the pool: give it the statements that run all
/// the time, and size the pool for them and the rest.
///
/// ```no_run
/// use cqrs_sql::{KeptConnections, OnKept, pg_pool_options};
///
/// # async fn demo() -> sqlx::Result<()> {
/// let pool = pg_pool_options()
///     .max_connections(4)
///     .connect("postgres://postgres@127.0.0.1:5432/test")
///     .await?;
/// let kept = KeptConnections::new(pool, 2);
/// // Both statements run on the same connection, with no round trip in between.
/// sqlx::query("SELECT 1").execute_on(&kept).await?;
/// let rows = sqlx::query("SELECT 2").fetch_all_on(&kept).await?;
/// assert_eq!(rows.len(), 1);
/// // A transaction: the connection is kept once it committed.
/// let mut connection = kept.acquire().await?;
/// let mut tx = sqlx::Connection::begin(&mut *connection).await?;
/// sqlx::query("SELECT 3").execute(&mut *tx).await?;
/// tx.commit().await?;
/// connection.keep();
/// kept.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct KeptConnections {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    state: Mutex<State>,
    max_idle: usize,
}

#[derive(Debug, Default)]
struct State {
    /// At most `max_idle`, the most recently used last.
    idle: Vec<Idle>,
    /// Once closed, a connection done with goes back to the pool (which closes it): the pool's
    /// `close` waits for every connection taken from it.
    closed: bool,
}

#[derive(Debug)]
struct Idle {
    connection: PoolConnection<Postgres>,
    kept_since: Instant,
    idle_since: Instant,
}

impl KeptConnections {
    /// Keeps up to `max_idle` connections of `pool` between statements; more, in use at once,
    /// go back to the pool when done.
    pub fn new(pool: PgPool, max_idle: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                state: Mutex::new(State::default()),
                max_idle,
            }),
        }
    }

    /// Gives the connections back and closes the pool (see [`PgPool::close`]).
    pub async fn close(&self) {
        let idle = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.idle)
        };
        drop(idle);
        self.inner.pool.close().await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection used last, or one from the pool.
    ///
    /// # Errors
    /// The pool's, when it has no connection to give.
    pub async fn acquire(&self) -> sqlx::Result<KeptConnection> {
        loop {
            let idle = self.state().idle.pop();
            let Some(mut idle) = idle else {
                let connection = self.inner.pool.acquire().await?;
                return Ok(KeptConnection {
                    kept: self.clone(),
                    connection: Some(connection),
                    kept_since: Instant::now(),
                });
            };
            if idle.kept_since.elapsed() > RETURN_AFTER {
                // Back to the pool, which closes it if it has outlived its lifetime.
                drop(idle.connection);
                continue;
            }
            if must_check(idle.idle_since.elapsed()) && idle.connection.ping().await.is_err() {
                connection_lost();
                idle.connection.close_on_drop();
                continue;
            }
            return Ok(KeptConnection {
                kept: self.clone(),
                connection: Some(idle.connection),
                kept_since: idle.kept_since,
            });
        }
    }

    /// Runs the statement `query` builds with [`Query::fetch_all`], and once more, on a
    /// checked connection, when the first run found its connection lost: for a statement that
    /// may run twice (a read, or a write whose second run is harmless), so that a server that
    /// dropped every connection (a restart) fails none of them.
    ///
    /// # Errors
    /// The statement's, or the second run's.
    pub async fn fetch_all_again<'q>(
        &self,
        query: impl Fn() -> Query<'q, Postgres, PgArguments> + Send,
    ) -> sqlx::Result<Vec<PgRow>> {
        match query().fetch_all_on(self).await {
            // The loss is noticed: every connection idle since is checked before its use.
            Err(error) if is_connection_lost(&error) => {
                tracing::debug!(%error, "connection lost; running the statement again");
                query().fetch_all_on(self).await
            }
            done => done,
        }
    }
}

/// A query run on a kept connection instead of a pool's.
pub trait OnKept {
    /// [`Query::fetch_all`] on a connection of `kept`.
    fn fetch_all_on(self, kept: &KeptConnections) -> impl Future<Output = sqlx::Result<Vec<PgRow>>> + Send;
    /// [`Query::execute`] on a connection of `kept`.
    fn execute_on(self, kept: &KeptConnections) -> impl Future<Output = sqlx::Result<PgQueryResult>> + Send;
}

impl OnKept for Query<'_, Postgres, PgArguments> {
    async fn fetch_all_on(self, kept: &KeptConnections) -> sqlx::Result<Vec<PgRow>> {
        let mut connection = kept.acquire().await?;
        let rows = self.fetch_all(&mut *connection).await.inspect_err(noticed)?;
        connection.keep();
        Ok(rows)
    }

    async fn execute_on(self, kept: &KeptConnections) -> sqlx::Result<PgQueryResult> {
        let mut connection = kept.acquire().await?;
        let done = self.execute(&mut *connection).await.inspect_err(noticed)?;
        connection.keep();
        Ok(done)
    }
}

/// Records a lost connection, for the failures that no caller maps with `sqlx_error` (a
/// notification that is only logged).
fn noticed(error: &sqlx::Error) {
    if is_connection_lost(error) {
        connection_lost();
    }
}

/// A connection taken from [`KeptConnections`]: dropped, it goes back to the pool; [kept](Self::keep),
/// to the next statement.
#[derive(Debug)]
pub struct KeptConnection {
    kept: KeptConnections,
    connection: Option<PoolConnection<Postgres>>,
    kept_since: Instant,
}

impl KeptConnection {
    /// Hands the connection to the next statement: call once its statement (or transaction)
    /// has succeeded, and nothing is left to read.
    pub fn keep(mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let mut state = self.kept.state();
        if !state.closed && state.idle.len() < self.kept.inner.max_idle {
            state.idle.push(Idle {
                connection,
                kept_since: self.kept_since,
                idle_since: Instant::now(),
            });
        } else {
            // Enough are kept (or the pool is closing): this one goes back to the pool.
            drop(state);
            drop(connection);
        }
    }
}

impl Deref for KeptConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection
            .as_ref()
            .expect("a kept connection until kept or dropped")
    }
}

impl DerefMut for KeptConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection
            .as_mut()
            .expect("a kept connection until kept or dropped")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::postgres::PgPoolOptions;
    use sqlx::{Connection, PgConnection};

    use super::{KeptConnections, OnKept};
    use crate::postgres::tests::url;

    async fn kept(max_idle: usize) -> Option<KeptConnections> {
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url()?)
            .await
            .expect("the test database is reachable");
        Some(KeptConnections::new(pool, max_idle))
    }

    /// The server process of the connection the statement ran on.
    async fn backend(kept: &KeptConnections) -> sqlx::Result<i32> {
        let rows = sqlx::query("SELECT pg_backend_pid() AS pid")
            .fetch_all_on(kept)
            .await?;
        sqlx::Row::try_get(&rows[0], "pid")
    }

    /// Held by the tests that terminate backends: a loss found by one has the other's
    /// connections checked (see `must_check`).
    static TERMINATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Terminates the server processes `pids`, from a connection of its own.
    async fn terminate(pids: &[i32]) {
        let mut other = PgConnection::connect(&url().unwrap()).await.unwrap();
        for pid in pids {
            let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .fetch_one(&mut other)
                .await
                .unwrap();
            assert!(terminated);
        }
        other.close().await.unwrap();
    }

    fn idle(kept: &KeptConnections) -> usize {
        kept.state().idle.len()
    }

    #[tokio::test]
    async fn a_connection_whose_statement_succeeded_runs_the_next_one() {
        let Some(kept) = kept(2).await else { return };
        let first = backend(&kept).await.unwrap();
        assert_eq!(idle(&kept), 1, "kept, not given back to the pool");
        assert_eq!(kept.inner.pool.num_idle(), 0);
        assert_eq!(backend(&kept).await.unwrap(), first);
        assert_eq!(idle(&kept), 1);
        kept.close().await;
    }

    #[tokio::test]
    async fn a_connection_whose_statement_failed_goes_back_to_the_pool() {
        let Some(kept) = kept(2).await else { return };
        let error = sqlx::query("SELECT no_such_column FROM pg_class")
            .fetch_all_on(&kept)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("no_such_column"), "{error}");
        assert_eq!(idle(&kept), 0);
        // The pool checked it and took it back.
        tokio::time::timeout(Duration::from_secs(10), async {
            while kept.inner.pool.num_idle() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the connection is back in the pool");
        backend(&kept).await.unwrap();
        kept.close().await;
    }

    #[tokio::test]
    async fn no_more_than_max_idle_are_kept() {
        let Some(kept) = kept(1).await else { return };
        let (a, b) = (kept.acquire().await.unwrap(), kept.acquire().await.unwrap());
        a.keep();
        b.keep();
        assert_eq!(idle(&kept), 1);
        kept.close().await;
    }

    #[tokio::test]
    async fn a_connection_the_server_dropped_fails_its_statement_and_is_replaced() {
        let _alone = TERMINATING.lock().await;
        let Some(kept) = kept(2).await else { return };
        let dropped = backend(&kept).await.unwrap();
        terminate(&[dropped]).await;
        // It sat idle less than the check's threshold: handed out as it is, it fails.
        assert!(
            backend(&kept).await.is_err(),
            "a statement on a dropped connection"
        );
        assert_eq!(idle(&kept), 0, "the broken connection is not kept");
        let replaced = backend(&kept).await.unwrap();
        assert_ne!(replaced, dropped);
        kept.close().await;
    }

    #[tokio::test]
    async fn a_lost_connection_has_the_others_checked_before_their_next_statement() {
        let _alone = TERMINATING.lock().await;
        let Some(kept) = kept(2).await else { return };
        let (mut a, mut b) = (kept.acquire().await.unwrap(), kept.acquire().await.unwrap());
        async fn pid(connection: &mut PgConnection) -> i32 {
            sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(connection)
                .await
                .unwrap()
        }
        let pids = [pid(&mut a).await, pid(&mut b).await];
        a.keep();
        b.keep();
        terminate(&pids).await;
        assert!(
            backend(&kept).await.is_err(),
            "the first finds its connection gone"
        );
        // The other kept one sat idle since: checked, found gone, replaced.
        let replaced = backend(&kept).await.unwrap();
        assert!(!pids.contains(&replaced));
        kept.close().await;
    }

    #[tokio::test]
    async fn a_statement_that_may_run_twice_runs_again_when_its_connection_was_lost() {
        let _alone = TERMINATING.lock().await;
        let Some(kept) = kept(2).await else { return };
        let dropped = backend(&kept).await.unwrap();
        terminate(&[dropped]).await;
        let rows = kept
            .fetch_all_again(|| sqlx::query("SELECT pg_backend_pid() AS pid"))
            .await
            .expect("run again on a checked connection");
        let ran_on: i32 = sqlx::Row::try_get(&rows[0], "pid").unwrap();
        assert_ne!(ran_on, dropped);
        kept.close().await;
    }

    #[tokio::test]
    async fn closing_waits_for_no_kept_connection() {
        let Some(kept) = kept(2).await else { return };
        backend(&kept).await.unwrap();
        let in_use = kept.acquire().await.unwrap();
        let closing = tokio::spawn({
            let kept = kept.clone();
            async move { kept.close().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Done with after the close began: given back, not kept.
        in_use.keep();
        tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .expect("the pool closes")
            .unwrap();
        assert_eq!(idle(&kept), 0);
    }
}
