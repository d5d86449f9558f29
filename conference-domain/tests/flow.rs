//! The whole domain wired as `DOMAIN.md` §14 describes, on the memory backends: local-first
//! commands, SeatsAvailability commands on a queue with the conference's session, a delayed
//! expiry, the publisher and one processor per subscription. A paid order, a partial one that
//! expires, and a payment that arrives too late, with the invariants checked after each step.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use conference_domain::commands::{
    AssignRegistrantDetails, AssignSeat, CompleteThirdPartyProcessorPayment,
    InitiateThirdPartyProcessorPayment, RegisterToConference,
};
use conference_domain::management::{ConferenceDetails, ConferenceManagement, SeatTypeDetails};
use conference_domain::order::{Order, OrderHandler};
use conference_domain::payments::{PaymentHandler, PaymentState};
use conference_domain::read_model::*;
use conference_domain::registration::RegistrationRouter;
use conference_domain::seat_assignments::{SeatAssignmentsHandler, seat_assignments_id};
use conference_domain::seats_availability::{SeatsAvailability, SeatsAvailabilityHandler};
use conference_domain::values::{Owner, PersonalInfo, SeatQuantity};
use cqrs_core::transport::subscription_queue;
use cqrs_core::{
    Backoff, BusBuilder, Command, CommandBus, CommandDispatcher, Envelope, EventDispatcher, ManualClock,
    MementoCache, MementoPolicy, MessageFilter, Processor, ProcessorConfig, Publisher, QueueBus, Repository,
    SharedClock, TopicBus, Topics,
};
use cqrs_memory::{MemoryEventStore, MemoryProcessStore, MemoryTransport};
use support::{money, t0};
use uuid::Uuid;

type Bus = Arc<cqrs_core::LocalFirst<QueueBus<MemoryTransport>>>;

struct System {
    clock: Arc<ManualClock>,
    store: MemoryEventStore,
    models: MemoryReadModels,
    transport: MemoryTransport,
    bus: Bus,
    admin: ConferenceManagement<MemoryEventStore>,
    publisher: Publisher<MemoryEventStore, TopicBus<MemoryTransport>>,
    commands: Processor<MemoryTransport, Arc<CommandDispatcher>>,
    subscriptions: Vec<Processor<MemoryTransport, Arc<EventDispatcher>>>,
}

impl System {
    async fn new() -> Self {
        let clock = Arc::new(ManualClock::new(t0()));
        let shared: SharedClock = clock.clone();
        let store = MemoryEventStore::new();
        let transport = MemoryTransport::with_clock(shared.clone());
        let models = MemoryReadModels::new();
        let processes = Arc::new(MemoryProcessStore::new());

        // In-process handlers: the Order, payment and seat-assignment commands.
        let assignments = Arc::new(SeatAssignmentsHandler::new(store.clone()));
        let mut local = CommandDispatcher::new();
        Arc::new(OrderHandler::new(
            Repository::new(store.clone()),
            models.clone(),
            shared.clone(),
        ))
        .register(&mut local)
        .unwrap();
        Arc::new(PaymentHandler::new(Repository::new(store.clone())))
            .register(&mut local)
            .unwrap();
        assignments.clone().register_commands(&mut local).unwrap();
        let bus: Bus = Arc::new(
            BusBuilder::new()
                .local_first(Arc::new(local))
                .build(QueueBus::new(transport.clone(), "commands")),
        );

        // The command queue: SeatsAvailability (one session per conference) and the timer.
        let router = Arc::new(RegistrationRouter::new(
            processes.clone(),
            bus.clone(),
            shared.clone(),
        ));
        let mut remote = CommandDispatcher::new();
        let availability = Repository::new(store.clone())
            .with_mementos(MementoPolicy::new().cache(MementoCache::new(shared.clone())));
        Arc::new(SeatsAvailabilityHandler::new(availability))
            .register(&mut remote, Arc::new(cqrs_memory::MemoryInbox::new()))
            .unwrap();
        router.clone().register(&mut remote).unwrap();
        let config = ProcessorConfig {
            backoff: Backoff::none(),
            ..ProcessorConfig::default()
        };
        let commands = Processor::with_config(
            transport.clone(),
            "commands",
            Arc::new(remote),
            shared.clone(),
            config.clone(),
        );

        // One subscription per consumer of events.
        let mut registration = EventDispatcher::new();
        router.subscribe(&mut registration).unwrap();
        let mut assignment = EventDispatcher::new();
        assignments.subscribe(&mut assignment).unwrap();
        let mut views = EventDispatcher::new();
        Arc::new(DraftOrderGenerator::new(models.clone()))
            .subscribe(&mut views)
            .unwrap();
        Arc::new(PricedOrderGenerator::new(models.clone(), shared.clone()))
            .subscribe(&mut views)
            .unwrap();
        Arc::new(ConferenceViewGenerator::new(
            models.clone(),
            processes,
            bus.clone(),
            shared.clone(),
        ))
        .subscribe(&mut views)
        .unwrap();
        Arc::new(OrderSeatsGenerator::new(models.clone(), models.clone()))
            .subscribe(&mut views)
            .unwrap();
        Arc::new(PaymentGenerator::new(models.clone()))
            .subscribe(&mut views)
            .unwrap();
        Arc::new(AdminOrderGenerator::new(models.clone()))
            .subscribe(&mut views)
            .unwrap();
        let mut subscriptions = Vec::new();
        for (name, dispatcher) in [
            ("registration", registration),
            ("assignments", assignment),
            ("views", views),
        ] {
            transport
                .subscribe("events", name, MessageFilter::names(dispatcher.names()))
                .await
                .unwrap();
            subscriptions.push(Processor::with_config(
                transport.clone(),
                subscription_queue("events", name),
                Arc::new(dispatcher),
                shared.clone(),
                config.clone(),
            ));
        }
        let publisher = Publisher::new(store.clone(), TopicBus::new(transport.clone(), "events"), shared);
        Self {
            clock,
            admin: ConferenceManagement::new(store.clone()),
            store,
            models,
            transport,
            bus,
            publisher,
            commands,
            subscriptions,
        }
    }

