//! Pricing (`DOMAIN.md` §6): lines in input order, banker's rounding of each line, the total
//! as the sum of the rounded lines.

use std::future::Future;

use cqrs_core::Result;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DomainError, DomainResult};
use crate::values::{Money, OrderLine, OrderTotal, SeatOrderLine, SeatQuantity, round2};

/// A seat type as pricing sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatTypePrice {
    /// The seat type.
    pub id: Uuid,
    /// Its price.
    pub price: Money,
}

/// Where the order handler reads a conference's seat types: *all* of them, uncached, published
/// or not (project decision 6), so that in-flight orders survive an unpublish. Every store of the
/// conference view is one (`read_model::ConferenceViewStore`).
pub trait SeatTypeSource: Send + Sync {
    /// Every seat type of `conference_id` (empty when none is known).
    fn seat_type_prices(
        &self,
        conference_id: Uuid,
    ) -> impl Future<Output = Result<Vec<SeatTypePrice>>> + Send;
}

/// Prices seats: what the Order aggregate calls.
pub trait Pricing {
    /// The lines and total of `seats` at `conference_id`.
    ///
    /// # Errors
    /// `invalid-data` when a seat type is unknown for the conference.
    fn calculate_total(&self, conference_id: Uuid, seats: &[SeatQuantity]) -> DomainResult<OrderTotal>;
}

/// The seat types of one conference, loaded for pricing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceList {
    conference_id: Uuid,
    seat_types: Vec<SeatTypePrice>,
}

impl PriceList {
    /// The price list of `conference_id`.
    pub fn new(conference_id: Uuid, seat_types: Vec<SeatTypePrice>) -> Self {
        Self {
            conference_id,
            seat_types,
        }
    }

    /// Loads the price list of `conference_id` from `source`.
    ///
    /// # Errors
    /// The source's failures.
    pub async fn load(source: &impl SeatTypeSource, conference_id: Uuid) -> Result<Self> {
        Ok(Self::new(
            conference_id,
            source.seat_type_prices(conference_id).await?,
        ))
    }
}

impl Pricing for PriceList {
    fn calculate_total(&self, conference_id: Uuid, seats: &[SeatQuantity]) -> DomainResult<OrderTotal> {
        let unknown = |seat_type: Uuid| {
            DomainError::InvalidData(format!(
                "Invalid seat type ID '{seat_type}' for conference with ID '{conference_id}'"
            ))
        };
        let mut lines = Vec::with_capacity(seats.len());
        for seat in seats {
            let price = (conference_id == self.conference_id)
                .then(|| self.seat_types.iter().find(|t| t.id == seat.seat_type))
                .flatten()
                .ok_or_else(|| unknown(seat.seat_type))?;
            lines.push(OrderLine::Seat(SeatOrderLine {
                seat_type: seat.seat_type,
                unit_price: price.price,
                quantity: seat.quantity,
                line_total: round2(price.price * Money::from(seat.quantity)),
            }));
        }
        let total = lines.iter().map(OrderLine::line_total).sum();
        Ok(OrderTotal { lines, total })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn money(s: &str) -> Money {
        Money::from_str(s).unwrap()
    }

    #[test]
    fn lines_follow_the_input_and_round_half_to_even() {
        let conference = Uuid::now_v7();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let prices = PriceList::new(
            conference,
            vec![
                SeatTypePrice {
                    id: a,
                    price: money("0.125"),
                },
                SeatTypePrice {
                    id: b,
                    price: money("0.0675"),
                },
            ],
        );
        let total = prices
            .calculate_total(
                conference,
                &[
                    SeatQuantity::new(b, 2),
                    SeatQuantity::new(a, 1),
                    SeatQuantity::new(a, 0),
                ],
            )
            .unwrap();
        let lines: Vec<_> = total
            .lines
            .iter()
            .map(|OrderLine::Seat(l)| (l.seat_type, l.unit_price, l.quantity, l.line_total))
            .collect();
        assert_eq!(
            lines,
            [
                (b, money("0.0675"), 2, money("0.14")),
                (a, money("0.125"), 1, money("0.12")),
                (a, money("0.125"), 0, money("0")),
            ]
        );
        assert_eq!(total.total, money("0.26"));
    }

    #[test]
    fn an_unknown_seat_type_is_invalid_data() {
        let conference = Uuid::now_v7();
        let stranger = Uuid::now_v7();
        let err = PriceList::new(conference, vec![])
            .calculate_total(conference, &[SeatQuantity::new(stranger, 1)])
            .unwrap_err();
        assert_eq!(
            err,
            DomainError::InvalidData(format!(
                "Invalid seat type ID '{stranger}' for conference with ID '{conference}'"
            ))
        );
    }
}
