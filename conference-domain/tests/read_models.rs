//! The read-model generators (DOMAIN.md §12, §9.3, §10.3) on the memory stores: each event's
//! effect, duplicates and out-of-order deliveries, and the caching rules of §13.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use conference_domain::commands::{AddSeats, RemoveSeats};
use conference_domain::error::kind_of;
use conference_domain::management::{
    ConferenceCreated, ConferenceDetails, ConferencePublished, ConferenceUpdated, SeatCreated,
    SeatTypeDetails, SeatUpdated,
};
use conference_domain::order::{
    OrderConfirmed, OrderExpired, OrderPartiallyReserved, OrderPaymentConfirmed, OrderPlaced,
    OrderRegistrantAssigned, OrderReservationCompleted, OrderTotalsCalculated, OrderUpdated,
};
use conference_domain::payments::{PaymentCompleted, PaymentInitiated, PaymentRefundRequired, PaymentState};
use conference_domain::pricing::{Pricing, SeatTypeSource};
use conference_domain::read_model::*;
use conference_domain::seat_assignments::{
    SeatAssigned, SeatAssignmentUpdated, SeatAssignmentsCreated, SeatUnassigned,
};
use conference_domain::seats_availability::{
    AvailableSeatsChanged, SeatsReservationCancelled, SeatsReserved,
};
use conference_domain::values::{Owner, PersonalInfo, SeatAssignmentInfo};
use cqrs_core::testing::{ManualClock, RecordingBus};
use cqrs_core::{Envelope, EventDispatcher, Message, SharedClock};
use cqrs_memory::MemoryProcessStore;
use support::{Prices, money, published, seats, t0};
use uuid::Uuid;

/// Dispatches `event` as published from `<stream>-<source>` at `version`.
async fn deliver<E: Message>(
    dispatcher: &EventDispatcher,
    event: E,
    stream: &str,
    source: Uuid,
    version: i64,
) -> cqrs_core::Result<()> {
    dispatcher
        .dispatch(&published(event, stream, source, version, None))
        .await
}

fn order_placed(p: &Prices, lines: &[(Uuid, i32)]) -> OrderPlaced {
    OrderPlaced {
        conference_id: p.conference,
        seats: seats(lines),
        reservation_auto_expiration: t0() + TimeDelta::minutes(15),
        access_code: "K3Y4BC".into(),
    }
}

