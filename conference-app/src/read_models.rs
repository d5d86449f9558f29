//! The domain's read-model stores on [`Documents`]: one model name per table of `DOMAIN.md`
//! §12, with the index columns its lookups need.

use conference_domain::payments::PaymentState;
use conference_domain::read_model::{
    AdminOrder, AdminOrderStore, ConferenceAlias, ConferenceQueries, ConferenceView, ConferenceViewStore,
    DraftOrder, DraftOrderStore, OrderSeats, OrderSeatsStore, PaymentDetails, PaymentStore, PricedOrder,
    PricedOrderStore, SeatTypeName, SeatTypeView,
};
use cqrs_core::Result;
use uuid::Uuid;

use crate::documents::{Documents, Index, Row};

/// The model names, which are also the projections' partitions of the documents table.
pub mod models {
    /// Draft orders; index 1: `<lower-case email>|<access code>`.
    pub const DRAFT_ORDER: &str = "draft_order";
    /// Priced orders.
    pub const PRICED_ORDER: &str = "priced_order";
    /// The priced order's seat-type descriptions.
    pub const SEAT_TYPE_DESCRIPTION: &str = "seat_type_description";
    /// Conferences; index 1: code; index 2: `"published"` when published.
    pub const CONFERENCE: &str = "conference";
    /// Seat types; index 1: conference id.
    pub const SEAT_TYPE: &str = "seat_type";
    /// Order-seats documents.
    pub const ORDER_SEATS: &str = "order_seats";
    /// Payments; index 1: state; index 2: order id.
    pub const PAYMENT: &str = "payment";
    /// The admin's orders; index 1: conference id; index 2: seat-assignments id.
    pub const ADMIN_ORDER: &str = "admin_order";
}

fn locator(email: &str, access_code: &str) -> String {
    format!("{}|{access_code}", email.to_lowercase())
}

impl DraftOrderStore for Documents {
    async fn draft_order(&self, order_id: Uuid) -> Result<Option<DraftOrder>> {
        self.get(models::DRAFT_ORDER, &order_id.to_string()).await
    }

    async fn save_draft_order(&self, order: DraftOrder) -> Result<()> {
        let locate = order
            .registrant_email
            .as_deref()
            .map(|e| locator(e, &order.access_code));
        let row = Row::new(&order, locate, None)?;
        self.put(models::DRAFT_ORDER, &order.order_id.to_string(), row)
            .await
    }

    async fn locate_order(&self, email: &str, access_code: &str) -> Result<Option<Uuid>> {
        let found: Vec<DraftOrder> = self
            .find(models::DRAFT_ORDER, Index::One, &locator(email, access_code))
            .await?;
        Ok(found.first().map(|o| o.order_id))
    }
}

impl PricedOrderStore for Documents {
    async fn priced_order(&self, order_id: Uuid) -> Result<Option<PricedOrder>> {
        self.get(models::PRICED_ORDER, &order_id.to_string()).await
    }

    async fn save_priced_order(&self, order: PricedOrder) -> Result<()> {
        let row = Row::new(&order, None, None)?;
        self.put(models::PRICED_ORDER, &order.order_id.to_string(), row)
            .await
    }

    async fn delete_priced_order(&self, order_id: Uuid) -> Result<()> {
        self.delete(models::PRICED_ORDER, &order_id.to_string()).await
    }

    async fn seat_type_descriptions(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(name) = self
                .get::<String>(models::SEAT_TYPE_DESCRIPTION, &id.to_string())
                .await?
            {
                names.push((*id, name));
            }
        }
        Ok(names)
    }

    async fn save_seat_type_description(&self, id: Uuid, name: String) -> Result<()> {
        let row = Row::new(&name, None, None)?;
        self.put(models::SEAT_TYPE_DESCRIPTION, &id.to_string(), row)
            .await
    }
}

impl ConferenceViewStore for Documents {
    async fn conference(&self, id: Uuid) -> Result<Option<ConferenceView>> {
        self.get(models::CONFERENCE, &id.to_string()).await
    }

    async fn save_conference(&self, conference: ConferenceView) -> Result<()> {
        let published = conference.is_published.then(|| "published".to_owned());
        let row = Row::new(&conference, Some(conference.code.clone()), published)?;
        self.put(models::CONFERENCE, &conference.id.to_string(), row)
            .await
    }

    async fn seat_type(&self, id: Uuid) -> Result<Option<SeatTypeView>> {
        self.get(models::SEAT_TYPE, &id.to_string()).await
    }

    async fn seat_types(&self, conference_id: Uuid) -> Result<Vec<SeatTypeView>> {
        self.find(models::SEAT_TYPE, Index::One, &conference_id.to_string())
            .await
    }

