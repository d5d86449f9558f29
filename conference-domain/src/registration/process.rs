//! The registration process's state and its transition table (`DOMAIN.md` §11.1–11.2).
//!
//! Pure logic: each `on_*` function takes the loaded [`Process`], the message and what it needs
//! to know about the world (the source of an event, the time), changes the state and queues
//! the commands to send. The [router](super::RegistrationRouter) loads and saves around it.

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::{Envelope, Error, Message, Metadata, Process, ProcessState, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Sourced;
use crate::commands::{
    CancelSeatReservation, CommitSeatReservation, ConfirmOrder, ExpireRegistrationProcess,
    MakeSeatReservation, MarkSeatsAsReserved, RejectOrder, RequirePaymentRefund,
};
use crate::error::DomainError;
use crate::order::{OrderConfirmed, OrderPlaced, OrderUpdated};
use crate::payments::PaymentCompleted;
use crate::seats_availability::SeatsReserved;

/// How long after the reservation expires the process releases the seats.
pub const BUFFER_BEFORE_RELEASING_SEATS_AFTER_EXPIRATION: TimeDelta = TimeDelta::minutes(14);

/// How much longer than the reservation window a `MakeSeatReservation` may wait to be handled.
pub const MAKE_SEAT_RESERVATION_TTL_MARGIN: TimeDelta = TimeDelta::minutes(1);

/// Where a registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Stage {
    /// No order seen yet (or rejected at once).
    #[default]
    NotStarted = 0,
    /// Waiting for `SeatsReserved`.
    AwaitingReservationConfirmation = 1,
    /// Seats reserved; waiting for payment or a free confirmation.
    ReservationConfirmationReceived = 2,
    /// Paid; `ConfirmOrder` is on its way.
    PaymentConfirmationReceived = 3,
}

/// How a completed registration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The order was confirmed.
    Confirmed,
    /// The order expired.
    Expired,
}

/// The registration process's state document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegistrationProcess {
    /// Whether the process has finished.
    pub completed: bool,
    /// The conference.
    pub conference_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The reservation (= the order id).
    pub reservation_id: Uuid,
    /// The id of the latest `MakeSeatReservation` (nil until sent).
    pub seat_reservation_command_id: Uuid,
    /// When the order's reservation expires.
    pub reservation_auto_expiration: Option<DateTime<Utc>>,
    /// The id of the pending `ExpireRegistrationProcess` (nil when none counts).
    pub expiration_command_id: Uuid,
    /// Where the registration stands.
    pub stage: Stage,
    /// How it ended (`None` while running).
    pub outcome: Option<Outcome>,
}

impl ProcessState for RegistrationProcess {
    const TYPE: &'static str = "RegistrationProcessManager";

    fn is_completed(&self) -> bool {
        self.completed
    }

    /// The order id: the router finds processes by order (and reservation, the same id).
    fn key(&self) -> Option<String> {
        (!self.order_id.is_nil()).then(|| self.order_id.to_string())
    }
}

fn to_std(delta: TimeDelta) -> std::time::Duration {
    delta.to_std().unwrap_or_default()
}

fn refused(message: &str) -> cqrs_core::Error {
    DomainError::invalid_state(message).into()
}

impl RegistrationProcess {
    /// Handles any of the process's six messages, given in its envelope, at `now`: what the
    /// `ProcessTest` kit of `cqrs_core::testing` drives. The router calls the
    /// `on_*` functions directly.
    ///
    /// # Errors
    /// As the `on_*` function for the message; [`Error::NoHandler`] for another message.
    pub fn handle(process: &mut Process<Self>, envelope: &Envelope, now: DateTime<Utc>) -> Result<()> {
        let metadata = &envelope.metadata;
        match envelope.name() {
            OrderPlaced::NAME => {
                let order_id = Sourced::of(metadata)?.id;
                Self::on_order_placed(
                    process,
                    order_id,
                    &*envelope.message.decode::<OrderPlaced>()?,
                    now,
                )
            }
            OrderUpdated::NAME => {
                Self::on_order_updated(process, &*envelope.message.decode::<OrderUpdated>()?)
            }
            SeatsReserved::NAME => {
                Self::on_seats_reserved(process, &*envelope.message.decode::<SeatsReserved>()?, metadata)
            }
            PaymentCompleted::NAME => Self::on_payment_completed(process, Sourced::of(metadata)?.id),
            OrderConfirmed::NAME => Self::on_order_confirmed(process),
            ExpireRegistrationProcess::NAME => {
                Self::on_expire(process, &*envelope.message.decode::<ExpireRegistrationProcess>()?);
                Ok(())
            }
            other => Err(Error::NoHandler(other.to_owned())),
        }
    }

