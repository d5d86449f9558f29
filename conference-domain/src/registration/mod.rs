//! The registration process manager (`DOMAIN.md` §11): it coordinates an order, its seat
//! reservation, its payment and its expiry.
//!
//! [`RegistrationProcess`] is the state and the transition table, pure and testable with the
//! framework's `ProcessTest` (`cqrs_core::testing`, feature `testing`);
//! [`RegistrationRouter`] finds the instance for each message and saves it with its outgoing
//! commands through the process store's outbox.

mod process;
mod router;

pub use self::process::{
    BUFFER_BEFORE_RELEASING_SEATS_AFTER_EXPIRATION, MAKE_SEAT_RESERVATION_TTL_MARGIN, Outcome,
    RegistrationProcess, Stage,
};
pub use self::router::RegistrationRouter;
