//! Every read-model store in memory: for tests, and for running the domain in one process.

use std::sync::Arc;

use cqrs_core::Result;
use dashmap::DashMap;
use uuid::Uuid;

use super::{
    AdminOrder, AdminOrderStore, ConferenceAlias, ConferenceQueries, ConferenceView, ConferenceViewStore,
    DraftOrder, DraftOrderStore, OrderSeats, OrderSeatsStore, PaymentDetails, PaymentStore, PricedOrder,
    PricedOrderStore, SeatTypeName, SeatTypeView,
};
use crate::payments::PaymentState;

#[derive(Debug, Default)]
struct Tables {
    draft_orders: DashMap<Uuid, DraftOrder>,
    priced_orders: DashMap<Uuid, PricedOrder>,
    descriptions: DashMap<Uuid, String>,
    conferences: DashMap<Uuid, ConferenceView>,
    seat_types: DashMap<Uuid, SeatTypeView>,
    order_seats: DashMap<Uuid, OrderSeats>,
    payments: DashMap<Uuid, PaymentDetails>,
    admin_orders: DashMap<Uuid, AdminOrder>,
}

/// All read models in memory; clones share the same tables.
#[derive(Debug, Clone, Default)]
pub struct MemoryReadModels {
    tables: Arc<Tables>,
}

impl MemoryReadModels {
    /// Empty read models.
    pub fn new() -> Self {
        Self::default()
    }
}

impl DraftOrderStore for MemoryReadModels {
    async fn draft_order(&self, order_id: Uuid) -> Result<Option<DraftOrder>> {
        Ok(self.tables.draft_orders.get(&order_id).map(|o| o.clone()))
    }

    async fn save_draft_order(&self, order: DraftOrder) -> Result<()> {
        self.tables.draft_orders.insert(order.order_id, order);
        Ok(())
    }

    async fn locate_order(&self, email: &str, access_code: &str) -> Result<Option<Uuid>> {
        let email = email.to_lowercase();
        Ok(self
            .tables
            .draft_orders
            .iter()
            .find(|o| {
                o.access_code == access_code
                    && o.registrant_email.as_deref().map(str::to_lowercase) == Some(email.clone())
            })
            .map(|o| o.order_id))
    }
}

impl PricedOrderStore for MemoryReadModels {
    async fn priced_order(&self, order_id: Uuid) -> Result<Option<PricedOrder>> {
        Ok(self.tables.priced_orders.get(&order_id).map(|o| o.clone()))
    }

    async fn save_priced_order(&self, order: PricedOrder) -> Result<()> {
        self.tables.priced_orders.insert(order.order_id, order);
        Ok(())
    }

    async fn delete_priced_order(&self, order_id: Uuid) -> Result<()> {
        self.tables.priced_orders.remove(&order_id);
        Ok(())
    }

    async fn seat_type_descriptions(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
        Ok(ids
            .iter()
            .filter_map(|id| self.tables.descriptions.get(id).map(|n| (*id, n.clone())))
            .collect())
    }

    async fn save_seat_type_description(&self, id: Uuid, name: String) -> Result<()> {
        self.tables.descriptions.insert(id, name);
        Ok(())
    }
}

impl ConferenceViewStore for MemoryReadModels {
    async fn conference(&self, id: Uuid) -> Result<Option<ConferenceView>> {
        Ok(self.tables.conferences.get(&id).map(|c| c.clone()))
    }

    async fn save_conference(&self, conference: ConferenceView) -> Result<()> {
        self.tables.conferences.insert(conference.id, conference);
        Ok(())
    }

    async fn seat_type(&self, id: Uuid) -> Result<Option<SeatTypeView>> {
        Ok(self.tables.seat_types.get(&id).map(|t| t.clone()))
    }

    async fn seat_types(&self, conference_id: Uuid) -> Result<Vec<SeatTypeView>> {
        let mut types: Vec<SeatTypeView> = self
            .tables
            .seat_types
            .iter()
            .filter(|t| t.conference_id == conference_id)
            .map(|t| t.clone())
            .collect();
        types.sort_by_key(|t| t.id);
        Ok(types)
    }

    async fn save_seat_types(&self, seat_types: Vec<SeatTypeView>) -> Result<()> {
        for seat_type in seat_types {
            self.tables.seat_types.insert(seat_type.id, seat_type);
        }
        Ok(())
    }
}

impl MemoryReadModels {
    fn by_code(&self, code: &str) -> Option<ConferenceView> {
        self.tables
            .conferences
            .iter()
            .find(|c| c.code == code)
            .map(|c| c.clone())
    }
}

