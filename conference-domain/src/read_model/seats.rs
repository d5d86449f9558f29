//! The order-seats document (§12.4): who sits where, for the seat-assignment page.

use std::future::Future;
use std::sync::Arc;

use cqrs_core::{Envelope, EventDispatcher, Metadata, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ConferenceQueries, route};
use crate::commands::{AssignSeat, UnassignSeat};
use crate::seat_assignments::{SeatAssigned, SeatAssignmentUpdated, SeatAssignmentsCreated, SeatUnassigned};
use crate::values::PersonalInfo;
use crate::{DomainError, Sourced};

/// One seat of the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSeat {
    /// The position.
    pub position: i32,
    /// The seat type.
    pub seat_type: Uuid,
    /// The seat type's name (absent if unknown).
    pub seat_name: Option<String>,
    /// Who sits there.
    pub attendee: PersonalInfo,
}

/// The seats of a confirmed order; its key is `"SeatAssignments-<assignments id>"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSeats {
    /// The seat assignments.
    pub assignments_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The seats, by position.
    pub seats: Vec<OrderSeat>,
}

impl OrderSeats {
    /// The document's key.
    pub fn key(assignments_id: Uuid) -> String {
        format!("SeatAssignments-{assignments_id}")
    }
}

impl OrderSeats {
    /// The commands that make the saved seats look like the `posted` ones (§14.2, step 11),
    /// unassignments first, to send as one batch. Posted seats at positions the document does
    /// not have are ignored; a blank posted email counts as none; a seat whose saved and posted
    /// attendees both lack an email is left alone.
    pub fn changes(&self, posted: &[(i32, PersonalInfo)]) -> Vec<Envelope> {
        let blank_as_none = |info: &PersonalInfo| PersonalInfo {
            email: info.email.clone().filter(|e| !e.trim().is_empty()),
            ..info.clone()
        };
        let pairs: Vec<(&OrderSeat, PersonalInfo)> = posted
            .iter()
            .filter_map(|(position, info)| {
                let saved = self.seats.iter().find(|s| s.position == *position)?;
                Some((saved, blank_as_none(info)))
            })
            .filter(|(saved, info)| saved.attendee.email.is_some() || info.email.is_some())
            .collect();
        let unassigns = pairs
            .iter()
            .filter(|(saved, info)| saved.attendee.email.is_some() && info.email.is_none())
            .map(|(saved, _)| Envelope::command(UnassignSeat::new(self.assignments_id, saved.position)));
        let assigns = pairs
            .iter()
            .filter(|(saved, info)| info.email.is_some() && saved.attendee != *info)
            .map(|(saved, info)| {
                Envelope::command(AssignSeat::new(self.assignments_id, saved.position, info.clone()))
            });
        unassigns.chain(assigns).collect()
    }
}

/// Stores order-seats documents.
pub trait OrderSeatsStore: Send + Sync {
    /// The document of `assignments_id`.
    fn order_seats(&self, assignments_id: Uuid) -> impl Future<Output = Result<Option<OrderSeats>>> + Send;
    /// Creates or overwrites a document.
    fn save_order_seats(&self, seats: OrderSeats) -> impl Future<Output = Result<()>> + Send;
}

/// Builds order-seats documents from SeatAssignments events.
#[derive(Debug)]
pub struct OrderSeatsGenerator<S, Q> {
    store: S,
    conferences: Q,
}

impl<S: OrderSeatsStore + 'static, Q: ConferenceQueries + 'static> OrderSeatsGenerator<S, Q> {
    /// A generator writing to `store`, naming seats through `conferences`.
    pub fn new(store: S, conferences: Q) -> Self {
        Self { store, conferences }
    }

    /// Subscribes to its events on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<SeatAssignmentsCreated, _>(self.clone())?
            .subscribe::<SeatAssigned, _>(self.clone())?
            .subscribe::<SeatAssignmentUpdated, _>(self.clone())?
            .subscribe::<SeatUnassigned, _>(self)?;
        Ok(())
    }

    async fn created(&self, event: &SeatAssignmentsCreated, metadata: &Metadata) -> Result<()> {
        let assignments_id = Sourced::of(metadata)?.id;
        let mut ids: Vec<Uuid> = event.seats.iter().map(|s| s.seat_type).collect();
        ids.sort_unstable();
        ids.dedup();
        let names = self.conferences.seat_type_names(&ids).await?;
        let seats = event
            .seats
            .iter()
            .map(|s| OrderSeat {
                position: s.position,
                seat_type: s.seat_type,
                seat_name: names.iter().find(|n| n.id == s.seat_type).map(|n| n.name.clone()),
                attendee: PersonalInfo::default(),
            })
            .collect();
        self.store
            .save_order_seats(OrderSeats {
                assignments_id,
                order_id: event.order_id,
                seats,
            })
            .await
    }

    async fn set_attendee(&self, metadata: &Metadata, position: i32, attendee: PersonalInfo) -> Result<()> {
        let assignments_id = Sourced::of(metadata)?.id;
        let Some(mut document) = self.store.order_seats(assignments_id).await? else {
            return Err(DomainError::invalid_state(format!("no order seats {assignments_id}")).into());
        };
        match document.seats.iter_mut().find(|s| s.position == position) {
            Some(seat) => seat.attendee = attendee,
            None => tracing::warn!(%assignments_id, position, "no such seat in the order seats"),
        }
        self.store.save_order_seats(document).await
    }

    async fn assigned(&self, event: &SeatAssigned, metadata: &Metadata) -> Result<()> {
        self.set_attendee(metadata, event.position, event.attendee.clone())
            .await
    }

    async fn updated(&self, event: &SeatAssignmentUpdated, metadata: &Metadata) -> Result<()> {
        self.set_attendee(metadata, event.position, event.attendee.clone())
            .await
    }

    async fn unassigned(&self, event: &SeatUnassigned, metadata: &Metadata) -> Result<()> {
        self.set_attendee(metadata, event.position, PersonalInfo::default())
            .await
    }
}

route!([S: OrderSeatsStore + 'static, Q: ConferenceQueries + 'static] OrderSeatsGenerator<S, Q> {
    SeatAssignmentsCreated => created,
    SeatAssigned => assigned,
    SeatAssignmentUpdated => updated,
    SeatUnassigned => unassigned,
});
