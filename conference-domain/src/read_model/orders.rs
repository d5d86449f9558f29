//! The draft order (§12.1) and the priced order (§12.2), with the priced order's cache of
//! seat-type descriptions (§13.2).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::{EventDispatcher, Metadata, Result, SharedClock};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{is_newer, route};
use crate::Sourced;
use crate::management::{SeatCreated, SeatUpdated};
use crate::order::{
    OrderConfirmed, OrderExpired, OrderPartiallyReserved, OrderPaymentConfirmed, OrderPlaced,
    OrderRegistrantAssigned, OrderReservationCompleted, OrderTotalsCalculated, OrderUpdated,
};
use crate::seat_assignments::SeatAssignmentsCreated;
use crate::values::{Money, OrderLine, SeatQuantity};

/// Where a draft order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DraftOrderState {
    /// Waiting for the reservation.
    PendingReservation = 0,
    /// Fewer seats than requested were reserved.
    PartiallyReserved = 1,
    /// Every seat requested is reserved.
    ReservationCompleted = 2,
    /// Never set.
    Rejected = 3,
    /// Confirmed.
    Confirmed = 4,
}

/// One seat type of a draft order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftOrderLine {
    /// The seat type.
    pub seat_type: Uuid,
    /// Seats requested.
    pub requested_seats: i32,
    /// Seats reserved.
    pub reserved_seats: i32,
}

/// An order as the registrant follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DraftOrder {
    /// The order.
    pub order_id: Uuid,
    /// The conference.
    pub conference_id: Uuid,
    /// When the reservation expires (once reserved).
    pub reservation_expiration_date: Option<DateTime<Utc>>,
    /// Where it stands.
    pub state: DraftOrderState,
    /// The version of the last event applied.
    pub order_version: i64,
    /// The registrant's email.
    pub registrant_email: Option<String>,
    /// The access code.
    pub access_code: String,
    /// One line per seat type.
    pub lines: Vec<DraftOrderLine>,
}

fn draft_lines(seats: &[SeatQuantity]) -> Vec<DraftOrderLine> {
    seats
        .iter()
        .map(|s| DraftOrderLine {
            seat_type: s.seat_type,
            requested_seats: s.quantity,
            reserved_seats: 0,
        })
        .collect()
}

/// Stores draft orders.
pub trait DraftOrderStore: Send + Sync {
    /// The draft order `order_id`, with its lines.
    fn draft_order(&self, order_id: Uuid) -> impl Future<Output = Result<Option<DraftOrder>>> + Send;
    /// Inserts or replaces a draft order and its lines.
    fn save_draft_order(&self, order: DraftOrder) -> impl Future<Output = Result<()>> + Send;
    /// An order whose registrant email equals `email` (ignoring letter case) and whose access
    /// code is `access_code`.
    fn locate_order(
        &self,
        email: &str,
        access_code: &str,
    ) -> impl Future<Output = Result<Option<Uuid>>> + Send;
}

/// Builds draft orders from Order events.
#[derive(Debug)]
pub struct DraftOrderGenerator<S> {
    store: S,
}

