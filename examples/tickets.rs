//! Run with: cargo run --example tickets
//!
//! A ticket office in one file, on the in-memory backends:
//!
//!   main ──ReserveSeats──▶ local-first bus ──(no local handler)──▶ queue "shows" (session per show)
//!   Processor ──▶ Show aggregate ──SeatsReserved──▶ event store + outbox (one atomic append)
//!   Publisher ──▶ topic "events" ──▶ subscription "seats-left" ──▶ projection (a read model)
//!                                └──▶ subscription "checkout"   ──▶ Checkout process manager
//!   Checkout stores its state and EmailTickets together (its outbox), then sends EmailTickets
//!   through the local-first bus, which handles it in-process.
//!
//! Every step is driven explicitly (process_available / publish_pending) so the output reads in
//! order; a real program runs the same components with `run_until` as background tasks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use cqrs_core::transport::subscription_queue;
use cqrs_core::uuid::Uuid;
use cqrs_core::{
    Aggregate, Backoff, BusBuilder, Command, CommandBus, CommandDispatcher, CommandHandler, Envelope, Error,
    EventDispatcher, EventHandler, Message, MessageFilter, Metadata, Process, ProcessRepository,
    ProcessState, Processor, ProcessorConfig, Publisher, QueueBus, Repository, Result, Root, SystemClock,
    TopicBus, Topics, event_set,
};
use cqrs_memory::{MemoryEventStore, MemoryProcessStore, MemoryTransport};
use serde::{Deserialize, Serialize};

// ----- Messages: every type has a stable name. ------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ShowScheduled {
    seats: u32,
}
impl Message for ShowScheduled {
    const NAME: &'static str = "tickets.ShowScheduled";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SeatsReserved {
    order: Uuid,
    seats: u32,
}
impl Message for SeatsReserved {
    const NAME: &'static str = "tickets.SeatsReserved";
}

event_set! {
    #[derive(Debug, Clone, PartialEq)]
    enum ShowEvent { ShowScheduled(ShowScheduled), SeatsReserved(SeatsReserved) }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReserveSeats {
    id: Uuid,
    show: Uuid,
    order: Uuid,
    seats: u32,
}
impl Message for ReserveSeats {
    const NAME: &'static str = "tickets.ReserveSeats";
}
impl Command for ReserveSeats {
    fn command_id(&self) -> Uuid {
        self.id
    }
    // A show is changed by one handler at a time: a single writer per aggregate.
    fn session_id(&self) -> Option<String> {
        Some(format!("Show_{}", self.show))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmailTickets {
    id: Uuid,
    order: Uuid,
}
impl Message for EmailTickets {
    const NAME: &'static str = "tickets.EmailTickets";
}
impl Command for EmailTickets {
    fn command_id(&self) -> Uuid {
        self.id
    }
}

// ----- The aggregate: state, `apply`, and deciding methods that return events. -----------------

#[derive(Debug, Default)]
struct Show {
    seats_left: u32,
}

/// A domain error: any `std::error::Error` will do.
#[derive(Debug)]
struct SoldOut {
    left: u32,
}
impl fmt::Display for SoldOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "only {} seats left", self.left)
    }
}
impl std::error::Error for SoldOut {}

impl Aggregate for Show {
    const TYPE: &'static str = "Show";
    type Event = ShowEvent;
    fn new(_id: Uuid) -> Self {
        Self::default()
    }
    fn apply(&mut self, event: &ShowEvent) {
        match event {
            ShowEvent::ShowScheduled(e) => self.seats_left = e.seats,
            ShowEvent::SeatsReserved(e) => self.seats_left -= e.seats,
        }
    }
}

impl Show {
    fn reserve(&self, order: Uuid, seats: u32) -> Result<Vec<ShowEvent>, SoldOut> {
        if seats > self.seats_left {
            return Err(SoldOut {
                left: self.seats_left,
            });
        }
        Ok(vec![SeatsReserved { order, seats }.into()])
    }
}

