//! The router of registration processes (`DOMAIN.md` §11.3): finds the instance a message is
//! for, lets it handle the message, and saves its state with its outgoing commands in one
//! step (the process store's outbox); the commands are sent after the commit.

use std::sync::Arc;

use cqrs_core::{
    CommandBus, CommandDispatcher, CommandHandler, Envelope, EventDispatcher, EventHandler, Message,
    Metadata, Process, ProcessRepository, ProcessStore, Result, SharedClock,
};
use uuid::Uuid;

use super::process::{Outcome, RegistrationProcess};
use crate::Sourced;
use crate::commands::{CancelSeatReservation, ExpireRegistrationProcess};
use crate::order::{OrderConfirmed, OrderPlaced, OrderUpdated};
use crate::payments::PaymentCompleted;
use crate::seats_availability::SeatsReserved;

/// Routes Order, SeatsAvailability and payment events, and the expiry timer, to registration
/// processes. One shared instance per process.
#[derive(Debug)]
pub struct RegistrationRouter<S, B> {
    processes: ProcessRepository<RegistrationProcess, S, B>,
    bus: B,
    clock: SharedClock,
}

impl<S, B> RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    /// A router storing processes in `store`, sending commands on `bus`.
    pub fn new(store: S, bus: B, clock: SharedClock) -> Self {
        Self {
            processes: ProcessRepository::new(store, bus.clone(), clock.clone()),
            bus,
            clock,
        }
    }

    /// Subscribes to the five events on `dispatcher`.
    ///
    /// # Errors
    /// When a handler type is registered twice.
    pub fn subscribe(self: Arc<Self>, dispatcher: &mut EventDispatcher) -> Result<()> {
        dispatcher
            .subscribe::<OrderPlaced, _>(self.clone())?
            .subscribe::<OrderUpdated, _>(self.clone())?
            .subscribe::<SeatsReserved, _>(self.clone())?
            .subscribe::<PaymentCompleted, _>(self.clone())?
            .subscribe::<OrderConfirmed, _>(self)?;
        Ok(())
    }

    /// The order whose registration process a message of the router's subscription goes to
    /// (as a string): the key that lets a [`Partitioned`](cqrs_core::Partitioned) handler run
    /// a batch of `SeatsReserved` of one conference, each for another order, concurrently.
    /// `None` for a message it cannot tell (handled alone, to fail as it will).
    pub fn process_key(envelope: &Envelope) -> Option<String> {
        let order_id = match envelope.name() {
            SeatsReserved::NAME => envelope.message.decode::<SeatsReserved>().ok()?.reservation_id,
            PaymentCompleted::NAME => {
                envelope
                    .message
                    .decode::<PaymentCompleted>()
                    .ok()?
                    .payment_source_id
            }
            OrderPlaced::NAME | OrderUpdated::NAME | OrderConfirmed::NAME => {
                Sourced::of(&envelope.metadata).ok()?.id
            }
            _ => return None,
        };
        Some(order_id.to_string())
    }

    /// Registers the `ExpireRegistrationProcess` handler with `dispatcher`. Register it only
    /// with the dispatcher of a transport processor, never as a local-first handler: local
    /// handling ignores the command's delay.
    ///
    /// # Errors
    /// When the command already has a handler.
    pub fn register(self: Arc<Self>, dispatcher: &mut CommandDispatcher) -> Result<()> {
        dispatcher.register::<ExpireRegistrationProcess, _>(self)?;
        Ok(())
    }

    /// The running process of `order_id`, if any.
    ///
    /// # Errors
    /// Store failures.
    pub async fn find_running(&self, order_id: Uuid) -> Result<Option<Process<RegistrationProcess>>> {
        self.processes.find_by_key(&order_id.to_string(), false).await
    }

    /// Lets `process` handle a message (declared as its cause), then saves it unless the
    /// message changed nothing (a duplicate or a stale answer).
    async fn handle_and_save(
        &self,
        mut process: Process<RegistrationProcess>,
        cause: &Metadata,
        handle: impl FnOnce(&mut Process<RegistrationProcess>) -> Result<()>,
    ) -> Result<()> {
        let before = process.state().clone();
        process.caused_by(cause);
        handle(&mut process)?;
        let unchanged = process.version() >= 0 && *process.state() == before && process.outgoing().is_empty();
        if unchanged {
            return Ok(());
        }
        self.processes.save(&mut process).await
    }
}

