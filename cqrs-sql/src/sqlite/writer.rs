//! The one writer: a thread of its own that owns the store's write connection and commits
//! everything written to the file, appends and every other write alike.
//!
//! Callers queue requests and wait for their own answer. The thread takes every request that
//! is waiting when it is free (group commit) and writes them in one transaction with one
//! durable commit: the appends as few multi-row statements, then the other writes, each of
//! several statements in a savepoint of its own. A conflicting append or a failing write
//! fails only itself; a failed commit fails them all.
//!
//! Why a thread: through sqlx, a write crossed four threads and back (the caller's task, the
//! group committer's task, sqlx's worker thread, its row channel). On this machine's virtual
//! CPUs each such hand-off cost tens of microseconds, more than SQLite's own work; a lone
//! append took about 300 µs without its `fsync`, against 50 µs from Python. Here a request
//! costs one hand-off to the thread and one back, and the thread's work is plain calls into
//! SQLite. It also means the store's writes need no tokio runtime of their own.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use cqrs_core::{AppendResult, Error, Result, SharedClock};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Notify, oneshot};

use super::batch::{Job, Typed, WriteFn, control};
use super::{direct, events};
use crate::group::AppendRequest;

/// The most events one batch takes (a larger append is written alone).
const MAX_BATCH_EVENTS: usize = events::MAX_STATEMENT_EVENTS;

/// The most other writes (settles, enqueues, process saves, …) one batch takes.
const MAX_BATCH_WRITES: usize = 256;

/// How long the writer waits for the callers it expects (see [`serve`]) before it commits
/// without them.
const GATHER_WAIT: Duration = Duration::from_micros(100);

/// How long the idle writer polls for the next request before it sleeps. A caller answered a
/// moment ago usually comes back within it, and finds the writer awake: waking a sleeping
/// thread cost tens of microseconds here, a fifth of a lone durable append (measured: 275 µs
/// per append sleeping at once, 218 µs polling first). Polling yields the CPU between tries,
/// so the callers it waits for can run on it.
const POLL_WAIT: Duration = Duration::from_micros(50);

/// How the write connection is opened.
pub(super) struct Settings {
    pub(super) synchronous: &'static str,
    pub(super) busy_timeout: Duration,
    pub(super) mmap_size: u64,
    pub(super) group_commit: bool,
    pub(super) clock: SharedClock,
    pub(super) appended: Arc<Notify>,
}

type AppendReply = oneshot::Sender<Result<AppendResult>>;

/// Work that needs the connection to itself, outside any batch (migrations).
type Exclusive = Box<dyn FnOnce(&mut Connection) + Send>;

enum Request {
    Append(AppendRequest, AppendReply),
    Write(Box<dyn Job>),
    Exclusive(Exclusive),
    Close(oneshot::Sender<()>),
}

/// Counters of group commit.
#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    appends: AtomicU64,
}

/// The handle requests go through; the thread ends when every handle is dropped or
/// [`close`](Self::close) is called.
pub(super) struct Writer {
    sender: mpsc::Sender<Request>,
    stats: Arc<Stats>,
    group_commit: bool,
}

