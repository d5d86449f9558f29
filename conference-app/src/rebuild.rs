//! `rebuild <read-model>`: a new generation of a read model built from the event log while the
//! one that serves keeps serving, then switched to, with no downtime:
//!
//! 1. the new generation's rows are written under their own names (`<model>@<n>`) by a
//!    projection of its own, from the start of the log;
//! 2. once it has caught up, one transaction makes it the generation that serves; every process
//!    switches its reads within a second, and its projection loop goes on from the new
//!    generation's checkpoint, so no event is skipped or applied twice;
//! 3. the old generation is deleted afterwards.

use std::time::Duration;

use cqrs_core::{CatchUp, Envelope, MessageFilter, MessageHandler, Result};

use crate::system::{Backend, System, checkpoint_name, projection_models};

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    /// The generation that served before.
    pub from: i64,
    /// The generation that serves now.
    pub to: i64,
    /// Events applied to build it.
    pub events: usize,
}

/// Counts the events a handler handled.
struct Counting<H, P> {
    inner: H,
    progress: P,
}

impl<H: MessageHandler, P: Fn() + Send + Sync> MessageHandler for Counting<H, P> {
    async fn handle(&self, envelope: &Envelope) -> Result<()> {
        self.inner.handle(envelope).await?;
        (self.progress)();
        Ok(())
    }
}

/// Builds a new generation of projection `name` and switches to it; `progress` is called after
/// each event applied. The old generation stays until [`drop_old`].
///
/// # Errors
/// An unknown name; store failures.
pub async fn rebuild<S: Backend>(
    system: &System<S>,
    name: &str,
    progress: impl Fn() + Send + Sync,
) -> Result<Rebuilt> {
    let models = projection_models(name)?;
    let documents = &system.documents;
    documents.refresh_generations().await?;
    let from = documents.generation(models[0]);
    let to = from + 1;
    // Leftovers of an interrupted rebuild of the same generation.
    for model in models {
        documents.drop_generation(model, to).await?;
    }
    documents.drop_checkpoint(&checkpoint_name(name, to)).await?;

    let pinned = documents.pinned(models.iter().map(|m| ((*m).to_owned(), to)));
    let unit = pinned.unit_of_work();
    let dispatcher = system.projection(name, unit.documents())?;
    let filter = MessageFilter::names(dispatcher.names());
    let handler = unit.wrap(Counting {
        inner: dispatcher,
        progress,
    });
    let checkpoint = checkpoint_name(name, to);
    let catch_up =
        CatchUp::new(checkpoint.clone(), system.store.clone(), unit.clone(), handler).filter(filter);
    let mut events = catch_up.catch_up().await?;
    // Close the gap with the live stream just before switching.
    events += catch_up.catch_up().await?;
    unit.store_skipped(&checkpoint, Duration::ZERO).await?;
    documents.switch_generation(models, to).await?;
    Ok(Rebuilt { from, to, events })
}

/// Deletes the generation a rebuild replaced, and its checkpoint; returns the rows deleted.
/// Wait until every process has switched (a couple of seconds) before calling it.
///
/// # Errors
/// An unknown name; store failures.
pub async fn drop_old<S: Backend>(system: &System<S>, name: &str, rebuilt: &Rebuilt) -> Result<u64> {
    let mut rows = 0;
    for model in projection_models(name)? {
        rows += system.documents.drop_generation(model, rebuilt.from).await?;
    }
    system
        .documents
        .drop_checkpoint(&checkpoint_name(name, rebuilt.from))
        .await?;
    Ok(rows)
}
