//! Across processes, on PostgreSQL: two consumer processes (this binary, re-executed) compete
//! for one queue of 4 sessions × 25 messages. One is killed with SIGKILL in the middle of a
//! message. The survivor takes its messages over when the lease runs out; at the end every
//! message has been handled to completion, each session's messages handled in order (going back
//! only where the survivor took over what the victim had not completed), and no session ever had
//! two messages (or one message twice) in hand at once, across processes.
//!
//! Runs without the test harness so it can re-execute itself as a consumer.

mod support;

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::chrono::{DateTime, Utc};
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    CommandDispatcher, CommandHandler, Envelope, LimitConfig, Message, MessageQueue, Metadata, Processor,
    ProcessorConfig, Result, SystemClock,
};
use cqrs_sql::{PgOptions, PgStore};
use serde::{Deserialize, Serialize};
use sqlx::Row;

const ROLE: &str = "CQRS_PROCESSES_ROLE";
const SCHEMA: &str = "CQRS_PROCESSES_SCHEMA";
const QUEUE: &str = "work";
const SESSIONS: usize = 4;
const PER_SESSION: i32 = 25;
const LEASE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    id: Uuid,
    session: String,
    seq: i32,
}

impl Message for Work {
    const NAME: &'static str = "test.Work";
}

impl cqrs_core::Command for Work {
    fn command_id(&self) -> Uuid {
        self.id
    }
    fn session_id(&self) -> Option<String> {
        Some(self.session.clone())
    }
}

/// Logs each handling's start and end (database clock), taking a while in between.
struct LogWork {
    store: PgStore,
    consumer: String,
}

impl CommandHandler<Work> for LogWork {
    async fn handle(&self, work: &Work, _: &Metadata) -> Result<()> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO work_log (session, seq, consumer, started_at) VALUES ($1, $2, $3, clock_timestamp()) RETURNING id",
        )
        .bind(&work.session)
        .bind(work.seq)
        .bind(&self.consumer)
        .fetch_one(self.store.pool())
        .await
        .map_err(cqrs_core::Error::transient)?;
        tokio::time::sleep(Duration::from_millis(30)).await;
        sqlx::query("UPDATE work_log SET finished_at = clock_timestamp() WHERE id = $1")
            .bind(id)
            .execute(self.store.pool())
            .await
            .map_err(cqrs_core::Error::transient)?;
        Ok(())
    }
}

async fn connect(url: String, schema: &str) -> PgStore {
    PgStore::connect_with(PgOptions::new(url).schema(schema).lease(LEASE).max_connections(4))
        .await
        .expect("the test database is reachable")
}

/// The consumer process: runs a processor on the queue until killed.
async fn consume(url: String, schema: String, name: String) {
    let store = connect(url, &schema).await;
    let mut dispatcher = CommandDispatcher::new();
    dispatcher
        .register::<Work, _>(LogWork {
            store: store.clone(),
            consumer: name,
        })
        .unwrap();
    // Two sessions at a time: a consumer keeps a session while it has messages due (each
    // completion hands it the next ones), so one holding all four would leave the other idle.
    let config = ProcessorConfig {
        poll_interval: Duration::from_millis(200),
        limit: LimitConfig::fixed(2),
        ..ProcessorConfig::default()
    };
    let processor = Processor::with_config(store, QUEUE, Arc::new(dispatcher), SystemClock::shared(), config);
    processor.run_until(std::future::pending()).await.unwrap();
}

/// A consumer process, killed when dropped: a failing test must not leave consumers running
/// (they would also hold the test's output open).
struct Consumer(Child);

impl Consumer {
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the consumer");
        self.0.wait().expect("the consumer is reaped");
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_consumer(url: &str, schema: &str, name: &str) -> Consumer {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, name)
        .env(SCHEMA, schema)
        .env(support::POSTGRES_URL, url)
        .spawn()
        .map(Consumer)
        .expect("a consumer process starts")
}

#[derive(Debug)]
struct Handling {
    session: String,
    seq: i32,
    consumer: String,
    started: DateTime<Utc>,
    finished: Option<DateTime<Utc>>,
}

async fn log(store: &PgStore) -> Vec<Handling> {
    sqlx::query(
        "SELECT session, seq, consumer, started_at, finished_at FROM work_log ORDER BY started_at, id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| Handling {
        session: r.get("session"),
        seq: r.get("seq"),
        consumer: r.get("consumer"),
        started: r.get("started_at"),
        finished: r.get("finished_at"),
    })
    .collect()
}

