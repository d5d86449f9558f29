//! The Order aggregate (`DOMAIN.md` §5), its events (§4.1) and its command handler.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cqrs_core::{
    Aggregate, CommandDispatcher, CommandHandler, EventStore, Metadata, Repository, Result, Root,
    SharedClock, event_set,
};
use uuid::Uuid;

use crate::commands::{
    AssignRegistrantDetails, ConfirmOrder, MarkSeatsAsReserved, RegisterToConference, RejectOrder,
};
use crate::error::{DomainError, DomainResult};
use crate::pricing::{PriceList, Pricing, SeatTypeSource};
use crate::seat_assignments::SeatAssignments;
use crate::values::{Money, OrderLine, OrderTotal, SeatQuantity, new_access_code};
use crate::{caused_by_command, messages};

/// How long seats stay reserved for an order after placement.
pub const RESERVATION_AUTO_EXPIRATION: TimeDelta = TimeDelta::minutes(15);

messages! {
    /// An order was placed.
    OrderPlaced {
        /// The conference.
        conference_id: Uuid,
        /// The seats requested, in request order (zero quantities kept).
        seats: Vec<SeatQuantity>,
        /// When the reservation expires unless the order is confirmed.
        reservation_auto_expiration: DateTime<Utc>,
        /// The code that, with the registrant's email, finds the order again.
        access_code: String,
    }
    /// The seats of an order changed.
    OrderUpdated {
        /// The seats now requested.
        seats: Vec<SeatQuantity>,
    }
    /// Fewer seats than requested could be reserved.
    OrderPartiallyReserved {
        /// When the reservation expires.
        reservation_expiration: DateTime<Utc>,
        /// The seats actually reserved.
        seats: Vec<SeatQuantity>,
    }
    /// Every seat requested is reserved.
    OrderReservationCompleted {
        /// When the reservation expires.
        reservation_expiration: DateTime<Utc>,
        /// The seats reserved.
        seats: Vec<SeatQuantity>,
    }
    /// The order was priced.
    OrderTotalsCalculated {
        /// The total.
        total: Money,
        /// The priced lines (absent in stored data reads as empty).
        #[serde(default)]
        lines: Vec<OrderLine>,
        /// Whether the total is zero.
        is_free_of_charge: bool,
    }
    /// The registrant's details were given.
    OrderRegistrantAssigned {
        /// First name.
        first_name: String,
        /// Last name.
        last_name: String,
        /// Email.
        email: String,
    }
    /// The order is confirmed (paid, or free).
    OrderConfirmed {}
    /// The order expired.
    OrderExpired {}
    /// The legacy name of [`OrderConfirmed`]: never emitted, read as a confirmation.
    OrderPaymentConfirmed {}
}

event_set! {
    /// Every event of an Order stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum OrderEvent {
        Placed(OrderPlaced),
        Updated(OrderUpdated),
        PartiallyReserved(OrderPartiallyReserved),
        ReservationCompleted(OrderReservationCompleted),
        TotalsCalculated(OrderTotalsCalculated),
        RegistrantAssigned(OrderRegistrantAssigned),
        Confirmed(OrderConfirmed),
        Expired(OrderExpired),
        PaymentConfirmed(OrderPaymentConfirmed),
    }
}

/// A registrant's order for seats of one conference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    id: Uuid,
    conference_id: Uuid,
    seats: Vec<SeatQuantity>,
    is_confirmed: bool,
    is_expired: bool,
}

impl Aggregate for Order {
    const TYPE: &'static str = "Order";
    type Event = OrderEvent;

    fn new(id: Uuid) -> Self {
        Self {
            id,
            conference_id: Uuid::nil(),
            seats: Vec::new(),
            is_confirmed: false,
            is_expired: false,
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed(e) => {
                self.conference_id = e.conference_id;
                self.seats.clone_from(&e.seats);
            }
            OrderEvent::Updated(OrderUpdated { seats })
            | OrderEvent::PartiallyReserved(OrderPartiallyReserved { seats, .. })
            | OrderEvent::ReservationCompleted(OrderReservationCompleted { seats, .. }) => {
                self.seats.clone_from(seats);
            }
            OrderEvent::Confirmed(_) | OrderEvent::PaymentConfirmed(_) => self.is_confirmed = true,
            OrderEvent::Expired(_) => self.is_expired = true,
            OrderEvent::RegistrantAssigned(_) | OrderEvent::TotalsCalculated(_) => {}
        }
    }
}

