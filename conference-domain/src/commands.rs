//! Every command of `DOMAIN.md` §3, with its stable name and a fresh UUID v7 id.
//!
//! The five SeatsAvailability commands carry the session id `"SeatsAvailability_<conference
//! id>"`, so a conference's availability has a single writer. Boundary validation of the
//! commands the web sends is in [`RegisterToConference::validate`] and
//! [`AssignRegistrantDetails::validate`].

use chrono::{DateTime, Utc};
use cqrs_core::{Command, Message};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, DomainResult};
use crate::values::{INVALID_EMAIL, Money, PersonalInfo, SeatQuantity, is_valid_email};

/// The session id of a conference's SeatsAvailability commands.
pub fn seats_availability_session(conference_id: Uuid) -> String {
    format!("SeatsAvailability_{conference_id}")
}

macro_rules! commands {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($(#[$fdoc:meta])* $field:ident: $ty:ty),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            /// The command id (UUID v7).
            pub id: Uuid,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            #[doc = concat!("A new `", stringify!($name), "` with a fresh UUID v7 id.")]
            #[allow(clippy::too_many_arguments)]
            pub fn new($($field: $ty),*) -> Self {
                Self { id: Uuid::now_v7(), $($field),* }
            }
        }

        impl Message for $name {
            const NAME: &'static str = stringify!($name);
        }
    )*};
}

macro_rules! plain_commands {
    ($($name:ident),*) => {$(
        impl Command for $name {
            fn command_id(&self) -> Uuid {
                self.id
            }
        }
    )*};
}

macro_rules! seats_availability_commands {
    ($($name:ident),*) => {$(
        impl Command for $name {
            fn command_id(&self) -> Uuid {
                self.id
            }
            fn session_id(&self) -> Option<String> {
                Some(seats_availability_session(self.conference_id))
            }
        }
    )*};
}

commands! {
    /// Place an order, or change the seats of an order that exists.
    RegisterToConference {
        /// The order (chosen by the web front end).
        order_id: Uuid,
        /// The conference; ignored when the order exists.
        conference_id: Uuid,
        /// The seats wanted, one entry per seat type.
        seats: Vec<SeatQuantity>,
    }
    /// Record the seats actually reserved for an order.
    MarkSeatsAsReserved {
        /// The order.
        order_id: Uuid,
        /// The seats reserved.
        seats: Vec<SeatQuantity>,
        /// When the reservation expires.
        expiration: DateTime<Utc>,
    }
    /// Expire an order.
    RejectOrder {
        /// The order.
        order_id: Uuid,
    }
    /// Record who places the order.
    AssignRegistrantDetails {
        /// The order.
        order_id: Uuid,
        /// Registrant's first name.
        first_name: String,
        /// Registrant's last name.
        last_name: String,
        /// Registrant's email.
        email: String,
    }
    /// Confirm an order (paid, or free of charge).
    ConfirmOrder {
        /// The order.
        order_id: Uuid,
    }
    /// The registration process's expiry timer; always sent with a delay.
    ExpireRegistrationProcess {
        /// The process to expire.
        process_id: Uuid,
    }
    /// Reserve seats for an order (or change its reservation).
    MakeSeatReservation {
        /// The conference, whose SeatsAvailability handles it.
        conference_id: Uuid,
        /// The reservation (= the order id).
        reservation_id: Uuid,
        /// The whole reservation wanted.
        seats: Vec<SeatQuantity>,
    }
    /// Release a reservation's seats.
    CancelSeatReservation {
        /// The conference.
        conference_id: Uuid,
        /// The reservation.
        reservation_id: Uuid,
    }
    /// Make a reservation's seats sold.
    CommitSeatReservation {
        /// The conference.
        conference_id: Uuid,
        /// The reservation.
        reservation_id: Uuid,
    }
    /// Add seats of a type (registers the type when new, even with 0 seats).
    AddSeats {
        /// The conference.
        conference_id: Uuid,
        /// The seat type.
        seat_type: Uuid,
        /// How many seats.
        quantity: i32,
    }
    /// Remove seats of a type.
    RemoveSeats {
        /// The conference.
        conference_id: Uuid,
        /// The seat type.
        seat_type: Uuid,
        /// How many seats.
        quantity: i32,
    }
    /// Assign a seat to an attendee.
    AssignSeat {
        /// The seat-assignments aggregate.
        seat_assignments_id: Uuid,
        /// The seat's position.
        position: i32,
        /// Who sits there.
        attendee: PersonalInfo,
    }
    /// Free a seat.
    UnassignSeat {
        /// The seat-assignments aggregate.
        seat_assignments_id: Uuid,
        /// The seat's position.
        position: i32,
    }
    /// Start a payment with the (simulated) third-party processor.
    InitiateThirdPartyProcessorPayment {
        /// The payment (UUID v7).
        payment_id: Uuid,
        /// The order paid for.
        payment_source_id: Uuid,
        /// The conference.
        conference_id: Uuid,
        /// `"Registration for <conference name>"`.
        description: String,
        /// The amount to pay.
        total_amount: Money,
        /// Itemized amounts.
        items: Vec<PaymentItem>,
    }
    /// The processor accepted the payment.
    CompleteThirdPartyProcessorPayment {
        /// The payment.
        payment_id: Uuid,
    }
    /// The processor rejected the payment.
    CancelThirdPartyProcessorPayment {
        /// The payment.
        payment_id: Uuid,
    }
    /// Flag a completed payment for refund (project decision 7).
    RequirePaymentRefund {
        /// The payment.
        payment_id: Uuid,
    }
}