#[tokio::test]
async fn the_draft_order_follows_the_order_and_skips_old_versions() {
    let store = MemoryReadModels::new();
    let mut d = EventDispatcher::new();
    Arc::new(DraftOrderGenerator::new(store.clone()))
        .subscribe(&mut d)
        .unwrap();
    let p = Prices::new();
    let order = Uuid::now_v7();

    deliver(
        &d,
        order_placed(&p, &[(p.full, 2), (p.cheap, 0)]),
        "Order",
        order,
        0,
    )
    .await
    .unwrap();
    let draft = store.draft_order(order).await.unwrap().unwrap();
    assert_eq!(draft.state, DraftOrderState::PendingReservation);
    assert_eq!(draft.access_code, "K3Y4BC");
    assert_eq!(draft.lines.len(), 2, "zero quantities included");
    assert_eq!(
        (draft.lines[0].requested_seats, draft.lines[0].reserved_seats),
        (2, 0)
    );

    // A redelivered OrderPlaced is skipped (project decision 10).
    deliver(&d, order_placed(&p, &[(p.cheap, 9)]), "Order", order, 0)
        .await
        .unwrap();
    assert_eq!(store.draft_order(order).await.unwrap().unwrap(), draft);

    let updated = OrderUpdated {
        seats: seats(&[(p.full, 3), (p.cheap, 1)]),
    };
    deliver(&d, updated, "Order", order, 2).await.unwrap();
    let expiry = t0() + TimeDelta::minutes(15);
    let partial = OrderPartiallyReserved {
        reservation_expiration: expiry,
        seats: seats(&[(p.full, 2), (p.cheap, 1)]),
    };
    deliver(&d, partial, "Order", order, 4).await.unwrap();
    let draft = store.draft_order(order).await.unwrap().unwrap();
    assert_eq!(draft.state, DraftOrderState::PartiallyReserved);
    assert_eq!(draft.order_version, 4);
    assert_eq!(draft.reservation_expiration_date, Some(expiry));
    let lines: Vec<_> = draft
        .lines
        .iter()
        .map(|l| (l.requested_seats, l.reserved_seats))
        .collect();
    assert_eq!(lines, [(3, 2), (1, 1)]);

    // An old event changes nothing, a duplicate neither.
    let stale = OrderReservationCompleted {
        reservation_expiration: expiry,
        seats: vec![],
    };
    deliver(&d, stale.clone(), "Order", order, 3).await.unwrap();
    deliver(&d, stale, "Order", order, 4).await.unwrap();
    assert_eq!(store.draft_order(order).await.unwrap().unwrap(), draft);

    let registrant = OrderRegistrantAssigned {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "Ada@Example.org".into(),
    };
    deliver(&d, registrant, "Order", order, 6).await.unwrap();
    assert_eq!(
        store.locate_order("ada@example.ORG", "K3Y4BC").await.unwrap(),
        Some(order)
    );
    assert_eq!(
        store.locate_order("ada@example.org", "K3Y4BD").await.unwrap(),
        None
    );

    deliver(&d, OrderPaymentConfirmed {}, "Order", order, 7)
        .await
        .unwrap();
    let draft = store.draft_order(order).await.unwrap().unwrap();
    assert_eq!(
        (draft.state, draft.order_version),
        (DraftOrderState::Confirmed, 7)
    );

    // Events the model does not handle leave its version alone.
    assert_eq!(d.handler_count(OrderTotalsCalculated::NAME), 0);
    assert_eq!(d.handler_count(OrderExpired::NAME), 0);
}

#[tokio::test]
async fn the_priced_order_names_lines_and_disappears_on_expiry() {
    let store = MemoryReadModels::new();
    let clock = Arc::new(ManualClock::new(t0()));
    let generator = Arc::new(PricedOrderGenerator::new(
        store.clone(),
        clock.clone() as SharedClock,
    ));
    let mut d = EventDispatcher::new();
    generator.clone().subscribe(&mut d).unwrap();
    let p = Prices::new();
    let order = Uuid::now_v7();
    let seat = |name: &str, quantity| SeatTypeDetails {
        name: name.into(),
        description: "d".into(),
        quantity,
        price: money("100.00"),
    };
    let created = SeatCreated {
        seat_type_id: p.full,
        conference_id: p.conference,
        details: seat("Full pass", 10),
    };
    deliver(&d, created, "Conference", p.conference, 3).await.unwrap();

    deliver(&d, order_placed(&p, &[(p.full, 2)]), "Order", order, 0)
        .await
        .unwrap();
    let priced = store.priced_order(order).await.unwrap().unwrap();
    assert_eq!(
        priced.reservation_expiration_date,
        Some(t0() + TimeDelta::minutes(15))
    );
    let totals = p
        .list
        .calculate_total(p.conference, &seats(&[(p.full, 2), (p.cheap, 1)]))
        .unwrap();
    let event = OrderTotalsCalculated {
        total: totals.total,
        lines: totals.lines,
        is_free_of_charge: false,
    };
    deliver(&d, event.clone(), "Order", order, 1).await.unwrap();
    let priced = store.priced_order(order).await.unwrap().unwrap();
    assert_eq!(priced.total, money("200.12"));
    assert_eq!(priced.order_version, 1);
    let lines: Vec<_> = priced
        .lines
        .iter()
        .map(|l| (l.position, l.description.clone(), l.quantity, l.line_total))
        .collect();
    assert_eq!(
        lines,
        [
            (0, Some("Full pass".into()), Some(2), money("200.00")),
            (1, None, Some(1), money("0.12")),
        ]
    );

    // A SeatUpdated refreshes the cache at once; an older table value never replaces it.
    let renamed = SeatUpdated {
        seat_type_id: p.full,
        conference_id: p.conference,
        details: seat("Full pass (2 days)", 10),
    };
    deliver(&d, renamed, "Conference", p.conference, 4).await.unwrap();
    store
        .save_seat_type_description(p.full, "stale".into())
        .await
        .unwrap();
    deliver(&d, event.clone(), "Order", order, 2).await.unwrap();
    let priced = store.priced_order(order).await.unwrap().unwrap();
    assert_eq!(priced.lines[0].description.as_deref(), Some("Full pass (2 days)"));
    // After 5 minutes the cache entry is stale and the table is read again.
    clock.advance(Duration::from_secs(5 * 60));
    deliver(&d, event, "Order", order, 3).await.unwrap();
    let priced = store.priced_order(order).await.unwrap().unwrap();
    assert_eq!(priced.lines[0].description.as_deref(), Some("stale"));

    let assignments = Uuid::now_v7();
    let created = SeatAssignmentsCreated {
        order_id: order,
        seats: vec![],
    };
    deliver(&d, created, "SeatAssignments", assignments, 0)
        .await
        .unwrap();
    deliver(&d, OrderConfirmed {}, "Order", order, 5).await.unwrap();
    let priced = store.priced_order(order).await.unwrap().unwrap();
    assert_eq!(priced.assignments_id, Some(assignments));
    assert_eq!(
        priced.reservation_expiration_date, None,
        "absent expiry means completed"
    );
    assert_eq!(priced.order_version, 5);

    deliver(&d, OrderExpired {}, "Order", order, 6).await.unwrap();
    assert_eq!(store.priced_order(order).await.unwrap(), None);
    deliver(&d, OrderExpired {}, "Order", order, 6).await.unwrap();
}

