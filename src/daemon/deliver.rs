//! Delivering held messages: the POST to the application, what its outcome
//! means, and handing the settlement to the [`Settler`].
//!
//! Each message is held by the settler from the moment it was received, so
//! its visibility is kept (renewed before the lease runs out) however long
//! its POST runs or its FIFO group keeps it waiting; delivery only decides
//! how it ends. A delivery starts no earlier than its turn under the rate
//! limit, and only while the application is available (the [`Gate`]): a
//! POST that cannot connect closes the gate, and messages that have not
//! started by then are given back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::gate::{Gate, FLAP_WINDOW};
use super::message::{Incoming, Template};
use super::policy::{self, Outcome, Retry, Settlement};
use super::room::Place;
use super::settle::{Action, Settler};
use crate::admin::metrics::Metrics;
use crate::app::{Application, Failure};
use crate::aws::dead_letter::{Copy, DeadLetterSink, NotSent};
use crate::config::SuccessCodes;
use crate::time::Clock;

/// Delivers messages and settles them.
pub struct Dispatcher {
    pub http: Arc<dyn Application>,
    pub template: Template,
    pub success_codes: SuccessCodes,
    /// How long a failed message waits before it is handed out again.
    pub retry: Retry,
    pub retention: Duration,
    pub settler: Settler,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// One per POST in flight: `http_connections` of them.
    pub connections: Arc<Semaphore>,
    /// Open while the application is available.
    pub gate: Arc<Gate>,
    /// Longest a message waits held for an unavailable application before
    /// it is given back: its visibility timeout.
    pub hold_limit: Duration,
    /// `dead_letter_codes` and their queue; `None` when the list is empty.
    pub dead_letters: Option<DeadLetters>,
}

/// The statuses that dead-letter a message, and where copies go.
pub struct DeadLetters {
    pub codes: Vec<u16>,
    pub queue: Arc<dyn DeadLetterSink>,
}

/// How one POST ended for its message.
enum Attempt {
    /// Settled; true when deleted.
    Settled(bool),
    /// It could not connect: the message, unsettled.
    Unreachable(Box<Incoming>),
}

/// A received message and its place in the room.
pub struct Held {
    pub msg: Incoming,
    pub place: Place,
    /// Its turn under the rate limit; `None` when there is none.
    pub start_at: Option<Instant>,
}

impl Dispatcher {
    /// Delivers `list` in order (one message, or the messages of one FIFO
    /// group from one receive). After a failure, the rest of a group is
    /// given back undelivered, so SQS hands the group out again in order.
    /// When `stop` fires, messages not yet started are given back; when
    /// `abort` fires, a POST under way is abandoned and its message given
    /// back. While the application is unavailable, see [`Self::wait_out`].
    pub async fn deliver_in_order(
        &self,
        list: Vec<Held>,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) {
        let mut failed = false;
        for Held {
            msg,
            place,
            start_at,
        } in list
        {
            if failed {
                self.give_back(&msg, "an earlier message of its group failed");
                drop(place);
                continue;
            }
            failed = !self.deliver_one(msg, start_at, stop, abort).await;
            drop(place);
        }
    }

