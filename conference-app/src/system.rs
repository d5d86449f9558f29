//! The running system, wired as `DOMAIN.md` §14 and `DESIGN.md` §7 describe:
//!
//! - Order, payment and seat-assignment commands go through the local-first bus and are handled
//!   in-process; whatever is not handled locally (the five SeatsAvailability commands with their
//!   per-conference session, the delayed `ExpireRegistrationProcess`, `RequirePaymentRefund`, a
//!   command whose local handling failed) goes on the `commands` queue;
//! - the store's outbox is published to the `events` topic; the registration router and the
//!   seat-assignments handler consume their subscriptions of it;
//! - the read models are catch-up projections of the event log whose rows commit with their
//!   checkpoint; the process manager's leftover commands are swept by the relay.
//!
//! [`System`] is generic over the backend (`SqliteStore` or `PgStore`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use conference_domain::management::ConferenceManagement;
use conference_domain::order::OrderHandler;
use conference_domain::payments::PaymentHandler;
use conference_domain::read_model::{
    AdminOrderGenerator, CachedConferenceQueries, ConferenceViewGenerator, DraftOrderGenerator,
    OrderSeatsGenerator, PaymentGenerator, PricedOrderGenerator,
};
use conference_domain::registration::RegistrationRouter;
use conference_domain::seat_assignments::SeatAssignmentsHandler;
use conference_domain::seats_availability::SeatsAvailabilityHandler;
use cqrs_core::transport::subscription_queue;
use cqrs_core::{
    Backoff, BusBuilder, CatchUp, CommandDispatcher, DeadLetters, Envelope, EventBus, EventDispatcher,
    EventOutbox, EventStore, InboxStore, Leases, LimitConfig, LocalFirst, MementoCache, MementoPolicy,
    MessageFilter, MessageQueue, Metrics, Partitioned, ProcessStore, Processor, ProcessorConfig, Publisher,
    QueueBus, QueueDepths, Relay, Repository, Result, SharedClock, SharedLog, TopicBus, Topics,
    run_under_lease,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::documents::Documents;
use crate::read_models::models;

/// What a backend must offer: the event store with its outbox, the process store, the inbox,
/// the queues and topics with dead letters and depths.
pub trait Backend:
    EventStore
    + EventOutbox
    + ProcessStore
    + InboxStore
    + MessageQueue
    + Topics
    + DeadLetters
    + QueueDepths
    + Leases
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Backend for T where
    T: EventStore
        + EventOutbox
        + ProcessStore
        + InboxStore
        + MessageQueue
        + Topics
        + DeadLetters
        + QueueDepths
        + Leases
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// How often a worker tries to take a lease held elsewhere: how long a publisher, relay or
/// projection stays without a runner after its holder died.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Runs `role` under the lease `name` (see [`run_under_lease`]) until `shutdown`.
async fn singleton<L, R, F>(
    leases: L,
    name: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
    role: R,
) -> Result<()>
where
    L: Leases,
    R: FnMut(BoxFuture<'static, ()>) -> F + Send,
    F: Future<Output = Result<()>> + Send,
{
    run_under_lease(&leases, &name, LEASE_RETRY, shutdown, role).await
}

/// Sets the `conference_dead_letters` gauge and one `conference_queue_depth` gauge per queue;
/// `seen` remembers the queues reported before, so that a queue that emptied goes back to 0.
///
/// # Errors
/// Store failures.
pub async fn record_queue_metrics<S: Backend>(
    store: &S,
    seen: &mut std::collections::BTreeSet<String>,
) -> Result<()> {
    let dead = store.dead_letter_count().await?;
    metrics::gauge!("conference_dead_letters").set(dead as f64);
    let depths = store.queue_depths().await?;
    for queue in seen.iter() {
        if !depths.iter().any(|(q, _)| q == queue) {
            metrics::gauge!("conference_queue_depth", "queue" => queue.clone()).set(0.0);
        }
    }
    for (queue, depth) in depths {
        metrics::gauge!("conference_queue_depth", "queue" => queue.clone()).set(depth as f64);
        seen.insert(queue);
    }
    Ok(())
}

/// The queue of commands that are not handled in-process.
pub const COMMANDS: &str = "commands";
/// The topic events are published to.
pub const EVENTS: &str = "events";

/// The command bus every part of the system sends on: metrics, then local-first dispatch, then
/// the `commands` queue.
pub type Bus<S> = Arc<Metrics<LocalFirst<QueueBus<S>>>>;

/// The read-model projections, with the models each one owns.
pub const PROJECTIONS: [(&str, &[&str]); 6] = [
    ("conference_view", &[models::CONFERENCE, models::SEAT_TYPE]),
    ("draft_order", &[models::DRAFT_ORDER]),
    (
        "priced_order",
        &[models::PRICED_ORDER, models::SEAT_TYPE_DESCRIPTION],
    ),
    ("order_seats", &[models::ORDER_SEATS]),
    ("payments", &[models::PAYMENT]),
    ("admin_orders", &[models::ADMIN_ORDER]),
];

/// The models of the projection `name`.
///
/// # Errors
/// An unknown name.
pub fn projection_models(name: &str) -> Result<&'static [&'static str]> {
    PROJECTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, models)| *models)
        .ok_or_else(|| {
            let names: Vec<&str> = PROJECTIONS.iter().map(|(n, _)| *n).collect();
            cqrs_core::Error::permanent(format!(
                "unknown read model `{name}`; one of {}",
                names.join(", ")
            ))
        })
}