fn conference_details(slug: &str) -> ConferenceDetails {
    ConferenceDetails {
        name: "RustConf".into(),
        description: "All things Rust".into(),
        location: "Montréal".into(),
        slug: slug.into(),
        tagline: Some("Fearless".into()),
        twitter_search: None,
        start_date: t0(),
        end_date: t0() + TimeDelta::days(2),
        owner: Owner {
            name: "Ferris".into(),
            email: "ferris@example.org".into(),
        },
    }
}

struct ConferenceHarness {
    store: MemoryReadModels,
    bus: RecordingBus,
    d: EventDispatcher,
    conference: Uuid,
}

impl ConferenceHarness {
    fn new() -> Self {
        let store = MemoryReadModels::new();
        let bus = RecordingBus::new();
        let clock: SharedClock = Arc::new(ManualClock::new(t0()));
        let generator = ConferenceViewGenerator::new(
            store.clone(),
            Arc::new(MemoryProcessStore::new()),
            bus.clone(),
            clock,
        );
        let mut d = EventDispatcher::new();
        Arc::new(generator).subscribe(&mut d).unwrap();
        Self {
            store,
            bus,
            d,
            conference: Uuid::now_v7(),
        }
    }

    async fn conference_event<E: Message>(&self, event: E, version: i64) -> cqrs_core::Result<()> {
        deliver(&self.d, event, "Conference", self.conference, version).await
    }

    async fn availability<E: Message>(&self, event: E, version: i64) -> cqrs_core::Result<()> {
        deliver(&self.d, event, "SeatsAvailability", self.conference, version).await
    }

    fn seat(&self, seat_type_id: Uuid, quantity: i32) -> SeatCreated {
        SeatCreated {
            seat_type_id,
            conference_id: self.conference,
            details: SeatTypeDetails {
                name: "Pass".into(),
                description: "A pass".into(),
                quantity,
                price: money("10"),
            },
        }
    }

    fn sent(&self) -> Vec<Envelope> {
        let sent = self.bus.sent();
        self.bus.clear();
        sent
    }
}