impl ConferenceQueries for MemoryReadModels {
    async fn conference_details(&self, code: &str) -> Result<Option<ConferenceView>> {
        Ok(self.by_code(code))
    }

    async fn conference_alias(&self, code: &str) -> Result<Option<ConferenceAlias>> {
        Ok(self.by_code(code).map(|c| ConferenceAlias {
            id: c.id,
            code: c.code,
            name: c.name,
            tagline: c.tagline,
        }))
    }

    async fn published_conferences(&self) -> Result<Vec<ConferenceView>> {
        let mut published: Vec<ConferenceView> = self
            .tables
            .conferences
            .iter()
            .filter(|c| c.is_published)
            .map(|c| c.clone())
            .collect();
        published.sort_by(|a, b| a.start_date.cmp(&b.start_date).then_with(|| a.code.cmp(&b.code)));
        Ok(published)
    }

    async fn published_seat_types(&self, conference_id: Uuid) -> Result<Vec<SeatTypeView>> {
        let published = self
            .tables
            .conferences
            .get(&conference_id)
            .is_some_and(|c| c.is_published);
        if !published {
            return Ok(Vec::new());
        }
        ConferenceViewStore::seat_types(self, conference_id).await
    }

    async fn seat_type_names(&self, ids: &[Uuid]) -> Result<Vec<SeatTypeName>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        Ok(ids
            .into_iter()
            .filter_map(|id| {
                self.tables.seat_types.get(&id).map(|t| SeatTypeName {
                    id,
                    name: t.name.clone(),
                })
            })
            .collect())
    }
}

impl OrderSeatsStore for MemoryReadModels {
    async fn order_seats(&self, assignments_id: Uuid) -> Result<Option<OrderSeats>> {
        Ok(self.tables.order_seats.get(&assignments_id).map(|s| s.clone()))
    }

    async fn save_order_seats(&self, seats: OrderSeats) -> Result<()> {
        self.tables.order_seats.insert(seats.assignments_id, seats);
        Ok(())
    }
}

impl PaymentStore for MemoryReadModels {
    async fn payment(&self, id: Uuid) -> Result<Option<PaymentDetails>> {
        Ok(self.tables.payments.get(&id).map(|p| p.clone()))
    }

    async fn save_payment(&self, payment: PaymentDetails) -> Result<()> {
        self.tables.payments.insert(payment.id, payment);
        Ok(())
    }

    async fn payments_of_order(&self, order_id: Uuid) -> Result<Vec<PaymentDetails>> {
        let mut payments: Vec<PaymentDetails> = self
            .tables
            .payments
            .iter()
            .filter(|p| p.payment_source_id == order_id)
            .map(|p| p.clone())
            .collect();
        payments.sort_by_key(|p| p.id);
        Ok(payments)
    }

    async fn payments_requiring_refund(&self) -> Result<Vec<PaymentDetails>> {
        let mut refunds: Vec<PaymentDetails> = self
            .tables
            .payments
            .iter()
            .filter(|p| p.state == PaymentState::RefundRequired)
            .map(|p| p.clone())
            .collect();
        refunds.sort_by_key(|p| p.id);
        Ok(refunds)
    }
}

impl AdminOrderStore for MemoryReadModels {
    async fn admin_order(&self, id: Uuid) -> Result<Option<AdminOrder>> {
        Ok(self.tables.admin_orders.get(&id).map(|o| o.clone()))
    }

    async fn admin_order_by_assignments(&self, assignments_id: Uuid) -> Result<Option<AdminOrder>> {
        Ok(self
            .tables
            .admin_orders
            .iter()
            .find(|o| o.assignments_id == Some(assignments_id))
            .map(|o| o.clone()))
    }

    async fn save_admin_order(&self, order: AdminOrder) -> Result<()> {
        self.tables.admin_orders.insert(order.id, order);
        Ok(())
    }

    async fn delete_admin_order(&self, id: Uuid) -> Result<()> {
        self.tables.admin_orders.remove(&id);
        Ok(())
    }

    async fn admin_orders(&self, conference_id: Uuid) -> Result<Vec<AdminOrder>> {
        let mut orders: Vec<AdminOrder> = self
            .tables
            .admin_orders
            .iter()
            .filter(|o| o.conference_id == conference_id)
            .map(|o| o.clone())
            .collect();
        orders.sort_by_key(|o| o.id);
        Ok(orders)
    }
}