/// How long a projection's checkpoint may stay unstored while its pages write nothing (a
/// commit per page would cost a durable write per published batch, per projection).
const SKIPPED_CHECKPOINTS: Duration = Duration::from_millis(500);

/// The most messages of one session a worker takes at once: a conference's SeatsAvailability
/// session (its seat commands, and its events to the registration processes) has a hundred or
/// more waiting under load. Taken 128 at a time rather than 32, they are handled with fewer
/// appends, and fewer are left for every receive to walk past: 434.7 and 442.4 orders/s against
/// 426.4 and 409.2 on PostgreSQL (20,000 orders, alternated).
const SESSION_BATCH: usize = 128;

/// How long a worker's processor woken by an arrival waits for the arrivals that follow before
/// it receives. Every enqueue wakes the consumers of its queue in both workers: at once, each
/// took three messages a receive; after 2 ms, a quarter fewer receives over a run.
const LINGER: Duration = Duration::from_millis(2);

/// The commands queue's processor.
fn command_config() -> ProcessorConfig {
    ProcessorConfig {
        session_batch: SESSION_BATCH,
        linger: LINGER,
        ..ProcessorConfig::default()
    }
}

/// The subscriptions' processors: up to 256 sessions at once. Nearly every stream is a
/// session of its own (an order, a payment), and a handler spends most of its time waiting
/// for its writes, which commit together: at 1,000 orders/s, about 4,000 registration events a
/// second, the default 64 left hundreds of them waiting and added a quarter of a second to
/// each order's confirmation.
fn subscription_config() -> ProcessorConfig {
    ProcessorConfig {
        batch_size: 128,
        session_batch: SESSION_BATCH,
        linger: LINGER,
        limit: LimitConfig {
            max: 256,
            ..LimitConfig::default()
        },
        ..ProcessorConfig::default()
    }
}

/// The checkpoint of a projection's generation.
pub fn checkpoint_name(projection: &str, generation: i64) -> String {
    crate::documents::physical_name(projection, generation)
}

/// The whole system over one backend.
pub struct System<S: Backend> {
    /// The backend.
    pub store: S,
    /// The read models.
    pub documents: Documents,
    /// The public site's cached conference lookups.
    pub conferences: Arc<CachedConferenceQueries<Documents>>,
    /// The command bus (local-first over the `commands` queue).
    pub bus: Bus<S>,
    /// The admin side.
    pub management: Arc<ConferenceManagement<S>>,
    /// The clock.
    pub clock: SharedClock,
    worker: Arc<CommandDispatcher>,
    published: watch::Sender<u64>,
    /// The log as the projections read it: woken together, they read it once.
    log: SharedLog<S>,
}

impl<S: Backend> std::fmt::Debug for System<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("documents", &self.documents)
            .finish_non_exhaustive()
    }
}

/// An event bus that tells the projections when it published: those of this process at once
/// (and their shared log that it grew), those of the other processes through the read models'
/// announcements.
#[derive(Debug, Clone)]
struct Announcing<B, S> {
    inner: B,
    published: watch::Sender<u64>,
    log: SharedLog<S>,
    documents: Documents,
}

