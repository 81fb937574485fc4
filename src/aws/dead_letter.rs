//! The worker queue's dead-letter queue, for `dead_letter_codes`: found at
//! start from the worker queue's redrive policy (and proved readable), and
//! the copies of messages the application says can never succeed.
//!
//! A copy keeps the body and every message attribute as they came (custom
//! types and binary values included) and adds one String attribute,
//! [`RECORD_ATTR`], saying why and when it was dead-lettered. Whether the
//! original is deleted afterwards is the pipeline's decision; this module
//! only says whether SQS took the copy.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, QueueAttributeName};
use aws_sdk_sqs::Client;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::SqsError;
use super::sqs_json::WireAttribute;
use crate::admin::metrics::Metrics;
use crate::time::Backoff;

/// Name of the attribute every copy gains.
pub const RECORD_ATTR: &str = "sqsd-dead-letter";
/// Most message attributes SQS accepts on one message.
pub const MAX_ATTRIBUTES: usize = 10;
/// One SendMessage of a copy may take this long; past it the copy counts as
/// not sent and the message goes down the ordinary retry path.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The option whose startup check this module makes, for error messages.
const OPTION: &str = "dead_letter_codes";
/// Longest `MessageDeduplicationId` SQS accepts.
const MAX_DEDUP_ID: usize = 128;

/// Why `dead_letter_codes` cannot be honoured; startup stops (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(
        "{OPTION} is set, but queue {queue} has no redrive policy naming a dead-letter queue \
         (deadLetterTargetArn): attach one, or leave {OPTION} empty"
    )]
    NoRedrivePolicy { queue: String },
    #[error(
        "{OPTION} is set, but the deadLetterTargetArn {arn:?} of queue {queue}'s redrive policy \
         is not an SQS queue ARN"
    )]
    BadTarget { queue: String, arn: String },
    #[error("{OPTION} is set, but the dead-letter queue {arn} cannot be read: {reason}")]
    Unreadable { arn: String, reason: String },
}

/// One message to copy, as the pipeline holds it.
#[derive(Clone, Copy, Debug)]
pub struct Copy<'a> {
    pub body: &'a str,
    /// Every message attribute of the original, as received.
    pub attributes: &'a [(String, WireAttribute)],
    pub message_id: &'a str,
    /// FIFO queues: the original's message group.
    pub group_id: Option<&'a str>,
    pub receive_count: u32,
    /// The application's answer that dead-letters it.
    pub status: u16,
    /// When it was decided, in epoch milliseconds.
    pub at_ms: i64,
}

/// A copy that SQS did not take (refused, unreachable, or too slow).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotSent(pub String);

/// The future of one copy's send.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), NotSent>> + Send + 'a>>;

/// Where dead-lettered copies go. The real one is [`DeadLetterQueue`];
/// tests of the pipeline give their own.
pub trait DeadLetterSink: Send + Sync + 'static {
    fn send<'a>(&'a self, copy: Copy<'a>) -> Sending<'a>;
}

/// The `sqsd-dead-letter` attribute's JSON, fields in this order.
#[derive(Serialize)]
struct Record<'a> {
    status: u16,
    at: String,
    queue: &'a str,
    message_id: &'a str,
    receive_count: u32,
}

/// The JSON text of the attribute a copy gains.
pub fn record_json(copy: &Copy<'_>, queue_name: &str) -> String {
    let at = DateTime::<Utc>::from_timestamp_millis(copy.at_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true);
    let record = Record {
        status: copy.status,
        at,
        queue: queue_name,
        message_id: copy.message_id,
        receive_count: copy.receive_count,
    };
    // Serializing a struct of strings and numbers cannot fail.
    serde_json::to_string(&record).unwrap_or_default()
}

/// The copy's attributes: the original ones unchanged, plus `record` under
/// [`RECORD_ATTR`] (replacing an earlier record, from a message that was
/// dead-lettered before and sent back). False in the second place when the
/// record was left out because the message already has the most attributes
/// SQS allows.
pub fn copy_attributes(
    original: &[(String, WireAttribute)],
    record: String,
) -> Result<(HashMap<String, MessageAttributeValue>, bool), NotSent> {
    let mut out = HashMap::with_capacity(original.len() + 1);
    for (name, a) in original {
        let mut value = MessageAttributeValue::builder().data_type(&a.data_type);
        if let Some(s) = &a.string_value {
            value = value.string_value(s);
        }
        if let Some(b64) = &a.binary_value {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    NotSent(format!(
                        "attribute {name:?} has a binary value that is not base64"
                    ))
                })?;
            value = value.binary_value(Blob::new(bytes));
        }
        let value = value
            .build()
            .map_err(|e| NotSent(format!("attribute {name:?}: {e}")))?;
        out.insert(name.clone(), value);
    }
    let fits = out.contains_key(RECORD_ATTR) || out.len() < MAX_ATTRIBUTES;
    if fits {
        let value = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(record)
            .build()
            .map_err(|e| NotSent(format!("attribute {RECORD_ATTR:?}: {e}")))?;
        out.insert(RECORD_ATTR.to_string(), value);
    }
    Ok((out, fits))
}

