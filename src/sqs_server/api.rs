//! The SQS actions, on request and response documents in the JSON
//! protocol's shape (`{"QueueUrl": ..., "MessageBody": ...}`). The Query
//! protocol is translated to and from the same shapes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::store::{Attr, NewMessage, Queue, Received, Sent, Settings, Store};
use crate::time::Clock;

/// Most entries in one batch call; most messages in one receive.
const MAX_BATCH: usize = 10;
/// Longest long poll SQS allows.
const MAX_WAIT_S: u64 = 20;

/// Runs the actions against a store.
pub struct Api {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
}

type Doc = Map<String, Value>;

fn str_param<'a>(p: &'a Doc, name: &str) -> Result<&'a str, ApiError> {
    match p.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid_parameter(format!(
            "{name} must be a string."
        ))),
        None => Err(ApiError::missing_parameter(name)),
    }
}

fn opt_u32(p: &Doc, name: &str, max: u32) -> Result<Option<u32>, ApiError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (0..=i64::from(max)).contains(&n) => Ok(Some(n as u32)),
        _ => Err(ApiError::invalid_parameter(format!(
            "Value {v} for parameter {name} is invalid. Reason: must be between 0 and {max}."
        ))),
    }
}

fn string_list(p: &Doc, name: &str) -> Vec<String> {
    match p.get(name) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

fn string_map(p: &Doc, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid_parameter(format!(
            "{name} must be a map."
        ))),
    }
}

fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_batch_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks the entries of a batch call: present, at most ten, ids valid and distinct.
fn batch_entries(p: &Doc) -> Result<Vec<&Doc>, ApiError> {
    let entries: Vec<&Doc> = match p.get("Entries") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if entries.is_empty() {
        return Err(ApiError::empty_batch());
    }
    if entries.len() > MAX_BATCH {
        return Err(ApiError::too_many_entries(entries.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        let id = e.get("Id").and_then(Value::as_str).unwrap_or("");
        if !valid_batch_id(id) {
            return Err(ApiError::invalid_batch_id(id));
        }
        if !seen.insert(id) {
            return Err(ApiError::ids_not_distinct(id));
        }
    }
    Ok(entries)
}

fn failed_entry(id: &str, e: &ApiError) -> Value {
    json!({ "Id": id, "SenderFault": e.sender, "Code": e.code, "Message": e.message })
}

/// Runs `f` on each entry of a batch call; the answer lists each entry's id
/// under `Successful` (with what `f` returned) or `Failed` (with the error).
fn each_entry(
    p: &Doc,
    mut f: impl FnMut(&Doc) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for e in batch_entries(p)? {
        let id = e.get("Id").and_then(Value::as_str).unwrap_or("");
        match f(e) {
            Ok(mut v) => {
                v["Id"] = json!(id);
                ok.push(v);
            }
            Err(err) => failed.push(failed_entry(id, &err)),
        }
    }
    Ok(json!({ "Successful": ok, "Failed": failed }))
}

/// What a send answers: id, digests, and the sequence number on FIFO queues.
fn sent_json(sent: Sent) -> Value {
    let mut out = json!({ "MessageId": sent.id, "MD5OfMessageBody": sent.md5_body });
    let optional = [
        ("MD5OfMessageAttributes", sent.md5_attributes),
        ("MD5OfMessageSystemAttributes", sent.md5_system),
        ("SequenceNumber", sent.sequence_number),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            out[key] = json!(v);
        }
    }
    out
}

impl Api {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn queue(&self, p: &Doc) -> Result<Arc<Queue>, ApiError> {
        self.store.by_url(str_param(p, "QueueUrl")?)
    }

    /// Runs one action.
    pub async fn call(&self, action: &str, p: &Doc) -> Result<Value, ApiError> {
        match action {
            "CreateQueue" => self.create_queue(p),
            "GetQueueUrl" => {
                let q = self.store.get(str_param(p, "QueueName")?)?;
                Ok(json!({ "QueueUrl": q.url }))
            }
            "ListQueues" => {
                let prefix = p
                    .get("QueueNamePrefix")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let max = opt_u32(p, "MaxResults", 1000)?.unwrap_or(1000) as usize;
                let urls: Vec<String> = self
                    .store
                    .list(prefix)
                    .into_iter()
                    .take(max)
                    .map(|q| q.url.clone())
                    .collect();
                Ok(json!({ "QueueUrls": urls }))
            }
            "DeleteQueue" => {
                let q = self.queue(p)?;
                self.store.delete(&q.name)?;
                Ok(json!({}))
            }
            "GetQueueAttributes" => self.get_attributes(p),
            "SetQueueAttributes" => {
                let q = self.queue(p)?;
                let attrs = string_map(p, "Attributes")?;
                let settings = apply_settings(q.settings(), &attrs, &self.store, false)?;
                q.set_settings(settings, self.now());
                Ok(json!({}))
            }
            "PurgeQueue" => {
                self.queue(p)?.purge();
                Ok(json!({}))
            }
            "TagQueue" => {
                let tags = string_map(p, "Tags")?;
                self.queue(p)?.update_tags(|t| t.extend(tags));
                Ok(json!({}))
            }
            "UntagQueue" => {
                let keys = string_list(p, "TagKeys");
                self.queue(p)?
                    .update_tags(|t| keys.iter().for_each(|k| drop(t.remove(k))));
                Ok(json!({}))
            }
            "ListQueueTags" => Ok(json!({ "Tags": self.queue(p)?.tags() })),
            "SendMessage" => {
                let q = self.queue(p)?;
                Ok(sent_json(self.send(&q, p)?))
            }
            "SendMessageBatch" => {
                let q = self.queue(p)?;
                each_entry(p, |e| self.send(&q, e).map(sent_json))
            }
            "ReceiveMessage" => self.receive(p).await,
            "DeleteMessage" => {
                self.queue(p)?
                    .delete(str_param(p, "ReceiptHandle")?, self.now())?;
                Ok(json!({}))
            }
            "DeleteMessageBatch" => {
                let q = self.queue(p)?;
                each_entry(p, |e| {
                    q.delete(str_param(e, "ReceiptHandle")?, self.now())?;
                    Ok(json!({}))
                })
            }
            "ChangeMessageVisibility" => {
                let q = self.queue(p)?;
                self.change_one(&q, p)?;
                Ok(json!({}))
            }
            "ChangeMessageVisibilityBatch" => {
                let q = self.queue(p)?;
                each_entry(p, |e| self.change_one(&q, e).map(|()| json!({})))
            }
            other => Err(ApiError::unknown_operation(other)),
        }
    }

    /// One visibility change: `ReceiptHandle` and a required `VisibilityTimeout`.
    fn change_one(&self, q: &Queue, p: &Doc) -> Result<(), ApiError> {
        let t = opt_u32(p, "VisibilityTimeout", 43_200)?
            .ok_or_else(|| ApiError::missing_parameter("VisibilityTimeout"))?;
        q.change_visibility(str_param(p, "ReceiptHandle")?, t, self.now())
    }

    fn create_queue(&self, p: &Doc) -> Result<Value, ApiError> {
        let name = str_param(p, "QueueName")?;
        if !valid_queue_name(name) {
            return Err(ApiError::invalid_parameter(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        let attrs = string_map(p, "Attributes")?;
        let mut settings = apply_settings(Settings::default(), &attrs, &self.store, true)?;
        if settings.fifo != name.ends_with(".fifo") {
            return Err(ApiError::invalid_parameter(
                "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix.",
            ));
        }
        settings.fifo = name.ends_with(".fifo");
        if let Ok(existing) = self.store.get(name) {
            if !attrs.is_empty() && !same_settings(&existing.settings(), &settings) {
                return Err(ApiError::queue_exists(name));
            }
            return Ok(json!({ "QueueUrl": existing.url }));
        }
        let mut tags = string_map(p, "tags")?;
        tags.extend(string_map(p, "Tags")?);
        let q = self.store.create(name, settings, tags, self.now())?;
        Ok(json!({ "QueueUrl": q.url }))
    }

    fn get_attributes(&self, p: &Doc) -> Result<Value, ApiError> {
        let q = self.queue(p)?;
        let names = string_list(p, "AttributeNames");
        let all = queue_attributes(&q, self.now());
        let mut out = Map::new();
        for name in names {
            if name == "All" {
                out.extend(all.clone());
            } else if let Some(v) = all.get(&name) {
                out.insert(name, v.clone());
            } else if !KNOWN_ATTRIBUTES.contains(&name.as_str()) {
                return Err(ApiError::invalid_attribute_name(&name));
            }
        }
        Ok(json!({ "Attributes": out }))
    }

    fn send(&self, q: &Queue, p: &Doc) -> Result<Sent, ApiError> {
        let body = str_param(p, "MessageBody")?;
        if body.is_empty() {
            return Err(ApiError::missing_parameter("MessageBody"));
        }
        if let Some(c) = body.chars().find(|c| !allowed_char(*c)) {
            return Err(ApiError::new_invalid_contents(c));
        }
        let attributes = message_attributes(p.get("MessageAttributes"))?;
        let trace_header = p
            .get("MessageSystemAttributes")
            .and_then(|v| v.get("AWSTraceHeader"))
            .and_then(|v| v.get("StringValue"))
            .and_then(Value::as_str)
            .map(String::from);
        let delay_s = opt_u32(p, "DelaySeconds", 900)?;
        q.send(
            NewMessage {
                body: body.to_string(),
                delay_s,
                attributes,
                trace_header,
                group_id: p
                    .get("MessageGroupId")
                    .and_then(Value::as_str)
                    .map(String::from),
                dedup_id: p
                    .get("MessageDeduplicationId")
                    .and_then(Value::as_str)
                    .map(String::from),
            },
            self.now(),
        )
    }

    async fn receive(&self, p: &Doc) -> Result<Value, ApiError> {
        let q = self.queue(p)?;
        let max = opt_u32(p, "MaxNumberOfMessages", 10)?.unwrap_or(1);
        if max == 0 {
            return Err(ApiError::invalid_parameter(
                "Value 0 for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided.",
            ));
        }
        let visibility = opt_u32(p, "VisibilityTimeout", 43_200)?;
        let wait_s = match opt_u32(p, "WaitTimeSeconds", 20)? {
            Some(w) => w,
            None => q.settings().receive_wait_s,
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(u64::from(wait_s).min(MAX_WAIT_S));
        let mut system = string_list(p, "AttributeNames");
        system.extend(string_list(p, "MessageSystemAttributeNames"));
        let wanted_attrs = string_list(p, "MessageAttributeNames");

        let got = loop {
            let ready = q.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let now = self.now();
            let (got, dead) = q.take(max as usize, visibility, now);
            self.redrive(&q, dead, now);
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                break got;
            }
            if self.store.get(&q.name).is_err() {
                return Err(ApiError::no_queue());
            }
            let mut wake = deadline;
            if let Some(at) = q.next_visible_at() {
                let in_ms = (at - now).max(1) as u64;
                wake = wake.min(tokio::time::Instant::now() + Duration::from_millis(in_ms));
            }
            tokio::select! {
                _ = ready => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        };
        let messages: Vec<Value> = got
            .iter()
            .map(|m| message_json(m, &system, &wanted_attrs))
            .collect();
        Ok(json!({ "Messages": messages }))
    }

    /// Moves messages past maxReceiveCount to the dead-letter queue.
    fn redrive(&self, q: &Queue, dead: Vec<super::store::NewMessageWithHistory>, now: i64) {
        if dead.is_empty() {
            return;
        }
        let target = q
            .settings()
            .redrive
            .and_then(|(_, arn, _)| self.store.by_arn(&arn));
        match target {
            Some(dlq) => dead.into_iter().for_each(|m| dlq.adopt(m, now)),
            None => tracing::warn!(queue = %q.name, dropped = dead.len(),
                "dead-letter queue of the redrive policy does not exist; messages dropped"),
        }
    }
}

impl ApiError {
    fn new_invalid_contents(c: char) -> ApiError {
        ApiError {
            status: 400,
            shape: "InvalidMessageContents",
            code: "InvalidMessageContents",
            message: format!(
                "Invalid characters found. Deleted character: U+{:04X}",
                c as u32
            ),
            sender: true,
        }
    }
}

/// Characters SQS accepts in a body or attribute value.
fn allowed_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn message_attributes(v: Option<&Value>) -> Result<BTreeMap<String, Attr>, ApiError> {
    let Some(Value::Object(m)) = v else {
        return Ok(BTreeMap::new());
    };
    if m.len() > 10 {
        return Err(ApiError::invalid_parameter(
            "Number of message attributes [11] exceeds the allowed maximum [10].",
        ));
    }
    let mut out = BTreeMap::new();
    for (name, a) in m {
        let data_type = a.get("DataType").and_then(Value::as_str).unwrap_or("");
        let base = data_type.split('.').next().unwrap_or("");
        if !matches!(base, "String" | "Number" | "Binary") {
            return Err(ApiError::invalid_parameter(format!(
                "The type of message (user) attribute '{name}' is invalid. You must use only the following supported type prefixes: Binary, Number, String."
            )));
        }
        let attr = if base == "Binary" {
            let b64 = a.get("BinaryValue").and_then(Value::as_str).unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ApiError::invalid_parameter(format!("BinaryValue of {name} is not base64."))
                })?;
            Attr {
                data_type: data_type.into(),
                string: None,
                binary: Some(bytes),
            }
        } else {
            let s = a.get("StringValue").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "Message (user) attribute '{name}' must contain a non-empty value of type '{base}'."
                ))
            })?;
            if let Some(c) = s.chars().find(|c| !allowed_char(*c)) {
                return Err(ApiError::new_invalid_contents(c));
            }
            Attr {
                data_type: data_type.into(),
                string: Some(s.into()),
                binary: None,
            }
        };
        out.insert(name.clone(), attr);
    }
    Ok(out)
}

