//! The PostgreSQL backend: several processes share one database.

mod batched;
mod checkpoints;
mod events;
mod group;
mod kept;
mod leases;
mod notifier;
mod processes;
mod sql;
mod transport;
mod vacuum;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cqrs_core::{Codec, Result, SharedClock, SystemClock};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Row};
use tokio::sync::Notify;

use self::batched::Batched;
use self::events::PgAppender;
use self::group::GroupCommit;
pub use self::kept::{KeptConnection, KeptConnections, OnKept};
use self::leases::LeaseHolder;
pub use self::notifier::PgNotifier;
use crate::error::{corrupt, db};
use crate::migrate::POSTGRES as MIGRATIONS;

/// The most events one group-commit statement takes.
const MAX_BATCH_EVENTS: usize = 5_000;
/// Group-commit statements written at once: PostgreSQL overlaps (and group-flushes) concurrent
/// commits, so a few batches in flight keep it busy while the next ones fill.
const BATCHES_IN_FLIGHT: usize = 4;
/// The most connections of the store's pool kept between statements: the coalescers', the
/// notifier's, and a few for the receives and the reads of the log; never more than half of
/// what the listener leaves of the pool, so that the store's other statements (and the users
/// of [`PgStore::pool`]) always find one.
const KEPT_CONNECTIONS: usize = 8;

/// `(statements, requests)` of each operation a [`PgStore`] serves in batches (see
/// [`PgStore::batch_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Stream loads ([`EventReader::load`](cqrs_core::EventReader::load)).
    pub stream_loads: (u64, u64),
    /// Finds of processes by key
    /// ([`ProcessStore::find_by_key`](cqrs_core::ProcessStore::find_by_key)).
    pub process_finds: (u64, u64),
    /// Process saves ([`ProcessStore::save`](cqrs_core::ProcessStore::save)).
    pub process_saves: (u64, u64),
    /// Enqueues ([`MessageQueue::enqueue`](cqrs_core::MessageQueue::enqueue)).
    pub enqueues: (u64, u64),
    /// Completions with the sessions' next messages
    /// ([`MessageQueue::complete_and_next`](cqrs_core::MessageQueue::complete_and_next)).
    pub completions: (u64, u64),
    /// Removals of sent process commands
    /// ([`ProcessStore::remove_commands`](cqrs_core::ProcessStore::remove_commands)).
    pub command_removals: (u64, u64),
}

/// How long a pooled connection may have sat idle and still be handed out unchecked.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(10);

/// When this process last found a PostgreSQL connection lost, in milliseconds since [`EPOCH`]
/// (0: never).
static LOST_AT: AtomicU64 = AtomicU64::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();

fn millis_now() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Records that a connection was found lost (an I/O error, the server terminating it): the
/// server may have dropped the others too (a restart, `pg_terminate_backend`), so every
/// connection idle since is checked before its next use.
pub(crate) fn connection_lost() {
    LOST_AT.fetch_max(millis_now(), Ordering::Relaxed);
}

/// Whether a connection idle for `idle_for` is checked before it is handed out: when it has
/// sat idle for more than [`CHECK_IDLE_AFTER`], or since a connection was found lost.
fn must_check(idle_for: Duration) -> bool {
    let lost = LOST_AT.load(Ordering::Relaxed);
    idle_for > CHECK_IDLE_AFTER
        || (lost != 0 && millis_now().saturating_sub(idle_for.as_millis() as u64) <= lost)
}

