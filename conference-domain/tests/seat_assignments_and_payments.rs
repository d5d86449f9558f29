//! SeatAssignments (DOMAIN.md §8) and ThirdPartyProcessorPayment (§9), given / when / then,
//! and their handlers on the memory store.

mod support;

use std::sync::Arc;

use conference_domain::commands::{
    AssignSeat, CancelThirdPartyProcessorPayment, CompleteThirdPartyProcessorPayment,
    InitiateThirdPartyProcessorPayment, PaymentItem, RequirePaymentRefund, UnassignSeat,
};
use conference_domain::error::kind_of;
use conference_domain::order::{OrderConfirmed, OrderPlaced, OrderReservationCompleted};
use conference_domain::payments::{
    PaymentCompleted, PaymentEvent, PaymentHandler, PaymentRefundRequired, PaymentRejected, PaymentState,
    ThirdPartyProcessorPayment,
};
use conference_domain::seat_assignments::{
    SeatAssigned, SeatAssignmentUpdated, SeatAssignments, SeatAssignmentsCreated, SeatAssignmentsEvent,
    SeatAssignmentsHandler, SeatUnassigned, seat_assignments_id,
};
use conference_domain::values::{PersonalInfo, SeatAssignmentInfo};
use cqrs_core::testing::AggregateTest;
use cqrs_core::{
    CommandHandler, Envelope, EventAppender, EventHandler, EventReader, EventSet, ExpectedVersion, NewEvent,
    Repository, StreamId,
};
use cqrs_memory::MemoryEventStore;
use support::{money, published, seats, send, t0};
use uuid::Uuid;

fn created(order: Uuid, types: &[Uuid]) -> SeatAssignmentsEvent {
    SeatAssignmentsCreated {
        order_id: order,
        seats: types
            .iter()
            .zip(0..)
            .map(|(&seat_type, position)| SeatAssignmentInfo { position, seat_type })
            .collect(),
    }
    .into()
}

fn person(first: &str, last: &str, email: &str) -> PersonalInfo {
    PersonalInfo::new(first, last, email)
}

#[test]
fn creation_expands_lines_into_positions() {
    let (order, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let root = SeatAssignments::create(order, &seats(&[(a, 2), (b, 0), (a, 1)]));
    assert_eq!(root.id(), seat_assignments_id(order));
    assert_eq!(root.pending(), [created(order, &[a, a, a])]);
    assert!(
        root.seats()
            .values()
            .all(|s| s.attendee == PersonalInfo::default())
    );
}

#[test]
fn assigning_a_seat() {
    let (order, a) = (Uuid::now_v7(), Uuid::now_v7());
    let ada = person("Ada", "Lovelace", "ada@example.org");
    let given = [created(order, &[a, a])];
    // First assignment.
    AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(given.clone())
        .when(|s| s.execute(|s| s.assign_seat(1, ada.clone())))
        .then([SeatAssigned {
            position: 1,
            seat_type: a,
            attendee: ada.clone(),
        }
        .into()]);
    let assigned = [
        given[0].clone(),
        SeatAssigned {
            position: 0,
            seat_type: a,
            attendee: ada.clone(),
        }
        .into(),
    ];
    // Another email: unassign, then assign.
    let grace = person("Grace", "Hopper", "grace@example.org");
    AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned.clone())
        .when(|s| s.execute(|s| s.assign_seat(0, grace.clone())))
        .then([
            SeatUnassigned { position: 0 }.into(),
            SeatAssigned {
                position: 0,
                seat_type: a,
                attendee: grace,
            }
            .into(),
        ]);
    // Same email in another case, another name: an update.
    let renamed = person("Augusta Ada", "King", "ADA@example.org");
    AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned.clone())
        .when(|s| s.execute(|s| s.assign_seat(0, renamed.clone())))
        .then([SeatAssignmentUpdated {
            position: 0,
            attendee: renamed,
        }
        .into()]);
    // Only the letter case of a name changed: nothing.
    AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned.clone())
        .when(|s| s.execute(|s| s.assign_seat(0, person("ADA", "lovelace", "ada@EXAMPLE.org"))))
        .then_nothing();
    // No email, or an unknown position.
    for (position, attendee) in [(0, PersonalInfo::default()), (0, person("A", "B", "")), (7, ada)] {
        let err = AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
            .given(assigned.clone())
            .when(|s| s.execute(|s| s.assign_seat(position, attendee.clone())))
            .then_error();
        assert_eq!(err.kind(), "invalid-argument");
    }
}

