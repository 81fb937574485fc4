//! The SQS actions, on request and response documents in the JSON
//! protocol's shape (`{"QueueUrl": ..., "MessageBody": ...}`). The Query
//! protocol is translated to and from the same shapes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::attributes::{apply_settings, queue_attributes, same_settings, KNOWN_ATTRIBUTES};
use super::error::{echo, ApiError};
use super::store::{
    Attr, NewMessage, NewMessageWithHistory, Queue, Received, Sent, Settings, Store, ACCOUNT,
    REGION,
};
use super::validate;
use crate::time::Clock;

/// Most entries in one batch call; most messages in one receive.
const MAX_BATCH: usize = 10;
/// Longest long poll SQS allows.
const MAX_WAIT_S: u64 = 20;
/// Most bytes of messages one SendMessageBatch may carry, in total.
const MAX_BATCH_BYTES: usize = 262_144;
/// Most queues one ListQueues answers with.
const MAX_LIST: u32 = 1000;
/// Most tags on one queue, and the longest key and value, as AWS allows.
const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// Runs the actions against a store.
pub struct Api {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
}

type Doc = Map<String, Value>;

fn str_param<'a>(p: &'a Doc, name: &str) -> Result<&'a str, ApiError> {
    match p.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(ApiError::wrong_type(other, "a String")),
        None => Err(ApiError::missing_parameter(name)),
    }
}

/// An optional string; present with another type is an error.
fn opt_str<'a>(p: &'a Doc, name: &str) -> Result<Option<&'a str>, ApiError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::wrong_type(other, "a String")),
    }
}

/// An optional integer from 0 to `max`. The JSON protocol carries integers
/// as numbers (the Query protocol's text is turned into numbers first).
fn opt_u32(p: &Doc, name: &str, max: u32) -> Result<Option<u32>, ApiError> {
    let n = match p.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => n,
            None => {
                return Err(ApiError::malformed(format!(
                    "NUMBER_VALUE {n} can not be converted to an Integer"
                )))
            }
        },
        Some(other) => return Err(ApiError::wrong_type(other, "an Integer")),
    };
    if (0..=i64::from(max)).contains(&n) {
        Ok(Some(n as u32))
    } else {
        Err(ApiError::invalid_parameter(format!(
            "Value {n} for parameter {name} is invalid. Reason: must be between 0 and {max}."
        )))
    }
}

fn string_list(p: &Doc, name: &str) -> Result<Vec<String>, ApiError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::wrong_type(other, "a String")),
            })
            .collect(),
        Some(other) => Err(ApiError::wrong_type(other, "a Collection")),
    }
}