impl<S: DraftOrderStore + 'static> DraftOrderGenerator<S> {
    /// A generator writing to `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// Subscribes to its events on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<OrderPlaced, _>(self.clone())?
            .subscribe::<OrderUpdated, _>(self.clone())?
            .subscribe::<OrderPartiallyReserved, _>(self.clone())?
            .subscribe::<OrderReservationCompleted, _>(self.clone())?
            .subscribe::<OrderRegistrantAssigned, _>(self.clone())?
            .subscribe::<OrderConfirmed, _>(self.clone())?
            .subscribe::<OrderPaymentConfirmed, _>(self)?;
        Ok(())
    }

    async fn placed(&self, event: &OrderPlaced, metadata: &Metadata) -> Result<()> {
        let source = Sourced::of(metadata)?;
        if let Some(existing) = self.store.draft_order(source.id).await?
            && !is_newer("draft order", source.id, existing.order_version, source.version)
        {
            return Ok(());
        }
        self.store
            .save_draft_order(DraftOrder {
                order_id: source.id,
                conference_id: event.conference_id,
                reservation_expiration_date: None,
                state: DraftOrderState::PendingReservation,
                order_version: source.version,
                registrant_email: None,
                access_code: event.access_code.clone(),
                lines: draft_lines(&event.seats),
            })
            .await
    }

    /// Applies a change to the draft order if the event is newer than it.
    async fn change(&self, metadata: &Metadata, change: impl FnOnce(&mut DraftOrder)) -> Result<()> {
        let source = Sourced::of(metadata)?;
        let Some(mut order) = self.store.draft_order(source.id).await? else {
            return Err(crate::DomainError::invalid_state(format!("no draft order {}", source.id)).into());
        };
        if !is_newer("draft order", source.id, order.order_version, source.version) {
            return Ok(());
        }
        change(&mut order);
        order.order_version = source.version;
        self.store.save_draft_order(order).await
    }

    async fn updated(&self, event: &OrderUpdated, metadata: &Metadata) -> Result<()> {
        self.change(metadata, |order| {
            order.lines = draft_lines(&event.seats);
            order.state = DraftOrderState::PendingReservation;
        })
        .await
    }

    async fn reserved(
        &self,
        metadata: &Metadata,
        seats: &[SeatQuantity],
        expiration: DateTime<Utc>,
        state: DraftOrderState,
    ) -> Result<()> {
        self.change(metadata, |order| {
            for seat in seats {
                if let Some(line) = order.lines.iter_mut().find(|l| l.seat_type == seat.seat_type) {
                    line.reserved_seats = seat.quantity;
                }
            }
            order.state = state;
            order.reservation_expiration_date = Some(expiration);
        })
        .await
    }

    async fn partially_reserved(&self, event: &OrderPartiallyReserved, metadata: &Metadata) -> Result<()> {
        self.reserved(
            metadata,
            &event.seats,
            event.reservation_expiration,
            DraftOrderState::PartiallyReserved,
        )
        .await
    }

    async fn reservation_completed(
        &self,
        event: &OrderReservationCompleted,
        metadata: &Metadata,
    ) -> Result<()> {
        let state = DraftOrderState::ReservationCompleted;
        self.reserved(metadata, &event.seats, event.reservation_expiration, state)
            .await
    }

    async fn registrant_assigned(&self, event: &OrderRegistrantAssigned, metadata: &Metadata) -> Result<()> {
        self.change(metadata, |order| {
            order.registrant_email = Some(event.email.clone());
        })
        .await
    }

    /// `OrderConfirmed`, or its legacy name `OrderPaymentConfirmed`.
    async fn confirmed<E>(&self, _: &E, metadata: &Metadata) -> Result<()> {
        self.change(metadata, |order| order.state = DraftOrderState::Confirmed)
            .await
    }
}

route!([S: DraftOrderStore + 'static] DraftOrderGenerator<S> {
    OrderPlaced => placed,
    OrderUpdated => updated,
    OrderPartiallyReserved => partially_reserved,
    OrderReservationCompleted => reservation_completed,
    OrderRegistrantAssigned => registrant_assigned,
    OrderConfirmed => confirmed,
    OrderPaymentConfirmed => confirmed,
});

/// One priced line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedOrderLine {
    /// The line's index in the order.
    pub position: i32,
    /// The seat type of a seat line.
    #[serde(default)]
    pub seat_type: Option<Uuid>,
    /// The seat type's name (absent if unknown).
    pub description: Option<String>,
    /// The unit price.
    pub unit_price: Option<Money>,
    /// How many seats.
    pub quantity: Option<i32>,
    /// The line's total.
    pub line_total: Money,
}

