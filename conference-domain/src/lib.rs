//! # conference-domain
//!
//! The conference-registration domain of `shared/DOMAIN.md`, on the framework of
//! [`cqrs_core`]. Pure logic: no database and no HTTP. Aggregates are tested with no store;
//! handlers and read-model generators are generic over the framework's store traits and over
//! small read-model store traits that the application implements (on SQL) and the tests
//! implement in memory. Time comes from the framework's [`Clock`](cqrs_core::Clock).
//!
//! | part | items |
//! |---|---|
//! | values | [`values`]: money, seat quantities, order lines, [`PersonalInfo`](values::PersonalInfo), access codes |
//! | commands | [`commands`]: every command, with its stable name and session |
//! | pricing | [`pricing`]: [`PriceList`](pricing::PriceList), banker's rounding |
//! | aggregates | [`order`], [`seats_availability`] (a memento originator), [`seat_assignments`], [`payments`] |
//! | admin side | [`management`]: conferences and seat types |
//! | process manager | [`registration`]: the registration process and its router |
//! | read models | [`read_model`]: draft and priced orders, conferences, order seats, payments, the admin's orders, the public cache |
//!
//! ## Events carry their source in the envelope
//!
//! `DOMAIN.md` gives versioned events a `source_id` and a `version`. Here the event store
//! already records both: the stream is `"<AggregateType>-<id>"` and each stored event has its
//! version, and every published event's [`Metadata::source`] carries them. Event payloads
//! therefore hold only the fields of the event; [`Sourced::of`] reads the source back.
//!
//! ## Example
//!
//! Placing an order, given / when / then, with no store:
//!
//! ```
//! use std::str::FromStr;
//! use chrono::Utc;
//! use conference_domain::order::{Order, OrderEvent};
//! use conference_domain::pricing::{PriceList, SeatTypePrice};
//! use conference_domain::values::{Money, SeatQuantity};
//! use cqrs_core::Root;
//! use uuid::Uuid;
//!
//! let (conference, workshop) = (Uuid::now_v7(), Uuid::now_v7());
//! let prices = PriceList::new(conference, vec![SeatTypePrice { id: workshop, price: Money::from_str("45.30")? }]);
//! let mut order = Root::<Order>::new(Uuid::now_v7());
//! order.execute(|_| Order::place(conference, vec![SeatQuantity::new(workshop, 2)], &prices, Utc::now()))?;
//! let OrderEvent::TotalsCalculated(totals) = &order.pending()[1] else { unreachable!() };
//! assert_eq!(totals.total.to_string(), "90.60");
//! assert_eq!(order.version(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod commands;
pub mod error;
pub mod management;
pub mod order;
pub mod payments;
pub mod pricing;
pub mod read_model;
pub mod registration;
pub mod seat_assignments;
pub mod seats_availability;
pub mod values;

use cqrs_core::{EventMetadata, Metadata};
use uuid::Uuid;

pub use crate::error::{DomainError, DomainResult};

/// Where a published event comes from: its aggregate's id and its version in that stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sourced {
    /// The id of the aggregate that emitted the event (`source_id` in `DOMAIN.md`).
    pub id: Uuid,
    /// The event's version in its stream.
    pub version: i64,
}

impl Sourced {
    /// The source of the event whose envelope has `metadata`.
    ///
    /// # Errors
    /// [`cqrs_core::Error::Permanent`] when the envelope did not come from an aggregate's
    /// stream: such an event cannot be handled, retrying will not help.
    pub fn of(metadata: &Metadata) -> cqrs_core::Result<Self> {
        metadata
            .source
            .as_ref()
            .and_then(|s| {
                Some(Self {
                    id: s.stream_id.aggregate_id()?,
                    version: s.version,
                })
            })
            .ok_or_else(|| {
                cqrs_core::Error::permanent(format!(
                    "message {} has no aggregate source (stream and version)",
                    metadata.message_id
                ))
            })
    }
}

/// The metadata of events saved while handling the command `command_id`: correlated with the
/// command's id (`DOMAIN.md` §1.3) and caused by its message.
fn caused_by_command(command_id: Uuid, metadata: &Metadata) -> EventMetadata {
    EventMetadata {
        correlation_id: Some(command_id.to_string()),
        causation_id: Some(metadata.message_id.clone()),
        ..EventMetadata::default()
    }
}

/// Defines message structs (events) with their stable names: `Name { fields }`.
macro_rules! messages {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl cqrs_core::Message for $name {
            const NAME: &'static str = stringify!($name);
        }
    )*};
}
pub(crate) use messages;