    /// Runs publisher and processors until nothing moves.
    async fn settle(&self) {
        loop {
            let mut moved = self.publisher.publish_pending().await.unwrap();
            moved += self.commands.process_available().await.unwrap();
            for subscription in &self.subscriptions {
                moved += subscription.process_available().await.unwrap();
            }
            if moved == 0 {
                return;
            }
        }
    }

    async fn send(&self, command: impl Command) {
        self.bus.send(Envelope::command(command)).await.unwrap();
    }

    async fn available(&self, seat_type: Uuid) -> i32 {
        let row = ConferenceViewStore::seat_type(&self.models, seat_type)
            .await
            .unwrap();
        row.expect("a seat-type row").available_quantity
    }

    async fn order(&self, id: Uuid) -> cqrs_core::Root<Order> {
        Repository::<Order, _>::new(self.store.clone())
            .get(id)
            .await
            .unwrap()
    }

    /// Checks §14's invariant: per seat type, available + pending + sold = total.
    async fn audit(&self, conference: Uuid, sold: &[(Uuid, i32)]) {
        let availability = Repository::<SeatsAvailability, _>::new(self.store.clone())
            .get(conference)
            .await
            .unwrap();
        for row in ConferenceViewStore::seat_types(&self.models, conference)
            .await
            .unwrap()
        {
            let pending: i32 = availability
                .pending_reservations()
                .values()
                .flatten()
                .filter(|s| s.seat_type == row.id)
                .map(|s| s.quantity)
                .sum();
            let sold = sold.iter().filter(|s| s.0 == row.id).map(|s| s.1).sum::<i32>();
            assert_eq!(
                availability.remaining(row.id),
                Some(row.available_quantity),
                "the view agrees"
            );
            assert_eq!(
                row.available_quantity + pending + sold,
                row.quantity,
                "seats conserved for {}",
                row.name
            );
        }
    }
}

fn conference() -> ConferenceDetails {
    ConferenceDetails {
        name: "RustConf".into(),
        description: "All things Rust".into(),
        location: "Montréal".into(),
        slug: "rustconf".into(),
        tagline: None,
        twitter_search: None,
        start_date: t0() + TimeDelta::days(30),
        end_date: t0() + TimeDelta::days(32),
        owner: Owner {
            name: "Ferris".into(),
            email: "ferris@example.org".into(),
        },
    }
}

fn seat_type(name: &str, quantity: i32, price: &str) -> SeatTypeDetails {
    SeatTypeDetails {
        name: name.into(),
        description: format!("{name} pass"),
        quantity,
        price: money(price),
    }
}