/// The settings of the store's connection pools, for a pool of one's own on the same database
/// (as the conference app's read models keep): a connection is checked before it is handed out
/// only when it has sat idle for longer than 10 s, or since this process found a connection
/// lost.
///
/// sqlx's default checks every connection it hands out with a round trip to the server (a
/// `Sync` message, answered by `ReadyForQuery`). Under load a connection goes back and forth
/// within milliseconds, and that check was one more round trip for every statement and
/// transaction, a wake-up of the server's backend and of the process. A connection that has
/// been in use a moment ago is as likely to work as one just checked; one that has sat idle
/// may have been dropped by the server or the network meanwhile, and is checked. A connection
/// found broken in use fails its statement, as it would have a moment after the check, and is
/// discarded when it goes back to the pool; the failure ([`sqlx_error`](crate::sqlx_error)
/// sees it) has every connection idle since checked before its next use, so that a server that
/// dropped all of them (a restart) costs one failed statement, not one a connection.
///
/// ```
/// let options = cqrs_sql::pg_pool_options().max_connections(4);
/// assert!(!options.get_test_before_acquire());
/// ```
pub fn pg_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if must_check(meta.idle_for) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// How often a store vacuums the tables it churns through, by default.
const VACUUM_EVERY: Duration = Duration::from_secs(5);

/// Settings of a [`PgStore`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
    group_commit: bool,
    lease: Duration,
    vacuum_every: Option<Duration>,
    listen: bool,
    clock: SharedClock,
}

impl PgOptions {
    /// Options for the database at `url` (`postgres://user@host:port/db`): 16 connections, a
    /// 10 s acquire timeout, the `public` schema, the system clock, the churned tables
    /// vacuumed every 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            group_commit: true,
            lease: Duration::from_secs(60),
            vacuum_every: Some(VACUUM_EVERY),
            listen: true,
            clock: SystemClock::shared(),
        }
    }

    /// Turns group commit on (the default) or off. On, concurrent appends of this process are
    /// written together in one statement, each still checked and answered on its own.
    ///
    /// The committer is a task spawned on the tokio runtime that connects the store: use the
    /// store on that runtime (or keep it running), not from another runtime's `block_on`.
    #[must_use]
    pub fn group_commit(mut self, on: bool) -> Self {
        self.group_commit = on;
        self
    }

    /// Keeps every table in `schema` (created if missing), e.g. one per test run or tenant.
    ///
    /// The name must be a plain identifier: ASCII letters, digits and underscores.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// How long a received message stays locked to its consumer (default 60 s); a consumer that
    /// dies holding messages releases them when this runs out, and another process takes over.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the store vacuums the tables it churns through (queued messages, the
    /// outbox, process commands, processes); `None` leaves them to autovacuum. Default: every
    /// 5 seconds. Several stores on one database skip a table another one is vacuuming.
    ///
    /// Autovacuum visits a database once a minute at best, and a queue's receive walks every
    /// dead row of its due messages until then: under load, several times slower.
    #[must_use]
    pub fn vacuum_every(mut self, every: Option<Duration>) -> Self {
        self.vacuum_every = every;
        self
    }

    /// Whether the store listens for the appends and enqueues of other processes (default
    /// on), to wake this process's publishers ([`cqrs_core::EventOutbox::appended`]) and
    /// queue consumers at once; off, they find what others wrote when they poll.
    ///
    /// Every commit that notifies wakes every listening connection's backend in the database,
    /// which reads the notification queue in a transaction of its own: under load, more
    /// transactions than all the statements run. A process that runs neither (a web front
    /// end, a one-shot command, a load generator) is better off not listening.
    #[must_use]
    pub fn listen(mut self, on: bool) -> Self {
        self.listen = on;
        self
    }

    /// How long to wait for a connection (including the first one) before failing
    /// transiently (default 10 s).
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The pool size (default 16), the listening connection included. Up to half of the
    /// others, and at most 8, are kept between the busiest statements ([`KeptConnections`]).
    /// Besides the pool, the store keeps connections of its own: up to 4 for the group
    /// committer (when on), 2 for the coalesced reads, and one that holds its leases (once one
    /// is taken).
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The clock that stamps records.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }
}

