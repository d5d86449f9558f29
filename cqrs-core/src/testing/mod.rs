//! Testing kit (feature `testing`): given/when/then for aggregates and process managers, a
//! scriptable recording bus, a sample aggregate and process, and the store conformance suite
//! that every backend runs.
//!
//! ```
//! use cqrs_core::testing::{AggregateTest, sample::{Inventory, InventoryEvent, SeatsAdded, SeatsReserved}};
//! use uuid::Uuid;
//!
//! AggregateTest::<Inventory>::new(Uuid::nil())
//!     .given([SeatsAdded { seat_type: 1, quantity: 10 }.into()])
//!     .when(|inventory| inventory.execute(|i| i.reserve(42, 1, 4)))
//!     .then([SeatsReserved { reservation: 42, seat_type: 1, quantity: 4 }.into()]);
//! ```

mod aggregate;
mod bus;
pub mod conformance;
mod process;
pub mod sample;

pub use self::aggregate::{AggregateOutcome, AggregateTest};
pub use self::bus::{BusCall, RecordingBus};
pub use self::process::{ProcessOutcome, ProcessTest};
pub use crate::clock::ManualClock;
