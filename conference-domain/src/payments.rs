//! The ThirdPartyProcessorPayment aggregate (`DOMAIN.md` §9), its events (§4.4) and handler.
//!
//! `DOMAIN.md` describes a state-based aggregate whose save publishes its new events. Here the
//! payment is event sourced, which keeps exactly that contract with one write: the events are
//! the state, and the store's outbox publishes them. `PaymentInitiated` therefore also carries
//! the payment's description, amount and items.

use std::sync::Arc;

use cqrs_core::{
    Aggregate, CommandDispatcher, CommandHandler, EventStore, Metadata, Repository, Result, Root, event_set,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commands::{
    CancelThirdPartyProcessorPayment, CompleteThirdPartyProcessorPayment, InitiateThirdPartyProcessorPayment,
    RequirePaymentRefund,
};
use crate::error::{DomainError, DomainResult};
use crate::values::Money;
use crate::{caused_by_command, messages};

/// One item of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentItemRecord {
    /// The item id (UUID v7).
    pub id: Uuid,
    /// What the item is.
    pub description: String,
    /// Its amount.
    pub amount: Money,
}

messages! {
    /// A payment was started.
    PaymentInitiated {
        /// The order paid for.
        payment_source_id: Uuid,
        /// What is paid.
        description: String,
        /// The amount.
        total_amount: Money,
        /// Itemized amounts.
        items: Vec<PaymentItemRecord>,
    }
    /// Reserved: never emitted.
    PaymentAccepted {
        /// The order paid for.
        payment_source_id: Uuid,
    }
    /// The processor took the money.
    PaymentCompleted {
        /// The order paid for.
        payment_source_id: Uuid,
    }
    /// The processor refused the payment.
    PaymentRejected {
        /// The order paid for.
        payment_source_id: Uuid,
    }
    /// The money must go back: the order expired before the payment completed (project decision 7).
    PaymentRefundRequired {
        /// The order paid for.
        payment_source_id: Uuid,
    }
}

event_set! {
    /// Every event of a payment's stream.
    #[derive(Debug, Clone, PartialEq)]
    pub enum PaymentEvent {
        Initiated(PaymentInitiated),
        Accepted(PaymentAccepted),
        Completed(PaymentCompleted),
        Rejected(PaymentRejected),
        RefundRequired(PaymentRefundRequired),
    }
}

/// The states of a payment, with their stored numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum PaymentState {
    /// Started, waiting for the processor.
    Initiated = 0,
    /// Reserved, unused.
    Accepted = 1,
    /// Paid.
    Completed = 2,
    /// Refused.
    Rejected = 3,
    /// Paid for an order that expired: to refund.
    RefundRequired = 4,
}

/// A payment through the (simulated) third-party processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThirdPartyProcessorPayment {
    payment_source_id: Uuid,
    description: String,
    total_amount: Money,
    items: Vec<PaymentItemRecord>,
    state: PaymentState,
}

impl Aggregate for ThirdPartyProcessorPayment {
    const TYPE: &'static str = "ThirdPartyProcessorPayment";
    type Event = PaymentEvent;

    fn new(_id: Uuid) -> Self {
        Self {
            payment_source_id: Uuid::nil(),
            description: String::new(),
            total_amount: Money::ZERO,
            items: Vec::new(),
            state: PaymentState::Initiated,
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::Initiated(e) => {
                self.payment_source_id = e.payment_source_id;
                self.description.clone_from(&e.description);
                self.total_amount = e.total_amount;
                self.items.clone_from(&e.items);
                self.state = PaymentState::Initiated;
            }
            PaymentEvent::Accepted(_) => self.state = PaymentState::Accepted,
            PaymentEvent::Completed(_) => self.state = PaymentState::Completed,
            PaymentEvent::Rejected(_) => self.state = PaymentState::Rejected,
            PaymentEvent::RefundRequired(_) => self.state = PaymentState::RefundRequired,
        }
    }
}

impl ThirdPartyProcessorPayment {
    /// A new payment for the order `payment_source_id`, each item with a new id.
    pub fn initiate(
        payment_source_id: Uuid,
        description: String,
        total_amount: Money,
        items: impl IntoIterator<Item = (String, Money)>,
    ) -> Vec<PaymentEvent> {
        let items = items
            .into_iter()
            .map(|(description, amount)| PaymentItemRecord {
                id: Uuid::now_v7(),
                description,
                amount,
            })
            .collect();
        vec![
            PaymentInitiated {
                payment_source_id,
                description,
                total_amount,
                items,
            }
            .into(),
        ]
    }

    /// The state.
    pub fn payment_state(&self) -> PaymentState {
        self.state
    }

    /// The order paid for.
    pub fn payment_source_id(&self) -> Uuid {
        self.payment_source_id
    }

    /// The amount.
    pub fn total_amount(&self) -> Money {
        self.total_amount
    }

    /// What is paid.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The itemized amounts.
    pub fn items(&self) -> &[PaymentItemRecord] {
        &self.items
    }

    fn refuse(&self, operation: &str) -> DomainError {
        DomainError::invalid_state(format!("Cannot {operation} a payment in state {:?}.", self.state))
    }