struct Inner {
    pool: PgPool,
    /// Connections of `pool` kept between the busiest statements.
    kept: KeptConnections,
    /// Tells other processes that events were appended or messages enqueued.
    notifier: Arc<Notifier>,
    /// Wakes this process's consumers of a queue.
    wakers: Arc<Wakers>,
    lease: Duration,
    appender: PgAppender,
    group: Option<GroupCommit>,
    /// What many tasks of this process ask at once, served together.
    batched: Batched,
    /// The coalesced reads' connections.
    reads: KeptConnections,
    /// Holds this store's leases, on one connection.
    leases: LeaseHolder,
    /// Vacuums the churned tables, if asked.
    vacuum: Option<tokio::task::JoinHandle<()>>,
    appended: Arc<Notify>,
    /// Whether the outbox's last pass saw events waiting for older transactions.
    waiting: events::WaitingEvents,
    /// Wakes `appended` and `wakers` on other processes' notifications, if listening.
    listener: Option<tokio::task::JoinHandle<()>>,
    schema: String,
}

impl Inner {
    /// Stops the notifier (it sends what is queued) and the store's background tasks that hold
    /// no handle of their own (the coalescers, group commit's included, and the lease holder
    /// stop when dropped).
    fn stop_tasks(&self) {
        self.notifier.inner.close();
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        if let Some(vacuum) = &self.vacuum {
            vacuum.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

/// Event store, outbox, snapshot store, process store and inbox in one PostgreSQL database,
/// shared by any number of processes.
///
/// - An append is one statement: the version check and the events together; concurrent
///   appends are not serialized by any lock of ours.
/// - The outbox is a position in the log, moved by the publisher's marks: every event at or below
///   it is published but for the few held back (a stream the bus refused), so an append writes no
///   outbox row. It answers events gap-safe, as `read_all` does.
/// - [`read_all`](cqrs_core::EventReader::read_all) is gap-safe: it never returns an event while
///   a transaction that could still commit an event before it is running, so a subscription
///   never skips an event that committed late. Positions increase but are not dense.
/// - Idle publishers wake through LISTEN/NOTIFY on `cqrs_appended`.
///
/// Clones share the pool.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl PgStore {
    /// Connects with the default options and applies the migrations.
    ///
    /// # Errors
    /// When the database cannot be reached (transient) or a migration fails.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgOptions::new(url)).await
    }

    /// Connects with `options` and applies the migrations.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); a permanent error for an invalid schema name.
    pub async fn connect_with(options: PgOptions) -> Result<Self> {
        let mut connect = PgConnectOptions::from_str(&options.url).map_err(db)?;
        let schema = options.schema.clone().unwrap_or_else(|| "public".to_owned());
        if !valid_identifier(&schema) {
            return Err(cqrs_core::Error::permanent(format!(
                "invalid schema name `{schema}`"
            )));
        }
        if options.schema.is_some() {
            let admin = pg_pool_options()
                .max_connections(1)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect.clone())
                .await
                .map_err(db)?;
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                .execute(&admin)
                .await
                .map_err(db)?;
            admin.close().await;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        // Every connection of the store runs its statements without JIT compilation and with
        // generic plans:
        // - every statement here is short, and a plan that looks costly enough to PostgreSQL
        //   (the outbox's walk in `MARK_PUBLISHED`) was compiled at each execution, three
        //   quarters of its time (1 to 1.7 s of the publisher's 1.5 to 2.3 s in a run of 4,000
        //   orders);
        // - left to choose, PostgreSQL plans a statement over arrays anew at every execution
        //   (the arrays look cheaper to it than a generic plan's guess), and the plans do not
        //   depend on what the arrays hold: planning was 180 µs of a 630 µs single-event
        //   append; generic plans everywhere took 4,000 orders from 204 and 214 orders/s to 245
        //   and 260 (alternated).
        //
        // And with index scans only, no bitmap or sequential scans. Every statement here reads
        // a few rows by key or walks an index in order, and the tables it churns through (the
        // queue above all, each message deleted soon after it arrives) change size by the
        // second:
        // - a bitmap scan visits every deleted row's heap tuple again until VACUUM, where a
        //   plain index scan marks the index entries of dead rows as it meets them and the
        //   scans after it skip them: a receive sampled under load read 748 pages through a
        //   bitmap (6,777 index entries, none a live due message), 150 to 210 through the index;
        // - a generic plan is made once, with the table's size at that moment: a completion
        //   planned while the queue was ten pages long deleted its one message with a
        //   sequential scan of all 455 pages the queue had grown to (`auto_explain`).
        let connect = connect.options([
            ("jit", "off"),
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_bitmapscan", "off"),
            ("enable_seqscan", "off"),
        ]);
        // The group committer writes on connections of its own, one per batch in flight.
        let appends = options.group_commit.then(|| {
            pg_pool_options()
                .max_connections(BATCHES_IN_FLIGHT as u32)
                .acquire_timeout(options.acquire_timeout)
                .connect_lazy_with(connect.clone())
        });
        // The coalesced reads too: one statement for any number of streams or processes.
        let reads = KeptConnections::new(
            pg_pool_options()
                .max_connections(batched::READ_CONNECTIONS)
                .acquire_timeout(options.acquire_timeout)
                .connect_lazy_with(connect.clone()),
            batched::READ_CONNECTIONS as usize,
        );
        let pool = pg_pool_options()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db)?;
        let appended = Arc::new(Notify::new());
        let wakers = Arc::new(Wakers::default());
        let listener = if options.listen {
            Some(listen(&pool, &schema, Arc::clone(&appended), Arc::clone(&wakers)).await?)
        } else {
            None
        };
        // The coalescers' statements (one of each kind at a time), the receives and the
        // notifications, the outbox's and the log's reads: a connection for each, within
        // half of what the listener leaves of the pool.
        let shared = options.max_connections - u32::from(listener.is_some());
        let kept = KeptConnections::new(pool.clone(), KEPT_CONNECTIONS.min(shared as usize / 2));
        let notifier = Arc::new(Notifier::start(schema.clone(), kept.clone()));
        let appender = PgAppender {
            kept: appends.map_or_else(
                || kept.clone(),
                |appends| KeptConnections::new(appends, BATCHES_IN_FLIGHT),
            ),
            clock: Arc::clone(&options.clock),
            appended: Arc::clone(&appended),
            notifier: Arc::clone(&notifier),
        };
        let group = options
            .group_commit
            .then(|| GroupCommit::start(appender.clone(), MAX_BATCH_EVENTS, BATCHES_IN_FLIGHT));
        let store = Self {
            inner: Arc::new(Inner {
                notifier,
                wakers,
                lease: options.lease,
                appender,
                group,
                batched: Batched::start(
                    kept.clone(),
                    reads.clone(),
                    Arc::clone(&options.clock),
                    options.lease,
                ),
                reads,
                leases: LeaseHolder::start((*pool.connect_options()).clone()),
                vacuum: options
                    .vacuum_every
                    .map(|every| tokio::spawn(vacuum::run(pool.clone(), every))),
                pool,
                kept,
                appended,
                waiting: events::WaitingEvents::default(),
                listener,
                schema,
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not applied yet, under an advisory lock so that processes
    /// starting together do not race. Idempotent.
    ///
    /// # Errors
    /// When a migration fails; it is rolled back.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(db)?;
        sqlx::query(sql::MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(sql::CREATE_MIGRATIONS)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let applied: Vec<i64> = sqlx::query_scalar(sql::APPLIED_MIGRATIONS)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            sqlx::raw_sql(migration.sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(sql::RECORD_MIGRATION)
                .bind(migration.version)
                .bind(migration.name)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tracing::info!(
                version = migration.version,
                name = migration.name,
                "applied migration"
            );
        }
        tx.commit().await.map_err(db)
    }

    /// The connection pool, for running a projection's own statements in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The connections kept between the busiest statements.
    fn kept(&self) -> &KeptConnections {
        &self.inner.kept
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// `(batches, appends)` written by group commit so far; `None` when it is off.
    pub fn group_commit_stats(&self) -> Option<(u64, u64)> {
        self.inner.group.as_ref().map(GroupCommit::stats)
    }

    /// The statements the store's coalesced operations took so far, and the requests they
    /// answered: requests of this process that arrive together share a statement.
    pub fn batch_stats(&self) -> BatchStats {
        let batched = &self.inner.batched;
        BatchStats {
            stream_loads: batched.loads.stats(),
            process_finds: batched.finds.stats(),
            process_saves: batched.saves.stats(),
            enqueues: batched.enqueues.stats(),
            completions: batched.settles.stats(),
            command_removals: batched.removals.stats(),
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.inner.stop_tasks();
        // Its last statement goes out on the connections closed below.
        self.inner.notifier.inner.shutdown().await;
        self.inner.appender.kept.close().await;
        self.inner.reads.close().await;
        self.inner.kept.close().await;
    }
}

/// The codec named by the tag in column `column` (a name or an index), read without copying it.
fn codec(row: &PgRow, column: impl sqlx::ColumnIndex<PgRow>) -> Result<Codec> {
    let tag: &str = row.try_get(column).map_err(db)?;
    tag.parse().map_err(|e| corrupt("codec tag", e))
}

/// Per-queue wake-ups of this process's consumers.
#[derive(Default)]
pub(super) struct Wakers(Mutex<HashMap<String, Arc<Notify>>>);

impl Wakers {
    pub(super) fn get(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(map.entry(queue.to_owned()).or_default())
    }
}

/// How long the store's notifier gathers notifications after the first of a round, before it
/// sends them: appends, enqueues and settles of many tasks come within a millisecond or two
/// under load, and each statement wakes every other process's listening connection and the
/// process behind it. Sent as they came, a round held 1.2 notifications; gathered for 1 ms,
/// the statements an order went from 0.73 to 0.43. A consumer woken this much later lingers
/// for the arrivals that follow anyway (`ProcessorConfig::linger`).
const NOTIFY_GATHER: Duration = Duration::from_millis(1);

/// The store's notifications: appends and enqueues of this schema, each subject (a queue
/// name, or empty) sent once a round.
pub(super) struct Notifier {
    schema: String,
    inner: PgNotifier,
}

impl Notifier {
    fn start(schema: String, kept: KeptConnections) -> Self {
        Self {
            schema,
            inner: PgNotifier::start(kept, NOTIFY_GATHER),
        }
    }

    /// Queues a notification on `channel` about `subject` (a queue name, or empty).
    pub(super) fn notify(&self, channel: &'static str, subject: &str) {
        self.inner
            .notify(channel, subject, format!("{}:{subject}", self.schema));
    }
}

/// Listens for appends and enqueues of this schema, in any process, and wakes the local waiters.
async fn listen(
    pool: &PgPool,
    schema: &str,
    appended: Arc<Notify>,
    wakers: Arc<Wakers>,
) -> Result<tokio::task::JoinHandle<()>> {
    let mut listener = PgListener::connect_with(pool).await.map_err(db)?;
    listener
        .listen_all([sql::CHANNEL, sql::MESSAGES_CHANNEL])
        .await
        .map_err(db)?;
    let prefix = format!("{schema}:");
    Ok(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(notification) => {
                    let Some(subject) = notification.payload().strip_prefix(&prefix) else {
                        continue;
                    };
                    if notification.channel() == sql::CHANNEL {
                        appended.notify_one();
                    } else {
                        wakers.get(subject).notify_one();
                    }
                }
                Err(error) => {
                    // The listener reconnects on the next `recv`; waiters also poll.
                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                    appended.notify_one();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }))
}

#[cfg(test)]
pub(super) mod tests {
    /// The test database, or `None` (with a notice) when PostgreSQL tests are skipped; as the
    /// integration tests' `support::postgres_url`.
    pub(in crate::postgres) fn url() -> Option<String> {
        match std::env::var("CQRS_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var_os("CQRS_TEST_POSTGRES_REQUIRED").is_some() => {
                panic!("CQRS_TEST_POSTGRES_REQUIRED is set but CQRS_TEST_POSTGRES_URL is not")
            }
            _ => {
                eprintln!("notice: CQRS_TEST_POSTGRES_URL is not set; skipping this PostgreSQL test");
                None
            }
        }
    }
}
