//! The SeatsAvailability aggregate (`DOMAIN.md` §7), a memento originator, its events (§4.3)
//! and its command handler. One per conference; its commands share the session
//! `"SeatsAvailability_<conference id>"`, so it has a single writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use cqrs_core::{
    Aggregate, BatchOutcome, CommandBatchHandler, CommandDispatcher, CommandHandler, Decoded, Envelope,
    EventStore, Inbox, InboxStore, Message, Metadata, Originator, Repository, Result, Root, event_set,
};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commands::{
    AddSeats, CancelSeatReservation, CommitSeatReservation, MakeSeatReservation, RemoveSeats,
};
use crate::error::{DomainError, DomainResult};
use crate::values::SeatQuantity;
use crate::{caused_by_command, messages};

messages! {
    /// Seats were added to or removed from the remaining seats.
    AvailableSeatsChanged {
        /// Deltas to the remaining seats.
        seats: Vec<SeatQuantity>,
    }
    /// A reservation was made or changed.
    SeatsReserved {
        /// The reservation (= the order id).
        reservation_id: Uuid,
        /// The whole current reservation.
        reservation_details: Vec<SeatQuantity>,
        /// Deltas to the remaining seats (negative: seats taken).
        available_seats_changed: Vec<SeatQuantity>,
    }
    /// A reservation's seats are sold.
    SeatsReservationCommitted {
        /// The reservation.
        reservation_id: Uuid,
    }
    /// A reservation was released.
    SeatsReservationCancelled {
        /// The reservation.
        reservation_id: Uuid,
        /// Deltas to the remaining seats (positive: seats returned).
        available_seats_changed: Vec<SeatQuantity>,
    }
}

event_set! {
    /// Every event of a SeatsAvailability stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum SeatsAvailabilityEvent {
        AvailableSeatsChanged(AvailableSeatsChanged),
        SeatsReserved(SeatsReserved),
        ReservationCommitted(SeatsReservationCommitted),
        ReservationCancelled(SeatsReservationCancelled),
    }
}

/// The remaining seats of a conference and its pending reservations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SeatsAvailability {
    /// Seat type → remaining count (negative after removing more than remained).
    remaining_seats: BTreeMap<Uuid, i32>,
    /// Reservation id → its seats, in stored order.
    pending_reservations: BTreeMap<Uuid, Vec<SeatQuantity>>,
}

impl Aggregate for SeatsAvailability {
    const TYPE: &'static str = "SeatsAvailability";
    type Event = SeatsAvailabilityEvent;

    fn new(_id: Uuid) -> Self {
        Self::default()
    }

    fn apply(&mut self, event: &SeatsAvailabilityEvent) {
        match event {
            SeatsAvailabilityEvent::AvailableSeatsChanged(e) => self.add_remaining(&e.seats),
            SeatsAvailabilityEvent::SeatsReserved(e) => {
                if e.reservation_details.is_empty() {
                    self.pending_reservations.remove(&e.reservation_id);
                } else {
                    self.pending_reservations
                        .insert(e.reservation_id, e.reservation_details.clone());
                }
                self.add_remaining(&e.available_seats_changed);
            }
            SeatsAvailabilityEvent::ReservationCommitted(e) => {
                self.pending_reservations.remove(&e.reservation_id);
            }
            SeatsAvailabilityEvent::ReservationCancelled(e) => {
                self.pending_reservations.remove(&e.reservation_id);
                self.add_remaining(&e.available_seats_changed);
            }
        }
    }
}

/// One seat type's line of a reservation request (§7.2, step 2).
#[derive(Default)]
struct Wanted {
    wanted: i32,
    remaining: i32,
    existing: i32,
}

impl SeatsAvailability {
    fn add_remaining(&mut self, deltas: &[SeatQuantity]) {
        for delta in deltas {
            *self.remaining_seats.entry(delta.seat_type).or_insert(0) += delta.quantity;
        }
    }

    /// The remaining seats of `seat_type` (`None` if the type was never added).
    pub fn remaining(&self, seat_type: Uuid) -> Option<i32> {
        self.remaining_seats.get(&seat_type).copied()
    }

    /// Every seat type and its remaining seats.
    pub fn remaining_seats(&self) -> &BTreeMap<Uuid, i32> {
        &self.remaining_seats
    }