impl<B: EventBus, S: Send + Sync> EventBus for Announcing<B, S> {
    async fn publish(&self, events: Vec<Envelope>) -> Result<()> {
        self.inner.publish(events).await?;
        log_grew(&self.log, &self.published);
        self.documents.announce_published();
        Ok(())
    }
}

/// Tells this process's projections that the log grew: the next read of their shared log goes
/// to the store, and they wake.
fn log_grew<S>(log: &SharedLog<S>, published: &watch::Sender<u64>) {
    log.invalidate();
    published.send_modify(|n| *n += 1);
}

fn in_process<S: Backend>(
    store: &S,
    documents: &Documents,
    clock: &SharedClock,
) -> Result<CommandDispatcher> {
    let mut local = CommandDispatcher::new();
    Arc::new(OrderHandler::new(
        Repository::new(store.clone()),
        documents.clone(),
        clock.clone(),
    ))
    .register(&mut local)?;
    Arc::new(PaymentHandler::new(Repository::new(store.clone()))).register(&mut local)?;
    Arc::new(SeatAssignmentsHandler::new(store.clone())).register_commands(&mut local)?;
    Ok(local)
}

impl<S: Backend> System<S> {
    /// Wires the system over `store` and `documents`.
    ///
    /// # Errors
    /// When a handler is registered twice (a wiring bug).
    pub fn new(store: S, documents: Documents, clock: SharedClock) -> Result<Self> {
        let bus: Bus<S> = Arc::new(
            BusBuilder::new()
                .metrics()
                .local_first(Arc::new(in_process(&store, &documents, &clock)?))
                .build(QueueBus::new(store.clone(), COMMANDS)),
        );
        // The worker handles everything that reaches the queue, forwarded web commands included.
        let mut worker = in_process(&store, &documents, &clock)?;
        let availability = Repository::new(store.clone())
            .with_mementos(MementoPolicy::new().cache(MementoCache::new(clock.clone())));
        Arc::new(SeatsAvailabilityHandler::new(availability)).register(&mut worker, store.clone())?;
        Arc::new(RegistrationRouter::new(store.clone(), bus.clone(), clock.clone())).register(&mut worker)?;
        Ok(Self {
            log: SharedLog::new(store.clone()),
            conferences: Arc::new(CachedConferenceQueries::new(documents.clone(), clock.clone())),
            management: Arc::new(ConferenceManagement::new(store.clone())),
            store,
            documents,
            bus,
            clock,
            worker: Arc::new(worker),
            published: watch::channel(0).0,
        })
    }

    /// The event subscriptions' dispatchers: the registration router, the seat-assignments
    /// handler.
    fn subscriptions(&self) -> Result<Vec<(&'static str, EventDispatcher)>> {
        let mut registration = EventDispatcher::new();
        Arc::new(RegistrationRouter::new(
            self.store.clone(),
            self.bus.clone(),
            self.clock.clone(),
        ))
        .subscribe(&mut registration)?;
        let mut assignments = EventDispatcher::new();
        Arc::new(SeatAssignmentsHandler::new(self.store.clone())).subscribe(&mut assignments)?;
        Ok(vec![("registration", registration), ("assignments", assignments)])
    }

    /// Creates the topic subscriptions (idempotent).
    ///
    /// # Errors
    /// Store failures.
    pub async fn subscribe(&self) -> Result<()> {
        for (name, dispatcher) in self.subscriptions()? {
            self.store
                .subscribe(EVENTS, name, MessageFilter::names(dispatcher.names()))
                .await?;
        }
        Ok(())
    }

    /// The projection `name`'s dispatcher, writing through `documents`.
    ///
    /// # Errors
    /// An unknown name, or a wiring bug.
    pub fn projection(&self, name: &str, documents: &Documents) -> Result<EventDispatcher> {
        self.projection_factory()(name, documents)
    }