impl Writer {
    /// Opens the write connection to `path` on a new thread and starts serving requests.
    pub(super) async fn start(path: &Path, settings: Settings) -> Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let (opened, open) = oneshot::channel();
        let stats = Arc::new(Stats::default());
        let group_commit = settings.group_commit;
        let path = path.to_owned();
        let thread_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("cqrs-sqlite-writer".into())
            .spawn(move || match connect(&path, &settings) {
                Ok(db) => {
                    let _ = opened.send(Ok(()));
                    serve(db, &receiver, &settings, &thread_stats);
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                }
            })
            .map_err(|e| Error::transient(format!("cannot start the SQLite writer thread: {e}")))?;
        open.await
            .map_err(|_| Error::transient("the SQLite writer thread ended while opening"))??;
        Ok(Self {
            sender,
            stats,
            group_commit,
        })
    }

    /// Appends in the next batch and answers with this append's own result.
    pub(super) async fn append(&self, request: AppendRequest) -> Result<AppendResult> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append(request, reply))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `write` in the next batch and answers its result once the batch has committed.
    /// `statements > 1` runs it in a savepoint of its own.
    pub(super) async fn write<T: Send + 'static>(&self, statements: usize, write: WriteFn<T>) -> Result<T> {
        let (job, answer) = Typed::new(statements, write);
        self.send(Request::Write(Box::new(job)))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Runs `work` with the connection to itself, between batches.
    pub(super) async fn exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Exclusive(Box::new(move |db| {
            let _ = reply.send(work(db));
        })))?;
        answer.await.map_err(|_| stopped())?
    }

    /// Finishes the requests queued so far, then closes the connection; later requests fail
    /// transiently.
    pub(super) async fn close(&self) {
        let (reply, closed) = oneshot::channel();
        if self.send(Request::Close(reply)).is_ok() {
            let _ = closed.await;
        }
    }

    /// `(batches, appends)` written by group commit so far; `None` when it is off.
    pub(super) fn stats(&self) -> Option<(u64, u64)> {
        self.group_commit.then(|| {
            (
                self.stats.batches.load(Ordering::Relaxed),
                self.stats.appends.load(Ordering::Relaxed),
            )
        })
    }

    fn send(&self, request: Request) -> Result<()> {
        self.sender
            .send(request)
            .map_err(|_| Error::transient("the SQLite writer has stopped"))
    }
}

fn stopped() -> Error {
    Error::transient("the SQLite writer dropped the request: it stopped, or a write of its batch panicked")
}

/// Opens the write connection: WAL, the configured durability, busy timeout and memory map.
///
/// Its statement journals stay in memory (`temp_store = MEMORY`). Every write of a batch runs
/// inside the batch's transaction, many in a savepoint of their own, so SQLite journals the
/// pages each one changes in case it has to roll that one back; past 64 KiB of them it spilled
/// the journal to a temporary file it created for each batch: about half of the writer's
/// `pwrite` calls under load, for a file deleted at the commit.
fn connect(path: &Path, settings: &Settings) -> Result<Connection> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags).map_err(direct::error)?;
    db.busy_timeout(settings.busy_timeout).map_err(direct::error)?;
    // The batch statements differ by shape (appends × events); keep the common ones prepared.
    db.set_prepared_statement_cache_capacity(128);
    db.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA mmap_size = {}; PRAGMA foreign_keys = ON; \
         PRAGMA temp_store = MEMORY;",
        settings.synchronous, settings.mmap_size
    ))
    .map_err(direct::error)?;
    Ok(db)
}

/// One batch being gathered.
#[derive(Default)]
struct Batch {
    appends: Vec<AppendRequest>,
    replies: Vec<AppendReply>,
    events: usize,
    writes: Vec<Box<dyn Job>>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The requests taken.
    fn len(&self) -> usize {
        self.appends.len() + self.writes.len()
    }

    /// Takes `request` if it fits; gives it back otherwise, or when it is not a batched one.
    fn offer(&mut self, request: Request) -> Option<Request> {
        if self.fits(&request) {
            self.take(request)
        } else {
            Some(request)
        }
    }

    /// Whether `request` still fits (an empty batch takes anything).
    fn fits(&self, request: &Request) -> bool {
        match request {
            _ if self.is_empty() => true,
            Request::Append(append, _) => self.events + append.events.len() <= MAX_BATCH_EVENTS,
            Request::Write(_) => self.writes.len() < MAX_BATCH_WRITES,
            Request::Exclusive(_) | Request::Close(_) => false,
        }
    }

    /// Takes `request` into the batch; answers the ones that are not batched.
    fn take(&mut self, request: Request) -> Option<Request> {
        match request {
            Request::Append(append, reply) => {
                self.events += append.events.len();
                self.appends.push(append);
                self.replies.push(reply);
                None
            }
            Request::Write(job) => {
                self.writes.push(job);
                None
            }
            other => Some(other),
        }
    }
}

/// Takes the requests already queued, `next` first, into `batch` (with group commit as many
/// as fit, else one); answers how many it took. One that does not fit is left in `next`.
fn take_queued(
    receiver: &mpsc::Receiver<Request>,
    batch: &mut Batch,
    next: &mut Option<Request>,
    group: bool,
) -> usize {
    let mut taken = 0;
    while group || batch.is_empty() {
        let Some(request) = next.take().or_else(|| receiver.try_recv().ok()) else {
            break;
        };
        *next = batch.offer(request);
        if next.is_some() {
            break;
        }
        taken += 1;
    }
    taken
}