    /// Completes an initiated payment; completing twice emits nothing (project decision 10).
    ///
    /// # Errors
    /// `invalid-state` in any other state.
    pub fn complete(&self) -> DomainResult<Vec<PaymentEvent>> {
        let source = self.payment_source_id;
        match self.state {
            PaymentState::Initiated => Ok(vec![
                PaymentCompleted {
                    payment_source_id: source,
                }
                .into(),
            ]),
            PaymentState::Completed => Ok(vec![]),
            _ => Err(self.refuse("complete")),
        }
    }

    /// Rejects an initiated payment; rejecting twice emits nothing (project decision 10).
    ///
    /// # Errors
    /// `invalid-state` in any other state.
    pub fn cancel(&self) -> DomainResult<Vec<PaymentEvent>> {
        let source = self.payment_source_id;
        match self.state {
            PaymentState::Initiated => Ok(vec![
                PaymentRejected {
                    payment_source_id: source,
                }
                .into(),
            ]),
            PaymentState::Rejected => Ok(vec![]),
            _ => Err(self.refuse("cancel")),
        }
    }

    /// Flags a completed payment for refund; flagging twice emits nothing (project decision 7).
    ///
    /// # Errors
    /// `invalid-state` in any other state.
    pub fn require_refund(&self) -> DomainResult<Vec<PaymentEvent>> {
        let source = self.payment_source_id;
        match self.state {
            PaymentState::Completed => Ok(vec![
                PaymentRefundRequired {
                    payment_source_id: source,
                }
                .into(),
            ]),
            PaymentState::RefundRequired => Ok(vec![]),
            _ => Err(self.refuse("refund")),
        }
    }
}

/// Handles the four payment commands.
#[derive(Debug)]
pub struct PaymentHandler<S: EventStore> {
    payments: Repository<ThirdPartyProcessorPayment, S>,
}

impl<S: EventStore + 'static> PaymentHandler<S> {
    /// A handler over `payments`.
    pub fn new(payments: Repository<ThirdPartyProcessorPayment, S>) -> Self {
        Self { payments }
    }

    /// Registers the four commands with `dispatcher`.
    ///
    /// # Errors
    /// When one of them already has a handler.
    pub fn register(self: Arc<Self>, dispatcher: &mut CommandDispatcher) -> Result<()> {
        dispatcher
            .register::<InitiateThirdPartyProcessorPayment, _>(self.clone())?
            .register::<CompleteThirdPartyProcessorPayment, _>(self.clone())?
            .register::<CancelThirdPartyProcessorPayment, _>(self.clone())?
            .register::<RequirePaymentRefund, _>(self)?;
        Ok(())
    }

    /// Runs `decide` on the payment `id` and saves; a missing payment is an error when
    /// `required`, otherwise logged only.
    async fn update(
        &self,
        id: Uuid,
        required: bool,
        command_id: Uuid,
        metadata: &Metadata,
        decide: impl FnOnce(&ThirdPartyProcessorPayment) -> DomainResult<Vec<PaymentEvent>>,
    ) -> Result<()> {
        let Some(mut payment) = self.payments.find(id).await? else {
            if required {
                return Err(DomainError::not_found(ThirdPartyProcessorPayment::TYPE, &id).into());
            }
            tracing::error!(payment_id = %id, "no such payment; command ignored");
            return Ok(());
        };
        payment.execute(decide)?;
        self.payments
            .save(&mut payment, caused_by_command(command_id, metadata))
            .await
    }
}

impl<S: EventStore + 'static> CommandHandler<InitiateThirdPartyProcessorPayment> for PaymentHandler<S> {
    async fn handle(&self, c: &InitiateThirdPartyProcessorPayment, metadata: &Metadata) -> Result<()> {
        let mut payment = Root::<ThirdPartyProcessorPayment>::new(c.payment_id);
        payment.record_all(ThirdPartyProcessorPayment::initiate(
            c.payment_source_id,
            c.description.clone(),
            c.total_amount,
            c.items.iter().map(|i| (i.description.clone(), i.amount)),
        ));
        self.payments
            .save(&mut payment, caused_by_command(c.id, metadata))
            .await
    }
}

impl<S: EventStore + 'static> CommandHandler<CompleteThirdPartyProcessorPayment> for PaymentHandler<S> {
    async fn handle(&self, c: &CompleteThirdPartyProcessorPayment, metadata: &Metadata) -> Result<()> {
        self.update(
            c.payment_id,
            false,
            c.id,
            metadata,
            ThirdPartyProcessorPayment::complete,
        )
        .await
    }
}

impl<S: EventStore + 'static> CommandHandler<CancelThirdPartyProcessorPayment> for PaymentHandler<S> {
    async fn handle(&self, c: &CancelThirdPartyProcessorPayment, metadata: &Metadata) -> Result<()> {
        self.update(
            c.payment_id,
            false,
            c.id,
            metadata,
            ThirdPartyProcessorPayment::cancel,
        )
        .await
    }
}

impl<S: EventStore + 'static> CommandHandler<RequirePaymentRefund> for PaymentHandler<S> {
    async fn handle(&self, c: &RequirePaymentRefund, metadata: &Metadata) -> Result<()> {
        self.update(
            c.payment_id,
            true,
            c.id,
            metadata,
            ThirdPartyProcessorPayment::require_refund,
        )
        .await
    }
}