    /// What builds projections, detached from `self` so that projection loops can own it.
    fn projection_factory(
        &self,
    ) -> impl Fn(&str, &Documents) -> Result<EventDispatcher> + Send + Sync + 'static {
        let (store, bus, clock, serving) = (
            self.store.clone(),
            self.bus.clone(),
            self.clock.clone(),
            self.documents.clone(),
        );
        move |name, documents| {
            let mut d = EventDispatcher::new();
            let docs = documents.clone();
            match name {
                "conference_view" => {
                    let generator =
                        ConferenceViewGenerator::new(docs, store.clone(), bus.clone(), clock.clone());
                    Arc::new(generator).subscribe(&mut d)?;
                }
                "draft_order" => {
                    Arc::new(DraftOrderGenerator::new(docs)).subscribe(&mut d)?;
                }
                "priced_order" => {
                    Arc::new(PricedOrderGenerator::new(docs, clock.clone())).subscribe(&mut d)?;
                }
                "order_seats" => {
                    Arc::new(OrderSeatsGenerator::new(docs, serving.clone())).subscribe(&mut d)?;
                }
                "payments" => {
                    Arc::new(PaymentGenerator::new(docs)).subscribe(&mut d)?;
                }
                "admin_orders" => {
                    Arc::new(AdminOrderGenerator::new(docs)).subscribe(&mut d)?;
                }
                other => {
                    projection_models(other)?;
                    unreachable!("every projection has a generator");
                }
            }
            Ok(d)
        }
    }

    /// Wakes this process's projections, until `shutdown`, whenever another process's publisher
    /// announces that it published: the publisher runs in whichever worker holds its lease, and
    /// the projections in others polled every 250 ms, which a two-worker deployment paid in
    /// every wait for a read model (a priced order 143 ms at 20 orders a second, where one
    /// worker took 13).
    fn follow_publications_elsewhere(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let mut elsewhere = self.documents.publications_elsewhere();
        let (log, published) = (self.log.clone(), self.published.clone());
        async move {
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    changed = elsewhere.changed() => {
                        if changed.is_err() {
                            return Ok(());
                        }
                        log_grew(&log, &published);
                    }
                    () = &mut shutdown => return Ok(()),
                }
            }
        }
    }

    /// Keeps this process's view of which read-model generation serves current (a `rebuild`
    /// in another process switches it), until `shutdown`.
    pub fn refresh_generations(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let documents = self.documents.clone();
        async move {
            tokio::pin!(shutdown);
            loop {
                if let Err(error) = documents.refresh_generations().await {
                    tracing::warn!(%error, "read-model generations not refreshed");
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = &mut shutdown => return Ok(()),
                }
            }
        }
    }

    /// The loop of projection `name`, started anew each time this worker takes its lease: it
    /// catches up whenever events are published (and every 250 ms), moves to a new generation
    /// of its models when a rebuild switches to it, and returns when `stop` resolves.
    fn projection_runner(
        &self,
        name: &'static str,
        models: &'static [&'static str],
    ) -> impl FnMut(BoxFuture<'static, ()>) -> BoxFuture<'static, Result<()>> + Send + 'static {
        let build = Arc::new({
            let log = self.log.clone();
            let documents = self.documents.clone();
            let system = self.projection_factory();
            // Pinned to its generation: a switch in the middle of a page changes nothing here.
            move |generation: i64| -> Result<_> {
                let pinned = documents.pinned(models.iter().map(|m| ((*m).to_owned(), generation)));
                let unit = pinned.unit_of_work();
                let dispatcher = system(name, unit.documents())?;
                let filter = MessageFilter::names(dispatcher.names());
                let checkpoint = checkpoint_name(name, generation);
                let catch_up = CatchUp::new(
                    checkpoint.clone(),
                    log.clone(),
                    unit.clone(),
                    unit.wrap(dispatcher),
                )
                .filter(filter);
                Ok((catch_up, unit, checkpoint))
            }
        });
        let documents = self.documents.clone();
        let log = self.log.clone();
        let published = self.published.subscribe();
        let model = models[0];
        move |done| {
            let (build, documents, log, mut published) = (
                Arc::clone(&build),
                documents.clone(),
                log.clone(),
                published.clone(),
            );
            async move {
                let mut generation = documents.generation(model);
                let (mut catch_up, mut unit, mut checkpoint) = build(generation)?;
                tokio::pin!(done);
                let mut failures = 0;
                loop {
                    let serving = documents.generation(model);
                    if serving != generation {
                        tracing::info!(
                            projection = name,
                            generation = serving,
                            "read model switched to a rebuilt generation"
                        );
                        generation = serving;
                        (catch_up, unit, checkpoint) = build(generation)?;
                    }
                    let caught_up = match catch_up.catch_up().await {
                        Ok(_) => unit.store_skipped(&checkpoint, SKIPPED_CHECKPOINTS).await,
                        Err(error) => Err(error),
                    };
                    let wait = match caught_up {
                        Ok(()) => {
                            failures = 0;
                            Duration::from_millis(250)
                        }
                        // Another process's runner committed this range first: nothing failed,
                        // carry on from its checkpoint at once.
                        Err(error) if error.is_conflict() => {
                            tracing::debug!(projection = name, %error, "another runner committed first");
                            continue;
                        }
                        Err(error) => {
                            failures += 1;
                            tracing::error!(projection = name, %error, failures, "projection stopped at an event; retrying");
                            Backoff::default().delay(failures)
                        }
                    };
                    tokio::select! {
                        _ = published.changed() => {}
                        // Another process may have appended (and published) meanwhile.
                        () = tokio::time::sleep(wait) => log.invalidate(),
                        () = &mut done => return Ok(()),
                    }
                }
            }
            .boxed()
        }
    }

    /// Runs the workers until `shutdown`: the command queue, the event subscriptions, the
    /// publisher, the process relay and the read-model projections.
    ///
    /// # Errors
    /// When a component cannot start; component failures after that are logged and retried
    /// by the components themselves.
    pub async fn run_workers(&self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        self.subscribe().await?;
        let (stop, stopped) = watch::channel(false);
        let stopped = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        let mut tasks = tokio::task::JoinSet::new();

        let commands = Processor::with_config(
            self.store.clone(),
            COMMANDS,
            self.worker.clone(),
            self.clock.clone(),
            command_config(),
        );
        tasks.spawn({
            let done = stopped();
            async move { commands.run_until(done).await }
        });
        for (name, dispatcher) in self.subscriptions()? {
            // A batch of one stream's events goes to many registration processes: run each
            // process's part concurrently. Seat assignments keep the session's order.
            let key = match name {
                "registration" => RegistrationRouter::<S, Bus<S>>::process_key,
                _ => |_: &Envelope| None,
            };
            let processor = Processor::with_config(
                self.store.clone(),
                subscription_queue(EVENTS, name),
                Arc::new(Partitioned::new(dispatcher, key)),
                self.clock.clone(),
                subscription_config(),
            );
            let done = stopped();
            tasks.spawn(async move { processor.run_until(done).await });
        }
        let publisher = Arc::new(Publisher::new(
            self.store.clone(),
            Announcing {
                inner: TopicBus::new(self.store.clone(), EVENTS),
                published: self.published.clone(),
                log: self.log.clone(),
                documents: self.documents.clone(),
            },
            self.clock.clone(),
        ));
        // One publisher, one relay and one runner per projection among all the workers: each
        // runs under a lease, and another worker takes over when its holder stops or dies.
        let leases = self.store.clone();
        tasks.spawn(singleton(
            leases.clone(),
            "publisher".to_owned(),
            stopped(),
            move |stop| {
                let publisher = Arc::clone(&publisher);
                async move { publisher.run_until(stop).await }
            },
        ));
        let relay = Arc::new(Relay::new(
            self.store.clone(),
            self.bus.clone(),
            self.clock.clone(),
        ));
        tasks.spawn(singleton(
            leases.clone(),
            "relay".to_owned(),
            stopped(),
            move |stop| {
                let relay = Arc::clone(&relay);
                async move { relay.run_until(stop).await }
            },
        ));
        for (name, models) in PROJECTIONS {
            let runner = self.projection_runner(name, models);
            tasks.spawn(singleton(
                leases.clone(),
                format!("projection:{name}"),
                stopped(),
                runner,
            ));
        }
        tasks.spawn(self.refresh_generations(stopped()));
        tasks.spawn(self.follow_publications_elsewhere(stopped()));

        shutdown.await;
        let _ = stop.send(true);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Err(error)) => tracing::error!(%error, "a worker stopped with an error"),
                Err(error) => tracing::error!(%error, "a worker panicked"),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }
}
