//! The registration process manager (DOMAIN.md §11): every row of the transition table, the
//! router's lookups on the memory process store, and properties under duplicated and
//! reordered deliveries.

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use conference_domain::commands::{
    CancelSeatReservation, CommitSeatReservation, ConfirmOrder, ExpireRegistrationProcess,
    MakeSeatReservation, MarkSeatsAsReserved, RejectOrder, RequirePaymentRefund,
};
use conference_domain::error::kind_of;
use conference_domain::order::{OrderConfirmed, OrderPlaced, OrderUpdated};
use conference_domain::payments::PaymentCompleted;
use conference_domain::registration::{Outcome, RegistrationProcess, RegistrationRouter, Stage};
use conference_domain::seats_availability::SeatsReserved;
use cqrs_core::testing::{ManualClock, ProcessTest, RecordingBus};
use cqrs_core::{
    CommandHandler, Envelope, EventHandler, Message, Process, ProcessRepository, ProcessState, SharedClock,
};
use cqrs_memory::MemoryProcessStore;
use proptest::prelude::*;
use support::{published, seats, t0};
use uuid::Uuid;

/// One order's ids.
#[derive(Clone, Copy)]
struct Ids {
    order: Uuid,
    conference: Uuid,
    seat_type: Uuid,
    payment: Uuid,
}

impl Ids {
    fn new() -> Self {
        Self {
            order: Uuid::now_v7(),
            conference: Uuid::now_v7(),
            seat_type: Uuid::now_v7(),
            payment: Uuid::now_v7(),
        }
    }

    fn placed_event(self, expires_in: TimeDelta) -> OrderPlaced {
        OrderPlaced {
            conference_id: self.conference,
            seats: seats(&[(self.seat_type, 3)]),
            reservation_auto_expiration: t0() + expires_in,
            access_code: "ABCDEF".into(),
        }
    }

    fn placed(self) -> Envelope {
        self.placed_in(TimeDelta::minutes(15))
    }

    fn placed_in(self, expires_in: TimeDelta) -> Envelope {
        published(
            self.placed_event(expires_in),
            "Order",
            self.order,
            0,
            Some(Uuid::now_v7().to_string()),
        )
    }

    fn updated(self, quantity: i32) -> Envelope {
        let event = OrderUpdated {
            seats: seats(&[(self.seat_type, quantity)]),
        };
        published(event, "Order", self.order, 2, None)
    }

    fn reserved(self, quantity: i32, correlation: Option<Uuid>) -> Envelope {
        let event = SeatsReserved {
            reservation_id: self.order,
            reservation_details: seats(&[(self.seat_type, quantity)]),
            available_seats_changed: seats(&[(self.seat_type, -quantity)]),
        };
        published(
            event,
            "SeatsAvailability",
            self.conference,
            7,
            correlation.map(|c| c.to_string()),
        )
    }

    fn paid(self) -> Envelope {
        let event = PaymentCompleted {
            payment_source_id: self.order,
        };
        published(event, "ThirdPartyProcessorPayment", self.payment, 1, None)
    }

    fn confirmed(self) -> Envelope {
        published(OrderConfirmed {}, "Order", self.order, 5, None)
    }

    /// A process of this order at `stage`, with known command ids.
    fn at(
        self,
        stage: Stage,
        reservation_command: Uuid,
        expiration_command: Uuid,
    ) -> Process<RegistrationProcess> {
        Process::new(
            Uuid::now_v7(),
            RegistrationProcess {
                completed: false,
                conference_id: self.conference,
                order_id: self.order,
                reservation_id: self.order,
                seat_reservation_command_id: reservation_command,
                reservation_auto_expiration: Some(t0() + TimeDelta::minutes(15)),
                expiration_command_id: expiration_command,
                stage,
                outcome: None,
            },
        )
    }

