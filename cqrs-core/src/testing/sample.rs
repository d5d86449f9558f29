//! A small seat-inventory aggregate and a booking process, shaped like the conference domain's
//! SeatsAvailability and registration process. Tests, benches and the conformance suite use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Originator};
use crate::message::{Command, Message};
use crate::process::ProcessState;

/// Seats of a type were added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsAdded {
    /// The seat type.
    pub seat_type: u32,
    /// How many.
    pub quantity: i32,
}

impl Message for SeatsAdded {
    const NAME: &'static str = "sample.SeatsAdded";
}

/// Seats were held for a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsReserved {
    /// The reservation.
    pub reservation: u64,
    /// The seat type.
    pub seat_type: u32,
    /// How many.
    pub quantity: i32,
}

impl Message for SeatsReserved {
    const NAME: &'static str = "sample.SeatsReserved";
}

/// A reservation was cancelled and its seats returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationCancelled {
    /// The reservation.
    pub reservation: u64,
}

impl Message for ReservationCancelled {
    const NAME: &'static str = "sample.ReservationCancelled";
}

crate::event_set! {
    /// The events of an [`Inventory`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum InventoryEvent {
        SeatsAdded(SeatsAdded),
        SeatsReserved(SeatsReserved),
        ReservationCancelled(ReservationCancelled),
    }
}

/// Why an inventory refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// Fewer seats are left than requested.
    #[error("only {available} seats of type {seat_type} left")]
    NotEnough {
        /// The seat type.
        seat_type: u32,
        /// How many are left.
        available: i32,
    },
    /// A quantity was zero or negative.
    #[error("quantity must be positive")]
    NonPositive,
}

/// Remaining seats per type and the reservations holding seats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inventory {
    available: BTreeMap<u32, i32>,
    reservations: BTreeMap<u64, (u32, i32)>,
}

impl Inventory {
    /// Seats of `seat_type` still available.
    pub fn available(&self, seat_type: u32) -> i32 {
        self.available.get(&seat_type).copied().unwrap_or(0)
    }

    /// Seats held by `reservation`, if it exists.
    pub fn reservation(&self, reservation: u64) -> Option<(u32, i32)> {
        self.reservations.get(&reservation).copied()
    }

    /// Adds seats.
    ///
    /// # Errors
    /// [`InventoryError::NonPositive`] for a quantity ≤ 0.
    pub fn add(&self, seat_type: u32, quantity: i32) -> Result<Vec<InventoryEvent>, InventoryError> {
        if quantity <= 0 {
            return Err(InventoryError::NonPositive);
        }
        Ok(vec![SeatsAdded { seat_type, quantity }.into()])
    }

    /// Holds seats for a reservation.
    ///
    /// # Errors
    /// When fewer seats are left, or the quantity is not positive.
    pub fn reserve(
        &self,
        reservation: u64,
        seat_type: u32,
        quantity: i32,
    ) -> Result<Vec<InventoryEvent>, InventoryError> {
        if quantity <= 0 {
            return Err(InventoryError::NonPositive);
        }
        let available = self.available(seat_type);
        if available < quantity {
            return Err(InventoryError::NotEnough { seat_type, available });
        }
        Ok(vec![
            SeatsReserved {
                reservation,
                seat_type,
                quantity,
            }
            .into(),
        ])
    }

    /// Cancels a reservation; cancelling an unknown one records nothing.
    pub fn cancel(&self, reservation: u64) -> Vec<InventoryEvent> {
        if self.reservations.contains_key(&reservation) {
            vec![ReservationCancelled { reservation }.into()]
        } else {
            Vec::new()
        }
    }
}

impl Aggregate for Inventory {
    const TYPE: &'static str = "Inventory";
    type Event = InventoryEvent;

    fn new(_id: Uuid) -> Self {
        Self::default()
    }

    fn apply(&mut self, event: &InventoryEvent) {
        match event {
            InventoryEvent::SeatsAdded(e) => *self.available.entry(e.seat_type).or_default() += e.quantity,
            InventoryEvent::SeatsReserved(e) => {
                *self.available.entry(e.seat_type).or_default() -= e.quantity;
                self.reservations.insert(e.reservation, (e.seat_type, e.quantity));
            }
            InventoryEvent::ReservationCancelled(e) => {
                if let Some((seat_type, quantity)) = self.reservations.remove(&e.reservation) {
                    *self.available.entry(seat_type).or_default() += quantity;
                }
            }
        }
    }
}

/// The memento of an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryMemento {
    /// `(seat type, available)` pairs.
    pub available: Vec<(u32, i32)>,
    /// `(reservation, seat type, quantity)` triples.
    pub reservations: Vec<(u64, u32, i32)>,
}

impl Originator for Inventory {
    type Memento = InventoryMemento;
    const MEMENTO_VERSION: u32 = 1;

    fn to_memento(&self) -> InventoryMemento {
        InventoryMemento {
            available: self.available.iter().map(|(k, v)| (*k, *v)).collect(),
            reservations: self.reservations.iter().map(|(r, (t, q))| (*r, *t, *q)).collect(),
        }
    }

    fn from_memento(_id: Uuid, memento: InventoryMemento) -> Self {
        Self {
            available: memento.available.into_iter().collect(),
            reservations: memento
                .reservations
                .into_iter()
                .map(|(r, t, q)| (r, (t, q)))
                .collect(),
        }
    }
}

/// A sample command: remind someone of something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remind {
    /// The command id.
    pub id: Uuid,
    /// What to remind of.
    pub note: String,
}

impl Remind {
    /// A reminder with a fresh id.
    pub fn new(note: impl Into<String>) -> Self {
        Self {
            id: Uuid::now_v7(),
            note: note.into(),
        }
    }
}

impl Message for Remind {
    const NAME: &'static str = "sample.Remind";
}

impl Command for Remind {
    fn command_id(&self) -> Uuid {
        self.id
    }
}

/// The state of a sample booking process, found by its order id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booking {
    /// The order the booking coordinates.
    pub order: Uuid,
    /// How many messages it has handled.
    pub step: u32,
    /// Whether it has finished.
    pub done: bool,
}

impl ProcessState for Booking {
    const TYPE: &'static str = "sample.Booking";

    fn is_completed(&self) -> bool {
        self.done
    }

    fn key(&self) -> Option<String> {
        Some(self.order.to_string())
    }
}
