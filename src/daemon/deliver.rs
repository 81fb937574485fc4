//! Delivering held messages: the POST to the application, what its outcome
//! means, and handing the settlement to the [`Settler`].
//!
//! Each message is held by the settler from the moment it was received, so
//! its visibility is kept (renewed before the lease runs out) however long
//! its POST runs or its FIFO group keeps it waiting; delivery only decides
//! how it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::message::{Incoming, Template};
use super::policy::{self, Outcome, Settlement};
use super::room::Place;
use super::settle::{Action, Settler};
use crate::admin::metrics::Metrics;
use crate::app::{Application, Failure};
use crate::config::SuccessCodes;
use crate::time::Clock;

/// Delivers messages and settles them.
pub struct Dispatcher {
    pub http: Arc<dyn Application>,
    pub template: Template,
    pub success_codes: SuccessCodes,
    pub error_visibility_s: u32,
    pub retention: Duration,
    pub settler: Settler,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// One per POST in flight: `http_connections` of them.
    pub connections: Arc<Semaphore>,
}

/// A received message and its place in the room.
pub struct Held {
    pub msg: Incoming,
    pub place: Place,
}

impl Dispatcher {
    /// Delivers `list` in order (one message, or the messages of one FIFO
    /// group from one receive). After a failure, the rest of a group is
    /// given back undelivered, so SQS hands the group out again in order.
    /// When `stop` fires, messages not yet started are given back; when
    /// `abort` fires, a POST under way is abandoned and its message given
    /// back.
    pub async fn deliver_in_order(
        &self,
        list: Vec<Held>,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) {
        let mut failed = false;
        for Held { msg, place } in list {
            if failed {
                self.give_back(&msg, "an earlier message of its group failed");
                drop(place);
                continue;
            }
            let connection = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                c = self.connections.clone().acquire_owned() => c.ok(),
            };
            let Some(connection) = connection else {
                self.give_back(&msg, "shutting down before it started");
                failed = true;
                continue;
            };
            failed = !self.handle(msg, abort).await;
            drop(connection);
            drop(place);
        }
    }

    /// Delivers one message and settles it; true when it is deleted. When
    /// `abort` fires first, the POST is abandoned and the message made
    /// visible again at once.
    pub async fn handle(&self, msg: Incoming, abort: &CancellationToken) -> bool {
        let held_for = msg.received.map(|t| t.elapsed()).unwrap_or_default();
        if policy::is_expired(
            msg.first_received_at_ms,
            msg.sqs_received_ms,
            held_for,
            self.retention,
        ) {
            self.metrics.expired.inc();
            tracing::info!(message_id = %msg.id, "message outlived the retention period; deleting it unsent");
            self.settler.settle(msg.key, Action::Delete);
            return true;
        }
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let outcome = tokio::select! {
            outcome = self.post(&msg) => outcome,
            _ = abort.cancelled() => {
                self.metrics.in_flight.dec();
                self.metrics.released.inc();
                tracing::warn!(message_id = %msg.id, "drain timeout: POST abandoned, message released");
                self.settler.settle(msg.key, Action::ChangeVisibility(0));
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
                self.settler.settle(msg.key, Action::Delete);
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
                self.settler
                    .settle(msg.key, Action::ChangeVisibility(after_s));
                false
            }
        }
    }

    /// Gives a message back to the queue undelivered (visible at once).
    pub fn give_back(&self, msg: &Incoming, why: &str) {
        self.metrics.released.inc();
        tracing::info!(message_id = %msg.id, why, "message given back to the queue");
        self.settler.settle(msg.key, Action::ChangeVisibility(0));
    }

    async fn post(&self, msg: &Incoming) -> Outcome {
        let now_s = self.clock.now_ms().div_euclid(1000);
        let post = match self.template.request(msg, now_s) {
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
            tracing::warn!(message_id = %msg.id, attribute = ?name, reason = why.as_str(),
                "attribute is not a valid header; not sent");
        }
        if let Some(why) = &post.malformed_envelope {
            // Once per message, not once per delivery attempt: a later
            // receive of the same message says it only at debug level.
            if msg.receive_count.unwrap_or(1) <= 1 {
                tracing::warn!(message_id = %msg.id, reason = %why,
                    "body claims to be an SNS notification but is not a usable one; sent as it is");
            } else {
                tracing::debug!(message_id = %msg.id, reason = %why,
                    "body claims to be an SNS notification but is not a usable one; sent as it is");
            }
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

#[cfg(test)]
mod tests;
