//! Liveness and readiness as the admin endpoints report them.
//!
//! Ready means: the application is available, SQS answered the latest
//! receive, and the daemon is not shutting down. A receive error flips it to
//! not ready until the next successful receive, so `/readyz` follows an SQS
//! outage both ways; the application being unavailable (unreachable, or
//! failing its health checks) does the same until it is back.

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
    /// Why the application is unavailable; `None` while it is available.
    app_down: Mutex<Option<String>>,
}

/// Why the daemon is not ready.
#[derive(Debug, PartialEq, Eq)]
pub enum NotReady {
    Starting,
    SqsUnavailable(String),
    /// The application is unreachable or unhealthy: receiving is paused.
    AppUnavailable(String),
    ShuttingDown,
}

impl NotReady {
    pub fn reason(&self) -> String {
        match self {
            NotReady::Starting => "SQS has not answered a receive yet".into(),
            NotReady::SqsUnavailable(e) => format!("SQS receive failing: {e}"),
            NotReady::AppUnavailable(why) => format!("application unavailable: {why}"),
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

    /// The application is unavailable for `why`; receiving is paused.
    pub fn app_unavailable(&self, why: &str) {
        if let Ok(mut down) = self.app_down.lock() {
            *down = Some(why.to_string());
        }
    }

    pub fn app_available(&self) {
        if let Ok(mut down) = self.app_down.lock() {
            *down = None;
        }
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
        if let Some(why) = self.app_down.lock().ok().and_then(|d| d.clone()) {
            return Err(NotReady::AppUnavailable(why));
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
        h.app_unavailable("cannot connect to 127.0.0.1:80");
        let why = h.readiness().unwrap_err();
        assert_eq!(
            why.reason(),
            "application unavailable: cannot connect to 127.0.0.1:80"
        );
        h.app_available();
        assert_eq!(h.readiness(), Ok(()));
        h.shutting_down();
        assert_eq!(h.readiness(), Err(NotReady::ShuttingDown));
        assert!(h.is_alive());
        h.died();
        assert!(!h.is_alive());
    }
}
