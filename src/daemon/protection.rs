//! ECS task scale-in protection while messages are held
//! (`ecs_task_protection`). A task checks every [`TICK`] whether the daemon
//! holds messages (or received any since the last check): when work starts
//! after idleness it asks the agent for protection, renews it at half its
//! length while work goes on, and turns it off after [`IDLE_OFF`] with
//! nothing held, and once more at shutdown after the drain. The agent's
//! answer never holds up delivery: this task runs beside the pipeline, a
//! failed PUT is counted in `sqsd_ecs_protection_failures_total` and tried
//! again [`RETRY`] later.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::settle::Settler;
use crate::admin::metrics::Metrics;
use crate::aws::ecs_agent::{AgentError, EcsAgent, Protection};

/// How often the work in hand is checked.
pub const TICK: Duration = Duration::from_millis(250);
/// Nothing held this long: protection is turned off.
pub const IDLE_OFF: Duration = Duration::from_secs(30);
/// A PUT the agent did not take is tried again this much later.
pub const RETRY: Duration = Duration::from_secs(1);

/// Where protection is asked for; the ECS agent, or a recording fake in tests.
pub trait Agent: Send + Sync + 'static {
    fn put(&self, protection: Protection) -> impl Future<Output = Result<(), AgentError>> + Send;
}

impl Agent for EcsAgent {
    fn put(&self, protection: Protection) -> impl Future<Output = Result<(), AgentError>> + Send {
        EcsAgent::put(self, protection)
    }
}

/// The work in hand at one check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Activity {
    /// Messages held now.
    pub held: usize,
    /// Messages received since start: a change between two checks is work
    /// even if it was settled in between.
    pub received: u64,
}

/// What the agent was told and when to tell it again.
#[derive(Debug)]
struct Keeper {
    minutes: u32,
    /// A PUT On was sent and no PUT Off accepted since: the task may be
    /// protected (an On that timed out may still have been applied).
    maybe_on: bool,
    /// When the protection the agent accepted is renewed.
    renew_at: Option<Instant>,
    /// The last check that saw work.
    last_busy: Option<Instant>,
    last_received: u64,
    /// No PUT before this, after one that failed.
    retry_at: Option<Instant>,
}

impl Keeper {
    fn new(minutes: u32) -> Keeper {
        Keeper {
            minutes: minutes.max(1),
            maybe_on: false,
            renew_at: None,
            last_busy: None,
            last_received: 0,
            retry_at: None,
        }
    }

    /// Half the protection's length: renewal comes long before expiry even
    /// when the agent is slow or a renewal has to be tried again.
    fn renew_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.minutes) * 30)
    }

    /// What to ask of the agent at `now`, given the work in hand.
    fn next(&mut self, activity: Activity, now: Instant) -> Option<Protection> {
        if activity.held > 0 || activity.received != self.last_received {
            self.last_busy = Some(now);
        }
        self.last_received = activity.received;
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        let wanted = self
            .last_busy
            .is_some_and(|t| now.duration_since(t) < IDLE_OFF);
        if wanted {
            let due = self.renew_at.map_or(true, |t| now >= t);
            due.then_some(Protection::On {
                minutes: self.minutes,
            })
        } else if self.maybe_on {
            Some(Protection::Off)
        } else {
            None
        }
    }

    /// Records the agent's answer to `asked`, sent at `sent`.
    fn answered(&mut self, asked: Protection, ok: bool, sent: Instant, now: Instant) {
        match (asked, ok) {
            (Protection::On { .. }, true) => {
                self.maybe_on = true;
                self.renew_at = Some(sent + self.renew_after());
                self.retry_at = None;
            }
            (Protection::Off, true) => {
                self.maybe_on = false;
                self.renew_at = None;
                self.retry_at = None;
            }
            (Protection::On { .. }, false) => {
                self.maybe_on = true;
                self.retry_at = Some(now + RETRY);
            }
            // The Off may have taken effect although its answer failed: the
            // next work asks for protection again rather than trust it.
            (Protection::Off, false) => {
                self.renew_at = None;
                self.retry_at = Some(now + RETRY);
            }
        }
    }
}

