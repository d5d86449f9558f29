use std::sync::Arc;

use cqrs_core::{Lease, Leases, Result};
use dashmap::DashSet;

/// In-process leases: each name held by one holder at a time among the clones of this value.
#[derive(Debug, Clone, Default)]
pub struct MemoryLeases {
    held: Arc<DashSet<String>>,
}

impl MemoryLeases {
    /// No lease held.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Releases its name when dropped.
struct Held {
    held: Arc<DashSet<String>>,
    name: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.held.remove(&self.name);
    }
}

impl Leases for MemoryLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Lease>> {
        if !self.held.insert(name.to_owned()) {
            return Ok(None);
        }
        let held = Held {
            held: Arc::clone(&self.held),
            name: name.to_owned(),
        };
        Ok(Some(Lease::until_dropped(name, held)))
    }
}
