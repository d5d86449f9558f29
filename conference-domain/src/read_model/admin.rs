//! The admin side's own list of orders (§10.3), built from Registration events.

use std::future::Future;
use std::sync::Arc;

use cqrs_core::{EventDispatcher, Metadata, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::route;
use crate::Sourced;
use crate::order::{
    OrderConfirmed, OrderExpired, OrderPlaced, OrderRegistrantAssigned, OrderTotalsCalculated,
};
use crate::seat_assignments::{SeatAssigned, SeatAssignmentUpdated, SeatAssignmentsCreated, SeatUnassigned};
use crate::values::{Money, PersonalInfo};

/// Whether an order is paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminOrderStatus {
    /// Not confirmed yet.
    Pending = 0,
    /// Confirmed.
    Paid = 1,
}

/// A seat of an order, as the organizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSeat {
    /// The position.
    pub position: i32,
    /// The seat type.
    pub seat_type: Uuid,
    /// Who sits there.
    pub attendee: PersonalInfo,
}

/// An order, as the organizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrder {
    /// The order.
    pub id: Uuid,
    /// The conference.
    pub conference_id: Uuid,
    /// The order's access code.
    pub access_code: String,
    /// Its seat assignments, once confirmed.
    pub assignments_id: Option<Uuid>,
    /// `"<last>, <first>"`.
    pub registrant_name: Option<String>,
    /// The registrant's email.
    pub registrant_email: Option<String>,
    /// The total.
    pub total_amount: Money,
    /// Paid or not.
    pub status: AdminOrderStatus,
    /// Assigned seats.
    pub seats: Vec<AdminSeat>,
}

/// Stores the admin's orders.
pub trait AdminOrderStore: Send + Sync {
    /// The order `id`.
    fn admin_order(&self, id: Uuid) -> impl Future<Output = Result<Option<AdminOrder>>> + Send;
    /// The order whose seat assignments are `assignments_id`.
    fn admin_order_by_assignments(
        &self,
        assignments_id: Uuid,
    ) -> impl Future<Output = Result<Option<AdminOrder>>> + Send;
    /// Inserts or replaces an order and its seats.
    fn save_admin_order(&self, order: AdminOrder) -> impl Future<Output = Result<()>> + Send;
    /// Deletes an order (absent is fine).
    fn delete_admin_order(&self, id: Uuid) -> impl Future<Output = Result<()>> + Send;
    /// The orders of a conference.
    fn admin_orders(&self, conference_id: Uuid) -> impl Future<Output = Result<Vec<AdminOrder>>> + Send;
}

/// Builds the admin's orders.
#[derive(Debug)]
pub struct AdminOrderGenerator<S> {
    store: S,
}

