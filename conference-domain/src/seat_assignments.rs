//! The SeatAssignments aggregate (`DOMAIN.md` §8), its events (§4.2) and its handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use cqrs_core::{
    Aggregate, CommandDispatcher, CommandHandler, EventDispatcher, EventHandler, EventStore, Metadata,
    Repository, Result, Root, event_set,
};
use uuid::{Uuid, uuid};

use crate::commands::{AssignSeat, UnassignSeat};
use crate::error::{DomainError, DomainResult};
use crate::order::{Order, OrderConfirmed, OrderPaymentConfirmed};
use crate::values::{PersonalInfo, SeatAssignmentInfo, SeatQuantity};
use crate::{Sourced, caused_by_command, messages};

/// The namespace of seat-assignments ids: `uuid5(NAMESPACE_URL,
/// "urn:conference-domain:seat-assignments")`.
pub const SEAT_ASSIGNMENTS_NAMESPACE: Uuid = uuid!("5abd2de5-ef5b-5a92-b3f1-7e41063a2899");

/// The seat-assignments id of an order (project decision 2): a UUID v5 of the order id's bytes.
pub fn seat_assignments_id(order_id: Uuid) -> Uuid {
    Uuid::new_v5(&SEAT_ASSIGNMENTS_NAMESPACE, order_id.as_bytes())
}

messages! {
    /// The seats of a confirmed order, one position per seat.
    SeatAssignmentsCreated {
        /// The order.
        order_id: Uuid,
        /// Positions `0..N` and their seat types.
        seats: Vec<SeatAssignmentInfo>,
    }
    /// A seat was given to an attendee.
    SeatAssigned {
        /// The position.
        position: i32,
        /// Its seat type.
        seat_type: Uuid,
        /// The attendee.
        attendee: PersonalInfo,
    }
    /// A seat was freed.
    SeatUnassigned {
        /// The position.
        position: i32,
    }
    /// The attendee's name on a seat changed.
    SeatAssignmentUpdated {
        /// The position.
        position: i32,
        /// The attendee.
        attendee: PersonalInfo,
    }
}

event_set! {
    /// Every event of a SeatAssignments stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum SeatAssignmentsEvent {
        Created(SeatAssignmentsCreated),
        Assigned(SeatAssigned),
        Unassigned(SeatUnassigned),
        Updated(SeatAssignmentUpdated),
    }
}

/// One seat: its type and who sits there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    /// The seat type.
    pub seat_type: Uuid,
    /// The attendee (all fields absent when free).
    pub attendee: PersonalInfo,
}

/// The seats of one confirmed order and their attendees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeatAssignments {
    order_id: Uuid,
    seats: BTreeMap<i32, Seat>,
}

impl Aggregate for SeatAssignments {
    const TYPE: &'static str = "SeatAssignments";
    type Event = SeatAssignmentsEvent;

    fn new(_id: Uuid) -> Self {
        Self::default()
    }

    fn apply(&mut self, event: &SeatAssignmentsEvent) {
        match event {
            SeatAssignmentsEvent::Created(e) => {
                self.order_id = e.order_id;
                self.seats = e
                    .seats
                    .iter()
                    .map(|s| {
                        let seat = Seat {
                            seat_type: s.seat_type,
                            attendee: PersonalInfo::default(),
                        };
                        (s.position, seat)
                    })
                    .collect();
            }
            SeatAssignmentsEvent::Assigned(e) => {
                self.seats.insert(
                    e.position,
                    Seat {
                        seat_type: e.seat_type,
                        attendee: e.attendee.clone(),
                    },
                );
            }
            SeatAssignmentsEvent::Unassigned(e) => {
                if let Some(seat) = self.seats.get_mut(&e.position) {
                    seat.attendee = PersonalInfo::default();
                }
            }
            SeatAssignmentsEvent::Updated(e) => {
                if let Some(seat) = self.seats.get_mut(&e.position) {
                    seat.attendee = e.attendee.clone();
                }
            }
        }
    }
}

fn differs_ignoring_case(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.to_lowercase() != b.to_lowercase(),
        (a, b) => a.is_some() != b.is_some(),
    }
}

impl SeatAssignments {
    /// New seat assignments for `order_id`: each seat line expands, in order, into `quantity`
    /// consecutive positions from 0. The id is [`seat_assignments_id`] of the order.
    pub fn create(order_id: Uuid, seats: &[SeatQuantity]) -> Root<Self> {
        let positions = seats
            .iter()
            .flat_map(|s| std::iter::repeat_n(s.seat_type, usize::try_from(s.quantity).unwrap_or(0)))
            .zip(0..)
            .map(|(seat_type, position)| SeatAssignmentInfo { position, seat_type })
            .collect();
        let mut root = Root::<Self>::new(seat_assignments_id(order_id));
        root.record(SeatAssignmentsCreated {
            order_id,
            seats: positions,
        });
        root
    }

    /// The order.
    pub fn order_id(&self) -> Uuid {
        self.order_id
    }

    /// The seats by position.
    pub fn seats(&self) -> &BTreeMap<i32, Seat> {
        &self.seats
    }

    fn seat(&self, position: i32) -> DomainResult<&Seat> {
        self.seats
            .get(&position)
            .ok_or_else(|| DomainError::invalid_argument("position", "out of range"))
    }

