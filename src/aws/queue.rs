//! The worker queue: checking it at start (through the SDK, which also
//! tells the endpoint the direct client reuses), its redrive policy, and the
//! receive call of the hot path (made by [`super::sqs_json`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

use super::error::SqsError;
use super::sqs_json::{EndpointProbe, Received, SqsJson};
use crate::admin::metrics::Metrics;
use crate::time::Backoff;

/// Long-poll wait of every receive, as Elastic Beanstalk's daemon.
pub const WAIT_TIME_S: i32 = 20;
/// Most messages SQS returns from one receive.
pub const MAX_BATCH: usize = 10;
/// Signature refusals the startup check retries, each signed with the clock
/// the SDK learned from the refusal before, until it takes them as wrong
/// credentials.
const CLOCK_RETRIES: u32 = 2;

/// The queue's backlog, as SQS counts it (approximately).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

/// Reads the queue's backlog with one GetQueueAttributes call, given up
/// after `timeout`.
pub async fn backlog(
    client: &Client,
    url: &str,
    metrics: &Metrics,
    timeout: Duration,
) -> Result<Backlog, String> {
    let call = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send();
    let result = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => {
            metrics.sqs_request("GetQueueAttributes", false);
            return Err(format!("no answer within {timeout:?}"));
        }
    };
    metrics.sqs_request("GetQueueAttributes", result.is_ok());
    let attributes = result
        .map_err(|e| SqsError::from(e).to_string())?
        .attributes
        .unwrap_or_default();
    let count = |name: QueueAttributeName| -> Result<u64, String> {
        let text = attributes
            .get(&name)
            .ok_or_else(|| format!("SQS did not return {}", name.as_str()))?;
        text.parse::<u64>()
            .map_err(|_| format!("{} is not a count: {text:.40}", name.as_str()))
    };
    Ok(Backlog {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
    })
}

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {url} cannot be used: {reason}")]
    Unusable { url: String, reason: String },
}

/// Reads the queue's attributes through the SDK, retrying while SQS is
/// unreachable; fails at once when SQS answers that the queue cannot be
/// used. Also returns the endpoint the SDK sent the request to.
pub async fn check_queue(
    client: &Client,
    url: &str,
    metrics: &Metrics,
) -> Result<(HashMap<QueueAttributeName, String>, String), QueueError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let probe = EndpointProbe::default();
    let mut retried_for_clock = 0;
    loop {
        let result = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .customize()
            .interceptor(probe.clone())
            .send()
            .await;
        metrics.sqs_request("GetQueueAttributes", result.is_ok());
        match result {
            Ok(out) => {
                let endpoint = probe.endpoint().ok_or_else(|| QueueError::Unusable {
                    url: url.to_string(),
                    reason: "the SDK sent no request to learn the endpoint from".into(),
                })?;
                return Ok((out.attributes.unwrap_or_default(), endpoint));
            }
            Err(e) => {
                let e = SqsError::from(e);
                // The SDK learns the endpoint's clock from a refusal and signs
                // the next request with it: a few more tries tell a clock
                // that was off from credentials that are wrong, which must
                // stop startup (signature refusals are transient elsewhere).
                if e.may_be_clock_skew() {
                    if retried_for_clock < CLOCK_RETRIES {
                        retried_for_clock += 1;
                        tracing::warn!(queue = %url, error = %e,
                            "SQS refused the signature; trying again in case this machine's clock is off");
                        continue;
                    }
                    return Err(QueueError::Unusable {
                        url: url.to_string(),
                        reason: e.message,
                    });
                }
                if e.permanent {
                    return Err(QueueError::Unusable {
                        url: url.to_string(),
                        reason: e.message,
                    });
                }
                let delay = backoff.next_delay();
                tracing::warn!(queue = %url, error = %e, retry_in = ?delay,
                    "cannot reach SQS to check the queue; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The worker queue and the client for its hot-path calls.
#[derive(Clone)]
pub struct Queue {
    pub api: Arc<SqsJson>,
    pub url: String,
    pub metrics: Arc<Metrics>,
}

impl Queue {
    /// One poll for up to `max` messages, with every attribute; `long` waits
    /// up to [`WAIT_TIME_S`] for messages, otherwise SQS answers at once.
    /// Without `visibility_s`, the queue's own visibility timeout applies.
    pub async fn receive(
        &self,
        max: usize,
        visibility_s: Option<u32>,
        long: bool,
    ) -> Result<Received, SqsError> {
        let wait = if long { WAIT_TIME_S as u32 } else { 0 };
        let result = self
            .api
            .receive(&self.url, max.clamp(1, MAX_BATCH), wait, visibility_s)
            .await;
        self.metrics.sqs_request("ReceiveMessage", result.is_ok());
        result
    }
}

/// Logs a warning when the queue's redrive policy does not enforce
/// `max_retries` the way Elastic Beanstalk sets it up.
pub fn warn_about_redrive(
    attributes: &HashMap<QueueAttributeName, String>,
    max_retries: u32,
    url: &str,
) {
    match redrive_max_receive_count(attributes) {
        None => tracing::warn!(queue = %url, max_retries,
            "queue has no redrive policy: a message that always fails is retried until it expires; \
             attach a dead-letter queue with maxReceiveCount = max_retries"),
        Some(n) if n != max_retries => {
            tracing::warn!(queue = %url, max_retries, max_receive_count = n,
            "queue's redrive policy maxReceiveCount differs from max_retries")
        }
        Some(_) => {}
    }
}

/// The queue's redrive policy, parsed, if it has a readable one.
pub fn redrive_policy(
    attributes: &HashMap<QueueAttributeName, String>,
) -> Option<serde_json::Value> {
    serde_json::from_str(attributes.get(&QueueAttributeName::RedrivePolicy)?).ok()
}

/// `maxReceiveCount` of the queue's redrive policy (a number or a string).
pub fn redrive_max_receive_count(attributes: &HashMap<QueueAttributeName, String>) -> Option<u32> {
    match redrive_policy(attributes)?.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_count_is_read_as_number_or_string() {
        let attrs = |p: &str| HashMap::from([(QueueAttributeName::RedrivePolicy, p.to_string())]);
        let arn = "arn:aws:sqs:us-east-1:1:dlq";
        let n = format!("{{\"deadLetterTargetArn\":\"{arn}\",\"maxReceiveCount\":5}}");
        let s = format!("{{\"deadLetterTargetArn\":\"{arn}\",\"maxReceiveCount\":\"7\"}}");
        assert_eq!(redrive_max_receive_count(&attrs(&n)), Some(5));
        assert_eq!(redrive_max_receive_count(&attrs(&s)), Some(7));
        assert_eq!(redrive_max_receive_count(&HashMap::new()), None);
        assert_eq!(redrive_max_receive_count(&attrs("not json")), None);
    }
}