#[test]
fn unassigning_a_seat() {
    let (order, a) = (Uuid::now_v7(), Uuid::now_v7());
    let assigned = [
        created(order, &[a, a]),
        SeatAssigned {
            position: 0,
            seat_type: a,
            attendee: person("Ada", "Lovelace", "ada@example.org"),
        }
        .into(),
    ];
    let root = AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned.clone())
        .when(|s| s.execute(|s| s.unassign(0)))
        .then([SeatUnassigned { position: 0 }.into()]);
    assert_eq!(root.seats()[&0].seat_type, a, "the seat type stays");
    assert_eq!(root.seats()[&0].attendee, PersonalInfo::default());
    AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned.clone())
        .when(|s| s.execute(|s| s.unassign(1)))
        .then_nothing();
    let err = AggregateTest::<SeatAssignments>::new(Uuid::now_v7())
        .given(assigned)
        .when(|s| s.execute(|s| s.unassign(2)))
        .then_error();
    assert_eq!(err.kind(), "invalid-argument");
}

async fn append_order(
    store: &MemoryEventStore,
    order: Uuid,
    events: Vec<conference_domain::order::OrderEvent>,
) {
    let new = events
        .iter()
        .map(|e| NewEvent {
            event_id: Uuid::now_v7(),
            payload: e.encode(cqrs_core::Codec::Json).unwrap(),
            metadata: None::<String>.into(),
        })
        .collect();
    store
        .append(
            &StreamId::for_aggregate("Order", order),
            "Order",
            ExpectedVersion::Any,
            new,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn confirmed_orders_get_one_seat_assignments_aggregate() {
    let store = Arc::new(MemoryEventStore::new());
    let handler = SeatAssignmentsHandler::new(store.clone());
    let (order, conference, a) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    append_order(
        &store,
        order,
        vec![
            OrderPlaced {
                conference_id: conference,
                seats: seats(&[(a, 3)]),
                reservation_auto_expiration: t0(),
                access_code: "ABCDEF".into(),
            }
            .into(),
            OrderReservationCompleted {
                reservation_expiration: t0(),
                seats: seats(&[(a, 2)]),
            }
            .into(),
        ],
    )
    .await;
    let confirmed = published(OrderConfirmed {}, "Order", order, 2, None);
    let err = EventHandler::<OrderConfirmed>::handle(&handler, &OrderConfirmed {}, &confirmed.metadata)
        .await
        .unwrap_err();
    assert_eq!(
        kind_of(&err),
        Some("invalid-state"),
        "the order is not confirmed yet"
    );

    append_order(&store, order, vec![OrderConfirmed {}.into()]).await;
    EventHandler::<OrderConfirmed>::handle(&handler, &OrderConfirmed {}, &confirmed.metadata)
        .await
        .unwrap();
    EventHandler::<OrderConfirmed>::handle(&handler, &OrderConfirmed {}, &confirmed.metadata)
        .await
        .unwrap();
    let stream = StreamId::for_aggregate("SeatAssignments", seat_assignments_id(order));
    let events = store.load(&stream, 0).await.unwrap();
    assert_eq!(
        events.len(),
        1,
        "a redelivered OrderConfirmed creates nothing more"
    );
    assert_eq!(events[0].metadata.correlation_id, None);
    assert_eq!(
        events[0]
            .payload
            .decode::<SeatAssignmentsCreated>()
            .unwrap()
            .seats
            .len(),
        2,
        "positions for the reserved seats"
    );

    let assign = AssignSeat::new(
        seat_assignments_id(order),
        1,
        person("Ada", "Lovelace", "ada@example.org"),
    );
    let envelope = Envelope::command(assign.clone());
    CommandHandler::<AssignSeat>::handle(&handler, &assign, &envelope.metadata)
        .await
        .unwrap();
    let unassign = UnassignSeat::new(seat_assignments_id(order), 5);
    let envelope = Envelope::command(unassign.clone());
    let err = CommandHandler::<UnassignSeat>::handle(&handler, &unassign, &envelope.metadata)
        .await
        .unwrap_err();
    assert_eq!(kind_of(&err), Some("invalid-argument"));
    let events = store.load(&stream, 1).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].metadata.correlation_id, Some(assign.id.to_string()));
}

