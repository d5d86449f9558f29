//! Shared pieces of the criterion benches (`cargo bench -p cqrs-benches`). Results and the
//! machine they ran on are in `docs/BENCHMARKS.md`.

use cqrs_core::uuid::Uuid;
use cqrs_core::{Command, Message};
use serde::{Deserialize, Serialize};

/// A small command, like a seat reservation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserve {
    /// Command id.
    pub id: Uuid,
    /// The conference.
    pub conference: Uuid,
    /// Seats asked for.
    pub quantity: i32,
}

impl Reserve {
    /// A command with fresh ids.
    pub fn new() -> Self {
        Self {
            id: Uuid::now_v7(),
            conference: Uuid::now_v7(),
            quantity: 2,
        }
    }
}

impl Default for Reserve {
    fn default() -> Self {
        Self::new()
    }
}

impl Message for Reserve {
    const NAME: &'static str = "bench.Reserve";
}

impl Command for Reserve {
    fn command_id(&self) -> Uuid {
        self.id
    }
}

/// A small event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reserved {
    /// Seats reserved.
    pub quantity: i32,
}

impl Message for Reserved {
    const NAME: &'static str = "bench.Reserved";
}

/// A current-thread tokio runtime, the cheapest to block on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
