//! The AWS settings every client is built from: the standard AWS chain
//! (environment, profile, instance or task role), overridden by the `region`
//! and `endpoint_url` options, with placeholder credentials for custom
//! endpoints that have none (LocalStack, the embedded server).
//!
//! The SDK's own retries are switched off: every request is one HTTP call,
//! counted in the metrics, and retried by the daemon's own policy.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_sqs::Client;

use super::queue::WAIT_TIME_S;
use crate::config::Config;

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
}
