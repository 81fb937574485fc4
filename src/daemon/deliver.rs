//! Delivering one message: the POST to the application, what its outcome
//! means, and handing the settlement to the [`Settler`].
//!
//! While a POST runs longer than most of the visibility timeout, the
//! message's visibility is extended, so slow work is not handed to a second
//! worker behind its back (beyond EB, which lets it reappear).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::{Incoming, Template};
use super::policy::{self, Outcome, Settlement};
use super::settle::{Action, Settler};
use crate::admin::metrics::Metrics;
use crate::app::{AppClient, Failure};
use crate::config::SuccessCodes;
use crate::time::Clock;

/// Delivers messages and settles them.
pub struct Dispatcher {
    pub http: AppClient,
    pub template: Template,
    pub success_codes: SuccessCodes,
    pub error_visibility_s: u32,
    pub visibility_s: u32,
    pub retention: Duration,
    pub settler: Settler,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
}

impl Dispatcher {
    /// Delivers one message and settles it; true when it is deleted. When
    /// `abort` fires first, the POST is abandoned and the message made
    /// visible again at once.
    pub async fn handle(&self, msg: Incoming, abort: &CancellationToken) -> bool {
        if policy::is_expired(
            msg.first_received_at_ms,
            self.clock.now_ms(),
            self.retention,
        ) {
            self.metrics.expired.inc();
            tracing::info!(message_id = %msg.id, "message outlived the retention period; deleting it unsent");
            self.settler
                .settle(&msg.id, &msg.receipt_handle, Action::Delete);
            return true;
        }
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let outcome = tokio::select! {
            outcome = self.post_keeping_invisible(&msg) => outcome,
            _ = abort.cancelled() => {
                self.metrics.in_flight.dec();
                self.metrics.released.inc();
                tracing::warn!(message_id = %msg.id, "drain timeout: POST abandoned, message released");
                self.settler.settle(&msg.id, &msg.receipt_handle, Action::ChangeVisibility(0));
                return false;
            }
        };
        self.metrics.in_flight.dec();
        let elapsed = started.elapsed();
        if !matches!(outcome, Outcome::Refused(_)) {
            self.metrics.post_duration.observe(elapsed.as_secs_f64());
        }
        let label = outcome.label(self.success_codes);
        self.metrics.delivered.with_label_values(&[label]).inc();

        match policy::settle(&outcome, self.success_codes, self.error_visibility_s) {
            Settlement::Delete => {
                self.settler
                    .settle(&msg.id, &msg.receipt_handle, Action::Delete);
                true
            }
            Settlement::Retry(after_s) => {
                let (status, error) = match &outcome {
                    Outcome::Status { status, .. } => (Some(*status), None),
                    Outcome::ConnectFailed(e) | Outcome::Failed(e) | Outcome::Refused(e) => {
                        (None, Some(e.as_str()))
                    }
                    Outcome::TimedOut => {
                        (None, Some("no complete response within inactivity_timeout"))
                    }
                };
                tracing::warn!(
                    message_id = %msg.id,
                    receive_count = msg.receive_count.unwrap_or(0),
                    status,
                    error,
                    outcome = label,
                    duration_ms = elapsed.as_millis() as u64,
                    retry_in_s = after_s,
                    "delivery failed; message will be visible again"
                );
                self.settler.settle(
                    &msg.id,
                    &msg.receipt_handle,
                    Action::ChangeVisibility(after_s),
                );
                false
            }
        }
    }

    /// Gives a message back to the queue undelivered (visible at once).
    pub fn give_back(&self, msg: &Incoming, why: &str) {
        self.metrics.released.inc();
        tracing::info!(message_id = %msg.id, why, "message given back to the queue");
        self.settler
            .settle(&msg.id, &msg.receipt_handle, Action::ChangeVisibility(0));
    }

    /// The POST, extending visibility while it runs past 3/4 of the timeout.
    async fn post_keeping_invisible(&self, msg: &Incoming) -> Outcome {
        let post = self.post(msg);
        if self.visibility_s == 0 {
            return post.await;
        }
        tokio::pin!(post);
        let period = Duration::from_secs(u64::from(self.visibility_s)).mul_f64(0.75);
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tokio::select! {
                outcome = &mut post => return outcome,
                _ = ticks.tick() => {
                    self.metrics.visibility_extended.inc();
                    tracing::debug!(message_id = %msg.id, "POST still running; extending visibility");
                    self.settler.settle(&msg.id, &msg.receipt_handle,
                        Action::ChangeVisibility(self.visibility_s));
                }
            }
        }
    }

    async fn post(&self, msg: &Incoming) -> Outcome {
        let post = match self.template.request(msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(message_id = %msg.id, error = %e, "refusing the message's beanstalk.sqsd.path");
                return Outcome::Refused(format!("path refused: {e}"));
            }
        };
        for (name, why) in &post.dropped {
            self.metrics
                .attributes_dropped
                .with_label_values(&[why.as_str()])
                .inc();
            tracing::warn!(message_id = %msg.id, attribute = %name, reason = why.as_str(),
                "attribute is not a valid header; not sent");
        }
        match self.http.post(post.request).await {
            Ok(answer) => Outcome::Status {
                status: answer.status,
                retry_after_s: (answer.status == 429)
                    .then_some(answer.retry_after)
                    .flatten()
                    .and_then(|v| policy::parse_retry_after(&v, self.clock.now_ms())),
            },
            Err(Failure::Connect(e)) => Outcome::ConnectFailed(e),
            Err(Failure::TimedOut) => Outcome::TimedOut,
            Err(Failure::Other(e)) => Outcome::Failed(e),
        }
    }
}
