//! Payment details and the payments to refund (§9.3).

use std::future::Future;
use std::sync::Arc;

use cqrs_core::{EventDispatcher, Metadata, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::route;
use crate::payments::{
    PaymentCompleted, PaymentInitiated, PaymentRefundRequired, PaymentRejected, PaymentState,
};
use crate::values::Money;
use crate::{DomainError, Sourced};

/// A payment as the payment page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDetails {
    /// The payment.
    pub id: Uuid,
    /// Its state.
    pub state: PaymentState,
    /// The order paid for.
    pub payment_source_id: Uuid,
    /// What is paid.
    pub description: String,
    /// The amount.
    pub total_amount: Money,
}

/// Stores payment details.
pub trait PaymentStore: Send + Sync {
    /// The payment `id`.
    fn payment(&self, id: Uuid) -> impl Future<Output = Result<Option<PaymentDetails>>> + Send;
    /// Inserts or replaces a payment.
    fn save_payment(&self, payment: PaymentDetails) -> impl Future<Output = Result<()>> + Send;
    /// The payments of the order `order_id`, oldest first.
    fn payments_of_order(&self, order_id: Uuid) -> impl Future<Output = Result<Vec<PaymentDetails>>> + Send;
    /// Every payment in state `RefundRequired` (project decision 7).
    fn payments_requiring_refund(&self) -> impl Future<Output = Result<Vec<PaymentDetails>>> + Send;
}

/// Builds payment details from payment events.
#[derive(Debug)]
pub struct PaymentGenerator<S> {
    store: S,
}

impl<S: PaymentStore + 'static> PaymentGenerator<S> {
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
            .subscribe::<PaymentInitiated, _>(self.clone())?
            .subscribe::<PaymentCompleted, _>(self.clone())?
            .subscribe::<PaymentRejected, _>(self.clone())?
            .subscribe::<PaymentRefundRequired, _>(self)?;
        Ok(())
    }

    async fn initiated(&self, event: &PaymentInitiated, metadata: &Metadata) -> Result<()> {
        let id = Sourced::of(metadata)?.id;
        if self.store.payment(id).await?.is_some() {
            tracing::warn!(payment_id = %id, "duplicate PaymentInitiated skipped");
            return Ok(());
        }
        self.store
            .save_payment(PaymentDetails {
                id,
                state: PaymentState::Initiated,
                payment_source_id: event.payment_source_id,
                description: event.description.clone(),
                total_amount: event.total_amount,
            })
            .await
    }

    async fn set_state(&self, metadata: &Metadata, state: PaymentState) -> Result<()> {
        let id = Sourced::of(metadata)?.id;
        let Some(mut payment) = self.store.payment(id).await? else {
            return Err(DomainError::invalid_state(format!("no payment details {id}")).into());
        };
        payment.state = state;
        self.store.save_payment(payment).await
    }

    async fn completed(&self, _: &PaymentCompleted, metadata: &Metadata) -> Result<()> {
        self.set_state(metadata, PaymentState::Completed).await
    }

    async fn rejected(&self, _: &PaymentRejected, metadata: &Metadata) -> Result<()> {
        self.set_state(metadata, PaymentState::Rejected).await
    }

    async fn refund_required(&self, _: &PaymentRefundRequired, metadata: &Metadata) -> Result<()> {
        self.set_state(metadata, PaymentState::RefundRequired).await
    }
}

route!([S: PaymentStore + 'static] PaymentGenerator<S> {
    PaymentInitiated => initiated,
    PaymentCompleted => completed,
    PaymentRejected => rejected,
    PaymentRefundRequired => refund_required,
});