#[test]
fn payment_transitions() {
    let order = Uuid::now_v7();
    let initiated: Vec<PaymentEvent> =
        ThirdPartyProcessorPayment::initiate(order, "Registration for RustConf".into(), money("90.60"), []);
    let complete = |history: Vec<PaymentEvent>| {
        AggregateTest::<ThirdPartyProcessorPayment>::new(Uuid::now_v7())
            .given(history)
            .when(|p| p.execute(ThirdPartyProcessorPayment::complete))
    };
    let completed: PaymentEvent = PaymentCompleted {
        payment_source_id: order,
    }
    .into();
    let rejected: PaymentEvent = PaymentRejected {
        payment_source_id: order,
    }
    .into();
    let refund: PaymentEvent = PaymentRefundRequired {
        payment_source_id: order,
    }
    .into();
    let root = complete(initiated.clone()).then([completed.clone()]);
    assert_eq!(root.payment_state(), PaymentState::Completed);
    complete([initiated.clone(), vec![completed.clone()]].concat()).then_nothing();
    assert_eq!(
        complete([initiated.clone(), vec![rejected.clone()]].concat())
            .then_error()
            .kind(),
        "invalid-state"
    );

    let cancel = |history: Vec<PaymentEvent>| {
        AggregateTest::<ThirdPartyProcessorPayment>::new(Uuid::now_v7())
            .given(history)
            .when(|p| p.execute(ThirdPartyProcessorPayment::cancel))
    };
    cancel(initiated.clone()).then([rejected.clone()]);
    cancel([initiated.clone(), vec![rejected.clone()]].concat()).then_nothing();
    assert_eq!(
        cancel([initiated.clone(), vec![completed.clone()]].concat())
            .then_error()
            .kind(),
        "invalid-state"
    );

    let require_refund = |history: Vec<PaymentEvent>| {
        AggregateTest::<ThirdPartyProcessorPayment>::new(Uuid::now_v7())
            .given(history)
            .when(|p| p.execute(ThirdPartyProcessorPayment::require_refund))
    };
    let with_completed = [initiated.clone(), vec![completed]].concat();
    let root = require_refund(with_completed.clone()).then([refund.clone()]);
    assert_eq!(root.payment_state(), PaymentState::RefundRequired);
    require_refund([with_completed, vec![refund]].concat()).then_nothing();
    for history in [initiated.clone(), [initiated, vec![rejected]].concat()] {
        assert_eq!(require_refund(history).then_error().kind(), "invalid-state");
    }
}

#[tokio::test]
async fn the_payment_handler() {
    let store = Arc::new(MemoryEventStore::new());
    let handler = PaymentHandler::new(Repository::new(store.clone()));
    let (payment, order) = (Uuid::now_v7(), Uuid::now_v7());
    let initiate = InitiateThirdPartyProcessorPayment::new(
        payment,
        order,
        Uuid::now_v7(),
        "Registration for RustConf".into(),
        money("90.60"),
        vec![PaymentItem {
            description: "seats".into(),
            amount: money("90.60"),
        }],
    );
    send(&handler, initiate.clone()).await.unwrap();
    let err = send(&handler, initiate).await.unwrap_err();
    assert!(
        err.is_conflict(),
        "a duplicate payment id fails at the store: {err}"
    );

    // Unknown payments: complete and cancel log only, a refund is not-found.
    send(&handler, CompleteThirdPartyProcessorPayment::new(Uuid::now_v7()))
        .await
        .unwrap();
    send(&handler, CancelThirdPartyProcessorPayment::new(Uuid::now_v7()))
        .await
        .unwrap();
    let err = send(&handler, RequirePaymentRefund::new(Uuid::now_v7()))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));

    send(&handler, CompleteThirdPartyProcessorPayment::new(payment))
        .await
        .unwrap();
    send(&handler, RequirePaymentRefund::new(payment)).await.unwrap();
    let loaded = Repository::<ThirdPartyProcessorPayment, _>::new(store.clone())
        .get(payment)
        .await
        .unwrap();
    assert_eq!(loaded.payment_state(), PaymentState::RefundRequired);
    assert_eq!(loaded.items().len(), 1);
    assert_eq!(loaded.payment_source_id(), order);
}
