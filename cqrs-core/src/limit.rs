//! An adaptive concurrency limit.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::clock::SharedClock;

/// Settings of an [`AdaptiveLimit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitConfig {
    /// The limit never goes below this (and starts here). At least 1.
    pub min: usize,
    /// The limit never goes above this.
    pub max: usize,
    /// Added to the limit on each success.
    pub increase: f64,
    /// The limit is multiplied by this on a failure (shrinks more).
    pub failure_factor: f64,
    /// The limit is multiplied by this on a transient-error or conflict signal (shrinks less).
    pub transient_factor: f64,
    /// The limit grows back by this much per second of time, even without successes.
    pub restore_per_second: f64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            min: 1,
            max: 64,
            increase: 1.0,
            failure_factor: 0.5,
            transient_factor: 0.8,
            restore_per_second: 0.5,
        }
    }
}

impl LimitConfig {
    /// A fixed limit: `min == max == n`.
    pub fn fixed(n: usize) -> Self {
        Self {
            min: n,
            max: n,
            ..Self::default()
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    updated_at: DateTime<Utc>,
}

struct Inner {
    config: LimitConfig,
    clock: SharedClock,
    state: Mutex<State>,
    changed: Notify,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.clock.now();
        let elapsed = (now - state.updated_at).as_seconds_f64().max(0.0);
        state.limit = (state.limit + elapsed * self.config.restore_per_second).min(self.config.max as f64);
        state.updated_at = now;
        state
    }

    fn adjust(&self, f: impl FnOnce(f64) -> f64) {
        let grew = {
            let mut state = self.state();
            let before = state.limit;
            state.limit = f(state.limit).clamp(self.config.min as f64, self.config.max as f64);
            state.limit > before
        };
        if grew {
            self.changed.notify_waiters();
        }
    }
}

/// A concurrency limit that adapts: it starts at `min`, grows with each success, shrinks on
/// failure (by more) and on transient-error signals (by less), grows back slowly with time, and
/// always stays within `[min, max]`. Clones share one limit.
#[derive(Clone)]
pub struct AdaptiveLimit {
    inner: Arc<Inner>,
}

impl AdaptiveLimit {
    /// A limit at `config.min`.
    pub fn new(config: LimitConfig, clock: SharedClock) -> Self {
        let config = LimitConfig {
            min: config.min.max(1),
            max: config.max.max(config.min.max(1)),
            ..config
        };
        let updated_at = clock.now();
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    limit: config.min as f64,
                    in_flight: 0,
                    updated_at,
                }),
                config,
                clock,
                changed: Notify::new(),
            }),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.inner.state().limit as usize
    }

    /// How many permits are held.
    pub fn in_flight(&self) -> usize {
        self.inner.state().in_flight
    }

    /// How many more permits can be taken now.
    pub fn available(&self) -> usize {
        let state = self.inner.state();
        (state.limit as usize).saturating_sub(state.in_flight)
    }

    /// A permit if one is available now.
    pub fn try_acquire(&self) -> Option<Permit> {
        let mut state = self.inner.state();
        if state.in_flight < state.limit as usize {
            state.in_flight += 1;
            Some(Permit {
                inner: Arc::clone(&self.inner),
            })
        } else {
            None
        }
    }

    /// Waits for a permit.
    pub async fn acquire(&self) -> Permit {
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            changed.await;
        }
    }

    /// Records a success: the limit grows.
    pub fn success(&self) {
        let step = self.inner.config.increase;
        self.inner.adjust(|l| l + step);
    }

    /// Records a failure: the limit shrinks by `failure_factor`.
    pub fn failure(&self) {
        let factor = self.inner.config.failure_factor;
        self.inner.adjust(|l| l * factor);
    }

    /// Records a transient-error or conflict signal: the limit shrinks by `transient_factor`.
    pub fn transient(&self) {
        let factor = self.inner.config.transient_factor;
        self.inner.adjust(|l| l * factor);
    }

    /// Records the outcome of one unit of work.
    pub fn record<T>(&self, outcome: &crate::Result<T>) {
        match outcome {
            Ok(_) => self.success(),
            Err(e) if e.is_retryable() => self.transient(),
            Err(_) => self.failure(),
        }
    }
}

impl fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state();
        f.debug_struct("AdaptiveLimit")
            .field("limit", &state.limit)
            .field("in_flight", &state.in_flight)
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A held unit of concurrency; released when dropped.
pub struct Permit {
    inner: Arc<Inner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.state().in_flight -= 1;
        self.inner.changed.notify_waiters();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn limit(clock: &ManualClock) -> AdaptiveLimit {
        AdaptiveLimit::new(
            LimitConfig {
                min: 2,
                max: 10,
                increase: 1.0,
                failure_factor: 0.5,
                transient_factor: 0.8,
                restore_per_second: 0.5,
            },
            clock.shared(),
        )
    }

    #[test]
    fn grows_shrinks_and_restores_within_bounds() {
        let clock = ManualClock::starting_now();
        let l = limit(&clock);
        assert_eq!(l.limit(), 2, "starts at the minimum");
        for _ in 0..20 {
            l.success();
        }
        assert_eq!(l.limit(), 10, "never above the maximum");
        l.transient();
        assert_eq!(l.limit(), 8, "a transient signal shrinks a little");
        l.failure();
        assert_eq!(l.limit(), 4, "a failure shrinks more");
        for _ in 0..10 {
            l.failure();
        }
        assert_eq!(l.limit(), 2, "never below the minimum");
        clock.advance(Duration::from_secs(4));
        assert_eq!(l.limit(), 4, "restores with time");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(l.limit(), 10);
    }

    #[tokio::test]
    async fn permits_are_bounded_by_the_limit() {
        let clock = ManualClock::starting_now();
        let l = limit(&clock);
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        assert_eq!(l.in_flight(), 2);
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.acquire().await }
        });
        tokio::task::yield_now().await;
        drop(a);
        let _c = waiter.await.unwrap();
        assert_eq!(l.in_flight(), 2);
    }
}
