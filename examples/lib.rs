//! Example programs for the cqrs crates. Each file says how to run it on its first line:
//!
//! - `tickets.rs`: an aggregate, a projection, a process manager with its outbox and the
//!   local-first bus, wired over the in-memory backends (`cargo run --example tickets`).
