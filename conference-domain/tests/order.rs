//! The Order aggregate (DOMAIN.md §5), given / when / then, and its handler on the memory store.

mod support;

use std::sync::Arc;

use conference_domain::commands::{
    AssignRegistrantDetails, ConfirmOrder, MarkSeatsAsReserved, RegisterToConference, RejectOrder,
};
use conference_domain::error::{DomainError, kind_of};
use conference_domain::order::{
    Order, OrderConfirmed, OrderEvent, OrderExpired, OrderHandler, OrderPartiallyReserved,
    OrderPaymentConfirmed, OrderPlaced, OrderRegistrantAssigned, OrderReservationCompleted,
    OrderTotalsCalculated, OrderUpdated, RESERVATION_AUTO_EXPIRATION,
};
use conference_domain::pricing::{PriceList, SeatTypePrice, SeatTypeSource};
use conference_domain::values::{ACCESS_CODE_ALPHABET, OrderLine, SeatOrderLine};
use cqrs_core::testing::{AggregateTest, ManualClock};
use cqrs_core::{EventReader, Repository, Root, StreamId};
use cqrs_memory::MemoryEventStore;
use support::{Prices, money, seats, send, t0};
use uuid::Uuid;

fn placed(p: &Prices, lines: &[(Uuid, i32)]) -> OrderEvent {
    OrderPlaced {
        conference_id: p.conference,
        seats: seats(lines),
        reservation_auto_expiration: t0() + RESERVATION_AUTO_EXPIRATION,
        access_code: "ABC123".into(),
    }
    .into()
}

fn totals(p: &Prices, lines: &[(Uuid, i32)], total: &str) -> OrderEvent {
    use conference_domain::pricing::Pricing;
    let priced = p.list.calculate_total(p.conference, &seats(lines)).unwrap();
    assert_eq!(priced.total, money(total));
    OrderTotalsCalculated {
        total: priced.total,
        lines: priced.lines,
        is_free_of_charge: priced.total.is_zero(),
    }
    .into()
}

#[test]
fn placing_an_order_emits_placed_then_totals() {
    let p = Prices::new();
    let order = AggregateTest::<Order>::new(Uuid::now_v7()).when(|o| {
        o.execute(|_| Order::place(p.conference, seats(&[(p.full, 2), (p.cheap, 0)]), &p.list, t0()))
    });
    let root = order.then_with(|events| {
        let [OrderEvent::Placed(placed), OrderEvent::TotalsCalculated(totals)] = events else {
            panic!("{events:?}")
        };
        assert_eq!(placed.conference_id, p.conference);
        assert_eq!(
            placed.seats,
            seats(&[(p.full, 2), (p.cheap, 0)]),
            "zero quantities are kept"
        );
        assert_eq!(
            placed.reservation_auto_expiration,
            t0() + chrono::TimeDelta::minutes(15)
        );
        assert_eq!(placed.access_code.len(), 6);
        assert!(
            placed
                .access_code
                .bytes()
                .all(|c| ACCESS_CODE_ALPHABET.contains(&c))
        );
        assert_eq!(totals.total, money("200.00"));
        assert!(!totals.is_free_of_charge);
        assert_eq!(
            totals.lines[1],
            OrderLine::Seat(SeatOrderLine {
                seat_type: p.cheap,
                unit_price: money("0.125"),
                quantity: 0,
                line_total: money("0"),
            })
        );
    });
    assert_eq!(root.version(), 1);
}

#[test]
fn an_order_of_free_seats_is_free_of_charge() {
    let p = Prices::new();
    let free = PriceList::new(
        p.conference,
        vec![SeatTypePrice {
            id: p.full,
            price: money("0"),
        }],
    );
    let mut root = Root::<Order>::new(Uuid::now_v7());
    root.execute(|_| Order::place(p.conference, seats(&[(p.full, 3)]), &free, t0()))
        .unwrap();
    let OrderEvent::TotalsCalculated(totals) = &root.pending()[1] else {
        panic!()
    };
    assert!(totals.is_free_of_charge);
}