    /// Gives the seat at `position` to `attendee` (§8.3): a new email unassigns the previous
    /// attendee first; a change of name (ignoring case) is an update; nothing else emits.
    ///
    /// # Errors
    /// `invalid-argument` when the attendee has no email or the position is unknown.
    pub fn assign_seat(
        &self,
        position: i32,
        attendee: PersonalInfo,
    ) -> DomainResult<Vec<SeatAssignmentsEvent>> {
        if attendee.email.as_deref().is_none_or(str::is_empty) {
            return Err(DomainError::invalid_argument(
                "attendee.email",
                "attendee email is required",
            ));
        }
        let current = self.seat(position)?;
        let was = &current.attendee;
        let mut events = Vec::new();
        if differs_ignoring_case(attendee.email.as_deref(), was.email.as_deref()) {
            if was.email.is_some() {
                events.push(SeatUnassigned { position }.into());
            }
            events.push(
                SeatAssigned {
                    position,
                    seat_type: current.seat_type,
                    attendee,
                }
                .into(),
            );
        } else if differs_ignoring_case(attendee.first_name.as_deref(), was.first_name.as_deref())
            || differs_ignoring_case(attendee.last_name.as_deref(), was.last_name.as_deref())
        {
            events.push(SeatAssignmentUpdated { position, attendee }.into());
        }
        Ok(events)
    }

    /// Frees the seat at `position`; a free seat emits nothing.
    ///
    /// # Errors
    /// `invalid-argument` when the position is unknown.
    pub fn unassign(&self, position: i32) -> DomainResult<Vec<SeatAssignmentsEvent>> {
        let seat = self.seat(position)?;
        Ok(if seat.attendee.email.is_some() {
            vec![SeatUnassigned { position }.into()]
        } else {
            vec![]
        })
    }
}

/// Creates seat assignments when an order is confirmed, and handles `AssignSeat` and
/// `UnassignSeat`.
#[derive(Debug)]
pub struct SeatAssignmentsHandler<S: EventStore> {
    assignments: Repository<SeatAssignments, S>,
    orders: Repository<Order, S>,
}

impl<S: EventStore + Clone + 'static> SeatAssignmentsHandler<S> {
    /// A handler over `store`.
    pub fn new(store: S) -> Self {
        Self {
            assignments: Repository::new(store.clone()),
            orders: Repository::new(store),
        }
    }

    /// Registers `AssignSeat` and `UnassignSeat` with `dispatcher`.
    ///
    /// # Errors
    /// When one of them already has a handler.
    pub fn register_commands(self: Arc<Self>, dispatcher: &mut CommandDispatcher) -> Result<()> {
        dispatcher
            .register::<AssignSeat, _>(self.clone())?
            .register::<UnassignSeat, _>(self)?;
        Ok(())
    }

    /// Subscribes to `OrderConfirmed` and the legacy `OrderPaymentConfirmed` on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<OrderConfirmed, _>(self.clone())?
            .subscribe::<OrderPaymentConfirmed, _>(self)?;
        Ok(())
    }

    async fn order_confirmed(&self, metadata: &Metadata) -> Result<()> {
        let order_id = Sourced::of(metadata)?.id;
        let id = seat_assignments_id(order_id);
        if self.assignments.find(id).await?.is_some() {
            return Ok(());
        }
        let order = self.orders.get(order_id).await?;
        let mut assignments = order.create_seat_assignments()?;
        self.assignments.save(&mut assignments, None::<String>).await
    }
}

impl<S: EventStore + Clone + 'static> EventHandler<OrderConfirmed> for SeatAssignmentsHandler<S> {
    async fn handle(&self, _: &OrderConfirmed, metadata: &Metadata) -> Result<()> {
        self.order_confirmed(metadata).await
    }
}

impl<S: EventStore + Clone + 'static> EventHandler<OrderPaymentConfirmed> for SeatAssignmentsHandler<S> {
    async fn handle(&self, _: &OrderPaymentConfirmed, metadata: &Metadata) -> Result<()> {
        self.order_confirmed(metadata).await
    }
}

impl<S: EventStore + Clone + 'static> CommandHandler<AssignSeat> for SeatAssignmentsHandler<S> {
    async fn handle(&self, command: &AssignSeat, metadata: &Metadata) -> Result<()> {
        let mut assignments = self.assignments.get(command.seat_assignments_id).await?;
        assignments.execute(|a| a.assign_seat(command.position, command.attendee.clone()))?;
        self.assignments
            .save(&mut assignments, caused_by_command(command.id, metadata))
            .await
    }
}

impl<S: EventStore + Clone + 'static> CommandHandler<UnassignSeat> for SeatAssignmentsHandler<S> {
    async fn handle(&self, command: &UnassignSeat, metadata: &Metadata) -> Result<()> {
        let mut assignments = self.assignments.get(command.seat_assignments_id).await?;
        assignments.execute(|a| a.unassign(command.position))?;
        self.assignments
            .save(&mut assignments, caused_by_command(command.id, metadata))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_documented_v5() {
        let order = uuid!("01890a5d-ac96-774b-bcce-b302099a8057");
        assert_eq!(
            seat_assignments_id(order),
            uuid!("d966eb56-32a1-5e5a-8c17-1615bf3a01e3")
        );
        assert_eq!(
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"urn:conference-domain:seat-assignments"),
            SEAT_ASSIGNMENTS_NAMESPACE
        );
    }
}