    async fn save_seat_types(&self, seat_types: Vec<SeatTypeView>) -> Result<()> {
        for seat_type in seat_types {
            let row = Row::new(&seat_type, Some(seat_type.conference_id.to_string()), None)?;
            self.put(models::SEAT_TYPE, &seat_type.id.to_string(), row)
                .await?;
        }
        Ok(())
    }
}

impl ConferenceQueries for Documents {
    async fn conference_details(&self, code: &str) -> Result<Option<ConferenceView>> {
        let found: Vec<ConferenceView> = self.find(models::CONFERENCE, Index::One, code).await?;
        Ok(found.into_iter().next())
    }

    async fn conference_alias(&self, code: &str) -> Result<Option<ConferenceAlias>> {
        Ok(self.conference_details(code).await?.map(|c| ConferenceAlias {
            id: c.id,
            code: c.code,
            name: c.name,
            tagline: c.tagline,
        }))
    }

    async fn published_conferences(&self) -> Result<Vec<ConferenceView>> {
        let mut published: Vec<ConferenceView> =
            self.find(models::CONFERENCE, Index::Two, "published").await?;
        published.sort_by(|a, b| a.start_date.cmp(&b.start_date).then_with(|| a.code.cmp(&b.code)));
        Ok(published)
    }

    async fn published_seat_types(&self, conference_id: Uuid) -> Result<Vec<SeatTypeView>> {
        match self.conference(conference_id).await? {
            Some(conference) if conference.is_published => {
                ConferenceViewStore::seat_types(self, conference_id).await
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn seat_type_names(&self, ids: &[Uuid]) -> Result<Vec<SeatTypeName>> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let mut names = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(seat_type) = self.seat_type(id).await? {
                names.push(SeatTypeName {
                    id,
                    name: seat_type.name,
                });
            }
        }
        Ok(names)
    }
}

impl OrderSeatsStore for Documents {
    async fn order_seats(&self, assignments_id: Uuid) -> Result<Option<OrderSeats>> {
        self.get(models::ORDER_SEATS, &assignments_id.to_string()).await
    }

    async fn save_order_seats(&self, seats: OrderSeats) -> Result<()> {
        let row = Row::new(&seats, None, None)?;
        self.put(models::ORDER_SEATS, &seats.assignments_id.to_string(), row)
            .await
    }
}

fn state_name(state: PaymentState) -> String {
    format!("{state:?}")
}

impl PaymentStore for Documents {
    async fn payment(&self, id: Uuid) -> Result<Option<PaymentDetails>> {
        self.get(models::PAYMENT, &id.to_string()).await
    }

    async fn save_payment(&self, payment: PaymentDetails) -> Result<()> {
        let row = Row::new(
            &payment,
            Some(state_name(payment.state)),
            Some(payment.payment_source_id.to_string()),
        )?;
        self.put(models::PAYMENT, &payment.id.to_string(), row).await
    }

    async fn payments_of_order(&self, order_id: Uuid) -> Result<Vec<PaymentDetails>> {
        self.find(models::PAYMENT, Index::Two, &order_id.to_string())
            .await
    }

    async fn payments_requiring_refund(&self) -> Result<Vec<PaymentDetails>> {
        self.find(
            models::PAYMENT,
            Index::One,
            &state_name(PaymentState::RefundRequired),
        )
        .await
    }
}

impl AdminOrderStore for Documents {
    async fn admin_order(&self, id: Uuid) -> Result<Option<AdminOrder>> {
        self.get(models::ADMIN_ORDER, &id.to_string()).await
    }

    async fn admin_order_by_assignments(&self, assignments_id: Uuid) -> Result<Option<AdminOrder>> {
        let found: Vec<AdminOrder> = self
            .find(models::ADMIN_ORDER, Index::Two, &assignments_id.to_string())
            .await?;
        Ok(found.into_iter().next())
    }

    async fn save_admin_order(&self, order: AdminOrder) -> Result<()> {
        let row = Row::new(
            &order,
            Some(order.conference_id.to_string()),
            order.assignments_id.map(|a| a.to_string()),
        )?;
        self.put(models::ADMIN_ORDER, &order.id.to_string(), row).await
    }

    async fn delete_admin_order(&self, id: Uuid) -> Result<()> {
        self.delete(models::ADMIN_ORDER, &id.to_string()).await
    }

    async fn admin_orders(&self, conference_id: Uuid) -> Result<Vec<AdminOrder>> {
        self.find(models::ADMIN_ORDER, Index::One, &conference_id.to_string())
            .await
    }
}