/// An order with its price, as the checkout shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricedOrder {
    /// The order.
    pub order_id: Uuid,
    /// The seat assignments, once the order is confirmed.
    pub assignments_id: Option<Uuid>,
    /// The total.
    pub total: Money,
    /// The version of the last event applied.
    pub order_version: i64,
    /// Whether the total is zero.
    pub is_free_of_charge: bool,
    /// When the reservation expires; absent means "completed".
    pub reservation_expiration_date: Option<DateTime<Utc>>,
    /// The priced lines.
    pub lines: Vec<PricedOrderLine>,
}

/// Stores priced orders and the seat-type description table.
pub trait PricedOrderStore: Send + Sync {
    /// The priced order `order_id`.
    fn priced_order(&self, order_id: Uuid) -> impl Future<Output = Result<Option<PricedOrder>>> + Send;
    /// Inserts or replaces a priced order and its lines.
    fn save_priced_order(&self, order: PricedOrder) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a priced order (absent is fine).
    fn delete_priced_order(&self, order_id: Uuid) -> impl Future<Output = Result<()>> + Send;
    /// The names of these seat types that the description table knows.
    fn seat_type_descriptions(
        &self,
        ids: &[Uuid],
    ) -> impl Future<Output = Result<Vec<(Uuid, String)>>> + Send;
    /// Inserts or replaces a seat type's name in the description table.
    fn save_seat_type_description(&self, id: Uuid, name: String) -> impl Future<Output = Result<()>> + Send;
}

/// How long the priced-order generator trusts a cached seat-type description.
pub const DESCRIPTION_CACHE_LIFETIME: TimeDelta = TimeDelta::minutes(5);

/// Builds priced orders from Order, SeatAssignments and seat-type events.
#[derive(Debug)]
pub struct PricedOrderGenerator<S> {
    store: S,
    clock: SharedClock,
    /// Seat type → (name, expires at).
    descriptions: DashMap<Uuid, (String, DateTime<Utc>)>,
}