    /// `OrderPlaced` from the order `order_id`, handled at `now`.
    ///
    /// # Errors
    /// `invalid-state` when a started process sees an order of another conference.
    pub fn on_order_placed(
        process: &mut Process<Self>,
        order_id: Uuid,
        event: &OrderPlaced,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if process.stage != Stage::NotStarted || process.completed {
            if event.conference_id != process.conference_id {
                return Err(refused(
                    "The order belongs to another conference than this process.",
                ));
            }
            tracing::info!(%order_id, "duplicate OrderPlaced ignored");
            return Ok(());
        }
        process.conference_id = event.conference_id;
        process.order_id = order_id;
        process.reservation_id = order_id;
        process.reservation_auto_expiration = Some(event.reservation_auto_expiration);
        let window = event.reservation_auto_expiration - now;
        if window <= TimeDelta::zero() {
            process.send(Envelope::command(RejectOrder::new(order_id)));
            process.completed = true;
            process.outcome = Some(Outcome::Expired);
            return Ok(());
        }
        process.stage = Stage::AwaitingReservationConfirmation;
        let reserve = MakeSeatReservation::new(event.conference_id, order_id, event.seats.clone());
        process.seat_reservation_command_id = reserve.id;
        process.send(
            Envelope::command(reserve).with_time_to_live(to_std(window + MAKE_SEAT_RESERVATION_TTL_MARGIN)),
        );
        let expire = ExpireRegistrationProcess::new(process.id());
        process.expiration_command_id = expire.id;
        process.send(
            Envelope::command(expire)
                .with_delay(to_std(window + BUFFER_BEFORE_RELEASING_SEATS_AFTER_EXPIRATION)),
        );
        Ok(())
    }

    /// `OrderUpdated`: reserve the new seats (no time to live, no new expiry).
    ///
    /// # Errors
    /// `invalid-state` before the order is placed or once paid.
    pub fn on_order_updated(process: &mut Process<Self>, event: &OrderUpdated) -> Result<()> {
        if process.completed {
            return Err(refused("The order cannot be updated at this stage."));
        }
        match process.stage {
            Stage::AwaitingReservationConfirmation | Stage::ReservationConfirmationReceived => {
                process.stage = Stage::AwaitingReservationConfirmation;
                let reserve = MakeSeatReservation::new(
                    process.conference_id,
                    process.reservation_id,
                    event.seats.clone(),
                );
                process.seat_reservation_command_id = reserve.id;
                process.send(Envelope::command(reserve));
                Ok(())
            }
            Stage::NotStarted | Stage::PaymentConfirmationReceived => {
                Err(refused("The order cannot be updated at this stage."))
            }
        }
    }