impl<S: AdminOrderStore + 'static> AdminOrderGenerator<S> {
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
            .subscribe::<OrderRegistrantAssigned, _>(self.clone())?
            .subscribe::<OrderTotalsCalculated, _>(self.clone())?
            .subscribe::<OrderConfirmed, _>(self.clone())?
            .subscribe::<OrderExpired, _>(self.clone())?
            .subscribe::<SeatAssignmentsCreated, _>(self.clone())?
            .subscribe::<SeatAssigned, _>(self.clone())?
            .subscribe::<SeatAssignmentUpdated, _>(self.clone())?
            .subscribe::<SeatUnassigned, _>(self)?;
        Ok(())
    }

    async fn placed(&self, event: &OrderPlaced, metadata: &Metadata) -> Result<()> {
        let id = Sourced::of(metadata)?.id;
        if self.store.admin_order(id).await?.is_some() {
            tracing::warn!(order_id = %id, "duplicate OrderPlaced skipped by the admin's orders");
            return Ok(());
        }
        self.store
            .save_admin_order(AdminOrder {
                id,
                conference_id: event.conference_id,
                access_code: event.access_code.clone(),
                assignments_id: None,
                registrant_name: None,
                registrant_email: None,
                total_amount: Money::ZERO,
                status: AdminOrderStatus::Pending,
                seats: Vec::new(),
            })
            .await
    }

    /// Changes the order `id`; a missing order is logged only.
    async fn change(&self, id: Uuid, what: &str, change: impl FnOnce(&mut AdminOrder)) -> Result<()> {
        let Some(mut order) = self.store.admin_order(id).await? else {
            tracing::error!(order_id = %id, what, "no such order in the admin's orders");
            return Ok(());
        };
        change(&mut order);
        self.store.save_admin_order(order).await
    }

    async fn registrant_assigned(&self, event: &OrderRegistrantAssigned, metadata: &Metadata) -> Result<()> {
        self.change(Sourced::of(metadata)?.id, "registrant", |order| {
            order.registrant_email = Some(event.email.clone());
            order.registrant_name = Some(format!("{}, {}", event.last_name, event.first_name));
        })
        .await
    }

    async fn totals_calculated(&self, event: &OrderTotalsCalculated, metadata: &Metadata) -> Result<()> {
        self.change(Sourced::of(metadata)?.id, "totals", |order| {
            order.total_amount = event.total;
        })
        .await
    }

    async fn confirmed(&self, _: &OrderConfirmed, metadata: &Metadata) -> Result<()> {
        self.change(Sourced::of(metadata)?.id, "confirmation", |order| {
            order.status = AdminOrderStatus::Paid;
        })
        .await
    }

    async fn expired(&self, _: &OrderExpired, metadata: &Metadata) -> Result<()> {
        self.store.delete_admin_order(Sourced::of(metadata)?.id).await
    }

    async fn assignments_created(&self, event: &SeatAssignmentsCreated, metadata: &Metadata) -> Result<()> {
        let assignments_id = Sourced::of(metadata)?.id;
        self.change(event.order_id, "seat assignments", |order| {
            order.assignments_id = Some(assignments_id);
        })
        .await
    }

    /// Changes the seats of the order whose assignments are the event's source.
    async fn change_seats(
        &self,
        metadata: &Metadata,
        change: impl FnOnce(&mut Vec<AdminSeat>),
    ) -> Result<()> {
        let assignments_id = Sourced::of(metadata)?.id;
        let Some(mut order) = self.store.admin_order_by_assignments(assignments_id).await? else {
            tracing::error!(%assignments_id, "seat change of an order not in the admin's orders");
            return Ok(());
        };
        change(&mut order.seats);
        self.store.save_admin_order(order).await
    }

    async fn assigned(&self, event: &SeatAssigned, metadata: &Metadata) -> Result<()> {
        self.change_seats(metadata, |seats| {
            match seats.iter_mut().find(|s| s.position == event.position) {
                Some(seat) => {
                    seat.attendee.first_name.clone_from(&event.attendee.first_name);
                    seat.attendee.last_name.clone_from(&event.attendee.last_name);
                    seat.attendee.email.clone_from(&event.attendee.email);
                }
                None => seats.push(AdminSeat {
                    position: event.position,
                    seat_type: event.seat_type,
                    attendee: event.attendee.clone(),
                }),
            }
        })
        .await
    }

    async fn updated(&self, event: &SeatAssignmentUpdated, metadata: &Metadata) -> Result<()> {
        self.change_seats(metadata, |seats| {
            match seats.iter_mut().find(|s| s.position == event.position) {
                Some(seat) => {
                    seat.attendee.first_name.clone_from(&event.attendee.first_name);
                    seat.attendee.last_name.clone_from(&event.attendee.last_name);
                }
                None => tracing::warn!(
                    position = event.position,
                    "update of a seat not in the admin's orders"
                ),
            }
        })
        .await
    }

    async fn unassigned(&self, event: &SeatUnassigned, metadata: &Metadata) -> Result<()> {
        self.change_seats(metadata, |seats| {
            let before = seats.len();
            seats.retain(|s| s.position != event.position);
            if seats.len() == before {
                tracing::warn!(
                    position = event.position,
                    "removal of a seat not in the admin's orders"
                );
            }
        })
        .await
    }
}

route!([S: AdminOrderStore + 'static] AdminOrderGenerator<S> {
    OrderPlaced => placed,
    OrderRegistrantAssigned => registrant_assigned,
    OrderTotalsCalculated => totals_calculated,
    OrderConfirmed => confirmed,
    OrderExpired => expired,
    SeatAssignmentsCreated => assignments_created,
    SeatAssigned => assigned,
    SeatAssignmentUpdated => updated,
    SeatUnassigned => unassigned,
});
