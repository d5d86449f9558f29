//! `audit`: the system's invariants, checked from the event log alone (and against the seat
//! view where it has caught up):
//!
//! 1. per conference and seat type, seats left + seats pending + seats sold = seats on sale;
//! 2. every confirmed order has seat assignments;
//! 3. every completed payment of an order that expired (and was never confirmed) is flagged for
//!    refund.
//!
//! The first holds at every moment. The other two are reached by asynchronous follow-ups, so
//! they are checked only for confirmations and payments older than a grace period; younger
//! ones are counted as in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};

use conference_domain::order::{OrderConfirmed, OrderExpired, OrderPaymentConfirmed};
use conference_domain::payments::{PaymentCompleted, PaymentRefundRequired};
use conference_domain::read_model::ConferenceViewStore;
use conference_domain::seat_assignments::{SeatAssignmentsCreated, seat_assignments_id};
use conference_domain::seats_availability::{
    AvailableSeatsChanged, SeatsReservationCancelled, SeatsReservationCommitted, SeatsReserved,
};
use conference_domain::values::SeatQuantity;
use cqrs_core::{EventReader, Message, Result, StoredEvent};
use uuid::Uuid;

use crate::documents::Documents;

/// Seats of one type of one conference, as the log tells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeatCount {
    /// Seats put on sale (added − removed).
    pub total: i64,
    /// Seats left.
    pub available: i64,
    /// Seats held by pending reservations.
    pub pending: i64,
    /// Seats of committed reservations.
    pub sold: i64,
}

/// What the audit found.
#[derive(Debug, Default)]
pub struct AuditReport {
    /// Events read.
    pub events: u64,
    /// Per (conference, seat type).
    pub seats: BTreeMap<(Uuid, Uuid), SeatCount>,
    /// Confirmed orders.
    pub confirmed_orders: usize,
    /// Completed payments of expired orders.
    pub late_payments: usize,
    /// Every broken invariant, in words.
    pub violations: Vec<String>,
    /// Seat types whose view is at another version than the log as the audit read it (not a
    /// violation): catching up, or already showing a change appended since.
    pub lagging_views: usize,
    /// Confirmations and payments younger than the grace period, not checked yet.
    pub in_flight: usize,
}