fn string_map(p: &Doc, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match p.get(name) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(ApiError::wrong_type(other, "a String")),
            })
            .collect(),
        Some(other) => Err(ApiError::wrong_type(other, "a Map")),
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
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|e| match e {
                Value::Object(o) => Ok(o),
                other => Err(ApiError::wrong_type(other, "a Structure")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ApiError::wrong_type(other, "a Collection")),
    };
    if entries.is_empty() {
        return Err(ApiError::empty_batch());
    }
    if entries.len() > MAX_BATCH {
        return Err(ApiError::too_many_entries(entries.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for e in &entries {
        let id = opt_str(e, "Id")?.unwrap_or("");
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
        let id = opt_str(e, "Id")?.unwrap_or("");
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

    /// Runs one action. Every call also sweeps expired messages out of
    /// every queue (at most once a second), so that retention holds for
    /// queues nobody reads.
    pub async fn call(&self, action: &str, p: &Doc) -> Result<Value, ApiError> {
        self.store.sweep(self.now());
        match action {
            "CreateQueue" => self.create_queue(p),
            "GetQueueUrl" => {
                // Every queue here belongs to the one account; another
                // owner's queue of the same name does not exist.
                if opt_str(p, "QueueOwnerAWSAccountId")?.is_some_and(|a| a != ACCOUNT) {
                    return Err(ApiError::no_queue());
                }
                let q = self.store.get(str_param(p, "QueueName")?)?;
                Ok(json!({ "QueueUrl": q.url }))
            }
            "ListQueues" => self.list_queues(p),
            "DeleteQueue" => {
                let q = self.queue(p)?;
                self.store.delete(&q.name)?;
                Ok(json!({}))
            }
            "GetQueueAttributes" => self.get_attributes(p),
            "SetQueueAttributes" => {
                let q = self.queue(p)?;
                let attrs = string_map(p, "Attributes")?;
                let settings = apply_settings(q.settings(), &attrs, &self.store, &q.arn, false)?;
                q.set_settings(settings, self.now());
                Ok(json!({}))
            }
            "PurgeQueue" => {
                self.queue(p)?.purge(self.now())?;
                Ok(json!({}))
            }
            "TagQueue" => {
                let tags = string_map(p, "Tags")?;
                let q = self.queue(p)?;
                check_tags(&tags)?;
                q.update_tags(|t| {
                    let mut merged = t.clone();
                    merged.extend(tags);
                    if merged.len() > MAX_TAGS {
                        return Err(ApiError::invalid_parameter(format!(
                            "Too many tags: a queue can have at most {MAX_TAGS}."
                        )));
                    }
                    *t = merged;
                    Ok(())
                })?;
                Ok(json!({}))
            }
            "UntagQueue" => {
                let keys = string_list(p, "TagKeys")?;
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
                batch_size(p)?;
                each_entry(p, |e| self.send(&q, e).map(sent_json))
            }
            "ReceiveMessage" => self.receive(p).await,
            "DeleteMessage" => {
                self.queue(p)?.delete(str_param(p, "ReceiptHandle")?)?;
                Ok(json!({}))
            }
            "DeleteMessageBatch" => {
                let q = self.queue(p)?;
                each_entry(p, |e| {
                    q.delete(str_param(e, "ReceiptHandle")?)?;
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

    /// Queues in name order, a page of `MaxResults` at a time; `NextToken`
    /// (only when `MaxResults` is given, as AWS documents) names where the
    /// next page starts.
    fn list_queues(&self, p: &Doc) -> Result<Value, ApiError> {
        let prefix = opt_str(p, "QueueNamePrefix")?.unwrap_or("");
        let page = opt_u32(p, "MaxResults", MAX_LIST)?;
        if page == Some(0) {
            return Err(ApiError::invalid_parameter(format!(
                "Value 0 for parameter MaxResults is invalid. Reason: MaxResults must be an integer between 1 and {MAX_LIST}."
            )));
        }
        let after = match opt_str(p, "NextToken")? {
            None | Some("") => None,
            Some(token) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::invalid_parameter(format!(
                            "Value {} for parameter NextToken is invalid.",
                            echo(token)
                        ))
                    })?,
            ),
        };
        let limit = page.unwrap_or(MAX_LIST) as usize;
        let queues = self.store.list(prefix, after.as_deref());
        let urls: Vec<&str> = queues.iter().take(limit).map(|q| q.url.as_str()).collect();
        let mut out = json!({ "QueueUrls": urls });
        if page.is_some() && queues.len() > limit {
            if let Some(last) = queues.get(limit - 1) {
                out["NextToken"] =
                    json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.name));
            }
        }
        Ok(out)
    }

    fn create_queue(&self, p: &Doc) -> Result<Value, ApiError> {
        let name = str_param(p, "QueueName")?;
        if !valid_queue_name(name) {
            return Err(ApiError::invalid_parameter(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
            ));
        }
        let attrs = string_map(p, "Attributes")?;
        let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
        let mut settings = apply_settings(Settings::default(), &attrs, &self.store, &arn, true)?;
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
        check_tags(&tags)?;
        if tags.len() > MAX_TAGS {
            return Err(ApiError::invalid_parameter(format!(
                "Too many tags: a queue can have at most {MAX_TAGS}."
            )));
        }
        let q = self.store.create(name, settings, tags, self.now())?;
        Ok(json!({ "QueueUrl": q.url }))
    }

    fn get_attributes(&self, p: &Doc) -> Result<Value, ApiError> {
        let q = self.queue(p)?;
        let names = string_list(p, "AttributeNames")?;
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
        let trace_header = trace_header(p.get("MessageSystemAttributes"))?;
        let delay_s = opt_u32(p, "DelaySeconds", 900)?;
        let group_id = opt_str(p, "MessageGroupId")?;
        let dedup_id = opt_str(p, "MessageDeduplicationId")?;
        if let Some(g) = group_id {
            validate::fifo_id("MessageGroupId", g)?;
        }
        if let Some(d) = dedup_id {
            validate::fifo_id("MessageDeduplicationId", d)?;
        }
        q.send(
            NewMessage {
                body: body.to_string(),
                delay_s,
                attributes,
                trace_header,
                group_id: group_id.map(String::from),
                dedup_id: dedup_id.map(String::from),
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
        let mut system = string_list(p, "AttributeNames")?;
        system.extend(string_list(p, "MessageSystemAttributeNames")?);
        let wanted_attrs = string_list(p, "MessageAttributeNames")?;

        let got = loop {
            let ready = q.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let now = self.now();
            let target = self.redrive_target(&q);
            let (got, dead) = q.take(max as usize, visibility, now, target.is_some());
            if let Some(target) = target {
                move_dead_letters(&q, &target, dead, now);
            }
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

    /// The queue `q`'s redrive policy moves messages to, if it exists and
    /// is another queue. A missing one leaves messages where they are, as
    /// AWS does; a queue is never its own dead-letter queue.
    fn redrive_target(&self, q: &Arc<Queue>) -> Option<Arc<Queue>> {
        let (_, arn, _) = q.settings().redrive?;
        let target = self.store.by_arn(&arn);
        if target.is_none() {
            tracing::debug!(queue = %q.name, dead_letter_queue = %arn,
                "dead-letter queue does not exist; messages stay in the queue");
        }
        target.filter(|t| !Arc::ptr_eq(t, q))
    }
}

/// Moves messages past maxReceiveCount to the dead-letter queue; any that
/// it no longer takes (deleted meanwhile) go back to their own queue.
fn move_dead_letters(q: &Queue, dlq: &Queue, dead: Vec<NewMessageWithHistory>, now: i64) {
    for m in dead {
        if let Err(m) = dlq.adopt(m, now) {
            if q.adopt(m, now).is_err() {
                tracing::debug!(queue = %q.name, "message dropped with its deleted queue");
            }
        }
    }
}

/// Each tag key and value within AWS's lengths.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in tags {
        if k.is_empty() || k.len() > MAX_TAG_KEY || v.len() > MAX_TAG_VALUE {
            return Err(ApiError::invalid_parameter(format!(
                "Tag {} is invalid. Reason: keys are 1 to {MAX_TAG_KEY} characters, values at most {MAX_TAG_VALUE}.",
                echo(k)
            )));
        }
    }
    Ok(())
}

/// Refuses a SendMessageBatch whose messages (bodies and attributes) add
/// up to more than 256 KiB, before any of them is sent.
fn batch_size(p: &Doc) -> Result<(), ApiError> {
    let Some(Value::Array(entries)) = p.get("Entries") else {
        return Ok(());
    };
    let mut total = 0usize;
    for e in entries.iter().filter_map(Value::as_object) {
        total += opt_str(e, "MessageBody")?.map_or(0, str::len);
        if let Some(Value::Object(attrs)) = e.get("MessageAttributes") {
            for (name, a) in attrs {
                total += name.len();
                if let Value::Object(fields) = a {
                    let text = |f: &str| fields.get(f).and_then(Value::as_str).map_or(0, str::len);
                    // Binary values count decoded, as the store counts them.
                    total += text("DataType") + text("StringValue") + text("BinaryValue") / 4 * 3;
                }
            }
        }
    }
    if total > MAX_BATCH_BYTES {
        return Err(ApiError::batch_too_long(MAX_BATCH_BYTES, total));
    }
    Ok(())
}

/// The `AWSTraceHeader` system attribute, the only one SQS takes.
fn trace_header(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Object(m) = v else {
        return Err(ApiError::wrong_type(v, "a Map"));
    };
    let Some(header) = m.get("AWSTraceHeader") else {
        return Ok(None);
    };
    let Value::Object(h) = header else {
        return Err(ApiError::wrong_type(header, "a Structure"));
    };
    Ok(opt_str(h, "StringValue")?.map(String::from))
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
    let m = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(ApiError::wrong_type(other, "a Map")),
    };
    if m.len() > 10 {
        return Err(ApiError::invalid_parameter(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [10].",
            m.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (name, a) in m {
        validate::attribute_name(name)?;
        let Value::Object(a) = a else {
            return Err(ApiError::wrong_type(a, "a Structure"));
        };
        let data_type = opt_str(a, "DataType")?.unwrap_or("");
        let base = validate::data_type(name, data_type)?;
        let empty = || {
            ApiError::invalid_parameter(format!(
                "Message (user) attribute '{}' must contain a non-empty value of type '{base}'.",
                echo(name)
            ))
        };
        let attr = if base == "Binary" {
            let b64 = opt_str(a, "BinaryValue")?.unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ApiError::invalid_parameter(format!(
                        "BinaryValue of {} is not base64.",
                        echo(name)
                    ))
                })?;
            if bytes.is_empty() {
                return Err(empty());
            }
            Attr {
                data_type: data_type.into(),
                string: None,
                binary: Some(bytes),
            }
        } else {
            let s = opt_str(a, "StringValue")?.unwrap_or("");
            if s.is_empty() {
                return Err(empty());
            }
            if let Some(c) = s.chars().find(|c| !allowed_char(*c)) {
                return Err(ApiError::new_invalid_contents(c));
            }
            if base == "Number" {
                validate::number(name, s)?;
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
