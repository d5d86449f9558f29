//! SeatsAvailability (DOMAIN.md §7): given / when / then, its handler, and properties.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use conference_domain::commands::{
    AddSeats, CancelSeatReservation, CommitSeatReservation, MakeSeatReservation, RemoveSeats,
};
use conference_domain::error::kind_of;
use conference_domain::seats_availability::{
    AvailableSeatsChanged, SeatsAvailability, SeatsAvailabilityEvent, SeatsAvailabilityHandler,
    SeatsReservationCancelled, SeatsReservationCommitted, SeatsReserved,
};
use conference_domain::values::SeatQuantity;
use cqrs_core::testing::AggregateTest;
use cqrs_core::{EventReader, Originator, Repository, Root, StreamId};
use cqrs_memory::MemoryEventStore;
use proptest::prelude::*;
use support::{seats, send};
use uuid::Uuid;

fn added(seat_type: Uuid, n: i32) -> SeatsAvailabilityEvent {
    AvailableSeatsChanged {
        seats: seats(&[(seat_type, n)]),
    }
    .into()
}

fn reserved(id: Uuid, details: &[(Uuid, i32)], changed: &[(Uuid, i32)]) -> SeatsAvailabilityEvent {
    SeatsReserved {
        reservation_id: id,
        reservation_details: seats(details),
        available_seats_changed: seats(changed),
    }
    .into()
}

struct Types {
    a: Uuid,
    b: Uuid,
    c: Uuid,
}

fn types() -> Types {
    Types {
        a: Uuid::now_v7(),
        b: Uuid::now_v7(),
        c: Uuid::now_v7(),
    }
}

#[test]
fn adding_and_removing_seats_has_no_floor() {
    let t = types();
    let root = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 3)])
        .when(|a| a.execute(|a| Ok::<_, ()>(a.remove_seats(t.a, 5))))
        .then([added(t.a, -5)]);
    assert_eq!(root.remaining(t.a), Some(-2));
    AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .when(|a| a.execute(|a| Ok::<_, ()>(a.add_seats(t.b, 0))))
        .then([added(t.b, 0)]);
}

#[test]
fn a_reservation_takes_what_is_available() {
    let t = types();
    let r = Uuid::now_v7();
    let root = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 10), added(t.b, 2)])
        .when(|a| a.execute(|a| a.make_reservation(r, &seats(&[(t.b, 5), (t.a, 4)]))))
        .then([reserved(r, &[(t.b, 2), (t.a, 4)], &[(t.b, -2), (t.a, -4)])]);
    assert_eq!(root.reservation(r), Some(seats(&[(t.b, 2), (t.a, 4)]).as_slice()));
    assert_eq!((root.remaining(t.a), root.remaining(t.b)), (Some(6), Some(0)));
}

#[test]
fn updating_a_reservation_moves_only_the_difference_and_releases_dropped_types() {
    let t = types();
    let r = Uuid::now_v7();
    AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([
            added(t.a, 10),
            added(t.b, 10),
            added(t.c, 1),
            reserved(r, &[(t.a, 4), (t.b, 3)], &[(t.a, -4), (t.b, -3)]),
        ])
        // a: 4 → 6 (takes 2); c: new, only 1 left; b: dropped, 3 released; repeated a keeps its first position.
        .when(|a| a.execute(|a| a.make_reservation(r, &seats(&[(t.a, 1), (t.c, 5), (t.a, 6)]))))
        .then([reserved(
            r,
            &[(t.a, 6), (t.c, 1)],
            &[(t.a, -2), (t.c, -1), (t.b, 3)],
        )]);
}

#[test]
fn a_request_for_zero_seats_releases_everything() {
    let t = types();
    let r = Uuid::now_v7();
    let root = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 10), reserved(r, &[(t.a, 4)], &[(t.a, -4)])])
        .when(|a| a.execute(|a| a.make_reservation(r, &seats(&[(t.a, 0)]))))
        .then([reserved(r, &[], &[(t.a, 4)])]);
    assert_eq!(root.reservation(r), None);
    assert_eq!(root.remaining(t.a), Some(10));
}

#[test]
fn an_empty_request_still_emits_one_event() {
    let t = types();
    let r = Uuid::now_v7();
    AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 10)])
        .when(|a| a.execute(|a| a.make_reservation(r, &[])))
        .then([reserved(r, &[], &[])]);
}

#[test]
fn negative_remaining_seats_count_as_none() {
    let t = types();
    let r = Uuid::now_v7();
    AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 2), added(t.a, -5)])
        .when(|a| a.execute(|a| a.make_reservation(r, &seats(&[(t.a, 3)]))))
        .then([reserved(r, &[], &[])]);
}

