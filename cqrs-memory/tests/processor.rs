//! Processors over the in-memory transport: retries, dead letters, expiry, undecodable
//! messages, sessions, scheduled delivery, requeue, topics and the inbox.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::transport::subscription_queue;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    AnyMessage, Backoff, BatchOutcome, Bytes, Codec, Command, CommandBatchHandler, CommandDispatcher,
    DeadLetters, Envelope, Error, EventBus, EventDispatcher, Inbox, LimitConfig, ManualClock, Message,
    MessageFilter, MessageQueue, Metadata, Payload, Processor, ProcessorConfig, Result, SystemClock,
    TopicBus, Topics, handler_fn,
};
use cqrs_memory::{MemoryInbox, MemoryTransport};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Work {
    id: Uuid,
    session: Option<String>,
    seq: u32,
}

impl Work {
    fn new(seq: u32) -> Self {
        Self {
            id: Uuid::now_v7(),
            session: None,
            seq,
        }
    }
    fn in_session(session: &str, seq: u32) -> Self {
        Self {
            id: Uuid::now_v7(),
            session: Some(session.into()),
            seq,
        }
    }
}

impl Message for Work {
    const NAME: &'static str = "test.Work";
}

impl Command for Work {
    fn command_id(&self) -> Uuid {
        self.id
    }
    fn session_id(&self) -> Option<String> {
        self.session.clone()
    }
}

fn config() -> ProcessorConfig {
    ProcessorConfig {
        backoff: Backoff::none(),
        poll_interval: Duration::from_millis(10),
        limit: LimitConfig {
            min: 4,
            max: 16,
            ..LimitConfig::default()
        },
        ..ProcessorConfig::default()
    }
}

/// A dispatcher whose `Work` handler is `handler(call number from 0, work)`, with the number of
/// calls made.
fn counted(
    handler: impl Fn(usize, Work) -> Result<()> + Send + Sync + 'static,
) -> (Arc<CommandDispatcher>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (handler, counter) = (Arc::new(handler), Arc::clone(&calls));
    let mut d = CommandDispatcher::new();
    d.register::<Work, _>(handler_fn(move |w: Work, _| {
        let (handler, counter) = (Arc::clone(&handler), Arc::clone(&counter));
        async move { handler(counter.fetch_add(1, Ordering::SeqCst), w) }
    }))
    .unwrap();
    (Arc::new(d), calls)
}