/// The copy's `MessageDeduplicationId` on a FIFO dead-letter queue: the
/// original message id when SQS accepts it as one, else its SHA-256 in hex.
/// The same message dead-lettered twice (its delete lost) is then one copy.
pub fn dedup_id(message_id: &str) -> String {
    let usable = !message_id.is_empty()
        && message_id.len() <= MAX_DEDUP_ID
        && message_id.bytes().all(|b| b.is_ascii_graphic());
    if usable {
        message_id.to_string()
    } else {
        hex::encode(Sha256::digest(message_id.as_bytes()))
    }
}

/// The dead-letter queue, resolved and checked at start.
pub struct DeadLetterQueue {
    client: Client,
    pub url: String,
    pub arn: String,
    pub fifo: bool,
    /// The worker queue's name, for the record.
    queue_name: String,
    metrics: Arc<Metrics>,
}

/// `(account, name)` of an SQS queue ARN: `arn:PARTITION:sqs:REGION:ACCOUNT:NAME`.
pub fn parse_queue_arn(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "sqs", _, account, name] if !name.is_empty() => Some((account, name)),
        _ => None,
    }
}

/// `deadLetterTargetArn` of the queue's redrive policy, if it has one.
pub fn redrive_target(attributes: &HashMap<QueueAttributeName, String>) -> Option<String> {
    super::queue::redrive_policy(attributes)?
        .get("deadLetterTargetArn")?
        .as_str()
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

impl DeadLetterQueue {
    /// Finds the worker queue's dead-letter queue from its attributes (read
    /// at start) and reads the dead-letter queue's own attributes to prove
    /// it is there and readable. Retries while SQS does not answer; a
    /// refusal, or no redrive policy, is an error.
    pub async fn find(
        client: Client,
        worker_url: &str,
        worker_attributes: &HashMap<QueueAttributeName, String>,
        queue_name: &str,
        metrics: Arc<Metrics>,
    ) -> Result<DeadLetterQueue, DeadLetterError> {
        let arn =
            redrive_target(worker_attributes).ok_or_else(|| DeadLetterError::NoRedrivePolicy {
                queue: worker_url.to_string(),
            })?;
        let (account, name) = parse_queue_arn(&arn).ok_or_else(|| DeadLetterError::BadTarget {
            queue: worker_url.to_string(),
            arn: arn.clone(),
        })?;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match Self::read(&client, account, name, &metrics).await {
                Ok((url, fifo)) => {
                    return Ok(DeadLetterQueue {
                        client,
                        url,
                        arn: arn.clone(),
                        fifo,
                        queue_name: queue_name.to_string(),
                        metrics,
                    })
                }
                Err(e) if e.permanent => {
                    return Err(DeadLetterError::Unreadable {
                        arn,
                        reason: e.message,
                    })
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(dead_letter_queue = %arn, error = %e, retry_in = ?delay,
                        "cannot reach SQS to check the dead-letter queue; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// The queue's URL, and whether it is FIFO.
    async fn read(
        client: &Client,
        account: &str,
        name: &str,
        metrics: &Metrics,
    ) -> Result<(String, bool), SqsError> {
        let found = client
            .get_queue_url()
            .queue_name(name)
            .queue_owner_aws_account_id(account)
            .send()
            .await;
        metrics.sqs_request("GetQueueUrl", found.is_ok());
        let url = found?
            .queue_url
            .ok_or_else(|| SqsError::new("GetQueueUrl answered without a QueueUrl", true))?;
        let attributes = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::FifoQueue)
            .send()
            .await;
        metrics.sqs_request("GetQueueAttributes", attributes.is_ok());
        let fifo = attributes?
            .attributes
            .unwrap_or_default()
            .get(&QueueAttributeName::FifoQueue)
            .is_some_and(|v| v == "true")
            || name.ends_with(".fifo");
        Ok((url, fifo))
    }

    async fn send_copy(&self, copy: Copy<'_>) -> Result<(), NotSent> {
        let record = record_json(&copy, &self.queue_name);
        let (attributes, recorded) = copy_attributes(copy.attributes, record)?;
        if !recorded {
            tracing::warn!(message_id = %copy.message_id, attributes = copy.attributes.len(),
                "message already has {MAX_ATTRIBUTES} attributes: its dead-letter copy goes without the {RECORD_ATTR} attribute");
        }
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(copy.body)
            .set_message_attributes(Some(attributes).filter(|a| !a.is_empty()));
        if self.fifo {
            // A FIFO dead-letter queue of a standard queue cannot be set up
            // on AWS; should one turn up, its copies share one group.
            let group = copy.group_id.unwrap_or(RECORD_ATTR);
            request = request
                .message_group_id(group)
                .message_deduplication_id(dedup_id(copy.message_id));
        }
        let result = tokio::time::timeout(SEND_TIMEOUT, request.send()).await;
        let result = match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(NotSent(SqsError::from(e).message)),
            Err(_) => Err(NotSent(format!("no answer within {SEND_TIMEOUT:?}"))),
        };
        self.metrics.sqs_request("SendMessage", result.is_ok());
        result
    }
}

impl DeadLetterSink for DeadLetterQueue {
    fn send<'a>(&'a self, copy: Copy<'a>) -> Sending<'a> {
        Box::pin(self.send_copy(copy))
    }
}

#[cfg(test)]
mod tests;