type Shows = Repository<Show, MemoryEventStore>;

struct ReserveSeatsHandler(Shows);

impl CommandHandler<ReserveSeats> for ReserveSeatsHandler {
    async fn handle(&self, command: &ReserveSeats, metadata: &Metadata) -> Result<()> {
        let mut show = self.0.get(command.show).await?;
        show.execute(|s| s.reserve(command.order, command.seats))
            .map_err(Error::domain)?;
        // Events carry the command's id as their correlation id.
        self.0.save(&mut show, metadata).await?;
        println!(
            "  [show]       reserved {} seats for order {}; {} left",
            command.seats,
            short(command.order),
            show.seats_left
        );
        Ok(())
    }
}

/// The show a published event belongs to: its stream is `Show-<id>`.
fn show_of(metadata: &Metadata) -> Uuid {
    metadata
        .source
        .as_ref()
        .and_then(|s| s.stream_id.aggregate_id())
        .expect("published events know their stream")
}

// ----- A projection: a read model kept up to date from events. --------------------------------

#[derive(Clone, Default)]
struct SeatsLeft(Arc<Mutex<BTreeMap<Uuid, i64>>>);

impl EventHandler<SeatsReserved> for SeatsLeft {
    async fn handle(&self, event: &SeatsReserved, metadata: &Metadata) -> Result<()> {
        let show = show_of(metadata);
        let mut view = self.0.lock().unwrap();
        *view.entry(show).or_default() -= i64::from(event.seats);
        println!(
            "  [projection] show {} now has {} seats left",
            short(show),
            view[&show]
        );
        Ok(())
    }
}

impl EventHandler<ShowScheduled> for SeatsLeft {
    async fn handle(&self, event: &ShowScheduled, metadata: &Metadata) -> Result<()> {
        let show = show_of(metadata);
        self.0.lock().unwrap().insert(show, i64::from(event.seats));
        println!(
            "  [projection] show {} scheduled with {} seats",
            short(show),
            event.seats
        );
        Ok(())
    }
}

// ----- A process manager: its state and outgoing commands are saved together. ------------------

#[derive(Debug, Serialize, Deserialize)]
struct Checkout {
    order: Uuid,
    emailed: bool,
}

impl ProcessState for Checkout {
    const TYPE: &'static str = "tickets.Checkout";
    fn is_completed(&self) -> bool {
        self.emailed
    }
    fn key(&self) -> Option<String> {
        Some(self.order.to_string())
    }
}

struct CheckoutRouter<B: CommandBus>(ProcessRepository<Checkout, MemoryProcessStore, B>);

impl<B: CommandBus + 'static> EventHandler<SeatsReserved> for CheckoutRouter<B> {
    async fn handle(&self, event: &SeatsReserved, metadata: &Metadata) -> Result<()> {
        let key = event.order.to_string();
        let mut process = match self.0.find_by_key(&key, true).await? {
            Some(process) if process.is_completed() => return Ok(()), // a duplicate: nothing to do
            Some(process) => process,
            None => Process::new(
                Uuid::now_v7(),
                Checkout {
                    order: event.order,
                    emailed: false,
                },
            ),
        };
        // Every command sent while handling this event is stamped as caused by it.
        process.caused_by(metadata).emailed = true;
        process.send(Envelope::command(EmailTickets {
            id: Uuid::now_v7(),
            order: event.order,
        }));
        println!(
            "  [checkout]   order {} reserved: saving state + EmailTickets atomically",
            short(event.order)
        );
        self.0.save(&mut process).await
    }
}

struct EmailTicketsHandler;

impl CommandHandler<EmailTickets> for EmailTicketsHandler {
    async fn handle(&self, command: &EmailTickets, metadata: &Metadata) -> Result<()> {
        println!(
            "  [email]      tickets for order {} sent in-process (correlation {})",
            short(command.order),
            metadata
                .correlation_id
                .as_deref()
                .and_then(|c| c.parse().ok())
                .map_or_else(|| "-".to_owned(), short)
        );
        Ok(())
    }
}