/// Waits up to [`GATHER_WAIT`] for the batch to hold `expected` requests.
fn gather(
    receiver: &mpsc::Receiver<Request>,
    batch: &mut Batch,
    next: &mut Option<Request>,
    expected: usize,
) {
    let deadline = Instant::now() + GATHER_WAIT;
    while next.is_none() && batch.len() < expected {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        let Ok(request) = receiver.recv_timeout(left) else {
            return;
        };
        *next = batch.offer(request);
    }
}

/// The next request if one comes within [`POLL_WAIT`], polled between yields of the CPU.
fn poll(receiver: &mpsc::Receiver<Request>) -> Option<Request> {
    let deadline = Instant::now() + POLL_WAIT;
    loop {
        if let Ok(request) = receiver.try_recv() {
            return Some(request);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::yield_now();
    }
}

/// The thread's loop: gather what is waiting, commit it, answer, again.
///
/// Callers answered by a commit come back a few tens of microseconds later, and those that
/// arrived during it are already waiting. Taking only the latter splits a steady crowd into two
/// halves that commit in turn, each paying a whole commit. So the writer expects as many
/// requests as the last batch answered plus those that queued meanwhile, and waits up to
/// [`GATHER_WAIT`] for them; a lone caller (expecting one: itself) never waits. An idle writer
/// polls for [`POLL_WAIT`] before it sleeps.
fn serve(mut db: Connection, receiver: &mpsc::Receiver<Request>, settings: &Settings, stats: &Stats) {
    let group = settings.group_commit;
    // A request that did not fit the last batch (or is not batched): it goes first.
    let mut next: Option<Request> = None;
    let mut answered = 0;
    loop {
        let mut batch = Batch::default();
        let ready = take_queued(receiver, &mut batch, &mut next, group);
        if batch.is_empty() && next.is_none() {
            let Some(first) = poll(receiver).or_else(|| receiver.recv().ok()) else {
                return;
            };
            next = batch.offer(first);
            take_queued(receiver, &mut batch, &mut next, group);
        }
        if group {
            gather(receiver, &mut batch, &mut next, answered + ready);
        }
        answered = batch.len();
        if answered > 0 {
            let committed = panic::catch_unwind(AssertUnwindSafe(|| commit(&db, batch, settings, stats)));
            if committed.is_err() {
                // A write panicked: its batch is rolled back, and its callers, whose replies
                // were dropped, see the writer stop before answering. The writer goes on.
                if !db.is_autocommit() {
                    let _ = db.execute_batch("ROLLBACK");
                }
                tracing::error!("a write panicked; its batch was rolled back");
            }
        }
        match next.take() {
            Some(Request::Exclusive(work)) => work(&mut db),
            Some(Request::Close(reply)) => {
                drop(db);
                let _ = reply.send(());
                return;
            }
            other => next = other,
        }
    }
}

/// Writes a batch in one transaction (or one autocommit statement when it is a single
/// statement's worth of appends) and answers every request in it.
fn commit(db: &Connection, batch: Batch, settings: &Settings, stats: &Stats) {
    let Batch {
        appends,
        replies,
        mut writes,
        ..
    } = batch;
    let recorded_at = settings.clock.now().timestamp_micros();
    let steps = events::plan(&appends);
    let alone = writes.is_empty() && matches!(steps.as_slice(), [events::Step::Statement(_)]);
    let written = if alone {
        events::run(db, &appends, &steps, recorded_at, false)
    } else {
        in_transaction(db, |db| {
            let results = events::run(db, &appends, &steps, recorded_at, true)?;
            for job in &mut writes {
                job.run(db);
                if db.is_autocommit() {
                    // SQLite rolled the whole transaction back (disk full, I/O error): the
                    // writes after this one would commit on their own, and those before are gone.
                    return Err(Error::transient("SQLite rolled the batch's transaction back"));
                }
            }
            Ok(results)
        })
    };
    if !appends.is_empty() {
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.appends.fetch_add(appends.len() as u64, Ordering::Relaxed);
    }
    match written {
        Ok(results) => {
            if results
                .iter()
                .any(|r| r.as_ref().is_ok_and(|a| a.last_position > 0))
            {
                settings.appended.notify_one();
            }
            for (reply, result) in replies.into_iter().zip(results) {
                // The caller may have given up waiting; its append stands either way.
                let _ = reply.send(result);
            }
            for job in writes {
                job.finish(Ok(()));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.duplicate()));
            }
            for job in writes {
                job.finish(Err(&error));
            }
        }
    }
}