fn totals_calculated(totals: OrderTotal) -> OrderEvent {
    OrderTotalsCalculated {
        is_free_of_charge: totals.total.is_zero(),
        total: totals.total,
        lines: totals.lines,
    }
    .into()
}

impl Order {
    /// The conference (nil before placement).
    pub fn conference_id(&self) -> Uuid {
        self.conference_id
    }

    /// The current seats: requested, or reserved after a reservation.
    pub fn seats(&self) -> &[SeatQuantity] {
        &self.seats
    }

    /// Whether the order is confirmed.
    pub fn is_confirmed(&self) -> bool {
        self.is_confirmed
    }

    /// Whether the order expired.
    pub fn is_expired(&self) -> bool {
        self.is_expired
    }

    /// Places the order: `OrderPlaced` (expiry `now` + 15 min, a new access code), then
    /// `OrderTotalsCalculated`.
    ///
    /// # Errors
    /// Pricing's `invalid-data`.
    pub fn place(
        conference_id: Uuid,
        seats: Vec<SeatQuantity>,
        pricing: &impl Pricing,
        now: DateTime<Utc>,
    ) -> DomainResult<Vec<OrderEvent>> {
        let totals = pricing.calculate_total(conference_id, &seats)?;
        Ok(vec![
            OrderPlaced {
                conference_id,
                seats,
                reservation_auto_expiration: now + RESERVATION_AUTO_EXPIRATION,
                access_code: new_access_code(),
            }
            .into(),
            totals_calculated(totals),
        ])
    }

    /// Changes the seats (no guard): `OrderUpdated`, then `OrderTotalsCalculated`, priced at the
    /// stored conference.
    ///
    /// # Errors
    /// Pricing's `invalid-data`.
    pub fn update_seats(
        &self,
        seats: Vec<SeatQuantity>,
        pricing: &impl Pricing,
    ) -> DomainResult<Vec<OrderEvent>> {
        let totals = pricing.calculate_total(self.conference_id, &seats)?;
        Ok(vec![OrderUpdated { seats }.into(), totals_calculated(totals)])
    }

    /// Records the reservation: `OrderReservationCompleted` when every requested line is
    /// reserved in full, else `OrderPartiallyReserved` and the totals of the reserved seats.
    ///
    /// # Errors
    /// `invalid-state` for a confirmed order; pricing's `invalid-data`.
    pub fn mark_as_reserved(
        &self,
        pricing: &impl Pricing,
        expiration: DateTime<Utc>,
        reserved: Vec<SeatQuantity>,
    ) -> DomainResult<Vec<OrderEvent>> {
        if self.is_confirmed {
            return Err(DomainError::invalid_state("Cannot modify a confirmed order."));
        }
        let partial = self
            .seats
            .iter()
            .filter(|line| line.quantity != 0)
            .any(|line| !reserved.contains(line));
        if partial {
            let totals = pricing.calculate_total(self.conference_id, &reserved)?;
            Ok(vec![
                OrderPartiallyReserved {
                    reservation_expiration: expiration,
                    seats: reserved,
                }
                .into(),
                totals_calculated(totals),
            ])
        } else {
            Ok(vec![
                OrderReservationCompleted {
                    reservation_expiration: expiration,
                    seats: reserved,
                }
                .into(),
            ])
        }
    }

    /// Expires the order; expiring twice emits nothing (project decision 1).
    ///
    /// # Errors
    /// `invalid-state` for a confirmed order.
    pub fn expire(&self) -> DomainResult<Vec<OrderEvent>> {
        if self.is_confirmed {
            return Err(DomainError::invalid_state("Cannot expire a confirmed order."));
        }
        Ok(if self.is_expired {
            vec![]
        } else {
            vec![OrderExpired {}.into()]
        })
    }

    /// Confirms the order (no guard).
    pub fn confirm(&self) -> Vec<OrderEvent> {
        vec![OrderConfirmed {}.into()]
    }

    /// Records the registrant (no guard).
    pub fn assign_registrant(&self, first_name: String, last_name: String, email: String) -> Vec<OrderEvent> {
        vec![
            OrderRegistrantAssigned {
                first_name,
                last_name,
                email,
            }
            .into(),
        ]
    }