impl AuditReport {
    /// Whether every invariant holds.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} events read", self.events)?;
        writeln!(
            f,
            "seats (conference / seat type: available + pending + sold = total):"
        )?;
        for ((conference, seat_type), c) in &self.seats {
            let ok = if c.available + c.pending + c.sold == c.total {
                "ok"
            } else {
                "VIOLATION"
            };
            writeln!(
                f,
                "  {conference} / {seat_type}: {} + {} + {} = {} {ok}",
                c.available, c.pending, c.sold, c.total
            )?;
        }
        writeln!(
            f,
            "{} confirmed orders; {} late payments",
            self.confirmed_orders, self.late_payments
        )?;
        if self.in_flight > 0 {
            writeln!(
                f,
                "{} confirmations or payments in flight (not checked yet)",
                self.in_flight
            )?;
        }
        if self.lagging_views > 0 {
            writeln!(
                f,
                "{} seat views at another version than the log read (not checked)",
                self.lagging_views
            )?;
        }
        if self.violations.is_empty() {
            write!(f, "all invariants hold")
        } else {
            writeln!(f, "{} violations:", self.violations.len())?;
            for violation in &self.violations {
                writeln!(f, "  - {violation}")?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Availability {
    /// Per seat type, the version of the last event that changed its seats left: the version
    /// the seat view shows once it has caught up.
    changed_at: BTreeMap<Uuid, i64>,
    counts: BTreeMap<Uuid, SeatCount>,
    pending: HashMap<Uuid, Vec<SeatQuantity>>,
}

impl Availability {
    fn count(&mut self, seat_type: Uuid) -> &mut SeatCount {
        self.counts.entry(seat_type).or_default()
    }

    fn release(&mut self, reservation: Uuid, into_sold: bool) {
        for s in self.pending.remove(&reservation).unwrap_or_default() {
            let count = self.count(s.seat_type);
            count.pending -= i64::from(s.quantity);
            if into_sold {
                count.sold += i64::from(s.quantity);
            }
        }
    }

    fn change_available(&mut self, version: i64, deltas: &[SeatQuantity]) {
        for s in deltas {
            self.count(s.seat_type).available += i64::from(s.quantity);
            self.changed_at.insert(s.seat_type, version);
        }
    }

    fn apply(&mut self, event: &StoredEvent) -> Result<()> {
        let payload = &event.payload;
        match payload.name.as_str() {
            AvailableSeatsChanged::NAME => {
                let seats = payload.decode::<AvailableSeatsChanged>()?.seats;
                for s in &seats {
                    self.count(s.seat_type).total += i64::from(s.quantity);
                }
                self.change_available(event.version, &seats);
            }
            SeatsReserved::NAME => {
                let e = payload.decode::<SeatsReserved>()?;
                self.release(e.reservation_id, false);
                for s in &e.reservation_details {
                    self.count(s.seat_type).pending += i64::from(s.quantity);
                }
                self.change_available(event.version, &e.available_seats_changed);
                if !e.reservation_details.is_empty() {
                    self.pending.insert(e.reservation_id, e.reservation_details);
                }
            }
            SeatsReservationCommitted::NAME => {
                let e = payload.decode::<SeatsReservationCommitted>()?;
                self.release(e.reservation_id, true);
            }
            SeatsReservationCancelled::NAME => {
                let e = payload.decode::<SeatsReservationCancelled>()?;
                self.release(e.reservation_id, false);
                self.change_available(event.version, &e.available_seats_changed);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Reads the whole log and checks the invariants; `documents` gives the seat view to compare.
/// Confirmations and payments recorded after `settled_before` are in flight, not checked.
///
/// # Errors
/// Store failures; an event that does not decode.
pub async fn audit(
    store: &impl EventReader,
    documents: &Documents,
    settled_before: DateTime<Utc>,
) -> Result<AuditReport> {
    let mut report = AuditReport::default();
    let mut availability: BTreeMap<Uuid, Availability> = BTreeMap::new();
    let mut confirmed = BTreeMap::new();
    let mut expired = BTreeSet::new();
    let mut assignments = BTreeSet::new();
    let mut completed_payments: Vec<(Uuid, Uuid, DateTime<Utc>)> = Vec::new();
    let mut refunds = BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for event in &page {
            report.events += 1;
            let Some(source) = event.stream_id.aggregate_id() else {
                continue;
            };
            match event.payload.name.as_str() {
                OrderConfirmed::NAME | OrderPaymentConfirmed::NAME => {
                    confirmed.entry(source).or_insert(event.recorded_at);
                }
                OrderExpired::NAME => {
                    expired.insert(source);
                }
                SeatAssignmentsCreated::NAME => {
                    assignments.insert(source);
                }
                PaymentCompleted::NAME => {
                    let order = event.payload.decode::<PaymentCompleted>()?.payment_source_id;
                    completed_payments.push((source, order, event.recorded_at));
                }
                PaymentRefundRequired::NAME => {
                    refunds.insert(source);
                }
                _ if event.stream_type == "SeatsAvailability" => {
                    availability.entry(source).or_default().apply(event)?;
                }
                _ => {}
            }
        }
    }

    for (conference, seats) in &availability {
        let view = documents.seat_types(*conference).await?;
        for (seat_type, count) in &seats.counts {
            report.seats.insert((*conference, *seat_type), *count);
            if count.available + count.pending + count.sold != count.total {
                report.violations.push(format!(
                    "conference {conference}, seat type {seat_type}: {} available + {} pending + {} sold ≠ {} on sale",
                    count.available, count.pending, count.sold, count.total
                ));
            }
            let changed_at = seats.changed_at.get(seat_type).copied().unwrap_or(-1);
            match view.iter().find(|row| row.id == *seat_type) {
                // The view shows the log as this audit read it. A view at a later version took
                // a change appended since (the log is read first), and one at an earlier version
                // has not caught up: neither is compared.
                Some(row) if row.seats_availability_version == changed_at => {
                    if i64::from(row.available_quantity) != count.available {
                        report.violations.push(format!(
                            "seat type {seat_type}: the view shows {} seats left, the log {}",
                            row.available_quantity, count.available
                        ));
                    }
                }
                _ => report.lagging_views += 1,
            }
        }
    }
    report.confirmed_orders = confirmed.len();
    for (order, at) in &confirmed {
        if assignments.contains(&seat_assignments_id(*order)) {
            continue;
        }
        if *at > settled_before {
            report.in_flight += 1;
        } else {
            report
                .violations
                .push(format!("confirmed order {order} has no seat assignments"));
        }
    }
    for (payment, order, at) in completed_payments {
        if !expired.contains(&order) || confirmed.contains_key(&order) {
            continue;
        }
        report.late_payments += 1;
        if refunds.contains(&payment) {
            continue;
        }
        if at > settled_before {
            report.in_flight += 1;
        } else {
            report.violations.push(format!(
                "payment {payment} of expired order {order} is not flagged for refund"
            ));
        }
    }
    Ok(report)
}
