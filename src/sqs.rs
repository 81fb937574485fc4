//! The worker queue: building the SDK client from the standard AWS chain,
//! checking the queue at start, and the receive call (made by
//! [`crate::sqs_json`]).
//!
//! The SDK's own retries are switched off: every request is one HTTP call,
//! counted in the metrics, and retried by the daemon's own policy (capped
//! exponential backoff for receives, bounded retries for settles).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;

pub use crate::aws_error::SqsError;
use crate::config::Config;
use crate::message::Incoming;
use crate::metrics::Metrics;
use crate::policy::Backoff;
use crate::sqs_json::{EndpointProbe, SqsJson};

/// Long-poll wait of every receive, as Elastic Beanstalk's daemon.
pub const WAIT_TIME_S: i32 = 20;
/// Most messages SQS returns from one receive.
pub const MAX_BATCH: usize = 10;

/// Why the queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {url} cannot be used: {reason}")]
    Unusable { url: String, reason: String },
}

/// The AWS settings both clients (SQS, and DynamoDB for periodic tasks)
/// are built from: the standard AWS chain, overridden by the `region` option.
pub struct AwsSetup {
    shared: aws_config::SdkConfig,
    region: Region,
    /// Whether the chain found credentials at all.
    has_credentials: bool,
    static_credentials: bool,
}

/// Loads region and credentials once (probing the chain can be slow).
pub async fn aws_setup(config: &Config) -> AwsSetup {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        // A long poll takes 20 s; anything far past that is a hung connection.
        .operation_attempt_timeout(Duration::from_secs(WAIT_TIME_S as u64 + 15))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        // Every request and answer here is small; the operation timeouts
        // already bound a stalled one, without a throughput check per call.
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled());
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if config.static_credentials {
        loader = loader.credentials_provider(fixed_credentials("local", "sqsd-local"));
    }
    let shared = loader.load().await;
    let region = match shared.region() {
        Some(r) => r.clone(),
        None => Region::new(region_from_queue_url(&config.queue_url).unwrap_or_else(|| {
            tracing::info!("no AWS region configured; using us-east-1");
            "us-east-1".to_string()
        })),
    };
    let has_credentials = config.static_credentials || has_credentials(&shared).await;
    AwsSetup {
        shared,
        region,
        has_credentials,
        static_credentials: config.static_credentials,
    }
}

fn fixed_credentials(secret: &str, origin: &'static str) -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(secret, secret, None, None, origin)
}

impl AwsSetup {
    /// LocalStack, moto and other local endpoints do not check signatures,
    /// and a laptop often has no AWS credentials at all: sign with
    /// placeholders when talking to a custom endpoint without credentials.
    fn placeholder(
        &self,
        custom_endpoint: bool,
        service: &str,
    ) -> Option<aws_credential_types::Credentials> {
        let custom = custom_endpoint || self.shared.endpoint_url().is_some();
        if custom && !self.has_credentials && !self.static_credentials {
            tracing::info!(
                service,
                "no AWS credentials found; signing with placeholders for the custom endpoint"
            );
            return Some(fixed_credentials("placeholder", "sqsd-placeholder"));
        }
        None
    }

    /// The SQS client, with `AWS_ENDPOINT_URL_SQS` / `AWS_ENDPOINT_URL`
    /// honoured and overridden by the `endpoint_url` option.
    pub fn sqs(&self, config: &Config) -> Client {
        let mut builder =
            aws_sdk_sqs::config::Builder::from(&self.shared).region(self.region.clone());
        if let Some(endpoint) = &config.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(c) = self.sqs_credentials(config) {
            builder = builder.credentials_provider(c);
        }
        Client::from_conf(builder.build())
    }

    /// The credentials SQS calls are signed with.
    pub fn sqs_credentials(&self, config: &Config) -> Option<SharedCredentialsProvider> {
        let custom =
            config.endpoint_url.is_some() || std::env::var_os("AWS_ENDPOINT_URL_SQS").is_some();
        match self.placeholder(custom, "sqs") {
            Some(c) => Some(SharedCredentialsProvider::new(c)),
            None => self.shared.credentials_provider(),
        }
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        self.region.as_ref()
    }

    /// The DynamoDB client for the cron table, with
    /// `AWS_ENDPOINT_URL_DYNAMODB` / `AWS_ENDPOINT_URL` honoured.
    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let mut builder = aws_sdk_dynamodb::config::Builder::from(&self.shared)
            .region(self.region.clone())
            .timeout_config(timeouts);
        let custom = std::env::var_os("AWS_ENDPOINT_URL_DYNAMODB").is_some();
        if let Some(c) = self.placeholder(custom, "dynamodb") {
            builder = builder.credentials_provider(c);
        }
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    }
}

async fn has_credentials(shared: &aws_config::SdkConfig) -> bool {
    use aws_credential_types::provider::ProvideCredentials;
    match shared.credentials_provider() {
        Some(p) => p.provide_credentials().await.is_ok(),
        None => false,
    }
}

/// `sqs.REGION.amazonaws.com`, `REGION.queue.amazonaws.com` and LocalStack's
/// `sqs.REGION.localhost.localstack.cloud` name their region.
pub fn region_from_queue_url(url: &str) -> Option<String> {
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_string();
    let labels: Vec<&str> = host.split('.').collect();
    let region = match labels.as_slice() {
        ["sqs", region, ..] if labels.len() > 3 => region,
        [region, "queue", ..] => region,
        _ => return None,
    };
    let looks_right = region.split('-').count() >= 3;
    looks_right.then(|| region.to_string())
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
    let mut retried_for_clock = false;
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
                // the next request with it: one more try tells a clock that
                // was off from credentials that are wrong.
                if e.permanent && e.may_be_clock_skew() && !retried_for_clock {
                    retried_for_clock = true;
                    tracing::warn!(queue = %url, error = %e,
                        "SQS refused the signature; trying once more in case this machine's clock is off");
                    continue;
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
    pub async fn receive(
        &self,
        max: usize,
        visibility_s: u32,
        long: bool,
    ) -> Result<Vec<Incoming>, SqsError> {
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

/// `maxReceiveCount` of the queue's redrive policy (a number or a string).
pub fn redrive_max_receive_count(attributes: &HashMap<QueueAttributeName, String>) -> Option<u32> {
    let policy: serde_json::Value =
        serde_json::from_str(attributes.get(&QueueAttributeName::RedrivePolicy)?).ok()?;
    match policy.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_comes_from_known_queue_hosts() {
        let r = |u: &str| region_from_queue_url(u);
        assert_eq!(
            r("https://sqs.eu-west-1.amazonaws.com/1/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            r("https://us-west-2.queue.amazonaws.com/1/q").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            r("http://sqs.us-east-1.localhost.localstack.cloud:4566/000000000000/q").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(r("http://localhost:9324/000000000000/q"), None);
        assert_eq!(r("http://sqs.local:9324/1/q"), None);
    }

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
