//! Time, shared by every concern: the wall clock behind a [`Clock`] so tests
//! can fix it, and the capped, jittered [`Backoff`] that every retry of an
//! outside call (SQS, DynamoDB) waits by. Uses nothing else of the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in epoch milliseconds.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// Capped exponential backoff with full jitter; reset after a success.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            failures: 0,
        }
    }

    /// The next delay; `unit` is a random number in [0, 1).
    pub fn next_with(&mut self, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.failures.min(16));
        let ceiling = exp.min(self.cap);
        self.failures = self.failures.saturating_add(1);
        // Half fixed, half random: never a busy loop, never in lock-step.
        ceiling / 2 + ceiling.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    pub fn next_delay(&mut self) -> Duration {
        self.next_with(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let highs: Vec<Duration> = (0..10).map(|_| b.next_with(0.999_999)).collect();
        assert!(highs[0] <= Duration::from_millis(100));
        assert!(highs[1] > highs[0] && highs[2] > highs[1]);
        assert!(highs.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(highs[9] > Duration::from_millis(4900));
        b.reset();
        assert_eq!(b.next_with(0.0), Duration::from_millis(50));
        assert_eq!(b.next_with(0.0), Duration::from_millis(100));
    }
}