    /// Processes of this order that have not seen its reservation: not started, and awaiting it.
    fn before_reservation(self) -> [Process<RegistrationProcess>; 2] {
        let awaiting = self.at(
            Stage::AwaitingReservationConfirmation,
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        [new_process(), awaiting]
    }

    fn completed(self, outcome: Outcome) -> Process<RegistrationProcess> {
        let mut process = self.at(
            Stage::ReservationConfirmationReceived,
            Uuid::now_v7(),
            Uuid::nil(),
        );
        process.completed = true;
        process.outcome = Some(outcome);
        process
    }
}

type Handler = fn(&mut Process<RegistrationProcess>, &Envelope) -> cqrs_core::Result<()>;

fn test(process: Process<RegistrationProcess>) -> ProcessTest<RegistrationProcess, Handler> {
    ProcessTest::new(process, |p, e| RegistrationProcess::handle(p, e, t0()))
}

fn new_process() -> Process<RegistrationProcess> {
    Process::new(Uuid::now_v7(), RegistrationProcess::default())
}

fn invalid_state(error: &cqrs_core::Error, message: &str) {
    assert_eq!(kind_of(error), Some("invalid-state"), "{error}");
    assert_eq!(error.to_string(), message);
}

// ---- the transition table ---------------------------------------------------------------

#[test]
fn order_placed_starts_the_reservation_and_the_timer() {
    let ids = Ids::new();
    let outcome = test(new_process())
        .when(&ids.placed())
        .then_sent(&[MakeSeatReservation::NAME, ExpireRegistrationProcess::NAME]);
    let (reserve, reserve_meta) = outcome.command::<MakeSeatReservation>(0);
    assert_eq!(
        (
            reserve.conference_id,
            reserve.reservation_id,
            reserve.seats.clone()
        ),
        (ids.conference, ids.order, seats(&[(ids.seat_type, 3)]))
    );
    assert_eq!(
        reserve_meta.time_to_live,
        Some(Duration::from_secs(16 * 60)),
        "window + 1 min"
    );
    assert_eq!(
        reserve_meta.session_id,
        Some(format!("SeatsAvailability_{}", ids.conference))
    );
    let (expire, expire_meta) = outcome.command::<ExpireRegistrationProcess>(1);
    assert_eq!(expire.process_id, outcome.process().id());
    assert_eq!(
        expire_meta.delay,
        Some(Duration::from_secs(29 * 60)),
        "window + 14 min"
    );
    let state = outcome.state();
    assert_eq!(state.stage, Stage::AwaitingReservationConfirmation);
    assert_eq!(
        (state.order_id, state.reservation_id, state.conference_id),
        (ids.order, ids.order, ids.conference)
    );
    assert_eq!(state.seat_reservation_command_id, reserve.id);
    assert_eq!(state.expiration_command_id, expire.id);
    assert_eq!(
        state.reservation_auto_expiration,
        Some(t0() + TimeDelta::minutes(15))
    );
    assert!(!state.completed);
    assert_eq!(state.key(), Some(ids.order.to_string()));
}

#[test]
fn an_order_placed_after_its_window_is_rejected_at_once() {
    let ids = Ids::new();
    for expires_in in [TimeDelta::zero(), TimeDelta::minutes(-1)] {
        let outcome = test(new_process())
            .when(&ids.placed_in(expires_in))
            .then_sent(&[RejectOrder::NAME]);
        assert_eq!(outcome.command::<RejectOrder>(0).0.order_id, ids.order);
        let state = outcome.state();
        assert!(state.completed);
        assert_eq!(state.outcome, Some(Outcome::Expired));
        assert_eq!(state.stage, Stage::NotStarted);
        assert_eq!(state.order_id, ids.order);
    }
}

#[test]
fn a_second_order_placed_is_a_duplicate_unless_the_conference_differs() {
    let ids = Ids::new();
    let outcome = test(new_process())
        .given([ids.placed()])
        .when(&ids.placed())
        .then_nothing_sent();
    assert_eq!(outcome.state().stage, Stage::AwaitingReservationConfirmation);
    let other = Ids {
        conference: Uuid::now_v7(),
        ..ids
    };
    let err = test(new_process())
        .given([ids.placed()])
        .when(&other.placed())
        .then_error();
    assert_eq!(kind_of(&err), Some("invalid-state"));
}

#[test]
fn order_updated_asks_for_a_new_reservation_without_ttl() {
    let ids = Ids::new();
    for stage in [
        Stage::AwaitingReservationConfirmation,
        Stage::ReservationConfirmationReceived,
    ] {
        let old = Uuid::now_v7();
        let outcome = test(ids.at(stage, old, Uuid::now_v7()))
            .when(&ids.updated(5))
            .then_sent(&[MakeSeatReservation::NAME]);
        let (reserve, meta) = outcome.command::<MakeSeatReservation>(0);
        assert_eq!(reserve.seats, seats(&[(ids.seat_type, 5)]));
        assert_eq!((meta.time_to_live, meta.delay), (None, None));
        assert_eq!(outcome.state().seat_reservation_command_id, reserve.id);
        assert_eq!(outcome.state().stage, Stage::AwaitingReservationConfirmation);
    }
    for process in [
        new_process(),
        ids.at(Stage::PaymentConfirmationReceived, Uuid::now_v7(), Uuid::now_v7()),
    ] {
        let err = test(process).when(&ids.updated(5)).then_error();
        invalid_state(&err, "The order cannot be updated at this stage.");
    }
}

#[test]
fn seats_reserved_while_awaiting() {
    let ids = Ids::new();
    let asked = Uuid::now_v7();
    // A stale answer to an earlier request changes nothing.
    let outcome = test(ids.at(Stage::AwaitingReservationConfirmation, asked, Uuid::now_v7()))
        .when(&ids.reserved(3, Some(Uuid::now_v7())))
        .then_nothing_sent();
    assert_eq!(outcome.state().stage, Stage::AwaitingReservationConfirmation);
    // The answer (or an uncorrelated one) marks the seats as reserved, with the placement expiry.
    for correlation in [Some(asked), None] {
        let outcome = test(ids.at(Stage::AwaitingReservationConfirmation, asked, Uuid::now_v7()))
            .when(&ids.reserved(2, correlation))
            .then_sent(&[MarkSeatsAsReserved::NAME]);
        let (mark, _) = outcome.command::<MarkSeatsAsReserved>(0);
        assert_eq!(mark.order_id, ids.order);
        assert_eq!(mark.seats, seats(&[(ids.seat_type, 2)]));
        assert_eq!(mark.expiration, t0() + TimeDelta::minutes(15));
        assert_eq!(outcome.state().stage, Stage::ReservationConfirmationReceived);
    }
}

#[test]
fn seats_reserved_at_other_stages() {
    let ids = Ids::new();
    let asked = Uuid::now_v7();
    for stage in [
        Stage::ReservationConfirmationReceived,
        Stage::PaymentConfirmationReceived,
    ] {
        let outcome = test(ids.at(stage, asked, Uuid::now_v7()))
            .when(&ids.reserved(3, Some(asked)))
            .then_nothing_sent();
        assert_eq!(outcome.state().stage, stage, "a duplicate changes nothing");
        for correlation in [Some(Uuid::now_v7()), None] {
            let err = test(ids.at(stage, asked, Uuid::now_v7()))
                .when(&ids.reserved(3, correlation))
                .then_error();
            invalid_state(&err, "Cannot handle seat reservation at this stage.");
        }
    }
    let err = test(new_process()).when(&ids.reserved(3, None)).then_error();
    invalid_state(&err, "Cannot handle seat reservation at this stage.");
}

#[test]
fn payment_completed() {
    let ids = Ids::new();
    let outcome = test(ids.at(
        Stage::ReservationConfirmationReceived,
        Uuid::now_v7(),
        Uuid::now_v7(),
    ))
    .when(&ids.paid())
    .then_sent(&[ConfirmOrder::NAME]);
    assert_eq!(outcome.command::<ConfirmOrder>(0).0.order_id, ids.order);
    assert_eq!(outcome.state().stage, Stage::PaymentConfirmationReceived);
    // Duplicates.
    let outcome = test(ids.at(Stage::PaymentConfirmationReceived, Uuid::now_v7(), Uuid::now_v7()))
        .when(&ids.paid())
        .then_nothing_sent();
    assert_eq!(outcome.state().stage, Stage::PaymentConfirmationReceived);
    let outcome = test(ids.completed(Outcome::Confirmed))
        .when(&ids.paid())
        .then_nothing_sent();
    assert_eq!(outcome.state().outcome, Some(Outcome::Confirmed));
    // Too early.
    for process in ids.before_reservation() {
        let err = test(process).when(&ids.paid()).then_error();
        invalid_state(&err, "Cannot handle payment confirmation at this stage.");
    }
    // Too late: a refund, and the order stays expired (project decision 7).
    let outcome = test(ids.completed(Outcome::Expired))
        .when(&ids.paid())
        .then_sent(&[RequirePaymentRefund::NAME]);
    assert_eq!(
        outcome.command::<RequirePaymentRefund>(0).0.payment_id,
        ids.payment
    );
    assert_eq!(outcome.state().outcome, Some(Outcome::Expired));
}

#[test]
fn order_confirmed_commits_the_reservation() {
    let ids = Ids::new();
    for stage in [
        Stage::ReservationConfirmationReceived,
        Stage::PaymentConfirmationReceived,
    ] {
        let outcome = test(ids.at(stage, Uuid::now_v7(), Uuid::now_v7()))
            .when(&ids.confirmed())
            .then_sent(&[CommitSeatReservation::NAME]);
        let (commit, _) = outcome.command::<CommitSeatReservation>(0);
        assert_eq!(
            (commit.conference_id, commit.reservation_id),
            (ids.conference, ids.order)
        );
        let state = outcome.state();
        assert!(state.completed);
        assert_eq!(state.outcome, Some(Outcome::Confirmed));
        assert_eq!(state.expiration_command_id, Uuid::nil());
        assert_eq!(state.stage, stage, "the stage is unchanged");
    }
    for process in ids.before_reservation() {
        let err = test(process).when(&ids.confirmed()).then_error();
        invalid_state(&err, "Cannot handle order confirmation at this stage.");
    }
}

#[test]
fn the_expiry_timer() {
    let ids = Ids::new();
    let timer = ExpireRegistrationProcess::new(Uuid::now_v7());
    let fire = Envelope::command(timer.clone());
    for stage in [
        Stage::AwaitingReservationConfirmation,
        Stage::ReservationConfirmationReceived,
    ] {
        let outcome = test(ids.at(stage, Uuid::now_v7(), timer.id))
            .when(&fire)
            .then_sent(&[RejectOrder::NAME, CancelSeatReservation::NAME]);
        assert_eq!(outcome.command::<RejectOrder>(0).0.order_id, ids.order);
        let (cancel, _) = outcome.command::<CancelSeatReservation>(1);
        assert_eq!(
            (cancel.conference_id, cancel.reservation_id),
            (ids.conference, ids.order)
        );
        assert!(outcome.state().completed);
        assert_eq!(outcome.state().outcome, Some(Outcome::Expired));
        // A stale timer is ignored.
        let outcome = test(ids.at(stage, Uuid::now_v7(), Uuid::now_v7()))
            .when(&fire)
            .then_nothing_sent();
        assert!(!outcome.state().completed);
    }
    // A paid order never expires (project decision 9).
    let outcome = test(ids.at(Stage::PaymentConfirmationReceived, Uuid::now_v7(), timer.id))
        .when(&fire)
        .then_nothing_sent();
    assert!(!outcome.state().completed);
}

#[test]
fn a_completed_process_sends_nothing_but_a_refund() {
    let ids = Ids::new();
    let timer = ExpireRegistrationProcess::new(Uuid::now_v7());
    let mut expired = ids.at(Stage::AwaitingReservationConfirmation, Uuid::now_v7(), timer.id);
    expired.completed = true;
    expired.outcome = Some(Outcome::Expired);
    let asked = expired.seat_reservation_command_id;
    let snapshot = || {
        let mut p = Process::new(Uuid::now_v7(), expired.state().clone());
        p.completed = true;
        p
    };
    let _ = test(snapshot())
        .when(&Envelope::command(timer))
        .then_nothing_sent();
    let _ = test(snapshot())
        .when(&ids.reserved(3, Some(asked)))
        .then_nothing_sent();
    let _ = test(snapshot()).when(&ids.placed()).then_nothing_sent();
    invalid_state(
        &test(snapshot()).when(&ids.updated(1)).then_error(),
        "The order cannot be updated at this stage.",
    );
    invalid_state(
        &test(snapshot()).when(&ids.confirmed()).then_error(),
        "Cannot handle order confirmation at this stage.",
    );
    let _ = test(ids.completed(Outcome::Confirmed))
        .when(&ids.confirmed())
        .then_nothing_sent();
}

// ---- the router -------------------------------------------------------------------------

struct Harness {
    router: RegistrationRouter<Arc<MemoryProcessStore>, RecordingBus>,
    store: Arc<MemoryProcessStore>,
    bus: RecordingBus,
    clock: Arc<ManualClock>,
}

impl Harness {
    fn new() -> Self {
        let store = Arc::new(MemoryProcessStore::new());
        let bus = RecordingBus::new();
        let clock = Arc::new(ManualClock::new(t0()));
        let router = RegistrationRouter::new(store.clone(), bus.clone(), clock.clone() as SharedClock);
        Self {
            router,
            store,
            bus,
            clock,
        }
    }