#[test]
fn pricing_errors_abort_placement() {
    let p = Prices::new();
    let err = AggregateTest::<Order>::new(Uuid::now_v7())
        .when(|o| o.execute(|_| Order::place(p.conference, seats(&[(Uuid::now_v7(), 1)]), &p.list, t0())))
        .then_error();
    assert_eq!(err.kind(), "invalid-data");
}

#[test]
fn updating_seats_reprices_at_the_stored_conference() {
    let p = Prices::new();
    AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 1)])])
        .when(|o| o.execute(|o| o.update_seats(seats(&[(p.cheap, 3)]), &p.list)))
        .then([
            OrderUpdated {
                seats: seats(&[(p.cheap, 3)]),
            }
            .into(),
            totals(&p, &[(p.cheap, 3)], "0.38"),
        ]);
}

#[test]
fn a_full_reservation_completes_without_repricing() {
    let p = Prices::new();
    let expiry = t0() + RESERVATION_AUTO_EXPIRATION;
    AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 2), (p.cheap, 0)])])
        .when(|o| o.execute(|o| o.mark_as_reserved(&p.list, expiry, seats(&[(p.full, 2), (Uuid::nil(), 9)]))))
        .then([OrderReservationCompleted {
            reservation_expiration: expiry,
            seats: seats(&[(p.full, 2), (Uuid::nil(), 9)]),
        }
        .into()]);
}

#[test]
fn a_partial_reservation_reprices_the_reserved_seats() {
    let p = Prices::new();
    let expiry = t0() + RESERVATION_AUTO_EXPIRATION;
    let root = AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 2), (p.cheap, 4)])])
        .when(|o| o.execute(|o| o.mark_as_reserved(&p.list, expiry, seats(&[(p.full, 1), (p.cheap, 4)]))))
        .then([
            OrderPartiallyReserved {
                reservation_expiration: expiry,
                seats: seats(&[(p.full, 1), (p.cheap, 4)]),
            }
            .into(),
            totals(&p, &[(p.full, 1), (p.cheap, 4)], "100.50"),
        ]);
    assert_eq!(
        root.seats(),
        seats(&[(p.full, 1), (p.cheap, 4)]),
        "the order now holds what was reserved"
    );
}

#[test]
fn nothing_reserved_is_a_partial_reservation() {
    let p = Prices::new();
    let expiry = t0();
    AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 2)])])
        .when(|o| o.execute(|o| o.mark_as_reserved(&p.list, expiry, vec![])))
        .then([
            OrderPartiallyReserved {
                reservation_expiration: expiry,
                seats: vec![],
            }
            .into(),
            totals(&p, &[], "0"),
        ]);
}

#[test]
fn a_confirmed_order_cannot_be_reserved_or_expired() {
    let p = Prices::new();
    for confirmation in [OrderConfirmed {}.into(), OrderPaymentConfirmed {}.into()] {
        let given = [placed(&p, &[(p.full, 1)]), confirmation];
        let err = AggregateTest::<Order>::new(Uuid::now_v7())
            .given(given.clone())
            .when(|o| o.execute(|o| o.mark_as_reserved(&p.list, t0(), vec![])))
            .then_error();
        assert_eq!(
            err,
            DomainError::invalid_state("Cannot modify a confirmed order.")
        );
        let err = AggregateTest::<Order>::new(Uuid::now_v7())
            .given(given)
            .when(|o| o.execute(Order::expire))
            .then_error();
        assert_eq!(
            err,
            DomainError::invalid_state("Cannot expire a confirmed order.")
        );
    }
}

#[test]
fn expiring_twice_is_a_no_op() {
    let p = Prices::new();
    AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 1)])])
        .when(|o| o.execute(Order::expire))
        .then([OrderExpired {}.into()]);
    AggregateTest::<Order>::new(Uuid::now_v7())
        .given([placed(&p, &[(p.full, 1)]), OrderExpired {}.into()])
        .when(|o| o.execute(Order::expire))
        .then_nothing();
}