#[test]
fn an_unknown_seat_type_rejects_the_whole_request() {
    let t = types();
    let err = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given([added(t.a, 10)])
        .when(|a| a.execute(|a| a.make_reservation(Uuid::now_v7(), &seats(&[(t.a, 1), (t.b, 1)]))))
        .then_error();
    assert_eq!(err.kind(), "invalid-argument");
}

#[test]
fn cancel_and_commit_act_only_on_pending_reservations() {
    let t = types();
    let r = Uuid::now_v7();
    let history = [added(t.a, 10), reserved(r, &[(t.a, 4)], &[(t.a, -4)])];
    let root = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given(history.clone())
        .when(|a| a.execute(|a| Ok::<_, ()>(a.cancel_reservation(r))))
        .then([SeatsReservationCancelled {
            reservation_id: r,
            available_seats_changed: seats(&[(t.a, 4)]),
        }
        .into()]);
    assert_eq!(root.remaining(t.a), Some(10));
    let root = AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
        .given(history)
        .when(|a| a.execute(|a| Ok::<_, ()>(a.commit_reservation(r))))
        .then([SeatsReservationCommitted { reservation_id: r }.into()]);
    assert_eq!(
        (root.remaining(t.a), root.reservation(r)),
        (Some(6), None),
        "committed seats stay consumed"
    );
    for op in [
        SeatsAvailability::cancel_reservation,
        SeatsAvailability::commit_reservation,
    ] {
        AggregateTest::<SeatsAvailability>::new(Uuid::now_v7())
            .given([added(t.a, 10)])
            .when(|a| a.execute(|a| Ok::<_, ()>(op(a, r))))
            .then_nothing();
    }
}

/// A store and a dispatcher with the SeatsAvailability handler registered as the app does.
fn registered() -> (Arc<MemoryEventStore>, cqrs_core::CommandDispatcher) {
    let store = Arc::new(MemoryEventStore::new());
    let mut dispatcher = cqrs_core::CommandDispatcher::new();
    Arc::new(SeatsAvailabilityHandler::new(Repository::new(store.clone())))
        .register(&mut dispatcher, Arc::new(cqrs_memory::MemoryInbox::new()))
        .unwrap();
    (store, dispatcher)
}

#[tokio::test]
async fn a_seat_count_command_delivered_twice_counts_once() {
    let (store, dispatcher) = registered();
    let (conference, seat_type) = (Uuid::now_v7(), Uuid::now_v7());
    let add = cqrs_core::Envelope::command(AddSeats::new(conference, seat_type, 5));
    let remove = cqrs_core::Envelope::command(RemoveSeats::new(conference, seat_type, 2));
    for envelope in [&add, &add, &remove, &remove, &add] {
        cqrs_core::MessageHandler::handle(&dispatcher, envelope)
            .await
            .unwrap();
    }
    let availability = Repository::<SeatsAvailability, _>::new(store.clone())
        .get(conference)
        .await
        .unwrap();
    assert_eq!(
        availability.remaining(seat_type),
        Some(3),
        "5 added once, 2 removed once"
    );
    let stream = StreamId::for_aggregate("SeatsAvailability", conference);
    assert_eq!(
        store.load(&stream, 0).await.unwrap().len(),
        2,
        "the duplicates appended nothing"
    );
}

#[tokio::test]
async fn the_handler_creates_on_add_and_requires_the_aggregate_otherwise() {
    let store = Arc::new(MemoryEventStore::new());
    let handler = SeatsAvailabilityHandler::new(Repository::new(store.clone()));
    let (conference, seat_type, r) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let stream = StreamId::for_aggregate("SeatsAvailability", conference);

    let err = send(
        &handler,
        MakeSeatReservation::new(conference, r, seats(&[(seat_type, 1)])),
    )
    .await
    .unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));
    let err = send(&handler, CancelSeatReservation::new(conference, r))
        .await
        .unwrap_err();
    assert_eq!(kind_of(&err), Some("not-found"));

    send(&handler, AddSeats::new(conference, seat_type, 5))
        .await
        .unwrap();
    send(&handler, RemoveSeats::new(conference, seat_type, 1))
        .await
        .unwrap();
    let make = MakeSeatReservation::new(conference, r, seats(&[(seat_type, 3)]));
    send(&handler, make.clone()).await.unwrap();
    send(&handler, CommitSeatReservation::new(conference, Uuid::now_v7()))
        .await
        .unwrap();
    send(&handler, CommitSeatReservation::new(conference, r))
        .await
        .unwrap();
    send(&handler, CancelSeatReservation::new(conference, r))
        .await
        .unwrap();

    let events = store.load(&stream, 0).await.unwrap();
    let names: Vec<_> = events.iter().map(|e| e.payload.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "AvailableSeatsChanged",
            "AvailableSeatsChanged",
            "SeatsReserved",
            "SeatsReservationCommitted"
        ]
    );
    assert_eq!(
        events[2].metadata.correlation_id,
        Some(make.id.to_string()),
        "SeatsReserved is correlated with the MakeSeatReservation"
    );
}