/// The last 8 hex digits: v7 UUIDs made together share their leading (time) digits.
fn short(id: Uuid) -> String {
    id.simple().to_string()[24..].to_owned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let clock = SystemClock::shared();
    let store = MemoryEventStore::new();
    let transport = MemoryTransport::new();
    let shows: Shows = Repository::new(store.clone());

    // Commands with a local handler run in-process; the rest go to the "shows" queue.
    let mut local = CommandDispatcher::new();
    local.register::<EmailTickets, _>(EmailTicketsHandler)?;
    let bus = Arc::new(
        BusBuilder::new()
            .trace()
            .local_first(Arc::new(local))
            .build(QueueBus::new(transport.clone(), "shows")),
    );

    // The worker side: the show handler behind the queue.
    let mut workers = CommandDispatcher::new();
    workers.register::<ReserveSeats, _>(ReserveSeatsHandler(shows.clone()))?;
    // No backoff between retries, so the refused order reaches the dead letters at once.
    let retry_at_once = ProcessorConfig {
        backoff: Backoff::none(),
        ..ProcessorConfig::default()
    };
    let show_worker = Processor::with_config(
        transport.clone(),
        "shows",
        Arc::new(workers),
        clock.clone(),
        retry_at_once,
    );

    // Events: outbox → topic → two filtered subscriptions.
    let projection = SeatsLeft::default();
    let mut read_side = EventDispatcher::new();
    read_side
        .subscribe::<ShowScheduled, _>(projection.clone())?
        .subscribe::<SeatsReserved, _>(projection.clone())?;
    let mut process_side = EventDispatcher::new();
    let checkouts = ProcessRepository::new(MemoryProcessStore::new(), Arc::clone(&bus), clock.clone());
    process_side.subscribe::<SeatsReserved, _>(CheckoutRouter(checkouts))?;
    for (name, dispatcher) in [("seats-left", &read_side), ("checkout", &process_side)] {
        transport
            .subscribe("events", name, MessageFilter::names(dispatcher.names()))
            .await?;
    }
    let publisher = Publisher::new(
        store.clone(),
        TopicBus::new(transport.clone(), "events"),
        clock.clone(),
    );
    let read_worker = Processor::new(
        transport.clone(),
        subscription_queue("events", "seats-left"),
        Arc::new(read_side),
        clock.clone(),
    );
    let process_worker = Processor::new(
        transport.clone(),
        subscription_queue("events", "checkout"),
        Arc::new(process_side),
        clock.clone(),
    );

    println!("1. schedule a show with 10 seats (saved straight through the repository)");
    let show_id = Uuid::now_v7();
    let mut show = Root::<Show>::new(show_id);
    show.record(ShowScheduled { seats: 10 });
    shows.save(&mut show, None).await?;

    println!("2. two orders ask for 4 and 7 seats: no local handler, so they go to the queue");
    for seats in [4, 7] {
        bus.send(Envelope::command(ReserveSeats {
            id: Uuid::now_v7(),
            show: show_id,
            order: Uuid::now_v7(),
            seats,
        }))
        .await?;
    }

    println!("3. the show worker handles the queue, one command at a time for this show");
    show_worker.process_available().await?;

    println!("4. the publisher moves the outbox to the topic; the subscriptions run");
    let published = publisher.publish_pending().await?;
    println!("  [publisher]  {published} events published");
    read_worker.process_available().await?;
    process_worker.process_available().await?;

    let dead = cqrs_core::DeadLetters::dead_letters(&transport, None, 10).await?;
    println!("5. the 7-seat order was refused by the domain; after 5 deliveries it is a dead letter:");
    for letter in dead {
        println!("  [dead]       {} — {}", letter.envelope.name(), letter.reason);
    }
    Ok(())
}