#[tokio::test]
async fn the_conference_view_and_its_lookups() {
    let h = ConferenceHarness::new();
    let created = ConferenceCreated {
        details: conference_details("rustconf"),
        access_code: "ABCDEF".into(),
    };
    let err = h.conference_event(ConferencePublished {}, 1).await.unwrap_err();
    assert_eq!(
        kind_of(&err),
        Some("invalid-state"),
        "a missing row fails, to be retried"
    );
    h.conference_event(created.clone(), 0).await.unwrap();
    h.conference_event(created, 0).await.unwrap();
    let seat_type = Uuid::now_v7();
    h.conference_event(h.seat(seat_type, 5), 1).await.unwrap();
    assert_eq!(
        h.store.published_seat_types(h.conference).await.unwrap(),
        vec![],
        "not published yet"
    );
    assert_eq!(h.store.published_conferences().await.unwrap(), vec![]);

    h.conference_event(ConferencePublished {}, 2).await.unwrap();
    let mut renamed = conference_details("rustconf26");
    renamed.name = "RustConf 2026".into();
    h.conference_event(ConferenceUpdated { details: renamed }, 3)
        .await
        .unwrap();
    let view = h.store.conference_details("rustconf26").await.unwrap().unwrap();
    assert_eq!((view.name.as_str(), view.is_published), ("RustConf 2026", true));
    assert_eq!(h.store.conference_details("rustconf").await.unwrap(), None);
    let alias = h.store.conference_alias("rustconf26").await.unwrap().unwrap();
    assert_eq!(
        (alias.id, alias.tagline.as_deref()),
        (h.conference, Some("Fearless"))
    );
    assert_eq!(h.store.published_conferences().await.unwrap().len(), 1);
    let types = h.store.published_seat_types(h.conference).await.unwrap();
    assert_eq!(types.len(), 1);
    assert_eq!(
        (types[0].available_quantity, types[0].seats_availability_version),
        (0, -1)
    );
    let names = h
        .store
        .seat_type_names(&[seat_type, seat_type, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(
        names,
        [SeatTypeName {
            id: seat_type,
            name: "Pass".into()
        }]
    );
    assert_eq!(h.store.seat_type_names(&[]).await.unwrap(), []);
    let prices = h.store.seat_type_prices(h.conference).await.unwrap();
    assert_eq!(prices[0].price, money("10"));
}

#[tokio::test]
async fn seat_types_are_registered_with_seats_availability_exactly_once() {
    let h = ConferenceHarness::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    h.conference_event(h.seat(a, 0), 1).await.unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "AddSeats even for 0 seats registers the type");
    let add = sent[0].message.decode::<AddSeats>().unwrap();
    assert_eq!(
        (add.conference_id, add.seat_type, add.quantity),
        (h.conference, a, 0)
    );
    assert_eq!(
        sent[0].metadata.session_id,
        Some(format!("SeatsAvailability_{}", h.conference))
    );
    h.conference_event(h.seat(a, 0), 1).await.unwrap();
    assert!(h.sent().is_empty(), "a duplicate SeatCreated sends nothing");

    // A failed send: the event fails, the command stays in the outbox and goes on the retry.
    h.bus.fail_attempt(1);
    let err = h.conference_event(h.seat(b, 7), 2).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(h.sent().is_empty());
    h.conference_event(h.seat(b, 7), 2).await.unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.decode::<AddSeats>().unwrap().quantity, 7);

    // Updates send the difference, and nothing when the quantity did not change.
    let update = |quantity| SeatUpdated {
        seat_type_id: b,
        conference_id: h.conference,
        details: SeatTypeDetails {
            name: "Pass+".into(),
            description: "A better pass".into(),
            quantity,
            price: money("12.50"),
        },
    };
    h.conference_event(update(10), 3).await.unwrap();
    assert_eq!(h.sent()[0].message.decode::<AddSeats>().unwrap().quantity, 3);
    h.conference_event(update(10), 3).await.unwrap();
    assert!(h.sent().is_empty(), "a redelivery sends nothing");
    h.conference_event(update(10), 4).await.unwrap();
    assert!(
        h.sent().is_empty(),
        "project decision 3: an unchanged quantity sends nothing"
    );
    h.conference_event(update(4), 5).await.unwrap();
    assert_eq!(h.sent()[0].message.decode::<RemoveSeats>().unwrap().quantity, 6);
    let row = h.store.seat_type(b).await.unwrap().unwrap();
    assert_eq!(
        (row.name.as_str(), row.quantity, row.price),
        ("Pass+", 4, money("12.50"))
    );

    let unknown = SeatUpdated {
        seat_type_id: Uuid::now_v7(),
        ..update(1)
    };
    let err = h.conference_event(unknown, 6).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("invalid-state"));
}