#[tokio::test]
async fn a_run_of_reservation_commands_is_decided_in_order_and_saved_up_to_a_failure() {
    let (store, dispatcher) = registered();
    let (conference, seat_type) = (Uuid::now_v7(), Uuid::now_v7());
    let (r1, r2, r3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let stream = StreamId::for_aggregate("SeatsAvailability", conference);
    let batch = |commands: &[cqrs_core::Envelope]| {
        let dispatcher = &dispatcher;
        let commands = commands.to_vec();
        async move {
            let refs: Vec<&cqrs_core::Envelope> = commands.iter().collect();
            dispatcher.dispatch_batch(&refs).await
        }
    };
    use cqrs_core::Envelope;

    let outcome = batch(&[
        Envelope::command(MakeSeatReservation::new(conference, r1, seats(&[(seat_type, 1)]))),
        Envelope::command(MakeSeatReservation::new(conference, r2, seats(&[(seat_type, 1)]))),
    ])
    .await;
    assert_eq!(
        (outcome.handled, outcome.error.as_ref().and_then(kind_of)),
        (0, Some("not-found")),
        "no SeatsAvailability yet: the first command fails, nothing is saved"
    );
    cqrs_core::MessageHandler::handle(
        &dispatcher,
        &Envelope::command(AddSeats::new(conference, seat_type, 5)),
    )
    .await
    .unwrap();

    let commands = [
        MakeSeatReservation::new(conference, r1, seats(&[(seat_type, 2)])),
        MakeSeatReservation::new(conference, r2, seats(&[(seat_type, 2)])),
    ];
    let commit = CommitSeatReservation::new(conference, r1);
    let unknown_type = MakeSeatReservation::new(conference, r3, seats(&[(Uuid::now_v7(), 1)]));
    let outcome = batch(&[
        Envelope::command(commands[0].clone()),
        Envelope::command(commands[1].clone()),
        Envelope::command(commit.clone()),
        Envelope::command(unknown_type),
        Envelope::command(CommitSeatReservation::new(conference, r2)),
    ])
    .await;
    assert_eq!(outcome.handled, 3, "the run stops at the command that fails");
    assert_eq!(outcome.error.as_ref().and_then(kind_of), Some("invalid-argument"));
    let events = store.load(&stream, 1).await.unwrap();
    let caused: Vec<_> = events
        .iter()
        .map(|e| (e.payload.name.as_str(), e.metadata.correlation_id.clone()))
        .collect();
    assert_eq!(
        caused,
        [
            ("SeatsReserved", Some(commands[0].id.to_string())),
            ("SeatsReserved", Some(commands[1].id.to_string())),
            ("SeatsReservationCommitted", Some(commit.id.to_string())),
        ],
        "what came before the failure is saved, each event caused by its own command"
    );

    let other = Uuid::now_v7();
    let outcome = batch(&[
        Envelope::command(CommitSeatReservation::new(conference, r2)),
        Envelope::command(CancelSeatReservation::new(other, r3)),
    ])
    .await;
    assert_eq!(
        (outcome.handled, outcome.error.is_none()),
        (1, true),
        "a run stops before another conference's command, without failing"
    );
    let availability = Repository::<SeatsAvailability, _>::new(store.clone())
        .get(conference)
        .await
        .unwrap();
    assert_eq!(availability.remaining(seat_type), Some(1));
    assert!(availability.pending_reservations().is_empty());
}

// ---- properties -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Add(usize, i32),
    Remove(usize, i32),
    Reserve(usize, Vec<(usize, i32)>),
    Cancel(usize),
    Commit(usize),
}

const SEAT_TYPES: usize = 3;
const RESERVATIONS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    let seat_type = 0..SEAT_TYPES;
    let reservation = 0..RESERVATIONS;
    prop_oneof![
        (seat_type.clone(), 0..50i32).prop_map(|(t, n)| Op::Add(t, n)),
        (seat_type.clone(), 0..20i32).prop_map(|(t, n)| Op::Remove(t, n)),
        (
            reservation.clone(),
            prop::collection::vec((seat_type, 0..30i32), 0..4)
        )
            .prop_map(|(r, w)| Op::Reserve(r, w)),
        reservation.clone().prop_map(Op::Cancel),
        reservation.prop_map(Op::Commit),
    ]
}