    async fn deliver(&self, envelope: &Envelope) -> cqrs_core::Result<()> {
        let m = &envelope.metadata;
        let message = &envelope.message;
        match envelope.name() {
            OrderPlaced::NAME => {
                EventHandler::handle(&self.router, &*message.decode::<OrderPlaced>()?, m).await
            }
            OrderUpdated::NAME => {
                EventHandler::handle(&self.router, &*message.decode::<OrderUpdated>()?, m).await
            }
            SeatsReserved::NAME => {
                EventHandler::handle(&self.router, &*message.decode::<SeatsReserved>()?, m).await
            }
            PaymentCompleted::NAME => {
                EventHandler::handle(&self.router, &*message.decode::<PaymentCompleted>()?, m).await
            }
            OrderConfirmed::NAME => {
                EventHandler::handle(&self.router, &*message.decode::<OrderConfirmed>()?, m).await
            }
            _ => {
                CommandHandler::handle(&self.router, &*message.decode::<ExpireRegistrationProcess>()?, m)
                    .await
            }
        }
    }

    /// Names of the commands sent since the last call.
    fn sent(&self) -> Vec<String> {
        let names = self.bus.sent().iter().map(|e| e.name().to_owned()).collect();
        self.bus.clear();
        names
    }

    fn last<C: Message + Clone>(&self) -> C {
        let sent = self.bus.sent();
        sent.last()
            .expect("a command was sent")
            .message
            .decode::<C>()
            .unwrap()
            .clone()
    }