    /// The seat assignments of this confirmed order, for its current seats.
    ///
    /// # Errors
    /// `invalid-state` when the order is not confirmed.
    pub fn create_seat_assignments(&self) -> DomainResult<Root<SeatAssignments>> {
        if !self.is_confirmed {
            return Err(DomainError::invalid_state(
                "Cannot create seat assignments for an order that isn't confirmed yet.",
            ));
        }
        Ok(SeatAssignments::create(self.id, &self.seats))
    }
}

/// Handles the Order commands; every save is correlated with the command's id.
#[derive(Debug)]
pub struct OrderHandler<S: EventStore, P> {
    orders: Repository<Order, S>,
    seat_types: P,
    clock: SharedClock,
}

impl<S, P> OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    /// A handler saving to `orders`, pricing from `seat_types`, timing with `clock`.
    pub fn new(orders: Repository<Order, S>, seat_types: P, clock: SharedClock) -> Self {
        Self {
            orders,
            seat_types,
            clock,
        }
    }

    /// Registers the five Order commands with `dispatcher`.
    ///
    /// # Errors
    /// When one of them already has a handler.
    pub fn register(self: Arc<Self>, dispatcher: &mut CommandDispatcher) -> Result<()> {
        dispatcher
            .register::<RegisterToConference, _>(self.clone())?
            .register::<MarkSeatsAsReserved, _>(self.clone())?
            .register::<RejectOrder, _>(self.clone())?
            .register::<AssignRegistrantDetails, _>(self.clone())?
            .register::<ConfirmOrder, _>(self)?;
        Ok(())
    }

    async fn prices(&self, conference_id: Uuid) -> Result<PriceList> {
        PriceList::load(&self.seat_types, conference_id).await
    }
}

impl<S, P> CommandHandler<RegisterToConference> for OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    async fn handle(&self, command: &RegisterToConference, metadata: &Metadata) -> Result<()> {
        let mut order = match self.orders.find(command.order_id).await? {
            None => {
                let prices = self.prices(command.conference_id).await?;
                let mut order = Root::<Order>::new(command.order_id);
                order.record_all(Order::place(
                    command.conference_id,
                    command.seats.clone(),
                    &prices,
                    self.clock.now(),
                )?);
                order
            }
            Some(mut order) => {
                let prices = self.prices(order.conference_id).await?;
                order.execute(|o| o.update_seats(command.seats.clone(), &prices))?;
                order
            }
        };
        self.orders
            .save(&mut order, caused_by_command(command.id, metadata))
            .await
    }
}

impl<S, P> CommandHandler<MarkSeatsAsReserved> for OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    async fn handle(&self, command: &MarkSeatsAsReserved, metadata: &Metadata) -> Result<()> {
        let mut order = self.orders.get(command.order_id).await?;
        let prices = self.prices(order.conference_id).await?;
        order.execute(|o| o.mark_as_reserved(&prices, command.expiration, command.seats.clone()))?;
        self.orders
            .save(&mut order, caused_by_command(command.id, metadata))
            .await
    }
}

impl<S, P> CommandHandler<RejectOrder> for OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    async fn handle(&self, command: &RejectOrder, metadata: &Metadata) -> Result<()> {
        let Some(mut order) = self.orders.find(command.order_id).await? else {
            return Ok(());
        };
        order.execute(Order::expire)?;
        self.orders
            .save(&mut order, caused_by_command(command.id, metadata))
            .await
    }
}

impl<S, P> CommandHandler<AssignRegistrantDetails> for OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    async fn handle(&self, command: &AssignRegistrantDetails, metadata: &Metadata) -> Result<()> {
        let mut order = self.orders.get(command.order_id).await?;
        order.record_all(order.assign_registrant(
            command.first_name.clone(),
            command.last_name.clone(),
            command.email.clone(),
        ));
        self.orders
            .save(&mut order, caused_by_command(command.id, metadata))
            .await
    }
}

impl<S, P> CommandHandler<ConfirmOrder> for OrderHandler<S, P>
where
    S: EventStore + 'static,
    P: SeatTypeSource + 'static,
{
    async fn handle(&self, command: &ConfirmOrder, metadata: &Metadata) -> Result<()> {
        let mut order = self.orders.get(command.order_id).await?;
        order.record_all(order.confirm());
        self.orders
            .save(&mut order, caused_by_command(command.id, metadata))
            .await
    }
}