#[tokio::test]
async fn rebuilding_the_view_sends_no_seat_commands() {
    let processes = Arc::new(MemoryProcessStore::new());
    let bus = RecordingBus::new();
    let clock: SharedClock = Arc::new(ManualClock::new(t0()));
    let conference = Uuid::now_v7();
    let seat_type = Uuid::now_v7();
    let details = |quantity| SeatTypeDetails {
        name: "Pass".into(),
        description: "A pass".into(),
        quantity,
        price: money("10"),
    };
    let history = [
        published(
            SeatCreated {
                seat_type_id: seat_type,
                conference_id: conference,
                details: details(10),
            },
            "Conference",
            conference,
            1,
            None,
        ),
        published(
            SeatUpdated {
                seat_type_id: seat_type,
                conference_id: conference,
                details: details(12),
            },
            "Conference",
            conference,
            2,
            None,
        ),
        published(
            SeatUpdated {
                seat_type_id: seat_type,
                conference_id: conference,
                details: details(8),
            },
            "Conference",
            conference,
            3,
            None,
        ),
    ];
    let mut sent = Vec::new();
    for _generation in 0..2 {
        let view = MemoryReadModels::new();
        let generator =
            ConferenceViewGenerator::new(view.clone(), processes.clone(), bus.clone(), clock.clone());
        let mut d = EventDispatcher::new();
        Arc::new(generator).subscribe(&mut d).unwrap();
        for event in &history {
            d.dispatch(event).await.unwrap();
        }
        assert_eq!(view.seat_type(seat_type).await.unwrap().unwrap().quantity, 8);
        sent.push(bus.sent().len());
        bus.clear();
    }
    assert_eq!(
        sent,
        [3, 0],
        "the first build registers 10, +2, −4; the rebuild sends nothing"
    );
}

#[tokio::test]
async fn availability_follows_seats_availability_versions() {
    let h = ConferenceHarness::new();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    // No seat types yet: logged, nothing to update.
    h.availability(
        AvailableSeatsChanged {
            seats: seats(&[(a, 5)]),
        },
        0,
    )
    .await
    .unwrap();
    h.conference_event(h.seat(a, 10), 1).await.unwrap();
    h.conference_event(h.seat(b, 10), 2).await.unwrap();
    h.availability(
        AvailableSeatsChanged {
            seats: seats(&[(a, 10)]),
        },
        0,
    )
    .await
    .unwrap();
    h.availability(
        AvailableSeatsChanged {
            seats: seats(&[(b, 10)]),
        },
        1,
    )
    .await
    .unwrap();
    let reserved = SeatsReserved {
        reservation_id: Uuid::now_v7(),
        reservation_details: seats(&[(a, 3), (b, 1)]),
        available_seats_changed: seats(&[(a, -3), (b, -1), (Uuid::now_v7(), -1)]),
    };
    h.availability(reserved.clone(), 2).await.unwrap();
    h.availability(reserved, 2).await.unwrap();
    h.availability(
        AvailableSeatsChanged {
            seats: seats(&[(b, 100)]),
        },
        1,
    )
    .await
    .unwrap();
    let available = |rows: Vec<SeatTypeView>| {
        let mut rows: Vec<_> = rows
            .iter()
            .map(|r| (r.id, r.available_quantity, r.seats_availability_version))
            .collect();
        rows.sort();
        rows
    };
    let mut expected = vec![(a, 7, 2), (b, 9, 2)];
    expected.sort();
    assert_eq!(
        available(h.store.seat_types(h.conference).await.unwrap()),
        expected,
        "duplicates and old versions skipped"
    );
    let cancelled = SeatsReservationCancelled {
        reservation_id: Uuid::now_v7(),
        available_seats_changed: seats(&[(a, 3)]),
    };
    h.availability(cancelled, 3).await.unwrap();
    let row = h.store.seat_type(a).await.unwrap().unwrap();
    assert_eq!((row.available_quantity, row.seats_availability_version), (10, 3));
    let row = h.store.seat_type(b).await.unwrap().unwrap();
    assert_eq!(
        row.seats_availability_version, 2,
        "only the rows the event names change"
    );
}