impl<S, B> EventHandler<OrderPlaced> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, event: &OrderPlaced, metadata: &Metadata) -> Result<()> {
        let order_id = Sourced::of(metadata)?.id;
        let process = match self.find_running(order_id).await? {
            Some(process) => process,
            None => Process::new(Uuid::now_v7(), RegistrationProcess::default()),
        };
        let now = self.clock.now();
        self.handle_and_save(process, metadata, |p| {
            RegistrationProcess::on_order_placed(p, order_id, event, now)
        })
        .await
    }
}

impl<S, B> EventHandler<OrderUpdated> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, event: &OrderUpdated, metadata: &Metadata) -> Result<()> {
        let order_id = Sourced::of(metadata)?.id;
        let Some(process) = self.find_running(order_id).await? else {
            tracing::error!(%order_id, "OrderUpdated for an order with no running registration");
            return Ok(());
        };
        self.handle_and_save(process, metadata, |p| {
            RegistrationProcess::on_order_updated(p, event)
        })
        .await
    }
}

impl<S, B> EventHandler<SeatsReserved> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, event: &SeatsReserved, metadata: &Metadata) -> Result<()> {
        let Some(process) = self.find_running(event.reservation_id).await? else {
            // Project decision 8: release seats held for a finished (or unknown) process.
            let conference_id = Sourced::of(metadata)?.id;
            tracing::warn!(reservation_id = %event.reservation_id, "orphan reservation cancelled");
            let cancel = CancelSeatReservation::new(conference_id, event.reservation_id);
            return self.bus.send(Envelope::command(cancel).caused_by(metadata)).await;
        };
        self.handle_and_save(process, metadata, |p| {
            RegistrationProcess::on_seats_reserved(p, event, metadata)
        })
        .await
    }
}

impl<S, B> EventHandler<PaymentCompleted> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, event: &PaymentCompleted, metadata: &Metadata) -> Result<()> {
        let payment_id = Sourced::of(metadata)?.id;
        let order_id = event.payment_source_id;
        let process = match self.find_running(order_id).await? {
            Some(process) => process,
            None => match self.processes.find_by_key(&order_id.to_string(), true).await? {
                Some(process) if process.outcome == Some(Outcome::Expired) => process,
                _ => {
                    tracing::error!(%order_id, %payment_id, "PaymentCompleted for no expired or running registration");
                    return Ok(());
                }
            },
        };
        self.handle_and_save(process, metadata, |p| {
            RegistrationProcess::on_payment_completed(p, payment_id)
        })
        .await
    }
}

impl<S, B> EventHandler<OrderConfirmed> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, _: &OrderConfirmed, metadata: &Metadata) -> Result<()> {
        let order_id = Sourced::of(metadata)?.id;
        let Some(process) = self.find_running(order_id).await? else {
            tracing::info!(%order_id, "OrderConfirmed with no running registration");
            return Ok(());
        };
        self.handle_and_save(process, metadata, RegistrationProcess::on_order_confirmed)
            .await
    }
}

impl<S, B> CommandHandler<ExpireRegistrationProcess> for RegistrationRouter<S, B>
where
    S: ProcessStore + 'static,
    B: CommandBus + Clone + 'static,
{
    async fn handle(&self, command: &ExpireRegistrationProcess, metadata: &Metadata) -> Result<()> {
        match self.processes.load(command.process_id).await? {
            Some(process) if !process.is_completed() => {
                self.handle_and_save(process, metadata, |p| {
                    RegistrationProcess::on_expire(p, command);
                    Ok(())
                })
                .await
            }
            _ => Ok(()),
        }
    }
}