async fn wait_for(store: &PgStore, what: &str, done: impl Fn(&[Handling]) -> bool) -> Vec<Handling> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let entries = log(store).await;
        if done(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn orchestrate(url: String) {
    let schema = support::fresh_schema("processes");
    let store = connect(url.clone(), &schema).await;
    sqlx::raw_sql(
        "CREATE TABLE work_log (id BIGSERIAL PRIMARY KEY, session TEXT NOT NULL, seq INT NOT NULL, \
         consumer TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let mut envelopes = Vec::new();
    for seq in 0..PER_SESSION {
        for s in 0..SESSIONS {
            let work = Work {
                id: Uuid::now_v7(),
                session: format!("session-{s}"),
                seq,
            };
            envelopes.push(Envelope::command(work));
        }
    }
    store.enqueue(QUEUE, envelopes).await.unwrap();

    let mut victim = spawn_consumer(&url, &schema, "victim");
    let mut survivor = spawn_consumer(&url, &schema, "survivor");

    // Kill the victim while it holds a message: after it finished a dozen, once it has one open.
    wait_for(&store, "the victim to get going", |log| {
        log.iter()
            .filter(|h| h.consumer == "victim" && h.finished.is_some())
            .count()
            >= 12
            && log.iter().any(|h| h.consumer == "victim" && h.finished.is_none())
    })
    .await;
    victim.kill();
    let killed_at: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(store.pool())
        .await
        .unwrap();

    let total = SESSIONS * PER_SESSION as usize;
    let log = wait_for(&store, "every message to complete", |log| {
        let mut done: Vec<(&str, i32)> = log
            .iter()
            .filter(|h| h.finished.is_some())
            .map(|h| (h.session.as_str(), h.seq))
            .collect();
        done.sort_unstable();
        done.dedup();
        done.len() == total
    })
    .await;
    survivor.kill();

    let abandoned: Vec<&Handling> = log.iter().filter(|h| h.finished.is_none()).collect();
    assert!(!abandoned.is_empty(), "the victim died holding a message");
    assert!(abandoned.iter().all(|h| h.consumer == "victim"));
    for lost in &abandoned {
        let retaken = log
            .iter()
            .find(|h| h.session == lost.session && h.seq == lost.seq && h.finished.is_some())
            .expect("a message the victim held was completed by the survivor");
        assert_eq!(retaken.consumer, "survivor");
        assert!(
            retaken.started >= killed_at,
            "taken over only after the victim died (its lease ran out)"
        );
    }
    let victims = log
        .iter()
        .filter(|h| h.consumer == "victim" && h.finished.is_some())
        .count();
    assert!(victims >= 12, "the victim consumed before it died");
    let survivor_before = log
        .iter()
        .filter(|h| h.consumer == "survivor" && h.finished.is_some_and(|f| f < killed_at))
        .count();
    assert!(
        survivor_before > 0,
        "both processes consumed at the same time (competing consumers)"
    );
    let survivors = log
        .iter()
        .filter(|h| h.consumer == "survivor" && h.finished.is_some())
        .count();
    println!(
        "victim completed {victims}, survivor {survivors}; {} held by the victim at SIGKILL, all taken over",
        abandoned.len()
    );

    let mut by_session: HashMap<&str, Vec<&Handling>> = HashMap::new();
    for h in &log {
        by_session.entry(&h.session).or_default().push(h);
    }
    for (session, handlings) in by_session {
        // One message at a time per session, across processes: no two handlings overlap. A
        // handling the victim never finished ended when it was killed.
        for pair in handlings.windows(2) {
            let end = pair[0].finished.unwrap_or(killed_at);
            assert!(
                pair[1].started >= end,
                "{session}: {:?} overlaps {:?}",
                pair[1],
                pair[0]
            );
        }
        // In order: each message after the one before. The sequence goes back only where the
        // survivor took the session over from the victim: a batch of a session's messages is
        // completed together, so those of the victim's last batch it had handled are handled
        // again (at least once), from the first it had not completed.
        let completed: Vec<&Handling> = handlings
            .iter()
            .copied()
            .filter(|h| h.finished.is_some())
            .collect();
        for pair in completed.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            let taken_over = before.consumer == "victim" && after.consumer == "survivor";
            assert!(
                after.seq == before.seq + 1 || (taken_over && after.seq <= before.seq + 1),
                "{session} handled in order: {after:?} after {before:?}"
            );
        }
        assert_eq!(completed[0].seq, 0);
        assert_eq!(completed.last().unwrap().seq, PER_SESSION - 1);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(name) = std::env::var(ROLE) {
        let url = std::env::var(support::POSTGRES_URL).unwrap();
        let schema = std::env::var(SCHEMA).unwrap();
        runtime.block_on(consume(url, schema, name));
        return;
    }
    let Some(url) = support::postgres_url() else {
        println!("0 passed, 0 failed, 1 skipped");
        return;
    };
    runtime.block_on(orchestrate(url));
    println!("consumers_across_processes_survive_a_kill: 1 passed, 0 failed");
}