    /// `SeatsReserved`, with its envelope's metadata (the correlation id says which
    /// `MakeSeatReservation` it answers).
    ///
    /// # Errors
    /// `invalid-state` when no reservation is awaited and it is not a duplicate.
    pub fn on_seats_reserved(
        process: &mut Process<Self>,
        event: &SeatsReserved,
        metadata: &Metadata,
    ) -> Result<()> {
        let expected = process.seat_reservation_command_id.to_string();
        let correlation = metadata.correlation_id.as_deref();
        if process.stage == Stage::AwaitingReservationConfirmation && !process.completed {
            if correlation.is_some_and(|c| c != expected) {
                tracing::warn!(order_id = %process.order_id, ?correlation, "stale SeatsReserved ignored");
                return Ok(());
            }
            process.stage = Stage::ReservationConfirmationReceived;
            let expiration = process
                .reservation_auto_expiration
                .ok_or_else(|| refused("The process has no reservation expiry."))?;
            let order_id = process.order_id;
            process.send(Envelope::command(MarkSeatsAsReserved::new(
                order_id,
                event.reservation_details.clone(),
                expiration,
            )));
            return Ok(());
        }
        if correlation == Some(expected.as_str()) {
            tracing::info!(order_id = %process.order_id, "duplicate SeatsReserved ignored");
            return Ok(());
        }
        Err(refused("Cannot handle seat reservation at this stage."))
    }

    /// `PaymentCompleted` for the payment `payment_id`.
    ///
    /// # Errors
    /// `invalid-state` before the reservation is confirmed.
    pub fn on_payment_completed(process: &mut Process<Self>, payment_id: Uuid) -> Result<()> {
        if process.completed {
            match process.outcome {
                Some(Outcome::Expired) => {
                    process.send(Envelope::command(RequirePaymentRefund::new(payment_id)));
                }
                _ => tracing::info!(order_id = %process.order_id, "duplicate PaymentCompleted ignored"),
            }
            return Ok(());
        }
        match process.stage {
            Stage::ReservationConfirmationReceived => {
                process.stage = Stage::PaymentConfirmationReceived;
                let order_id = process.order_id;
                process.send(Envelope::command(ConfirmOrder::new(order_id)));
                Ok(())
            }
            Stage::PaymentConfirmationReceived => {
                tracing::info!(order_id = %process.order_id, "duplicate PaymentCompleted ignored");
                Ok(())
            }
            Stage::NotStarted | Stage::AwaitingReservationConfirmation => {
                Err(refused("Cannot handle payment confirmation at this stage."))
            }
        }
    }

    /// `OrderConfirmed`: commit the reservation and complete.
    ///
    /// # Errors
    /// `invalid-state` before the reservation is confirmed.
    pub fn on_order_confirmed(process: &mut Process<Self>) -> Result<()> {
        if process.outcome == Some(Outcome::Confirmed) {
            tracing::info!(order_id = %process.order_id, "duplicate OrderConfirmed ignored");
            return Ok(());
        }
        if process.completed {
            return Err(refused("Cannot handle order confirmation at this stage."));
        }
        match process.stage {
            Stage::ReservationConfirmationReceived | Stage::PaymentConfirmationReceived => {
                process.expiration_command_id = Uuid::nil();
                process.completed = true;
                process.outcome = Some(Outcome::Confirmed);
                let commit = CommitSeatReservation::new(process.conference_id, process.reservation_id);
                process.send(Envelope::command(commit));
                Ok(())
            }
            Stage::NotStarted | Stage::AwaitingReservationConfirmation => {
                Err(refused("Cannot handle order confirmation at this stage."))
            }
        }
    }

    /// `ExpireRegistrationProcess`: expire the order and release its seats, unless it is paid
    /// (project decision 9) or the timer is stale.
    pub fn on_expire(process: &mut Process<Self>, command: &ExpireRegistrationProcess) {
        if process.completed {
            tracing::info!(order_id = %process.order_id, "expiry timer of a completed process ignored");
            return;
        }
        if process.stage == Stage::PaymentConfirmationReceived {
            tracing::info!(order_id = %process.order_id, "paid order: expiry timer ignored");
            return;
        }
        if command.id != process.expiration_command_id {
            tracing::info!(order_id = %process.order_id, "stale expiry timer ignored");
            return;
        }
        process.completed = true;
        process.outcome = Some(Outcome::Expired);
        let (order_id, conference_id, reservation_id) =
            (process.order_id, process.conference_id, process.reservation_id);
        process.send(Envelope::command(RejectOrder::new(order_id)));
        process.send(Envelope::command(CancelSeatReservation::new(
            conference_id,
            reservation_id,
        )));
    }
}