#[tokio::test]
async fn order_seats_payments_and_the_admins_orders() {
    let store = MemoryReadModels::new();
    let mut d = EventDispatcher::new();
    Arc::new(OrderSeatsGenerator::new(store.clone(), store.clone()))
        .subscribe(&mut d)
        .unwrap();
    Arc::new(PaymentGenerator::new(store.clone()))
        .subscribe(&mut d)
        .unwrap();
    Arc::new(AdminOrderGenerator::new(store.clone()))
        .subscribe(&mut d)
        .unwrap();
    let p = Prices::new();
    let (order, assignments, payment) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    // The admin's order.
    deliver(&d, order_placed(&p, &[(p.full, 2)]), "Order", order, 0)
        .await
        .unwrap();
    let registrant = OrderRegistrantAssigned {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@example.org".into(),
    };
    deliver(&d, registrant, "Order", order, 1).await.unwrap();
    let totals = OrderTotalsCalculated {
        total: money("200.00"),
        lines: vec![],
        is_free_of_charge: false,
    };
    deliver(&d, totals, "Order", order, 2).await.unwrap();
    deliver(&d, OrderConfirmed {}, "Order", order, 3).await.unwrap();
    let created = SeatAssignmentsCreated {
        order_id: order,
        seats: vec![
            SeatAssignmentInfo {
                position: 0,
                seat_type: p.full,
            },
            SeatAssignmentInfo {
                position: 1,
                seat_type: p.full,
            },
        ],
    };
    deliver(&d, created, "SeatAssignments", assignments, 0)
        .await
        .unwrap();
    let ada = PersonalInfo::new("Ada", "Lovelace", "ada@example.org");
    let assigned = SeatAssigned {
        position: 1,
        seat_type: p.full,
        attendee: ada.clone(),
    };
    deliver(&d, assigned, "SeatAssignments", assignments, 1)
        .await
        .unwrap();
    let renamed = PersonalInfo::new("Augusta", "King", "other@example.org");
    let updated = SeatAssignmentUpdated {
        position: 1,
        attendee: renamed.clone(),
    };
    deliver(&d, updated, "SeatAssignments", assignments, 2)
        .await
        .unwrap();

    let admin = store.admin_order(order).await.unwrap().unwrap();
    assert_eq!(admin.registrant_name.as_deref(), Some("Lovelace, Ada"));
    assert_eq!(admin.total_amount, money("200.00"));
    assert_eq!(admin.status, AdminOrderStatus::Paid);
    assert_eq!(admin.assignments_id, Some(assignments));
    assert_eq!(admin.seats.len(), 1);
    let attendee = &admin.seats[0].attendee;
    assert_eq!(
        (attendee.first_name.as_deref(), attendee.email.as_deref()),
        (Some("Augusta"), Some("ada@example.org")),
        "an update changes the names, not the email"
    );
    assert_eq!(store.admin_orders(p.conference).await.unwrap().len(), 1);

    // The order-seats document (seat names come from the conference view, unknown here).
    let document = store.order_seats(assignments).await.unwrap().unwrap();
    assert_eq!(document.order_id, order);
    assert_eq!(document.seats.len(), 2);
    assert_eq!(document.seats[0].seat_name, None);
    assert_eq!(
        document.seats[1].attendee, renamed,
        "the whole attendee is copied"
    );
    deliver(
        &d,
        SeatUnassigned { position: 1 },
        "SeatAssignments",
        assignments,
        3,
    )
    .await
    .unwrap();
    let document = store.order_seats(assignments).await.unwrap().unwrap();
    assert_eq!(document.seats[1].attendee, PersonalInfo::default());
    assert!(store.admin_order(order).await.unwrap().unwrap().seats.is_empty());
    assert_eq!(
        OrderSeats::key(assignments),
        format!("SeatAssignments-{assignments}")
    );

    // Payments, and the refund list.
    let initiated = PaymentInitiated {
        payment_source_id: order,
        description: "Registration for RustConf".into(),
        total_amount: money("200.00"),
        items: vec![],
    };
    deliver(&d, initiated, "ThirdPartyProcessorPayment", payment, 0)
        .await
        .unwrap();
    deliver(
        &d,
        PaymentCompleted {
            payment_source_id: order,
        },
        "ThirdPartyProcessorPayment",
        payment,
        1,
    )
    .await
    .unwrap();
    assert!(store.payments_requiring_refund().await.unwrap().is_empty());
    let of_order = store.payments_of_order(order).await.unwrap();
    assert_eq!((of_order.len(), of_order[0].state), (1, PaymentState::Completed));
    deliver(
        &d,
        PaymentRefundRequired {
            payment_source_id: order,
        },
        "ThirdPartyProcessorPayment",
        payment,
        2,
    )
    .await
    .unwrap();
    let refunds = store.payments_requiring_refund().await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        (refunds[0].id, refunds[0].state),
        (payment, PaymentState::RefundRequired)
    );

    // Expiry removes the admin's order.
    deliver(&d, OrderExpired {}, "Order", order, 4).await.unwrap();
    assert_eq!(store.admin_order(order).await.unwrap(), None);
}

