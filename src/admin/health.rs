//! Liveness and readiness as the admin endpoints report them.
//!
//! Ready means: SQS answered the latest receive, and the daemon is not
//! shutting down. A receive error flips it to not ready until the next
//! successful receive, so `/readyz` follows an SQS outage both ways.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Health {
    dead: AtomicBool,
    shutting_down: AtomicBool,
    /// Successful receives so far.
    successes: AtomicU64,
    failing: AtomicBool,
    last_error: Mutex<String>,
}

/// Why the daemon is not ready.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    SqsUnavailable(String),
    ShuttingDown,
}

impl NotReady {
    pub fn reason(&self) -> String {
        match self {
            NotReady::Starting => "SQS has not answered a receive yet".into(),
            NotReady::SqsUnavailable(e) => format!("SQS receive failing: {e}"),
            NotReady::ShuttingDown => "shutting down".into(),
        }
    }
}

impl Health {
    pub fn receive_ok(&self) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.failing.store(false, Ordering::Relaxed);
    }

    pub fn receive_failed(&self, error: &str) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = error.to_string();
        }
        self.failing.store(true, Ordering::Relaxed);
    }

    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// A core loop ended unexpectedly; `/healthz` fails from now on.
    pub fn died(&self) {
        self.dead.store(true, Ordering::Relaxed);
    }

    pub fn is_alive(&self) -> bool {
        !self.dead.load(Ordering::Relaxed)
    }

    pub fn readiness(&self) -> Result<(), NotReady> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        if self.failing.load(Ordering::Relaxed) {
            let e = self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            return Err(NotReady::SqsUnavailable(e));
        }
        if self.successes.load(Ordering::Relaxed) == 0 {
            return Err(NotReady::Starting);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_receives_and_shutdown() {
        let h = Health::default();
        assert_eq!(h.readiness(), Err(NotReady::Starting));
        h.receive_ok();
        assert_eq!(h.readiness(), Ok(()));
        h.receive_failed("connection refused");
        assert_eq!(
            h.readiness(),
            Err(NotReady::SqsUnavailable("connection refused".into()))
        );
        h.receive_ok();
        assert_eq!(h.readiness(), Ok(()));
        h.shutting_down();
        assert_eq!(h.readiness(), Err(NotReady::ShuttingDown));
        assert!(h.is_alive());
        h.died();
        assert!(!h.is_alive());
    }
}