impl<S: PricedOrderStore + 'static> PricedOrderGenerator<S> {
    /// A generator writing to `store`; `clock` times its description cache.
    pub fn new(store: S, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            descriptions: DashMap::new(),
        }
    }

    /// Subscribes to its events on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<OrderPlaced, _>(self.clone())?
            .subscribe::<OrderTotalsCalculated, _>(self.clone())?
            .subscribe::<OrderConfirmed, _>(self.clone())?
            .subscribe::<OrderExpired, _>(self.clone())?
            .subscribe::<SeatAssignmentsCreated, _>(self.clone())?
            .subscribe::<SeatCreated, _>(self.clone())?
            .subscribe::<SeatUpdated, _>(self)?;
        Ok(())
    }

    /// The names of `ids`: fresh cache entries first, the rest from the description table
    /// (added to the cache only where no entry exists, so they never replace a fresher one).
    async fn names(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
        let now = self.clock.now();
        let mut names = HashMap::new();
        let mut missing = Vec::new();
        for &id in ids {
            match self.descriptions.get(&id) {
                Some(entry) if entry.1 > now => {
                    names.insert(id, entry.0.clone());
                }
                _ => missing.push(id),
            }
        }
        if !missing.is_empty() {
            for (id, name) in self.store.seat_type_descriptions(&missing).await? {
                self.descriptions
                    .entry(id)
                    .and_modify(|entry| {
                        if entry.1 <= now {
                            *entry = (name.clone(), now + DESCRIPTION_CACHE_LIFETIME);
                        }
                    })
                    .or_insert_with(|| (name.clone(), now + DESCRIPTION_CACHE_LIFETIME));
                names.insert(id, name);
            }
        }
        Ok(names)
    }

    async fn placed(&self, event: &OrderPlaced, metadata: &Metadata) -> Result<()> {
        let source = Sourced::of(metadata)?;
        if self.store.priced_order(source.id).await?.is_some() {
            tracing::warn!(order_id = %source.id, "duplicate OrderPlaced skipped by the priced order");
            return Ok(());
        }
        self.store
            .save_priced_order(PricedOrder {
                order_id: source.id,
                assignments_id: None,
                total: Money::ZERO,
                order_version: source.version,
                is_free_of_charge: false,
                reservation_expiration_date: Some(event.reservation_auto_expiration),
                lines: Vec::new(),
            })
            .await
    }

    /// The priced order of the event's source, if the event is newer than it.
    async fn newer(&self, metadata: &Metadata) -> Result<Option<(PricedOrder, i64)>> {
        let source = Sourced::of(metadata)?;
        let Some(order) = self.store.priced_order(source.id).await? else {
            return Err(crate::DomainError::invalid_state(format!("no priced order {}", source.id)).into());
        };
        Ok(
            is_newer("priced order", source.id, order.order_version, source.version)
                .then_some((order, source.version)),
        )
    }

    async fn totals_calculated(&self, event: &OrderTotalsCalculated, metadata: &Metadata) -> Result<()> {
        let Some((mut order, version)) = self.newer(metadata).await? else {
            return Ok(());
        };
        let ids: Vec<Uuid> = event
            .lines
            .iter()
            .map(|line| match line {
                OrderLine::Seat(seat) => seat.seat_type,
            })
            .collect();
        let names = self.names(&ids).await?;
        order.lines = event
            .lines
            .iter()
            .zip(0..)
            .map(|(line, position)| match line {
                OrderLine::Seat(seat) => PricedOrderLine {
                    position,
                    seat_type: Some(seat.seat_type),
                    description: names.get(&seat.seat_type).cloned(),
                    unit_price: Some(seat.unit_price),
                    quantity: Some(seat.quantity),
                    line_total: seat.line_total,
                },
            })
            .collect();
        order.total = event.total;
        order.is_free_of_charge = event.is_free_of_charge;
        order.order_version = version;
        self.store.save_priced_order(order).await
    }

    async fn confirmed(&self, _: &OrderConfirmed, metadata: &Metadata) -> Result<()> {
        let Some((mut order, version)) = self.newer(metadata).await? else {
            return Ok(());
        };
        order.reservation_expiration_date = None;
        order.order_version = version;
        self.store.save_priced_order(order).await
    }

    async fn expired(&self, _: &OrderExpired, metadata: &Metadata) -> Result<()> {
        self.store.delete_priced_order(Sourced::of(metadata)?.id).await
    }

    async fn assignments_created(&self, event: &SeatAssignmentsCreated, metadata: &Metadata) -> Result<()> {
        let assignments_id = Sourced::of(metadata)?.id;
        let Some(mut order) = self.store.priced_order(event.order_id).await? else {
            tracing::error!(order_id = %event.order_id, "seat assignments for an order with no priced order");
            return Ok(());
        };
        order.assignments_id = Some(assignments_id);
        self.store.save_priced_order(order).await
    }

    async fn seat_created(&self, event: &SeatCreated, _: &Metadata) -> Result<()> {
        self.store
            .save_seat_type_description(event.seat_type_id, event.details.name.clone())
            .await
    }

    async fn seat_updated(&self, event: &SeatUpdated, _: &Metadata) -> Result<()> {
        let name = event.details.name.clone();
        self.store
            .save_seat_type_description(event.seat_type_id, name.clone())
            .await?;
        let expires = self.clock.now() + DESCRIPTION_CACHE_LIFETIME;
        self.descriptions.insert(event.seat_type_id, (name, expires));
        Ok(())
    }
}

route!([S: PricedOrderStore + 'static] PricedOrderGenerator<S> {
    OrderPlaced => placed,
    OrderTotalsCalculated => totals_calculated,
    OrderConfirmed => confirmed,
    OrderExpired => expired,
    SeatAssignmentsCreated => assignments_created,
    SeatCreated => seat_created,
    SeatUpdated => seat_updated,
});