#[test]
fn posted_seat_assignments_become_one_batch_unassignments_first() {
    let assignments = Uuid::now_v7();
    let seat = |position, attendee| OrderSeat {
        position,
        seat_type: Uuid::nil(),
        seat_name: Some("Full".into()),
        attendee,
    };
    let ada = PersonalInfo::new("Ada", "Lovelace", "ada@example.org");
    let grace = PersonalInfo::new("Grace", "Hopper", "grace@example.org");
    let saved = OrderSeats {
        assignments_id: assignments,
        order_id: Uuid::now_v7(),
        seats: vec![
            seat(0, ada.clone()),
            seat(1, grace.clone()),
            seat(2, PersonalInfo::default()),
            seat(3, ada.clone()),
        ],
    };
    let blank = PersonalInfo::new("Someone", "", "  ");
    let posted = [
        (0, blank.clone()),                                             // emptied: unassign
        (1, PersonalInfo::new("Grace", "Hopper", "GRACE@example.org")), // the same person: nothing
        (2, blank),                                                     // neither has an email: nothing
        (3, grace.clone()),                                             // someone else: assign
        (7, ada),                                                       // no such position: ignored
    ];
    let batch = saved.changes(&posted);
    let names: Vec<_> = batch.iter().map(|e| e.name().to_owned()).collect();
    assert_eq!(names, ["UnassignSeat", "AssignSeat"]);
    let unassign = batch[0]
        .message
        .decode::<conference_domain::commands::UnassignSeat>()
        .unwrap();
    assert_eq!(
        (unassign.seat_assignments_id, unassign.position),
        (assignments, 0)
    );
    let assign = batch[1]
        .message
        .decode::<conference_domain::commands::AssignSeat>()
        .unwrap();
    assert_eq!((assign.position, &assign.attendee), (3, &grace));
}

// ---- the public cache -------------------------------------------------------------------

fn seat_type_view(available: i32) -> SeatTypeView {
    SeatTypeView {
        id: Uuid::now_v7(),
        conference_id: Uuid::nil(),
        name: "Pass".into(),
        description: "A pass".into(),
        price: money("1"),
        quantity: 1000,
        available_quantity: available,
        seats_availability_version: 0,
    }
}