plain_commands!(
    RegisterToConference,
    MarkSeatsAsReserved,
    RejectOrder,
    AssignRegistrantDetails,
    ConfirmOrder,
    ExpireRegistrationProcess,
    AssignSeat,
    UnassignSeat,
    InitiateThirdPartyProcessorPayment,
    CompleteThirdPartyProcessorPayment,
    CancelThirdPartyProcessorPayment,
    RequirePaymentRefund
);

seats_availability_commands!(
    MakeSeatReservation,
    CancelSeatReservation,
    CommitSeatReservation,
    AddSeats,
    RemoveSeats
);

/// One item of a payment to initiate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentItem {
    /// What the item is.
    pub description: String,
    /// Its amount.
    pub amount: Money,
}

/// At most this many seats of one type in one order.
pub const MAX_SEATS_PER_TYPE: i32 = 20;

/// How many seats of a type an order may select (§14.2): what is available (never below
/// zero) plus what the order already holds of that type, at most [`MAX_SEATS_PER_TYPE`].
pub fn selectable_maximum(available: i32, already_reserved: i32) -> i32 {
    (available.max(0) + already_reserved).min(MAX_SEATS_PER_TYPE)
}

impl RegisterToConference {
    /// Boundary validation (§3): at least one positive quantity, and none negative.
    ///
    /// # Errors
    /// `validation` on `seats`.
    pub fn validate(&self) -> DomainResult<()> {
        if !self.seats.iter().any(|s| s.quantity > 0) {
            return Err(DomainError::validation(
                "seats",
                "One or more items are required.",
            ));
        }
        if self.seats.iter().any(|s| s.quantity < 0) {
            return Err(DomainError::validation("seats", "Invalid registration."));
        }
        Ok(())
    }
}

impl AssignRegistrantDetails {
    /// Boundary validation (§3): every field present, and a valid email. Reports every
    /// field at fault, in field order.
    ///
    /// # Errors
    /// One `validation` error per field at fault.
    pub fn validate(&self) -> Result<(), Vec<DomainError>> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("first_name", &self.first_name),
            ("last_name", &self.last_name),
            ("email", &self.email),
        ] {
            if value.trim().is_empty() {
                errors.push(DomainError::validation(field, "This field is required."));
            }
        }
        if !self.email.trim().is_empty() && !is_valid_email(&self.email) {
            errors.push(DomainError::validation("email", INVALID_EMAIL));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::Envelope;

    use super::*;

    #[test]
    fn seats_availability_commands_share_the_conference_session() {
        let conference = Uuid::now_v7();
        let make = MakeSeatReservation::new(conference, Uuid::now_v7(), vec![]);
        let add = AddSeats::new(conference, Uuid::now_v7(), 3);
        let envelope = Envelope::command(make.clone());
        assert_eq!(
            envelope.metadata.session_id.as_deref(),
            Some(format!("SeatsAvailability_{conference}").as_str())
        );
        assert_eq!(envelope.metadata.message_id, make.id.to_string());
        assert_eq!(add.session_id(), make.session_id());
        assert_eq!(ConfirmOrder::new(Uuid::now_v7()).session_id(), None);
        assert_eq!(make.id.get_version_num(), 7);
    }

    #[test]
    fn register_to_conference_validation() {
        let t = Uuid::now_v7();
        let register = |q: &[i32]| {
            RegisterToConference::new(
                Uuid::now_v7(),
                Uuid::now_v7(),
                q.iter().map(|&q| SeatQuantity::new(t, q)).collect(),
            )
            .validate()
        };
        let required = DomainError::validation("seats", "One or more items are required.");
        assert_eq!(register(&[]), Err(required.clone()));
        assert_eq!(register(&[0, 0]), Err(required.clone()));
        assert_eq!(register(&[-1]), Err(required));
        assert_eq!(
            register(&[2, -1]),
            Err(DomainError::validation("seats", "Invalid registration."))
        );
        assert_eq!(register(&[0, 2]), Ok(()));
    }

    #[test]
    fn selectable_maximum_adds_what_the_order_holds_and_caps_at_20() {
        assert_eq!(selectable_maximum(5, 0), 5);
        assert_eq!(selectable_maximum(-3, 2), 2);
        assert_eq!(selectable_maximum(5, 3), 8);
        assert_eq!(selectable_maximum(300, 0), 20);
    }

    #[test]
    fn registrant_details_validation() {
        let details = |f: &str, l: &str, e: &str| {
            AssignRegistrantDetails::new(Uuid::nil(), f.into(), l.into(), e.into())
        };
        assert_eq!(details("Ada", "Lovelace", "ada@example.org").validate(), Ok(()));
        let errors = details("", " ", "nope").validate().unwrap_err();
        let fields: Vec<_> = errors
            .iter()
            .map(|e| match e {
                DomainError::Validation { field, message } => (field.as_str(), message.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            fields,
            [
                ("first_name", "This field is required."),
                ("last_name", "This field is required."),
                ("email", INVALID_EMAIL)
            ]
        );
    }
}