    /// Delivers one message at its turn; true when it is deleted.
    async fn deliver_one(
        &self,
        mut msg: Incoming,
        start_at: Option<Instant>,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) -> bool {
        loop {
            let turn = async {
                if let Some(at) = start_at {
                    tokio::time::sleep_until(at).await;
                }
                self.connections.clone().acquire_owned().await.ok()
            };
            let connection = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                _ = self.gate.closed() => Some(None),
                c = turn => c.map(Some),
            };
            match connection {
                None => {
                    self.give_back(&msg, "shutting down before it started");
                    return false;
                }
                Some(Some(connection)) => {
                    let attempt = self.attempt(msg, abort).await;
                    drop(connection);
                    match attempt {
                        Attempt::Settled(deleted) => return deleted,
                        Attempt::Unreachable(m) => msg = *m,
                    }
                }
                Some(None) => {}
            }
            if !self.wait_out(&msg, stop).await {
                return false;
            }
        }
    }

    /// The application is unavailable and `msg` has not reached it. The
    /// message stays held until the application is back, then is delivered
    /// after all (true); or it is given back, visible at once (false), as
    /// soon as no receive of this daemon is under way: pollers start none
    /// while the application is unavailable, so the message cannot be
    /// received again by this daemon and burn a receive for nothing. It is
    /// also given back on shutdown, and once it has been held as long as
    /// its visibility timeout.
    async fn wait_out(&self, msg: &Incoming, stop: &CancellationToken) -> bool {
        let deadline = msg.received.unwrap_or_else(Instant::now) + self.hold_limit;
        let why = tokio::select! {
            biased;
            _ = stop.cancelled() => "shutting down before it started",
            _ = self.gate.opened() => return true,
            _ = self.gate.receives_idle() => "the application is unavailable",
            _ = tokio::time::sleep_until(deadline) => "the application is unavailable",
        };
        self.give_back(msg, why);
        false
    }

    /// One POST of `msg`, settled by its outcome; or, when it could not
    /// connect, the message back unsettled (the application never saw it)
    /// while it has been held for less than its visibility timeout.
    async fn attempt(&self, msg: Incoming, abort: &CancellationToken) -> Attempt {
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
            return Attempt::Settled(true);
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
                return Attempt::Settled(false);
            }
        };
        self.metrics.in_flight.dec();
        let elapsed = started.elapsed();
        if !matches!(outcome, Outcome::Refused(_)) {
            self.metrics.post_duration.observe(elapsed.as_secs_f64());
        }
        let label = outcome.label(self.success_codes);
        self.metrics.delivered.with_label_values(&[label]).inc();

        if let Outcome::ConnectFailed(e) = &outcome {
            // A POST that cannot connect right after the application came
            // back means the probe and the POSTs disagree (a TLS failure, a
            // port that accepts but a path that cannot): the message then
            // settles as an ordinary failure rather than wait again.
            let flapping = self.gate.reopened_within(FLAP_WINDOW);
            self.gate.close(e);
            if held_for + elapsed < self.hold_limit && !flapping {
                tracing::debug!(message_id = %msg.id, error = %e,
                    "POST could not connect; the message waits for the application");
                return Attempt::Unreachable(Box::new(msg));
            }
        }
        let receive_count = msg.receive_count.unwrap_or(1);
        let dead_letter_codes = self.dead_letters.as_ref().map_or(&[][..], |d| &d.codes[..]);
        match policy::settle_or_dead_letter(
            &outcome,
            self.success_codes,
            self.retry,
            receive_count,
            fastrand::f64(),
            dead_letter_codes,
        ) {
            Settlement::DeadLetter(status) => {
                Attempt::Settled(self.dead_letter(msg, status, abort).await)
            }
            Settlement::Delete => {
                self.settler.settle(msg.key, Action::Delete);
                Attempt::Settled(true)
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
                    receive_count,
                    status,
                    error,
                    outcome = label,
                    duration_ms = elapsed.as_millis() as u64,
                    retry_in_s = after_s,
                    "delivery failed; message will be visible again"
                );
                self.settler
                    .settle(msg.key, Action::ChangeVisibility(after_s));
                Attempt::Settled(false)
            }
        }
    }

    /// Copies a message the application says can never succeed to the
    /// dead-letter queue, then deletes it; true when deleted. A copy SQS
    /// did not take leaves the message to the ordinary retry path: it is
    /// never deleted without a copy. `abort` cuts a send short, as it does
    /// a POST, so the drain deadline holds.
    async fn dead_letter(&self, msg: Incoming, status: u16, abort: &CancellationToken) -> bool {
        let receive_count = msg.receive_count.unwrap_or(0);
        let sent = match &self.dead_letters {
            Some(d) => {
                let copy = Copy {
                    body: &msg.body,
                    attributes: &msg.message_attributes,
                    message_id: &msg.id,
                    group_id: msg.group_id.as_deref(),
                    receive_count,
                    status,
                    at_ms: self.clock.now_ms(),
                };
                tokio::select! {
                    sent = d.queue.send(copy) => sent,
                    _ = abort.cancelled() => Err(NotSent("drain timeout: send abandoned".into())),
                }
            }
            None => Err(NotSent("no dead-letter queue".into())),
        };
        match sent {
            Ok(()) => {
                self.metrics
                    .dead_lettered
                    .with_label_values(&[&status.to_string()])
                    .inc();
                tracing::warn!(message_id = %msg.id, status, receive_count,
                    "the application's answer is in dead_letter_codes: message copied to the dead-letter queue; deleting it");
                self.settler.settle(msg.key, Action::Delete);
                true
            }
            Err(e) => {
                self.metrics.dead_letter_failures.inc();
                let retry_in_s = self.retry.wait_s(receive_count.max(1), fastrand::f64());
                tracing::warn!(message_id = %msg.id, status, receive_count, error = %e,
                    retry_in_s,
                    "could not copy the message to the dead-letter queue; it stays in the queue and will be visible again");
                self.settler
                    .settle(msg.key, Action::ChangeVisibility(retry_in_s));
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
