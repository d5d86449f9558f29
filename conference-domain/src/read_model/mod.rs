//! Read models and their generators (`DOMAIN.md` §12, §9.3, §10.3) and the public cache (§13).
//!
//! Each generator is an event handler that reads and writes its rows through a small store
//! trait: the application implements the traits on SQL (committing the rows with the
//! subscription's checkpoint), [`MemoryReadModels`] implements them all in memory for tests
//! and single-process use. Generators tolerate redelivery: order-keyed models apply an event
//! only if its version is above the stored one (an equal version is a duplicate, a lower one
//! out of order; both are logged and skipped).
//!
//! | model | generator | store |
//! |---|---|---|
//! | draft order (§12.1) | [`DraftOrderGenerator`] | [`DraftOrderStore`] |
//! | priced order (§12.2) | [`PricedOrderGenerator`] | [`PricedOrderStore`] |
//! | conferences and seat types (§12.3) | [`ConferenceViewGenerator`] | [`ConferenceViewStore`], read through [`ConferenceQueries`] |
//! | order seats (§12.4) | [`OrderSeatsGenerator`] | [`OrderSeatsStore`] |
//! | payments (§9.3) | [`PaymentGenerator`] | [`PaymentStore`] |
//! | the admin's orders (§10.3) | [`AdminOrderGenerator`] | [`AdminOrderStore`] |
//! | the public cache (§13.1) | — | [`CachedConferenceQueries`] over any [`ConferenceQueries`] |

mod admin;
mod cache;
mod conferences;
mod memory;
mod orders;
mod payments;
mod seats;

pub use self::admin::{AdminOrder, AdminOrderGenerator, AdminOrderStatus, AdminOrderStore, AdminSeat};
pub use self::cache::{CachedConferenceQueries, published_seat_types_lifetime};
pub use self::conferences::{
    ConferenceAlias, ConferenceQueries, ConferenceView, ConferenceViewGenerator, ConferenceViewStore,
    SeatTypeName, SeatTypeRegistration, SeatTypeView,
};
pub use self::memory::MemoryReadModels;
pub use self::orders::{
    DESCRIPTION_CACHE_LIFETIME, DraftOrder, DraftOrderGenerator, DraftOrderLine, DraftOrderState,
    DraftOrderStore, PricedOrder, PricedOrderGenerator, PricedOrderLine, PricedOrderStore,
};
pub use self::payments::{PaymentDetails, PaymentGenerator, PaymentStore};
pub use self::seats::{OrderSeat, OrderSeats, OrderSeatsGenerator, OrderSeatsStore};

/// Whether an event at `version` is newer than the row's `stored` version; logs the skip.
fn is_newer(model: &str, key: uuid::Uuid, stored: i64, version: i64) -> bool {
    if version > stored {
        return true;
    }
    if version == stored {
        tracing::warn!(model, %key, version, "duplicate event skipped");
    } else {
        tracing::warn!(model, %key, version, stored, "out-of-order event skipped");
    }
    false
}

/// Implements `EventHandler<Event>` for a generator by calling one of its methods with the
/// event and its metadata: `route!([generics] Type { Event => method, ... })`.
macro_rules! route {
    ([$($generics:tt)*] $ty:ty { $(,)? }) => {};
    ([$($generics:tt)*] $ty:ty { $event:ty => $method:ident $(, $($rest:tt)*)? }) => {
        impl<$($generics)*> cqrs_core::EventHandler<$event> for $ty {
            async fn handle(&self, event: &$event, metadata: &cqrs_core::Metadata) -> cqrs_core::Result<()> {
                self.$method(event, metadata).await
            }
        }
        route!([$($generics)*] $ty { $($($rest)*)? });
    };
}
use route;
