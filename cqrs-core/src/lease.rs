//! Leases: one holder at a time, across processes, of a named role such as "the outbox
//! publisher" or "the projection of the order list".
//!
//! Every component of the framework is safe to run in several processes at once (outboxes are
//! sent at least once, inboxes and checkpoints make the repeats harmless), but not cheap: two
//! publishers send every event twice, two runners of one projection race for every page. A
//! worker that runs such a component under a lease runs it only while it holds the lease;
//! another worker takes over when the holder stops or dies.
//!
//! A lease is an efficiency guarantee, not a correctness one: a holder learns that it lost its
//! lease only after the fact (a dropped database connection), so two holders may overlap
//! briefly, and the components' own guarantees are what keep that harmless.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;

use crate::Result;

/// A backend that grants leases.
pub trait Leases: Send + Sync {
    /// Takes the lease `name` if no one holds it: `None` when another holder has it. The lease
    /// is held until the returned value is dropped, the process dies, or the backend loses it
    /// (see [`Lease::lost`]). A dropped lease is released promptly but not necessarily before
    /// the drop returns: a backend whose lease lives on a connection closes it in the
    /// background.
    fn try_acquire(&self, name: &str) -> impl Future<Output = Result<Option<Lease>>> + Send;
}

/// A held lease; dropping it releases it.
pub struct Lease {
    name: String,
    lost: watch::Receiver<bool>,
    _held: Box<dyn Any + Send + Sync>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// A lease on `name`, held while `held` lives (dropping it must release the lease). The
    /// backend sends `true` on the sender of `lost` (or drops the sender) when it loses the
    /// lease first.
    pub fn new(name: impl Into<String>, held: impl Any + Send + Sync, lost: watch::Receiver<bool>) -> Self {
        Self {
            name: name.into(),
            lost,
            _held: Box::new(held),
        }
    }

    /// A lease on `name` that the backend cannot lose: held until dropped, as when `held` is an
    /// open locked file or an entry in the process's own table.
    pub fn until_dropped(name: impl Into<String>, held: impl Any + Send + Sync) -> Self {
        let (never_lost, lost) = watch::channel(false);
        Self::new(name, (held, never_lost), lost)
    }

    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Resolves when the backend has lost the lease (its connection dropped); pending while it
    /// holds it. The future does not borrow the lease.
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            let _ = lost.wait_for(|lost| *lost).await;
        }
    }
}

/// Runs `role` in this process only while it holds the lease `name`, until `shutdown`.
///
/// Tries to take the lease every `retry`; once held, runs `role(stop)`, where `stop` resolves
/// when the lease is lost or `shutdown` resolves, and releases the lease when the role returns.
/// After a lost lease (or a role that returned on its own) it tries again. Acquisition failures
/// (the database is down) are logged and retried.
///
/// # Errors
/// The first error the role returns.
pub async fn run_under_lease<L, R, F>(
    leases: &L,
    name: &str,
    retry: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut role: R,
) -> Result<()>
where
    L: Leases,
    R: FnMut(futures::future::BoxFuture<'static, ()>) -> F + Send,
    F: Future<Output = Result<()>> + Send,
{
    let shutdown = shutdown.boxed().shared();
    loop {
        let lease = tokio::select! {
            acquired = leases.try_acquire(name) => acquired,
            () = shutdown.clone() => return Ok(()),
        };
        match lease {
            Ok(Some(lease)) => {
                tracing::info!(lease = name, "lease taken; running");
                let stop = {
                    let (lost, shutdown, name) = (lease.lost(), shutdown.clone(), name.to_owned());
                    async move {
                        tokio::select! {
                            () = lost => tracing::warn!(lease = name, "lease lost; stopping"),
                            () = shutdown => {}
                        }
                    }
                    .boxed()
                };
                role(stop).await?;
                drop(lease);
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(lease = name, %error, "could not try the lease; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            () = shutdown.clone() => return Ok(()),
        }
    }
}
