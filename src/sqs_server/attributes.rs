//! Queue attributes: what GetQueueAttributes reports, and the checks and
//! effects of the ones CreateQueue and SetQueueAttributes set, redrive
//! policies included (their dead-letter queue must exist, be of the same
//! type, and not lead back to the source).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::{echo, ApiError};
use super::store::{Queue, Settings, Store};
use super::validate;

pub const KNOWN_ATTRIBUTES: &[&str] = &[
    "All",
    "Policy",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "ApproximateNumberOfMessagesDelayed",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
];

pub fn queue_attributes(q: &Queue, now: i64) -> Map<String, Value> {
    let s = q.settings();
    let (visible, in_flight, delayed) = q.counts(now);
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.into(), Value::String(v));
    };
    put("QueueArn", q.arn.clone());
    put("ApproximateNumberOfMessages", visible.to_string());
    put(
        "ApproximateNumberOfMessagesNotVisible",
        in_flight.to_string(),
    );
    put("ApproximateNumberOfMessagesDelayed", delayed.to_string());
    put("CreatedTimestamp", (q.created_ms / 1000).to_string());
    put(
        "LastModifiedTimestamp",
        (q.modified_ms() / 1000).to_string(),
    );
    put("VisibilityTimeout", s.visibility_timeout_s.to_string());
    put("MaximumMessageSize", s.max_message_size.to_string());
    put("MessageRetentionPeriod", s.retention_s.to_string());
    put("DelaySeconds", s.delay_s.to_string());
    put(
        "ReceiveMessageWaitTimeSeconds",
        s.receive_wait_s.to_string(),
    );
    put("SqsManagedSseEnabled", "false".into());
    if let Some((text, _, _)) = &s.redrive {
        put("RedrivePolicy", text.clone());
    }
    if s.fifo {
        put("FifoQueue", "true".into());
        put(
            "ContentBasedDeduplication",
            s.content_based_dedup.to_string(),
        );
    }
    for (k, v) in &s.other {
        put(k, v.clone());
    }
    m
}

pub fn same_settings(a: &Settings, b: &Settings) -> bool {
    a.visibility_timeout_s == b.visibility_timeout_s
        && a.delay_s == b.delay_s
        && a.retention_s == b.retention_s
        && a.max_message_size == b.max_message_size
        && a.receive_wait_s == b.receive_wait_s
        && a.redrive.as_ref().map(|r| (&r.1, r.2)) == b.redrive.as_ref().map(|r| (&r.1, r.2))
        && a.fifo == b.fifo
}

/// Applies queue attributes given by a caller, checking each value, for
/// the queue `arn` (which may not exist yet).
pub fn apply_settings(
    mut s: Settings,
    attrs: &BTreeMap<String, String>,
    store: &Store,
    arn: &str,
    creating: bool,
) -> Result<Settings, ApiError> {
    let number = |k: &str, v: &str, min: u32, max: u32| -> Result<u32, ApiError> {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_attribute_value(format!("Invalid value for the parameter {k}."))
            })
    };
    let mut redrive = None;
    for (k, v) in attrs {
        match k.as_str() {
            "VisibilityTimeout" => s.visibility_timeout_s = number(k, v, 0, 43_200)?,
            "DelaySeconds" => s.delay_s = number(k, v, 0, 900)?,
            "MessageRetentionPeriod" => s.retention_s = number(k, v, 60, 1_209_600)?,
            "MaximumMessageSize" => s.max_message_size = number(k, v, 1024, 262_144)?,
            "ReceiveMessageWaitTimeSeconds" => s.receive_wait_s = number(k, v, 0, 20)?,
            "RedrivePolicy" if v.is_empty() => s.redrive = None,
            "RedrivePolicy" => redrive = Some(parse_redrive(v)?),
            "FifoQueue" if creating => s.fifo = validate::boolean(k, v)?,
            "ContentBasedDeduplication" => s.content_based_dedup = validate::boolean(k, v)?,
            "FifoQueue" => {
                return Err(ApiError::invalid_attribute_name("FifoQueue"));
            }
            "SqsManagedSseEnabled" => {
                validate::boolean(k, v)?;
                s.other.insert(k.clone(), v.clone());
            }
            "Policy"
            | "KmsMasterKeyId"
            | "KmsDataKeyReusePeriodSeconds"
            | "RedriveAllowPolicy"
            | "DeduplicationScope"
            | "FifoThroughputLimit" => {
                s.other.insert(k.clone(), v.clone());
            }
            other => return Err(ApiError::invalid_attribute_name(other)),
        }
    }
    if let Some((text, target, count)) = redrive {
        check_redrive_target(&text, &target, store, arn, s.fifo)?;
        s.redrive = Some((text, target, count));
    }
    Ok(s)
}

fn redrive_error(text: &str, why: &str) -> ApiError {
    ApiError::invalid_parameter(format!(
        "Value {} for parameter RedrivePolicy is invalid. Reason: {why}",
        echo(text)
    ))
}

/// A redrive policy's dead-letter queue ARN and maxReceiveCount.
fn parse_redrive(text: &str) -> Result<(String, String, u32), ApiError> {
    let bad = |why: &str| redrive_error(text, why);
    let v: Value =
        serde_json::from_str(text).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn.")
        })?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| bad("Invalid value for maxReceiveCount: must be an integer from 1 to 1000."))?;
    Ok((text.to_string(), arn.to_string(), count as u32))
}

/// The dead-letter queue must exist, be of the source's type (standard or
/// FIFO), and not lead back to the source: a message moved around a loop
/// would move forever.
fn check_redrive_target(
    text: &str,
    target: &str,
    store: &Store,
    source_arn: &str,
    source_fifo: bool,
) -> Result<(), ApiError> {
    let bad = |why: &str| redrive_error(text, why);
    let name_of = |arn: &str| arn.rsplit(':').next().unwrap_or("").to_string();
    let source = name_of(source_arn);
    let Some(dlq) = store.by_arn(target) else {
        return Err(bad("Dead letter target does not exist."));
    };
    if dlq.name == source {
        return Err(bad(
            "Dead-letter queue must be a different queue than the source queue.",
        ));
    }
    if dlq.settings().fifo != source_fifo {
        return Err(bad(
            "Dead-letter queue must be same type of queue as the source.",
        ));
    }
    // Follow the chain of dead-letter queues from the target.
    let mut seen = std::collections::HashSet::new();
    let mut next = dlq.settings().redrive.map(|r| r.1);
    while let Some(arn) = next {
        let name = name_of(&arn);
        if name == source {
            return Err(bad(
                "Dead-letter queues must not form a loop back to the source queue.",
            ));
        }
        if !seen.insert(name) {
            break;
        }
        next = store
            .by_arn(&arn)
            .and_then(|q| q.settings().redrive.map(|r| r.1));
    }
    Ok(())
}