    /// The seats pending for `reservation_id`.
    pub fn reservation(&self, reservation_id: Uuid) -> Option<&[SeatQuantity]> {
        self.pending_reservations.get(&reservation_id).map(Vec::as_slice)
    }

    /// Every pending reservation.
    pub fn pending_reservations(&self) -> &BTreeMap<Uuid, Vec<SeatQuantity>> {
        &self.pending_reservations
    }

    /// Adds `quantity` seats of `seat_type` (a new type is registered, even with 0).
    pub fn add_seats(&self, seat_type: Uuid, quantity: i32) -> Vec<SeatsAvailabilityEvent> {
        vec![
            AvailableSeatsChanged {
                seats: vec![SeatQuantity::new(seat_type, quantity)],
            }
            .into(),
        ]
    }

    /// Removes `quantity` seats of `seat_type`, with no floor at zero.
    pub fn remove_seats(&self, seat_type: Uuid, quantity: i32) -> Vec<SeatsAvailabilityEvent> {
        self.add_seats(seat_type, -quantity)
    }

    /// Reserves `min(wanted, available + already held)` of each seat type for
    /// `reservation_id`, releasing types the request drops: always exactly one `SeatsReserved`.
    ///
    /// # Errors
    /// `invalid-argument` when a wanted seat type was never added; nothing is emitted.
    pub fn make_reservation(
        &self,
        reservation_id: Uuid,
        wanted: &[SeatQuantity],
    ) -> DomainResult<Vec<SeatsAvailabilityEvent>> {
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !self.remaining_seats.contains_key(&w.seat_type))
        {
            return Err(DomainError::invalid_argument(
                "wanted_seats",
                format!("unknown seat type {}", unknown.seat_type),
            ));
        }
        let mut diff: IndexMap<Uuid, Wanted> = IndexMap::new();
        for w in wanted {
            let entry = diff.entry(w.seat_type).or_default();
            entry.wanted = w.quantity;
            entry.remaining = self.remaining_seats[&w.seat_type];
        }
        for held in self.reservation(reservation_id).unwrap_or_default() {
            diff.entry(held.seat_type).or_default().existing = held.quantity;
        }
        let mut reservation_details = Vec::new();
        let mut available_seats_changed = Vec::new();
        for (&seat_type, line) in &diff {
            let actual = line.wanted.min(line.remaining.max(0) + line.existing);
            let delta = actual - line.existing;
            if actual != 0 {
                reservation_details.push(SeatQuantity::new(seat_type, actual));
            }
            if delta != 0 {
                available_seats_changed.push(SeatQuantity::new(seat_type, -delta));
            }
        }
        Ok(vec![
            SeatsReserved {
                reservation_id,
                reservation_details,
                available_seats_changed,
            }
            .into(),
        ])
    }

    /// Releases a pending reservation; nothing when none is pending.
    pub fn cancel_reservation(&self, reservation_id: Uuid) -> Vec<SeatsAvailabilityEvent> {
        self.reservation(reservation_id)
            .map(|seats| {
                SeatsReservationCancelled {
                    reservation_id,
                    available_seats_changed: seats.to_vec(),
                }
                .into()
            })
            .into_iter()
            .collect()
    }

    /// Sells a pending reservation's seats; nothing when none is pending.
    pub fn commit_reservation(&self, reservation_id: Uuid) -> Vec<SeatsAvailabilityEvent> {
        self.reservation(reservation_id)
            .map(|_| SeatsReservationCommitted { reservation_id }.into())
            .into_iter()
            .collect()
    }
}

/// A SeatsAvailability's memento: deep copies of both maps (the version travels beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatsAvailabilityMemento {
    /// Seat type → remaining count.
    pub remaining_seats: BTreeMap<Uuid, i32>,
    /// Reservation id → its seats, in stored order.
    pub pending_reservations: BTreeMap<Uuid, Vec<SeatQuantity>>,
}

impl Originator for SeatsAvailability {
    type Memento = SeatsAvailabilityMemento;
    const MEMENTO_VERSION: u32 = 1;

    fn to_memento(&self) -> SeatsAvailabilityMemento {
        SeatsAvailabilityMemento {
            remaining_seats: self.remaining_seats.clone(),
            pending_reservations: self.pending_reservations.clone(),
        }
    }