/// Runs `work` in a `BEGIN IMMEDIATE` transaction and commits it; rolls back on failure.
fn in_transaction<T>(db: &Connection, work: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    if let Err(error) = control(db, "BEGIN IMMEDIATE") {
        // A transaction left open by an interrupted batch: end it and start again.
        let _ = db.execute_batch("ROLLBACK");
        control(db, "BEGIN IMMEDIATE").map_err(|_| direct::error(error))?;
    }
    let result = work(db).and_then(|value| control(db, "COMMIT").map(|()| value).map_err(direct::error));
    if result.is_err() && !db.is_autocommit() {
        let _ = db.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use cqrs_core::uuid::Uuid;
    use cqrs_core::{Codec, EventMetadata, ExpectedVersion, NewEvent, Payload, StreamId, SystemClock};

    use super::*;
    use crate::migrate::SQLITE as MIGRATIONS;

    fn event(id: Uuid) -> NewEvent {
        NewEvent {
            event_id: id,
            payload: Payload {
                name: "Noted".into(),
                schema_version: 1,
                codec: Codec::Json,
                bytes: b"{}".to_vec().into(),
            },
            metadata: EventMetadata::default(),
        }
    }

    fn append(stream: &str, expected: ExpectedVersion, ids: &[Uuid]) -> AppendRequest {
        AppendRequest {
            stream: StreamId::new(stream),
            stream_type: "Note".into(),
            expected,
            events: ids.iter().copied().map(event).collect(),
        }
    }

    fn settings(group_commit: bool) -> Settings {
        Settings {
            synchronous: "NORMAL",
            busy_timeout: Duration::from_secs(1),
            mmap_size: 0,
            group_commit,
            clock: SystemClock::shared(),
            appended: Arc::new(Notify::new()),
        }
    }

    /// A migrated write connection on a fresh file.
    fn database(dir: &tempfile::TempDir) -> Connection {
        let db = connect(&dir.path().join("writer.db"), &settings(true)).unwrap();
        for migration in MIGRATIONS {
            db.execute_batch(migration.sql).unwrap();
        }
        db
    }

    fn count(db: &Connection, sql: &str) -> i64 {
        db.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    /// Commits `appends` and `writes` as one batch; answers the appends' results.
    fn commit_batch(
        db: &Connection,
        appends: Vec<AppendRequest>,
        writes: Vec<Box<dyn Job>>,
    ) -> Vec<Result<AppendResult>> {
        let mut batch = Batch::default();
        let mut answers = Vec::new();
        for append in appends {
            let (reply, answer) = oneshot::channel();
            assert!(batch.offer(Request::Append(append, reply)).is_none());
            answers.push(answer);
        }
        for job in writes {
            assert!(batch.offer(Request::Write(job)).is_none());
        }
        commit(db, batch, &settings(true), &Stats::default());
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap())
            .collect()
    }

    #[test]
    fn the_writer_keeps_its_statement_journals_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        // 2: MEMORY. A batch's savepoints would otherwise spill to a temporary file.
        assert_eq!(count(&db, "PRAGMA temp_store"), 2);
        assert_eq!(count(&db, "PRAGMA foreign_keys"), 1);
    }

    #[test]
    fn plan_keeps_each_streams_order_and_writes_odd_appends_alone() {
        let id = Uuid::now_v7;
        let big: Vec<Uuid> = (0..=events::MAX_STATEMENT_EVENTS).map(|_| id()).collect();
        let appends = [
            append("a", ExpectedVersion::Any, &[id()]),
            append("b", ExpectedVersion::Any, &[id(), id()]),
            append("a", ExpectedVersion::Any, &[id()]),
            append("c", ExpectedVersion::Exact(-1), &[]),
            append("d", ExpectedVersion::Any, &[id()]),
            append("e", ExpectedVersion::Any, &big),
        ];
        assert_eq!(
            events::plan(&appends),
            [
                events::Step::Statement(vec![0, 1]),
                events::Step::Statement(vec![2]),
                events::Step::Alone(3),
                events::Step::Statement(vec![4]),
                events::Step::Alone(5),
            ]
        );
    }

    #[test]
    fn a_batch_fails_only_the_appends_and_writes_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(&dir);
        let taken = Uuid::now_v7();
        commit_batch(
            &db,
            vec![append("old", ExpectedVersion::Any, &[taken])],
            Vec::new(),
        )
        .pop()
        .unwrap()
        .unwrap();

        let (good, good_answer) = Typed::new(
            1,
            Box::new(|db: &Connection| {
                db.execute("INSERT INTO cqrs_inbox VALUES ('h', 'm-1', 0)", [])
                    .map_err(direct::error)
            }),
        );
        let (bad, bad_answer) = Typed::new(
            2,
            Box::new(|db: &Connection| {
                db.execute("INSERT INTO cqrs_inbox VALUES ('h', 'm-2', 0)", [])
                    .map_err(direct::error)?;
                db.execute("INSERT INTO cqrs_inbox VALUES ('h', 'm-1', 0)", [])
                    .map_err(direct::error)
            }),
        );
        let results = commit_batch(
            &db,
            vec![
                append("x", ExpectedVersion::Exact(-1), &[Uuid::now_v7(), Uuid::now_v7()]),
                // A reused event id: its statement fails, then only this append.
                append("y", ExpectedVersion::Any, &[taken]),
                append("z", ExpectedVersion::Exact(5), &[Uuid::now_v7()]),
                append("x", ExpectedVersion::Exact(1), &[Uuid::now_v7()]),
            ],
            vec![Box::new(good), Box::new(bad)],
        );
        assert_eq!(results[0].as_ref().unwrap().last_version, 1);
        assert!(
            !results[1].as_ref().unwrap_err().is_transient(),
            "{:?}",
            results[1]
        );
        assert!(matches!(results[2], Err(Error::Conflict { actual: -1, .. })));
        assert_eq!(
            results[3].as_ref().unwrap().last_version,
            2,
            "x's second append saw its first"
        );
        let (mut good_answer, mut bad_answer) = (good_answer, bad_answer);
        assert_eq!(good_answer.try_recv().unwrap().unwrap(), 1);
        assert!(bad_answer.try_recv().unwrap().is_err());
        assert_eq!(count(&db, "SELECT count(*) FROM cqrs_events"), 4);
        assert_eq!(
            count(&db, "SELECT count(*) FROM cqrs_inbox"),
            1,
            "the failed write rolled back alone"
        );
        assert!(db.is_autocommit());
    }

    #[tokio::test]
    async fn a_panicking_write_fails_its_batch_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let writer = Writer::start(&dir.path().join("panic.db"), settings(true))
            .await
            .unwrap();
        writer
            .exclusive(|db| {
                for migration in MIGRATIONS {
                    db.execute_batch(migration.sql).map_err(direct::error)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let panics = writer.write(
            2,
            Box::new(|db: &Connection| -> Result<()> {
                db.execute("INSERT INTO cqrs_inbox VALUES ('h', 'lost', 0)", [])
                    .map_err(direct::error)?;
                panic!("a bug in a write")
            }),
        );
        let error = panics.await.unwrap_err();
        assert!(error.is_transient(), "{error}");
        let written = writer
            .write(
                1,
                Box::new(|db: &Connection| {
                    db.execute("INSERT INTO cqrs_inbox VALUES ('h', 'kept', 0)", [])
                        .map_err(direct::error)?;
                    db.query_row("SELECT count(*) FROM cqrs_inbox", [], |row| row.get::<_, i64>(0))
                        .map_err(direct::error)
                }),
            )
            .await
            .unwrap();
        assert_eq!(written, 1, "the panicking write's row was rolled back");
        writer.close().await;
        let closed = writer.write(1, Box::new(|_: &Connection| Ok(()))).await;
        assert!(closed.unwrap_err().is_transient());
    }
}
