//! Whether the application can take deliveries, and the watcher that
//! decides it.
//!
//! The [`Gate`] is open while the application is available. It closes when
//! a POST cannot connect, or when `health_url` failed [`HEALTH_FAILURES`]
//! checks in a row; it starts closed, until the application is first
//! reached. While it is closed, pollers receive nothing and deliveries that
//! have not started give their messages back, so an outage of the
//! application costs each message at most one receive. The [`watch`]er
//! probes the application every [`PROBE_INTERVAL`] while the gate is closed
//! and opens it at the first success. One log line marks each transition;
//! `/readyz` and `sqsd_app_available` follow the gate.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::health::Health;
use crate::admin::metrics::Metrics;
use crate::app::probe::Probe;

/// How often a closed gate probes the application.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Failed health checks in a row that close the gate.
pub const HEALTH_FAILURES: u32 = 3;
/// A POST that cannot connect within this long after the gate reopened
/// settles as an ordinary failure instead of waiting for the next reopening.
pub const FLAP_WINDOW: Duration = Duration::from_secs(10);
/// How often the daemon says it is still waiting for the application.
pub const WAITING_REMINDER: Duration = Duration::from_secs(30);

/// The application's availability; see the module documentation.
pub struct Gate {
    /// `None` while open; why it is closed otherwise.
    state: watch::Sender<Option<String>>,
    /// Receives under way.
    receiving: watch::Sender<usize>,
    /// When the gate last opened again after an outage (not at startup).
    reopened_at: std::sync::Mutex<Option<Instant>>,
    /// Whether it has been open before.
    was_open: std::sync::atomic::AtomicBool,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

impl Gate {
    /// A closed gate: the application has not been reached yet.
    pub fn new(health: Arc<Health>, metrics: Arc<Metrics>) -> Gate {
        let why = "not reached yet".to_string();
        health.app_unavailable(&why);
        metrics.app_available.set(0);
        Gate {
            state: watch::Sender::new(Some(why)),
            receiving: watch::Sender::new(0),
            reopened_at: std::sync::Mutex::new(None),
            was_open: std::sync::atomic::AtomicBool::new(false),
            health,
            metrics,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.borrow().is_none()
    }

    /// Waits until the gate is open.
    pub async fn opened(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`: no error while we wait.
        let _ = rx.wait_for(Option::is_none).await;
    }

    /// Waits until the gate is closed.
    pub async fn closed(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Counts a receive as under way until the guard is dropped. Taken
    /// before a poller looks at the gate, so that a receive that starts
    /// just as the gate closes is still waited for by [`Gate::receives_idle`].
    pub fn receiving(&self) -> Receiving<'_> {
        self.receiving.send_modify(|n| *n += 1);
        Receiving(self)
    }

    /// Waits until no receive is under way. While the gate is closed no
    /// receive starts, so this comes within one long poll. Messages given
    /// back after it cannot be caught again by a receive of this daemon.
    pub async fn receives_idle(&self) {
        let mut rx = self.receiving.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Closes the gate for `why`. Only the change is logged: many POSTs
    /// failing together close it once.
    pub fn close(&self, why: &str) {
        let changed = self.state.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(why.to_string());
            true
        });
        if changed {
            self.health.app_unavailable(why);
            self.metrics.app_available.set(0);
            tracing::warn!(why, "application unavailable; receiving paused, messages not yet started are given back");
        }
    }

    /// Opens the gate; true when it was closed. The [`watch`]er does this
    /// when a probe succeeds.
    pub fn open(&self) -> bool {
        let changed = self.state.send_if_modified(|state| state.take().is_some());
        if changed {
            self.health.app_available();
            self.metrics.app_available.set(1);
            if self
                .was_open
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                if let Ok(mut at) = self.reopened_at.lock() {
                    *at = Some(Instant::now());
                }
            }
        }
        changed
    }

    /// Whether the gate opened again after an outage less than `within`
    /// ago: a POST that cannot connect so soon after means the probe and
    /// the POSTs disagree, and the message should not wait for yet another
    /// reopening.
    pub fn reopened_within(&self, within: Duration) -> bool {
        self.reopened_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| at.elapsed() < within)
    }
}

/// A receive under way; see [`Gate::receiving`].
pub struct Receiving<'a>(&'a Gate);

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        self.0.receiving.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A probe of the application; the real one is [`Probe`].
pub trait Check: Send + Sync + 'static {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// What is probed, for logs.
    fn target(&self) -> String;
}

impl Check for Probe {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(Probe::check(self))
    }
    fn target(&self) -> String {
        Probe::target(self)
    }
}

/// Keeps the gate: probes every [`PROBE_INTERVAL`] while it is closed and
/// opens it at the first success; while it is open, checks the application
/// every `health_interval` when given (a `health_url` is set) and closes it
/// after [`HEALTH_FAILURES`] failures in a row. Ends when `stop` fires.
pub async fn watch(
    gate: Arc<Gate>,
    check: Arc<dyn Check>,
    health_interval: Option<Duration>,
    stop: CancellationToken,
) {
    let target = check.target();
    let mut first = true;
    loop {
        // Closed: wait for the application. After an outage began, the
        // first probe waits an interval too, so that an application whose
        // port accepts while its POSTs cannot connect is not flapped open
        // and shut many times a second.
        let since = Instant::now();
        let mut reminded: Option<Instant> = None;
        if !first {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        loop {
            let probed = tokio::select! {
                _ = stop.cancelled() => return,
                r = check.check() => r,
            };
            match probed {
                Ok(()) => break,
                Err(e) => {
                    if !reminded.is_some_and(|at| at.elapsed() < WAITING_REMINDER) {
                        tracing::warn!(error = %e, waiting_s = since.elapsed().as_secs(),
                            "waiting for the application at {target}");
                        reminded = Some(Instant::now());
                    } else {
                        tracing::debug!(error = %e, "application probe failed");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
        if gate.open() {
            if first {
                tracing::info!(
                    waited_ms = since.elapsed().as_millis() as u64,
                    "application reachable at {target}; receiving"
                );
            } else {
                tracing::info!(
                    down_for_s = since.elapsed().as_secs(),
                    "application available again at {target}; receiving resumed"
                );
            }
        }
        first = false;

        // Open: watch its health until something closes the gate.
        let mut failures = 0;
        loop {
            let tick = async {
                match health_interval {
                    Some(every) => tokio::time::sleep(every).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = gate.closed() => break,
                _ = tick => {}
            }
            let probed = tokio::select! {
                _ = stop.cancelled() => return,
                r = check.check() => r,
            };
            match probed {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, of = HEALTH_FAILURES, "health check failed");
                    if failures >= HEALTH_FAILURES {
                        gate.close(&format!(
                            "{HEALTH_FAILURES} health checks failed in a row; last: {e}"
                        ));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A probe whose answer the test sets, counting the calls.
    #[derive(Default)]
    struct Scripted {
        up: AtomicBool,
        calls: AtomicUsize,
    }

    impl Check for Scripted {
        fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let up = self.up.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("connection refused".to_string())
                }
            })
        }
        fn target(&self) -> String {
            "127.0.0.1:9".into()
        }
    }

    fn gate() -> (Arc<Gate>, Arc<Health>, Arc<Metrics>) {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        (
            Arc::new(Gate::new(health.clone(), metrics.clone())),
            health,
            metrics,
        )
    }

    /// Lets paused time run until `cond` holds, at most `limit` of it.
    async fn until(limit: Duration, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + limit;
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "condition not met within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn starts_closed_and_opens_once_the_application_answers() {
        let (gate, health, metrics) = gate();
        let probe = Arc::new(Scripted::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(gate.clone(), probe.clone(), None, stop.clone()));
        assert!(!gate.is_open());
        assert_eq!(metrics.app_available.get(), 0);
        assert!(matches!(
            health.readiness(),
            Err(crate::admin::health::NotReady::AppUnavailable(_))
        ));
        // Down for 5 s: about one probe per second.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let calls = probe.calls.load(Ordering::SeqCst);
        assert!((5..=6).contains(&calls), "{calls} probes in 5 s");
        probe.up.store(true, Ordering::SeqCst);
        until(Duration::from_secs(2), || gate.is_open()).await;
        assert_eq!(metrics.app_available.get(), 1);
        // Without a health_url, an open gate probes no more.
        let calls = probe.calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(probe.calls.load(Ordering::SeqCst), calls);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connect_closes_it_until_a_probe_succeeds() {
        let (gate, health, metrics) = gate();
        let probe = Arc::new(Scripted::default());
        probe.up.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(gate.clone(), probe.clone(), None, stop.clone()));
        until(Duration::from_secs(2), || gate.is_open()).await;
        probe.up.store(false, Ordering::SeqCst);
        gate.close("cannot connect to 127.0.0.1:9: connection refused");
        gate.close("a second failure changes nothing");
        assert!(!gate.is_open());
        assert_eq!(metrics.app_available.get(), 0);
        let why = health.readiness().unwrap_err().reason();
        assert!(
            why.contains("application unavailable: cannot connect"),
            "{why}"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!gate.is_open());
        probe.up.store(true, Ordering::SeqCst);
        until(Duration::from_secs(2), || gate.is_open()).await;
        // Readiness no longer blames the application (SQS has not been
        // asked yet in this test).
        assert_eq!(
            health.readiness(),
            Err(crate::admin::health::NotReady::Starting)
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn three_failed_health_checks_in_a_row_close_it() {
        let (gate, _, _) = gate();
        let probe = Arc::new(Scripted::default());
        probe.up.store(true, Ordering::SeqCst);
        let stop = CancellationToken::new();
        let every = Duration::from_secs(5);
        let task = tokio::spawn(watch(
            gate.clone(),
            probe.clone(),
            Some(every),
            stop.clone(),
        ));
        until(Duration::from_secs(2), || gate.is_open()).await;
        // Two failures, then a success: still open.
        probe.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(every * 2 + Duration::from_millis(500)).await;
        assert!(gate.is_open());
        probe.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(every).await;
        assert!(gate.is_open());
        // Three in a row: closed within three intervals.
        probe.up.store(false, Ordering::SeqCst);
        let failing_since = Instant::now();
        until(every * 3 + Duration::from_secs(1), || !gate.is_open()).await;
        assert!(failing_since.elapsed() >= every * 2);
        // The first 2xx opens it again, without waiting an interval.
        probe.up.store(true, Ordering::SeqCst);
        until(PROBE_INTERVAL + Duration::from_millis(100), || {
            gate.is_open()
        })
        .await;
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn receives_idle_waits_for_every_receive_under_way() {
        let (gate, _, _) = gate();
        let idle = || async {
            tokio::time::timeout(Duration::from_millis(10), gate.receives_idle())
                .await
                .is_ok()
        };
        assert!(idle().await);
        let first = gate.receiving();
        let second = gate.receiving();
        assert!(!idle().await);
        drop(first);
        assert!(!idle().await);
        drop(second);
        assert!(idle().await);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_gate_ends_when_it_opens() {
        let (gate, _, _) = gate();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        assert!(gate.open());
        assert!(!gate.open());
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("the waiter saw the gate open")
            .unwrap();
    }
}