fn message_json(m: &Received, system: &[String], wanted: &[String]) -> Value {
    let mut out = json!({
        "MessageId": m.id,
        "ReceiptHandle": m.receipt_handle,
        "MD5OfBody": m.md5_body,
        "Body": m.body,
    });
    let all = system.iter().any(|s| s == "All");
    let want = |n: &str| all || system.iter().any(|s| s == n);
    let mut attrs = Map::new();
    let mut put = |name: &str, value: String| {
        if want(name) {
            attrs.insert(name.into(), Value::String(value));
        }
    };
    put("SenderId", "AIDAIT2UOQQY3AUEKVGXU".into());
    put("SentTimestamp", m.sent_ms.to_string());
    put("ApproximateReceiveCount", m.receive_count.to_string());
    put(
        "ApproximateFirstReceiveTimestamp",
        m.first_received_ms.to_string(),
    );
    if let Some(t) = &m.trace_header {
        put("AWSTraceHeader", t.clone());
    }
    if let Some(g) = &m.group_id {
        put("MessageGroupId", g.clone());
    }
    if let Some(d) = &m.dedup_id {
        put("MessageDeduplicationId", d.clone());
    }
    if let Some(n) = &m.sequence_number {
        put("SequenceNumber", n.clone());
    }
    if !attrs.is_empty() {
        out["Attributes"] = Value::Object(attrs);
    }
    let selected: BTreeMap<String, Attr> = m
        .attributes
        .iter()
        .filter(|(name, _)| {
            wanted.iter().any(|w| {
                w == "All"
                    || w == ".*"
                    || *w == **name
                    || w.strip_suffix(".*")
                        .is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
            })
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !selected.is_empty() {
        let map: Map<String, Value> = selected
            .iter()
            .map(|(k, a)| {
                let mut v = json!({ "DataType": a.data_type });
                if let Some(s) = &a.string {
                    v["StringValue"] = json!(s);
                }
                if let Some(b) = &a.binary {
                    v["BinaryValue"] = json!(base64::engine::general_purpose::STANDARD.encode(b));
                }
                (k.clone(), v)
            })
            .collect();
        out["MessageAttributes"] = Value::Object(map);
        out["MD5OfMessageAttributes"] = json!(super::md5::of_attributes(&selected));
    }
    out
}

const KNOWN_ATTRIBUTES: &[&str] = &[
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

fn queue_attributes(q: &Queue, now: i64) -> Map<String, Value> {
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

fn same_settings(a: &Settings, b: &Settings) -> bool {
    a.visibility_timeout_s == b.visibility_timeout_s
        && a.delay_s == b.delay_s
        && a.retention_s == b.retention_s
        && a.max_message_size == b.max_message_size
        && a.receive_wait_s == b.receive_wait_s
        && a.redrive.as_ref().map(|r| (&r.1, r.2)) == b.redrive.as_ref().map(|r| (&r.1, r.2))
        && a.fifo == b.fifo
}

/// Applies queue attributes given by a caller, checking each value.
pub fn apply_settings(
    mut s: Settings,
    attrs: &BTreeMap<String, String>,
    store: &Store,
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
    for (k, v) in attrs {
        match k.as_str() {
            "VisibilityTimeout" => s.visibility_timeout_s = number(k, v, 0, 43_200)?,
            "DelaySeconds" => s.delay_s = number(k, v, 0, 900)?,
            "MessageRetentionPeriod" => s.retention_s = number(k, v, 60, 1_209_600)?,
            "MaximumMessageSize" => s.max_message_size = number(k, v, 1024, 262_144)?,
            "ReceiveMessageWaitTimeSeconds" => s.receive_wait_s = number(k, v, 0, 20)?,
            "RedrivePolicy" if v.is_empty() => s.redrive = None,
            "RedrivePolicy" => s.redrive = Some(parse_redrive(v, store)?),
            "FifoQueue" if creating => s.fifo = v == "true",
            "ContentBasedDeduplication" => s.content_based_dedup = v == "true",
            "FifoQueue" => {
                return Err(ApiError::invalid_attribute_name("FifoQueue"));
            }
            "Policy"
            | "KmsMasterKeyId"
            | "KmsDataKeyReusePeriodSeconds"
            | "RedriveAllowPolicy"
            | "SqsManagedSseEnabled"
            | "DeduplicationScope"
            | "FifoThroughputLimit" => {
                s.other.insert(k.clone(), v.clone());
            }
            other => return Err(ApiError::invalid_attribute_name(other)),
        }
    }
    Ok(s)
}

fn parse_redrive(text: &str, store: &Store) -> Result<(String, String, u32), ApiError> {
    let bad = |why: &str| {
        ApiError::invalid_attribute_value(format!(
            "Value {text} for parameter RedrivePolicy is invalid. Reason: {why}"
        ))
    };
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
    if store.by_arn(arn).is_none() {
        return Err(bad("Dead letter target does not exist."));
    }
    Ok((text.to_string(), arn.to_string(), count as u32))
}