#[tokio::test]
async fn failures_are_retried_then_dead_lettered_after_five_deliveries() {
    let transport = MemoryTransport::new();
    let (handler, calls) = counted(|_, _| Err(Error::transient("database is down")));
    let processor = Processor::with_config(transport.clone(), "q", handler, SystemClock::shared(), config());
    transport
        .enqueue("q", vec![Envelope::command(Work::new(1))])
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    let dead = transport.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery_count, 5);
    assert!(
        dead[0].reason.contains("failed 5 deliveries"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("database is down"));
    assert_eq!(transport.depth("q"), 0);

    // Requeued by an operator after the fix, it is handled.
    let ok = Processor::with_config(
        transport.clone(),
        "q",
        counted(|_, _| Ok(())).0,
        SystemClock::shared(),
        config(),
    );
    transport.requeue(dead[0].id).await.unwrap();
    assert!(transport.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(ok.process_available().await.unwrap(), 1);
    assert_eq!(transport.depth("q"), 0);
    assert!(matches!(
        transport.requeue(dead[0].id).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_handler_that_recovers_completes_the_message() {
    let transport = MemoryTransport::new();
    let (handler, calls) = counted(|call, _| match call {
        0 | 1 => Err(Error::Conflict {
            stream: "s".into(),
            expected: cqrs_core::ExpectedVersion::Exact(0),
            actual: 1,
        }),
        _ => Ok(()),
    });
    let processor = Processor::with_config(transport.clone(), "q", handler, SystemClock::shared(), config());
    transport
        .enqueue("q", vec![Envelope::command(Work::new(1))])
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(transport.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(transport.depth("q"), 0);
}

/// A conflict is run again at once, within the delivery; other failures, and conflicts past
/// `conflict_retries`, wait for the backoff. The clock stands still and the backoff is an hour,
/// so a message that was abandoned is not delivered again here.
#[tokio::test]
async fn conflicts_are_run_again_at_once_other_failures_wait_for_the_backoff() {
    let conflict = || Error::Conflict {
        stream: "s".into(),
        expected: cqrs_core::ExpectedVersion::Exact(0),
        actual: 1,
    };
    let clock = ManualClock::starting_now();
    let patient = ProcessorConfig {
        backoff: Backoff {
            initial: Duration::from_secs(3600),
            jitter: 0.0,
            ..Backoff::default()
        },
        ..config()
    };
    let run = |handler| {
        let transport = MemoryTransport::with_clock(clock.shared());
        let processor =
            Processor::with_config(transport.clone(), "q", handler, clock.shared(), patient.clone());
        async move {
            transport
                .enqueue("q", vec![Envelope::command(Work::new(1))])
                .await
                .unwrap();
            processor.process_available().await.unwrap();
            transport.depth("q")
        }
    };

    let (handler, calls) = counted(move |call, _| if call < 3 { Err(conflict()) } else { Ok(()) });
    assert_eq!(run(handler).await, 0, "completed in its first delivery");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "three conflicts, then success");

    let (handler, calls) = counted(move |_, _| Err(conflict()));
    assert_eq!(run(handler).await, 1, "abandoned after the retries");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "the first run and three retries");

    let (handler, calls) = counted(|_, _| Err(Error::transient("database is down")));
    assert_eq!(run(handler).await, 1, "abandoned to the backoff");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a transient failure is not run again at once"
    );
}

#[tokio::test]
async fn a_panicking_handler_is_retried_and_dead_lettered_not_fatal() {
    let transport = MemoryTransport::new();
    let (handler, _) = counted(|_, w| if w.seq == 13 { panic!("unlucky") } else { Ok(()) });
    let processor = Processor::with_config(transport.clone(), "q", handler, SystemClock::shared(), config());
    transport
        .enqueue(
            "q",
            vec![Envelope::command(Work::new(13)), Envelope::command(Work::new(14))],
        )
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    let dead = transport.dead_letters(Some("q"), 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("panicked: unlucky"), "{}", dead[0].reason);
    assert_eq!(transport.depth("q"), 0);
}

#[tokio::test]
async fn an_expired_message_never_reaches_its_handler() {
    let clock = ManualClock::starting_now();
    let transport = MemoryTransport::with_clock(clock.shared());
    let (handler, calls) = counted(|_, _| Ok(()));
    let processor = Processor::with_config(transport.clone(), "q", handler, clock.shared(), config());
    transport
        .enqueue(
            "q",
            vec![Envelope::command(Work::new(1)).with_time_to_live(Duration::from_secs(10))],
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(11));
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let dead = transport.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.starts_with("expired"), "{}", dead[0].reason);

    // One consumed in time is handled.
    transport
        .enqueue(
            "q",
            vec![Envelope::command(Work::new(2)).with_time_to_live(Duration::from_secs(10))],
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(9));
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn undecodable_and_unhandled_messages_are_dead_lettered_at_once() {
    let transport = MemoryTransport::new();
    let (handler, calls) = counted(|_, _| Ok(()));
    let processor = Processor::with_config(transport.clone(), "q", handler, SystemClock::shared(), config());
    let garbage = Payload {
        name: Work::NAME.into(),
        schema_version: 1,
        codec: Codec::Json,
        bytes: Bytes::from_static(b"{\"id\": 12"),
    };
    let unknown = Payload {
        name: "test.Unknown".into(),
        ..garbage.clone()
    };
    transport
        .enqueue(
            "q",
            vec![
                Envelope::from_parts(AnyMessage::raw(garbage), Metadata::with_id("garbage")),
                Envelope::from_parts(AnyMessage::raw(unknown), Metadata::with_id("unknown")),
            ],
        )
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let dead = transport.dead_letters(None, 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter().all(|d| d.delivery_count == 1),
        "dead-lettered on the first delivery"
    );
    assert!(
        dead.iter().any(|d| d.reason.contains("cannot decode")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d.reason.contains("no handler registered for `test.Unknown`")),
        "{dead:?}"
    );
}

#[tokio::test]
async fn scheduled_messages_wait_for_their_time() {
    let clock = ManualClock::starting_now();
    let transport = MemoryTransport::with_clock(clock.shared());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let (handler, _) = counted(move |_, w| {
        log.lock().unwrap().push(w.seq);
        Ok(())
    });
    let processor = Processor::with_config(transport.clone(), "q", handler, clock.shared(), config());
    transport
        .enqueue(
            "q",
            vec![
                Envelope::command(Work::new(1)).with_delay(Duration::from_secs(15 * 60)),
                Envelope::command(Work::new(2)),
            ],
        )
        .await
        .unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [2]);
    clock.advance(Duration::from_secs(14 * 60));
    processor.process_available().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [2]);
    clock.advance(Duration::from_secs(60));
    processor.process_available().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_serial_inside_and_parallel_across() {
    let transport = MemoryTransport::new();
    let order: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let active: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let overlap = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let mut d = CommandDispatcher::new();
    {
        let (order, active, overlap, running, max_running) = (
            order.clone(),
            active.clone(),
            overlap.clone(),
            running.clone(),
            max_running.clone(),
        );
        d.register::<Work, _>(handler_fn(move |w: Work, _| {
            let (order, active, overlap, running, max_running) = (
                order.clone(),
                active.clone(),
                overlap.clone(),
                running.clone(),
                max_running.clone(),
            );
            async move {
                let session = w.session.clone().unwrap();
                {
                    let mut a = active.lock().unwrap();
                    let n = a.entry(session.clone()).or_default();
                    *n += 1;
                    if *n > 1 {
                        overlap.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_micros(200 + u64::from(w.seq % 7) * 100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                order
                    .lock()
                    .unwrap()
                    .entry(session.clone())
                    .or_default()
                    .push(w.seq);
                *active.lock().unwrap().get_mut(&session).unwrap() -= 1;
                // Fail some first deliveries: a retried message must still hold its session.
                if w.seq % 10 == 3 && !order.lock().unwrap()[&session].ends_with(&[w.seq, w.seq]) {
                    return Err(Error::transient("first try fails"));
                }
                Ok(())
            }
        }))
        .unwrap();
    }
    let mut cfg = config();
    cfg.limit = LimitConfig::fixed(8);
    let processor = Processor::with_config(transport.clone(), "q", Arc::new(d), SystemClock::shared(), cfg);
    let mut envelopes = Vec::new();
    for seq in 0..40 {
        for s in ["a", "b", "c", "d"] {
            envelopes.push(Envelope::command(Work::in_session(s, seq)));
        }
    }
    transport.enqueue("q", envelopes).await.unwrap();
    processor.process_available().await.unwrap();
    assert_eq!(
        overlap.load(Ordering::SeqCst),
        0,
        "one message per session at a time"
    );
    assert!(max_running.load(Ordering::SeqCst) > 1, "sessions ran in parallel");
    let order = order.lock().unwrap();
    for s in ["a", "b", "c", "d"] {
        let mut expected = Vec::new();
        for seq in 0..40 {
            expected.push(seq);
            if seq % 10 == 3 {
                expected.push(seq);
            }
        }
        assert_eq!(order[s], expected, "session {s} in order, retries in place");
    }
}

/// Handles runs of `Work` together, logging each run it is given, and fails once at `fail_at`
/// after handling the ones before it (which stay handled).
struct Batches {
    runs: Mutex<Vec<Vec<u32>>>,
    handled: Arc<Mutex<Vec<u32>>>,
    fail_at: u32,
    failed: AtomicUsize,
}

impl CommandBatchHandler for Batches {
    async fn handle_batch<'a>(&'a self, commands: &'a [&'a Envelope]) -> BatchOutcome {
        let seqs: Vec<u32> = commands
            .iter()
            .map(|e| e.message.decode::<Work>().unwrap().seq)
            .collect();
        self.runs.lock().unwrap().push(seqs.clone());
        for (i, seq) in seqs.into_iter().enumerate() {
            if seq == self.fail_at && self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
                return BatchOutcome::failed(i, Error::transient("first try fails"));
            }
            self.handled.lock().unwrap().push(seq);
        }
        BatchOutcome::handled(commands.len())
    }
}

#[tokio::test]
async fn a_session_is_handed_over_in_batches_and_a_failure_retries_from_where_it_failed() {
    let transport = MemoryTransport::new();
    let handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let batches = Arc::new(Batches {
        runs: Mutex::default(),
        handled: Arc::clone(&handled),
        fail_at: 4,
        failed: AtomicUsize::new(0),
    });
    let mut d = CommandDispatcher::new();
    let alone = Arc::clone(&handled);
    d.register::<Work, _>(handler_fn(move |w: Work, _| {
        let alone = Arc::clone(&alone);
        async move {
            alone.lock().unwrap().push(w.seq);
            Ok(())
        }
    }))
    .unwrap();
    assert!(matches!(
        d.register_batch(["test.Unknown"], Arc::clone(&batches)),
        Err(Error::NoHandler(_))
    ));
    d.register_batch([Work::NAME], Arc::clone(&batches)).unwrap();
    assert!(matches!(
        d.register_batch([Work::NAME], Arc::clone(&batches)),
        Err(Error::AlreadyRegistered(_))
    ));
    let mut cfg = config();
    cfg.max_deliveries = 2;
    let processor = Processor::with_config(transport.clone(), "q", Arc::new(d), SystemClock::shared(), cfg);
    let envelopes = (0..10)
        .map(|seq| Envelope::command(Work::in_session("s", seq)))
        .collect();
    transport.enqueue("q", envelopes).await.unwrap();
    assert_eq!(
        processor.process_available().await.unwrap(),
        11,
        "ten completed, one retried; the released ones are not settled"
    );
    assert_eq!(
        *handled.lock().unwrap(),
        (0..10).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(
        *batches.runs.lock().unwrap(),
        [(1..10).collect::<Vec<_>>(), (5..10).collect()],
        "0 and the retried 4 come alone from a receive; the rest with the completion before them"
    );
    assert!(transport.dead_letters(None, 10).await.unwrap().is_empty());
    assert_eq!(transport.depth("q"), 0);
}

/// Runs a processor of `transport`'s queue `q` with `cfg`, polling only once an hour (so that
/// whatever it takes, it takes on a wake-up or a retry), until the returned sender is used.
fn running_without_polls<H>(
    transport: &MemoryTransport,
    handler: H,
    mut cfg: ProcessorConfig,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<()>>,
)
where
    H: cqrs_core::MessageHandler + 'static,
{
    cfg.poll_interval = Duration::from_secs(3600);
    let processor = Processor::with_config(transport.clone(), "q", handler, SystemClock::shared(), cfg);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        processor
            .run_until(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

/// Waits up to two seconds for `done`.
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Enqueues work `seq` of `session` on `q`.
async fn send(transport: &MemoryTransport, session: &str, seq: u32) {
    transport
        .enqueue("q", vec![Envelope::command(Work::in_session(session, seq))])
        .await
        .unwrap();
}

#[tokio::test]
async fn run_until_wakes_on_arrival_and_drains_on_shutdown() {
    let transport = MemoryTransport::new();
    let (handler, seen) = counted(|_, _| Ok(()));
    let (stop, task) = running_without_polls(&transport, handler, config());
    tokio::task::yield_now().await;
    transport
        .enqueue("q", vec![Envelope::command(Work::new(1))])
        .await
        .unwrap();
    eventually(|| seen.load(Ordering::SeqCst) == 1).await;
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "woken by the arrival, not by polling"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_woken_processor_lingers_for_the_arrivals_that_follow() {
    let transport = MemoryTransport::new();
    let (handler, seen) = counted(|_, _| Ok(()));
    let mut cfg = config();
    cfg.linger = Duration::from_millis(300);
    let (stop, task) = running_without_polls(&transport, handler, cfg);
    tokio::task::yield_now().await;
    send(&transport, "a", 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "still lingering");
    send(&transport, "b", 2).await;
    eventually(|| seen.load(Ordering::SeqCst) == 2).await;
    assert_eq!(seen.load(Ordering::SeqCst), 2, "both taken once the linger ended");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

/// A dispatcher whose `Work` handler waits, for a work of session `a`, until a work of session
/// `b` has been handled; `fail_first` fails the first call.
fn waiting_for_b(fail_first: bool) -> Arc<CommandDispatcher> {
    let b_done = Arc::new(tokio::sync::Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut d = CommandDispatcher::new();
    d.register::<Work, _>(handler_fn(move |w: Work, _| {
        let (b_done, call) = (Arc::clone(&b_done), calls.fetch_add(1, Ordering::SeqCst));
        async move {
            if fail_first && call == 0 {
                return Err(Error::transient("not yet"));
            }
            match w.session.as_deref() {
                Some("a") => b_done.notified().await,
                _ => b_done.notify_one(),
            }
            Ok(())
        }
    }))
    .unwrap();
    Arc::new(d)
}

#[tokio::test]
async fn a_processor_takes_arrivals_while_its_tasks_run() {
    let transport = MemoryTransport::new();
    let (stop, task) = running_without_polls(&transport, waiting_for_b(false), config());
    send(&transport, "a", 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    send(&transport, "b", 2).await;
    // `a` is handled only once `b` is: `b` must be taken while `a`'s task still runs.
    eventually(|| transport.depth("q") == 0).await;
    assert_eq!(
        transport.depth("q"),
        0,
        "b taken on arrival, a completed after it"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_processor_takes_a_retry_when_it_is_due_while_its_tasks_run() {
    let transport = MemoryTransport::new();
    let mut cfg = config();
    cfg.backoff = Backoff {
        initial: Duration::from_millis(30),
        jitter: 0.0,
        ..Backoff::default()
    };
    let (stop, task) = running_without_polls(&transport, waiting_for_b(true), cfg);
    // `b` fails once and comes back after the backoff, with no arrival to wake the processor
    // and `a`'s task running until `b` is handled.
    send(&transport, "b", 1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    send(&transport, "a", 2).await;
    eventually(|| transport.depth("q") == 0).await;
    assert_eq!(transport.depth("q"), 0, "b retried when due, then a completed");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Happened(u32);
impl Message for Happened {
    const NAME: &'static str = "test.Happened";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ignored;
impl Message for Ignored {
    const NAME: &'static str = "test.Ignored";
}

#[tokio::test]
async fn topics_filter_by_name_and_the_inbox_skips_duplicates() {
    let transport = MemoryTransport::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let mut events = EventDispatcher::new();
    events
        .subscribe(Inbox::new(
            "projection",
            handler_fn(move |e: Happened, _| {
                let log = Arc::clone(&log);
                async move {
                    log.lock().unwrap().push(e.0);
                    Ok(())
                }
            }),
            MemoryInbox::new(),
        ))
        .unwrap();
    let filter = MessageFilter::names(events.names());
    transport.subscribe("events", "projection", filter).await.unwrap();
    transport
        .subscribe("events", "audit", MessageFilter::All)
        .await
        .unwrap();
    let bus = TopicBus::new(transport.clone(), "events");
    let first = Envelope::message(Happened(1));
    let duplicate = first.clone();
    bus.publish(vec![
        first,
        Envelope::message(Ignored),
        duplicate,
        Envelope::message(Happened(2)),
    ])
    .await
    .unwrap();
    let queue = subscription_queue("events", "projection");
    assert_eq!(transport.depth(&queue), 3, "the filter keeps Ignored out");
    assert_eq!(transport.depth(&subscription_queue("events", "audit")), 4);
    let processor = Processor::with_config(
        transport.clone(),
        queue.clone(),
        Arc::new(events),
        SystemClock::shared(),
        config(),
    );
    assert_eq!(processor.process_available().await.unwrap(), 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [1, 2],
        "the duplicate message id was skipped"
    );
}
