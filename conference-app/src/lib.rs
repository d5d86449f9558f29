//! # conference-app
//!
//! The conference-registration system of `shared/DOMAIN.md`, running for real on the framework
//! and the domain: an embedded SQLite file by default, PostgreSQL to scale out. The binary
//! (`cargo run --release -p conference-app`) wires what this library holds, and tests drive the
//! same code:
//!
//! - [`system`]: the whole system over one backend — the local-first command bus, the command
//!   queue, the event subscriptions, the publisher, the relay and the read-model projections;
//! - [`api`]: the JSON API, an axum router built from a [`System`](system::System), with
//!   the [`web`] site's pages on the same router;
//! - [`documents`]: the read models' storage, with a unit of work that commits a projection's
//!   rows together with its checkpoint;
//! - [`read_models`]: the domain's read-model store traits on those documents;
//! - [`rebuild`]: a read model rebuilt from the event log while the old one keeps serving;
//! - [`audit`]: the invariants, checked from the event log;
//! - [`demo`]: the demo conference created on first start;
//! - [`load`]: the load tool that drives a running instance over HTTP.
//!
//! ## Example
//!
//! The read models' documents, on a SQLite file; every commit wakes the API's long polls:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use conference_app::documents::{Documents, Index, Row};
//!
//! let dir = tempfile::tempdir()?;
//! let documents = Documents::open_sqlite(&dir.path().join("read_models.db")).await?;
//! let mut commits = documents.commits();
//! documents.put("greeting", "en", Row::new(&"hello", Some("europe".into()), None)?).await?;
//! assert!(commits.has_changed()?);
//! assert_eq!(documents.get::<String>("greeting", "en").await?.as_deref(), Some("hello"));
//! let european: Vec<String> = documents.find("greeting", Index::One, "europe").await?;
//! assert_eq!(european, ["hello"]);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub mod api;
pub mod audit;
pub mod demo;
pub mod documents;
pub mod load;
pub mod read_models;
pub mod rebuild;
pub mod system;
pub mod web;