    fn from_memento(_id: Uuid, memento: SeatsAvailabilityMemento) -> Self {
        Self {
            remaining_seats: memento.remaining_seats,
            pending_reservations: memento.pending_reservations,
        }
    }
}

/// Handles the five SeatsAvailability commands; every save is correlated with the command's
/// id, so the `SeatsReserved` of a `MakeSeatReservation` carries that command's id.
#[derive(Debug)]
pub struct SeatsAvailabilityHandler<S: EventStore> {
    availability: Repository<SeatsAvailability, S>,
}

impl<S: EventStore + 'static> SeatsAvailabilityHandler<S> {
    /// A handler over `availability` (configure its mementos there).
    pub fn new(availability: Repository<SeatsAvailability, S>) -> Self {
        Self { availability }
    }

    /// Registers the five commands with `dispatcher`, and runs of the three reservation
    /// commands with their batch handler (one load, one append per run of a conference's
    /// session). `AddSeats` and `RemoveSeats` go through
    /// an [`Inbox`] on `inbox`: they change counts, so a second delivery of one command (sent at
    /// least once by the conference view's outbox, whose relay may send it again while the
    /// first copy is on its way) must change nothing. The three reservation commands are
    /// idempotent by their reservation id.
    ///
    /// # Errors
    /// When one of them already has a handler.
    pub fn register(
        self: Arc<Self>,
        dispatcher: &mut CommandDispatcher,
        inbox: impl InboxStore + Clone,
    ) -> Result<()> {
        dispatcher
            .register::<MakeSeatReservation, _>(self.clone())?
            .register::<CancelSeatReservation, _>(self.clone())?
            .register::<CommitSeatReservation, _>(self.clone())?
            .register_batch(Reservation::NAMES, self.clone())?
            .register::<AddSeats, _>(Inbox::new(
                "SeatsAvailability/AddSeats",
                self.clone(),
                inbox.clone(),
            ))?
            .register::<RemoveSeats, _>(Inbox::new("SeatsAvailability/RemoveSeats", self, inbox))?;
        Ok(())
    }

    async fn existing(
        &self,
        conference_id: Uuid,
        command_id: Uuid,
        metadata: &Metadata,
        decide: impl FnOnce(&SeatsAvailability) -> DomainResult<Vec<SeatsAvailabilityEvent>>,
    ) -> Result<()> {
        let mut availability = self.availability.get(conference_id).await?;
        availability.execute(decide)?;
        self.availability
            .save(&mut availability, caused_by_command(command_id, metadata))
            .await
    }

    async fn found_or_new(
        &self,
        conference_id: Uuid,
        command_id: Uuid,
        metadata: &Metadata,
        decide: impl FnOnce(&SeatsAvailability) -> Vec<SeatsAvailabilityEvent>,
    ) -> Result<()> {
        let mut availability = self
            .availability
            .find(conference_id)
            .await?
            .unwrap_or_else(|| Root::new(conference_id));
        availability.record_all(decide(&availability));
        self.availability
            .save(&mut availability, caused_by_command(command_id, metadata))
            .await
    }
}