#[test]
fn seat_assignments_need_a_confirmed_order() {
    let p = Prices::new();
    let order = Root::<Order>::from_history(Uuid::now_v7(), [placed(&p, &[(p.full, 2)])]);
    assert_eq!(
        order.create_seat_assignments().unwrap_err(),
        DomainError::invalid_state("Cannot create seat assignments for an order that isn't confirmed yet.")
    );
    let confirmed =
        Root::<Order>::from_history(order.id(), [placed(&p, &[(p.full, 2)]), OrderConfirmed {}.into()]);
    let assignments = confirmed.create_seat_assignments().unwrap();
    assert_eq!(assignments.order_id(), order.id());
    assert_eq!(assignments.seats().len(), 2);
}

/// A seat-type source that knows one conference.
struct Fixed(Uuid, Vec<SeatTypePrice>);

impl SeatTypeSource for Fixed {
    async fn seat_type_prices(&self, conference_id: Uuid) -> cqrs_core::Result<Vec<SeatTypePrice>> {
        Ok(if conference_id == self.0 {
            self.1.clone()
        } else {
            vec![]
        })
    }
}

fn handler(p: &Prices, store: &Arc<MemoryEventStore>) -> OrderHandler<Arc<MemoryEventStore>, Fixed> {
    let types = vec![
        SeatTypePrice {
            id: p.full,
            price: money("100.00"),
        },
        SeatTypePrice {
            id: p.cheap,
            price: money("0.125"),
        },
    ];
    let clock = Arc::new(ManualClock::new(t0()));
    OrderHandler::new(Repository::new(store.clone()), Fixed(p.conference, types), clock)
}

#[tokio::test]
async fn the_handler_correlates_events_with_the_command_and_guards_missing_orders() {
    let p = Prices::new();
    let store = Arc::new(MemoryEventStore::new());
    let handler = handler(&p, &store);
    let order_id = Uuid::now_v7();
    let stream = StreamId::for_aggregate("Order", order_id);

    let register = RegisterToConference::new(order_id, p.conference, seats(&[(p.full, 1)]));
    send(&handler, register.clone()).await.unwrap();
    let events = store.load(&stream, 0).await.unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.metadata.correlation_id, Some(register.id.to_string()));
    }

    // A second RegisterToConference updates the order (its conference id is ignored).
    let update = RegisterToConference::new(order_id, Uuid::now_v7(), seats(&[(p.cheap, 2)]));
    send(&handler, update).await.unwrap();
    let names: Vec<_> = store
        .load(&stream, 2)
        .await
        .unwrap()
        .iter()
        .map(|e| e.payload.name.clone())
        .collect();
    assert_eq!(names, ["OrderUpdated", "OrderTotalsCalculated"]);

    // Rejecting an unknown order does nothing; the others need the order.
    let stranger = Uuid::now_v7();
    send(&handler, RejectOrder::new(stranger)).await.unwrap();
    let err = send(&handler, ConfirmOrder::new(stranger)).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));
    assert_eq!(err.to_string(), format!("Order: {stranger}"));
    let err = send(&handler, MarkSeatsAsReserved::new(stranger, vec![], t0()))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));

    send(
        &handler,
        AssignRegistrantDetails::new(
            order_id,
            "Ada".into(),
            "Lovelace".into(),
            "ada@example.org".into(),
        ),
    )
    .await
    .unwrap();
    send(&handler, ConfirmOrder::new(order_id)).await.unwrap();
    let err = send(&handler, RejectOrder::new(order_id)).await.unwrap_err();
    assert_eq!(kind_of(&err), Some("invalid-state"));
    let tail: Vec<_> = store.load(&stream, 4).await.unwrap();
    assert_eq!(tail.len(), 2, "the failed expiry stored nothing");
    assert_eq!(
        tail[0].payload.decode::<OrderRegistrantAssigned>().unwrap().email,
        "ada@example.org"
    );
}