/// Starts keeping protection for this task when `ecs_task_protection` is
/// on and the agent's address is in `env`; with the option on and no
/// usable `ECS_AGENT_URI`, warns once and does nothing.
pub fn start(
    enabled: bool,
    minutes: u32,
    env: &dyn Fn(&str) -> Option<String>,
    settler: Settler,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    if !enabled {
        return None;
    }
    let agent = match EcsAgent::from_env(env) {
        Some(Ok(agent)) => agent,
        Some(Err(problem)) => {
            tracing::warn!(%problem, "ecs_task_protection is on but the ECS agent cannot be used; tasks are not protected from scale-in");
            return None;
        }
        None => {
            tracing::warn!("ecs_task_protection is on but ECS_AGENT_URI is not set (not running in ECS?); tasks are not protected from scale-in");
            return None;
        }
    };
    tracing::info!(agent = %agent.state_url(), minutes,
        "ECS task scale-in protection: on while messages are held, off after 30s idle");
    let seen = metrics.clone();
    let activity = move || Activity {
        held: settler.held(),
        received: seen.received.get(),
    };
    Some(tokio::spawn(keep(
        Arc::new(agent),
        minutes,
        activity,
        metrics,
        stop,
    )))
}

/// Keeps the protection in step with `activity` until `stop`; then, the
/// drain being over, turns it off if it may be on.
pub async fn keep<A: Agent>(
    agent: Arc<A>,
    minutes: u32,
    activity: impl Fn() -> Activity + Send + 'static,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut keeper = Keeper::new(minutes);
    let mut failing = false;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let Some(asked) = keeper.next(activity(), Instant::now()) else {
            continue;
        };
        let sent = Instant::now();
        if let Protection::On { .. } = asked {
            // Set before the answer: a PUT cut short may still take effect.
            keeper.maybe_on = true;
        }
        let answer = tokio::select! {
            answer = agent.put(asked) => answer,
            _ = stop.cancelled() => break,
        };
        let ok = answer.is_ok();
        record(
            &metrics,
            asked,
            answer,
            &mut failing,
            keeper.renew_at.is_some(),
        );
        keeper.answered(asked, ok, sent, Instant::now());
    }
    if keeper.maybe_on {
        match agent.put(Protection::Off).await {
            Ok(()) => {
                metrics.ecs_protected.set(0);
                tracing::info!("ECS task scale-in protection off (shutdown)");
            }
            Err(e) => {
                metrics.ecs_protection_failures.inc();
                tracing::warn!(error = %e, minutes = keeper.minutes,
                    "cannot turn ECS task scale-in protection off at shutdown; it expires by itself");
            }
        }
    }
}

/// Logs and counts one answer of the agent. `failing` is true during a run
/// of failures, so that the log says so once per run.
fn record(
    metrics: &Metrics,
    asked: Protection,
    answer: Result<(), AgentError>,
    failing: &mut bool,
    renewal: bool,
) {
    match answer {
        Ok(()) => {
            if *failing {
                tracing::info!("the ECS agent takes protection requests again");
            }
            *failing = false;
            match asked {
                Protection::On { minutes } if renewal => {
                    tracing::debug!(minutes, "ECS task scale-in protection renewed")
                }
                Protection::On { minutes } => {
                    tracing::info!(minutes, "ECS task scale-in protection on")
                }
                Protection::Off => tracing::info!("ECS task scale-in protection off"),
            }
            metrics
                .ecs_protected
                .set(i64::from(matches!(asked, Protection::On { .. })));
        }
        Err(e) => {
            metrics.ecs_protection_failures.inc();
            if !*failing {
                tracing::warn!(error = %e, asked = ?asked,
                    "ECS task scale-in protection not updated; delivery goes on, trying again");
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests;