    async fn process(&self, order: Uuid, include_completed: bool) -> Option<Process<RegistrationProcess>> {
        let repository = ProcessRepository::<RegistrationProcess, _, _>::new(
            self.store.clone(),
            self.bus.clone(),
            self.clock.clone() as SharedClock,
        );
        repository
            .find_by_key(&order.to_string(), include_completed)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_router_runs_a_paid_order_to_completion() {
    let h = Harness::new();
    let ids = Ids::new();
    h.deliver(&ids.placed()).await.unwrap();
    assert_eq!(
        h.sent(),
        [MakeSeatReservation::NAME, ExpireRegistrationProcess::NAME]
    );
    let asked = h
        .process(ids.order, false)
        .await
        .unwrap()
        .seat_reservation_command_id;
    h.deliver(&ids.reserved(3, Some(asked))).await.unwrap();
    assert_eq!(h.sent(), [MarkSeatsAsReserved::NAME]);
    h.deliver(&ids.paid()).await.unwrap();
    assert_eq!(h.sent(), [ConfirmOrder::NAME]);
    h.deliver(&ids.confirmed()).await.unwrap();
    assert_eq!(h.sent(), [CommitSeatReservation::NAME]);
    assert!(
        h.process(ids.order, false).await.is_none(),
        "completed processes are not found"
    );
    let done = h.process(ids.order, true).await.unwrap();
    assert_eq!(done.outcome, Some(Outcome::Confirmed));

    // Redeliveries after completion: each finds no running process.
    h.deliver(&ids.confirmed()).await.unwrap();
    h.deliver(&ids.updated(1)).await.unwrap();
    h.deliver(&ids.paid()).await.unwrap();
    assert!(h.sent().is_empty());
    // A late SeatsReserved releases what it holds (project decision 8).
    h.deliver(&ids.reserved(3, Some(asked))).await.unwrap();
    assert_eq!(h.sent(), [CancelSeatReservation::NAME]);
}

#[tokio::test]
async fn the_router_expires_an_unpaid_order_and_flags_a_late_payment() {
    let h = Harness::new();
    let ids = Ids::new();
    h.deliver(&ids.placed()).await.unwrap();
    let timer: ExpireRegistrationProcess = h.last();
    h.sent();
    h.deliver(&Envelope::command(timer.clone())).await.unwrap();
    assert_eq!(h.sent(), [RejectOrder::NAME, CancelSeatReservation::NAME]);
    h.deliver(&Envelope::command(timer)).await.unwrap();
    assert!(h.sent().is_empty(), "a completed process ignores its timer");
    h.deliver(&Envelope::command(ExpireRegistrationProcess::new(Uuid::now_v7())))
        .await
        .unwrap();
    assert!(h.sent().is_empty(), "an unknown process id does nothing");

    h.deliver(&ids.paid()).await.unwrap();
    let refund: RequirePaymentRefund = h.last();
    assert_eq!(refund.payment_id, ids.payment);
    assert_eq!(h.sent(), [RequirePaymentRefund::NAME]);

    // No process at all for a payment: logged only.
    h.deliver(&Ids::new().paid()).await.unwrap();
    assert!(h.sent().is_empty());
}

#[tokio::test]
async fn the_router_cancels_orphan_reservations_and_creates_a_new_process_for_a_late_duplicate() {
    let h = Harness::new();
    let ids = Ids::new();
    h.deliver(&ids.reserved(2, None)).await.unwrap();
    let cancel: CancelSeatReservation = h.last();
    assert_eq!(h.sent(), [CancelSeatReservation::NAME]);
    assert_eq!(
        (cancel.conference_id, cancel.reservation_id),
        (ids.conference, ids.order)
    );

    // The OrderPlaced of an order whose window passed creates a process that rejects at once.
    h.clock.advance(Duration::from_secs(20 * 60));
    h.deliver(&ids.placed()).await.unwrap();
    assert_eq!(h.sent(), [RejectOrder::NAME]);
    h.deliver(&ids.placed()).await.unwrap();
    assert_eq!(
        h.sent(),
        [RejectOrder::NAME],
        "each duplicate finds no running process"
    );
}

#[tokio::test]
async fn router_errors_save_nothing() {
    let h = Harness::new();
    let ids = Ids::new();
    h.deliver(&ids.placed()).await.unwrap();
    h.sent();
    let err = h.deliver(&ids.confirmed()).await.unwrap_err();
    invalid_state(&err, "Cannot handle order confirmation at this stage.");
    let process = h.process(ids.order, false).await.unwrap();
    assert_eq!(process.stage, Stage::AwaitingReservationConfirmation);
    assert!(h.sent().is_empty());
}

// ---- properties -------------------------------------------------------------------------

/// What the rest of the system does with the commands the process sends, so that each reply
/// joins the pool of messages that may be delivered (again, and in any order).
struct World {
    ids: Ids,
    pool: Vec<Envelope>,
    order_confirmed: bool,
}

impl World {
    fn react(&mut self, command: &Envelope) {
        let ids = self.ids;
        match command.name() {
            MakeSeatReservation::NAME => {
                let reserve = command.message.decode::<MakeSeatReservation>().unwrap();
                self.pool
                    .push(ids.reserved(reserve.seats[0].quantity, Some(reserve.id)));
            }
            ExpireRegistrationProcess::NAME => self.pool.push(command.clone()),
            MarkSeatsAsReserved::NAME => self.pool.push(ids.paid()),
            ConfirmOrder::NAME => {
                self.order_confirmed = true;
                self.pool.push(ids.confirmed());
            }
            _ => {}
        }
    }
}

proptest! {
    #[test]
    fn duplicated_and_reordered_deliveries_never_commit_an_unconfirmed_order(
        picks in prop::collection::vec(any::<prop::sample::Index>(), 1..40),
        late in any::<bool>(),
    ) {
        let ids = Ids::new();
        let mut world = World {
            ids,
            pool: vec![ids.placed_in(if late { TimeDelta::zero() } else { TimeDelta::minutes(15) }), ids.updated(2)],
            order_confirmed: false,
        };
        let mut process = new_process();
        for pick in picks {
            let message = world.pool[pick.index(world.pool.len())].clone();
            let before = process.state().clone();
            let was_completed = process.is_completed();
            process.caused_by(&message.metadata);
            let result = RegistrationProcess::handle(&mut process, &message, t0());
            let sent = process.take_outgoing();
            if result.is_err() {
                // The router saves nothing on an error: the message will be redelivered.
                *process.state_mut() = before;
                continue;
            }
            for command in &sent {
                if was_completed {
                    prop_assert_eq!(command.name(), RequirePaymentRefund::NAME, "a completed process sent a command");
                }
                if command.name() == CommitSeatReservation::NAME {
                    prop_assert!(world.order_confirmed, "CommitSeatReservation for an unconfirmed order");
                }
                if command.name() == ConfirmOrder::NAME {
                    prop_assert_ne!(process.outcome, Some(Outcome::Expired), "confirming an expired order");
                }
                world.react(command);
            }
        }
    }
}
