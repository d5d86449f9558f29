//! Exponential backoff with jitter.

use std::time::Duration;

/// Exponential backoff: `initial × multiplier^(attempt−1)`, capped at `max`, each delay cut by a
/// random fraction of up to `jitter` so that many retriers do not wake together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth factor per attempt (≥ 1).
    pub multiplier: f64,
    /// Fraction in `[0, 1]` of each delay that is randomised away.
    pub jitter: f64,
    /// How many retries a retrying decorator makes before giving up.
    pub max_retries: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
            max_retries: 5,
        }
    }
}

impl Backoff {
    /// A backoff with no delay at all, for tests.
    pub fn none() -> Self {
        Self {
            initial: Duration::ZERO,
            max: Duration::ZERO,
            multiplier: 1.0,
            jitter: 0.0,
            max_retries: 5,
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.multiplier.max(1.0).powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped * (1.0 - jitter * fastrand::f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_capped_with_bounded_jitter() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
            max_retries: 3,
        };
        for _ in 0..100 {
            let d3 = b.delay(3);
            assert!(
                d3 <= Duration::from_millis(400) && d3 >= Duration::from_millis(200),
                "{d3:?}"
            );
            let d10 = b.delay(10);
            assert!(
                d10 <= Duration::from_secs(1) && d10 >= Duration::from_millis(500),
                "{d10:?}"
            );
        }
        assert_eq!(Backoff::none().delay(4), Duration::ZERO);
    }
}