#[test]
fn seat_type_cache_lifetimes() {
    let lifetime = |available: &[i32]| {
        published_seat_types_lifetime(&available.iter().map(|&a| seat_type_view(a)).collect::<Vec<_>>())
    };
    assert_eq!(lifetime(&[]), None, "empty lists are not cached");
    assert_eq!(lifetime(&[201, 0, -3]), Some(TimeDelta::minutes(5)));
    assert_eq!(lifetime(&[201, 29]), None);
    assert_eq!(lifetime(&[1, 150]), None);
    assert_eq!(lifetime(&[30, 500]), Some(TimeDelta::seconds(20)));
    assert_eq!(lifetime(&[99]), Some(TimeDelta::seconds(20)));
    assert_eq!(lifetime(&[100, 200]), Some(TimeDelta::minutes(1)));
    assert_eq!(lifetime(&[200, 0]), Some(TimeDelta::minutes(1)));
}

/// Lookups that count how often they are asked.
#[derive(Default)]
struct Counting {
    calls: AtomicUsize,
    available: std::sync::Mutex<Vec<i32>>,
}

impl ConferenceQueries for Counting {
    async fn conference_details(&self, code: &str) -> cqrs_core::Result<Option<ConferenceView>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok((code == "known" || code == "draft").then(|| ConferenceView {
            id: Uuid::nil(),
            code: code.into(),
            name: "n".into(),
            description: "d".into(),
            location: "l".into(),
            tagline: None,
            twitter_search: None,
            start_date: t0(),
            is_published: code == "known",
        }))
    }
    async fn conference_alias(&self, _: &str) -> cqrs_core::Result<Option<ConferenceAlias>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(None)
    }
    async fn published_conferences(&self) -> cqrs_core::Result<Vec<ConferenceView>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
    async fn published_seat_types(&self, _: Uuid) -> cqrs_core::Result<Vec<SeatTypeView>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .available
            .lock()
            .unwrap()
            .iter()
            .map(|&a| seat_type_view(a))
            .collect())
    }
    async fn seat_type_names(&self, _: &[Uuid]) -> cqrs_core::Result<Vec<SeatTypeName>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(vec![])
    }
}

#[tokio::test]
async fn the_cache_keeps_entries_until_their_absolute_expiry() {
    let clock = Arc::new(ManualClock::new(t0()));
    let cache = CachedConferenceQueries::new(Counting::default(), clock.clone() as SharedClock);
    let calls = |c: &CachedConferenceQueries<Counting>| c.get_ref().calls.swap(0, Ordering::SeqCst);

    // Details: 10 minutes; `None` never cached.
    cache.conference_details("known").await.unwrap();
    cache.conference_details("known").await.unwrap();
    cache.conference_details("unknown").await.unwrap();
    cache.conference_details("unknown").await.unwrap();
    assert_eq!(calls(&cache), 3);
    cache.conference_details("draft").await.unwrap();
    cache.conference_details("draft").await.unwrap();
    assert_eq!(calls(&cache), 2, "an unpublished conference is not cached");
    clock.advance(Duration::from_secs(599));
    cache.conference_details("known").await.unwrap();
    assert_eq!(calls(&cache), 0);
    clock.advance(Duration::from_secs(1));
    cache.conference_details("known").await.unwrap();
    assert_eq!(calls(&cache), 1);

    // Published conferences: 10 seconds.
    cache.published_conferences().await.unwrap();
    clock.advance(Duration::from_secs(9));
    cache.published_conferences().await.unwrap();
    assert_eq!(calls(&cache), 1);
    clock.advance(Duration::from_secs(1));
    cache.published_conferences().await.unwrap();
    assert_eq!(calls(&cache), 1);

    // Seat types: by availability; scarce and empty answers are not cached.
    let conference = Uuid::now_v7();
    for (available, cached) in [
        (vec![], false),
        (vec![10], false),
        (vec![50], true),
        (vec![500], true),
    ] {
        *cache.get_ref().available.lock().unwrap() = available;
        clock.advance(Duration::from_secs(600));
        cache.published_seat_types(conference).await.unwrap();
        cache.published_seat_types(conference).await.unwrap();
        assert_eq!(calls(&cache), if cached { 1 } else { 2 });
    }
    // Seat-type names: never cached.
    cache.seat_type_names(&[]).await.unwrap();
    cache.seat_type_names(&[]).await.unwrap();
    assert_eq!(calls(&cache), 2);
}