/// One of the three reservation commands, which a run of a conference's session is made of.
#[derive(Debug)]
enum Reservation<'a> {
    Make(Decoded<'a, MakeSeatReservation>),
    Cancel(Decoded<'a, CancelSeatReservation>),
    Commit(Decoded<'a, CommitSeatReservation>),
}

impl<'a> Reservation<'a> {
    const NAMES: [&'static str; 3] = [
        MakeSeatReservation::NAME,
        CancelSeatReservation::NAME,
        CommitSeatReservation::NAME,
    ];

    fn decode(envelope: &'a Envelope) -> Result<Self> {
        let message = &envelope.message;
        match envelope.name() {
            MakeSeatReservation::NAME => message.decode().map(Self::Make),
            CancelSeatReservation::NAME => message.decode().map(Self::Cancel),
            CommitSeatReservation::NAME => message.decode().map(Self::Commit),
            other => Err(cqrs_core::Error::NoHandler(other.to_owned())),
        }
    }

    fn conference_id(&self) -> Uuid {
        match self {
            Self::Make(c) => c.conference_id,
            Self::Cancel(c) => c.conference_id,
            Self::Commit(c) => c.conference_id,
        }
    }

    fn id(&self) -> Uuid {
        match self {
            Self::Make(c) => c.id,
            Self::Cancel(c) => c.id,
            Self::Commit(c) => c.id,
        }
    }

    fn decide(&self, availability: &SeatsAvailability) -> DomainResult<Vec<SeatsAvailabilityEvent>> {
        match self {
            Self::Make(c) => availability.make_reservation(c.reservation_id, &c.seats),
            Self::Cancel(c) => Ok(availability.cancel_reservation(c.reservation_id)),
            Self::Commit(c) => Ok(availability.commit_reservation(c.reservation_id)),
        }
    }
}

impl<S: EventStore + 'static> SeatsAvailabilityHandler<S> {
    async fn reserve(&self, command: Reservation<'_>, metadata: &Metadata) -> Result<()> {
        self.existing(command.conference_id(), command.id(), metadata, |a| {
            command.decide(a)
        })
        .await
    }
}

impl<S: EventStore + 'static> CommandHandler<MakeSeatReservation> for SeatsAvailabilityHandler<S> {
    async fn handle(&self, c: &MakeSeatReservation, metadata: &Metadata) -> Result<()> {
        self.reserve(Reservation::Make(Decoded::Borrowed(c)), metadata)
            .await
    }
}

impl<S: EventStore + 'static> CommandHandler<CancelSeatReservation> for SeatsAvailabilityHandler<S> {
    async fn handle(&self, c: &CancelSeatReservation, metadata: &Metadata) -> Result<()> {
        self.reserve(Reservation::Cancel(Decoded::Borrowed(c)), metadata)
            .await
    }
}

impl<S: EventStore + 'static> CommandHandler<CommitSeatReservation> for SeatsAvailabilityHandler<S> {
    async fn handle(&self, c: &CommitSeatReservation, metadata: &Metadata) -> Result<()> {
        self.reserve(Reservation::Commit(Decoded::Borrowed(c)), metadata)
            .await
    }
}

/// A run of a conference's reservation commands, decided in order on one load of its
/// SeatsAvailability and saved in one append, each event caused by its own command. The run
/// stops before a command that fails (what came before it is saved) or that is for another
/// conference.
impl<S: EventStore + 'static> CommandBatchHandler for SeatsAvailabilityHandler<S> {
    async fn handle_batch<'a>(&'a self, commands: &'a [&'a Envelope]) -> BatchOutcome {
        let mut availability: Option<Root<SeatsAvailability>> = None;
        let mut causes = Vec::with_capacity(commands.len());
        let mut failure = None;
        for envelope in commands {
            let command = match Reservation::decode(envelope) {
                Ok(command) => command,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let root = match &mut availability {
                Some(root) if root.id() != command.conference_id() => break,
                Some(root) => root,
                None => match self.availability.get(command.conference_id()).await {
                    Ok(root) => availability.insert(root),
                    Err(error) => return BatchOutcome::failed(0, error),
                },
            };
            let before = root.pending().len();
            if let Err(error) = root.execute(|a| command.decide(a)) {
                failure = Some(error.into());
                break;
            }
            let cause = caused_by_command(command.id(), &envelope.metadata);
            causes.push((cause, root.pending().len() - before));
        }
        let decided = causes.len();
        if let Some(root) = &mut availability
            && let Err(error) = self.availability.save_caused(root, causes).await
        {
            return BatchOutcome::failed(0, error);
        }
        match failure {
            Some(error) => BatchOutcome::failed(decided, error),
            None => BatchOutcome::handled(decided),
        }
    }
}

impl<S: EventStore + 'static> CommandHandler<AddSeats> for SeatsAvailabilityHandler<S> {
    async fn handle(&self, c: &AddSeats, metadata: &Metadata) -> Result<()> {
        self.found_or_new(c.conference_id, c.id, metadata, |a| {
            a.add_seats(c.seat_type, c.quantity)
        })
        .await
    }
}

impl<S: EventStore + 'static> CommandHandler<RemoveSeats> for SeatsAvailabilityHandler<S> {
    async fn handle(&self, c: &RemoveSeats, metadata: &Metadata) -> Result<()> {
        self.found_or_new(c.conference_id, c.id, metadata, |a| {
            a.remove_seats(c.seat_type, c.quantity)
        })
        .await
    }
}