struct World {
    types: Vec<Uuid>,
    reservations: Vec<Uuid>,
}

impl World {
    fn new() -> Self {
        Self {
            types: (0..SEAT_TYPES).map(|_| Uuid::now_v7()).collect(),
            reservations: (0..RESERVATIONS).map(|_| Uuid::now_v7()).collect(),
        }
    }

    /// Runs `op`; operations the aggregate refuses (unknown seat types) emit nothing.
    fn run(&self, root: &mut Root<SeatsAvailability>, op: &Op) {
        let result = root.execute(|a| match op {
            Op::Add(t, n) => Ok(a.add_seats(self.types[*t], *n)),
            Op::Remove(t, n) => Ok(a.remove_seats(self.types[*t], *n)),
            Op::Reserve(r, wanted) => a.make_reservation(
                self.reservations[*r],
                &wanted
                    .iter()
                    .map(|&(t, q)| SeatQuantity::new(self.types[t], q))
                    .collect::<Vec<_>>(),
            ),
            Op::Cancel(r) => Ok(a.cancel_reservation(self.reservations[*r])),
            Op::Commit(r) => Ok(a.commit_reservation(self.reservations[*r])),
        });
        if result.is_err() {
            assert!(matches!(op, Op::Reserve(..)));
        }
    }
}

proptest! {
    #[test]
    fn seats_are_conserved(ops in prop::collection::vec(op(), 0..60)) {
        let world = World::new();
        let mut root = Root::<SeatsAvailability>::new(Uuid::now_v7());
        let mut net_added: BTreeMap<Uuid, i32> = BTreeMap::new();
        let mut committed: BTreeMap<Uuid, i32> = BTreeMap::new();
        for op in &ops {
            let before = root.pending().len();
            let pending_before = root.pending_reservations().clone();
            world.run(&mut root, op);
            for event in &root.pending()[before..] {
                match event {
                    SeatsAvailabilityEvent::AvailableSeatsChanged(e) => {
                        for s in &e.seats { *net_added.entry(s.seat_type).or_default() += s.quantity; }
                    }
                    SeatsAvailabilityEvent::ReservationCommitted(e) => {
                        for s in &pending_before[&e.reservation_id] { *committed.entry(s.seat_type).or_default() += s.quantity; }
                    }
                    _ => {}
                }
            }
            for (seat_type, added) in &net_added {
                let remaining = root.remaining(*seat_type).unwrap_or(0);
                let pending: i32 = root.pending_reservations().values().flatten()
                    .filter(|s| s.seat_type == *seat_type).map(|s| s.quantity).sum();
                let sold = committed.get(seat_type).copied().unwrap_or(0);
                prop_assert_eq!(remaining + pending + sold, *added, "seat type {} after {:?}", seat_type, op);
            }
            for held in root.pending_reservations().values().flatten() {
                prop_assert!(held.quantity > 0, "a reservation holds {:?}", held);
            }
        }
    }

    #[test]
    fn a_memento_plus_later_events_equals_a_full_replay(
        ops in prop::collection::vec(op(), 1..60),
        split in 0usize..60,
        after in prop::collection::vec(op(), 0..10),
    ) {
        let world = World::new();
        let id = Uuid::now_v7();
        let mut root = Root::<SeatsAvailability>::new(id);
        for op in &ops { world.run(&mut root, op); }
        let events = root.take_pending();
        let split = split.min(events.len());

        let at_split = Root::<SeatsAvailability>::from_history(id, events[..split].iter().cloned());
        let mut restored = Root::<SeatsAvailability>::restore(id, at_split.version(), at_split.memento());
        restored.record_all(events[split..].iter().cloned());
        restored.take_pending();
        let mut replayed = Root::<SeatsAvailability>::from_history(id, events.iter().cloned());
        prop_assert_eq!(restored.version(), replayed.version());
        prop_assert_eq!(restored.state(), replayed.state());
        prop_assert_eq!(restored.to_memento(), replayed.to_memento());

        // Both produce exactly the same future events, with the same versions.
        for op in &after {
            world.run(&mut restored, op);
            world.run(&mut replayed, op);
        }
        prop_assert_eq!(restored.pending(), replayed.pending());
        prop_assert_eq!(restored.version(), replayed.version());
    }
}