#[tokio::test]
async fn orders_are_paid_expired_and_refunded_without_losing_a_seat() {
    let system = System::new().await;
    let conf = system.admin.create(conference()).await.unwrap().id();
    let full = system
        .admin
        .create_seat_type(conf, seat_type("Full", 10, "100"))
        .await
        .unwrap();
    let student = system
        .admin
        .create_seat_type(conf, seat_type("Student", 10, "0"))
        .await
        .unwrap();
    system.admin.publish(conf).await.unwrap();
    system.settle().await;
    let view = system
        .models
        .conference_details("rustconf")
        .await
        .unwrap()
        .unwrap();
    assert!(view.is_published);
    let available: Vec<i32> = system
        .models
        .published_seat_types(conf)
        .await
        .unwrap()
        .iter()
        .map(|t| t.available_quantity)
        .collect();
    assert_eq!(available, [10, 10]);

    // A paid order.
    let paid = Uuid::now_v7();
    let seats = vec![SeatQuantity::new(full, 3), SeatQuantity::new(student, 0)];
    system.send(RegisterToConference::new(paid, conf, seats)).await;
    let priced = system.models.priced_order(paid).await.unwrap();
    assert!(priced.is_none(), "nothing is published until the publisher runs");
    system.settle().await;
    let priced = system.models.priced_order(paid).await.unwrap().unwrap();
    assert_eq!(priced.total, money("300"));
    let draft = system.models.draft_order(paid).await.unwrap().unwrap();
    assert_eq!(draft.state, DraftOrderState::ReservationCompleted);
    system.audit(conf, &[]).await;

    system
        .send(AssignRegistrantDetails::new(
            paid,
            "Ada".into(),
            "Lovelace".into(),
            "ada@example.org".into(),
        ))
        .await;
    let payment = Uuid::now_v7();
    system
        .send(InitiateThirdPartyProcessorPayment::new(
            payment,
            paid,
            conf,
            "Registration for RustConf".into(),
            priced.total,
            vec![],
        ))
        .await;
    system
        .send(CompleteThirdPartyProcessorPayment::new(payment))
        .await;
    system.settle().await;
    let draft = system.models.draft_order(paid).await.unwrap().unwrap();
    assert_eq!(draft.state, DraftOrderState::Confirmed);
    assert_eq!(
        system
            .models
            .locate_order("ADA@example.org", &draft.access_code)
            .await
            .unwrap(),
        Some(paid)
    );
    let priced = system.models.priced_order(paid).await.unwrap().unwrap();
    assert_eq!(priced.reservation_expiration_date, None);
    let assignments = seat_assignments_id(paid);
    assert_eq!(priced.assignments_id, Some(assignments));
    let document = system.models.order_seats(assignments).await.unwrap().unwrap();
    let names: Vec<_> = document.seats.iter().map(|s| s.seat_name.as_deref()).collect();
    assert_eq!(names, [Some("Full"); 3]);
    system
        .send(AssignSeat::new(
            assignments,
            2,
            PersonalInfo::new("Grace", "Hopper", "grace@example.org"),
        ))
        .await;
    system.settle().await;
    let document = system.models.order_seats(assignments).await.unwrap().unwrap();
    assert_eq!(
        document.seats[2].attendee.email.as_deref(),
        Some("grace@example.org")
    );
    let admin = system.models.admin_order(paid).await.unwrap().unwrap();
    assert_eq!((admin.status, admin.seats.len()), (AdminOrderStatus::Paid, 1));
    system.audit(conf, &[(full, 3)]).await;

    // An order for more than is left gets what is left, then expires unpaid.
    let greedy = Uuid::now_v7();
    system
        .send(RegisterToConference::new(
            greedy,
            conf,
            vec![SeatQuantity::new(full, 9)],
        ))
        .await;
    system.settle().await;
    let draft = system.models.draft_order(greedy).await.unwrap().unwrap();
    assert_eq!(draft.state, DraftOrderState::PartiallyReserved);
    assert_eq!(
        (draft.lines[0].requested_seats, draft.lines[0].reserved_seats),
        (9, 7)
    );
    assert_eq!(
        system.models.priced_order(greedy).await.unwrap().unwrap().total,
        money("700")
    );
    assert_eq!(system.available(full).await, 0);
    system.audit(conf, &[(full, 3)]).await;

    // 28 minutes: the timer (window + 14 min ≈ 29 min) has not fired yet.
    system.clock.advance(Duration::from_secs(28 * 60));
    system.settle().await;
    assert!(system.models.priced_order(greedy).await.unwrap().is_some());
    system.clock.advance(Duration::from_secs(2 * 60));
    system.settle().await;
    assert!(
        system.models.priced_order(greedy).await.unwrap().is_none(),
        "expired"
    );
    assert!(system.models.admin_order(greedy).await.unwrap().is_none());
    assert!(system.order(greedy).await.is_expired());
    assert_eq!(system.available(full).await, 7);
    system.audit(conf, &[(full, 3)]).await;

    // The registrant pays anyway: the order stays expired and the payment is flagged.
    let late = Uuid::now_v7();
    system
        .send(InitiateThirdPartyProcessorPayment::new(
            late,
            greedy,
            conf,
            "Registration for RustConf".into(),
            money("700"),
            vec![],
        ))
        .await;
    system.send(CompleteThirdPartyProcessorPayment::new(late)).await;
    system.settle().await;
    let refunds = system.models.payments_requiring_refund().await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        (refunds[0].id, refunds[0].state),
        (late, PaymentState::RefundRequired)
    );
    assert!(system.order(greedy).await.is_expired());
    system.audit(conf, &[(full, 3)]).await;
    let dead = cqrs_core::DeadLetters::dead_letters(&system.transport, None, 10)
        .await
        .unwrap();
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
}
