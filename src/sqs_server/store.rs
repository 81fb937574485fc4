//! The embedded server's queues and their semantics: visibility timeouts,
//! delays, retention, receive counts, redrive to a dead-letter queue, and
//! long polls woken as soon as a message becomes available.
//!
//! Each queue keeps its messages in a map by sequence number, the set of the
//! ones visible now (in send order, which FIFO queues need), and a min-heap
//! of the times at which hidden ones become visible. Heap entries may go
//! stale (a message deleted or hidden again); they are checked against the
//! message when they come up.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

pub use super::attr::Attr;
use super::error::ApiError;
use super::md5;

/// Account id in every queue URL and ARN.
pub const ACCOUNT: &str = "000000000000";
/// Region in every ARN.
pub const REGION: &str = "us-east-1";

/// What a sender gives.
#[derive(Clone, Debug, Default)]
pub struct NewMessage {
    pub body: String,
    pub delay_s: Option<u32>,
    pub attributes: BTreeMap<String, Attr>,
    pub trace_header: Option<String>,
    /// FIFO queues: the message group (required there).
    pub group_id: Option<String>,
    /// FIFO queues: deduplication id (or content-based).
    pub dedup_id: Option<String>,
}

/// What a sender gets back.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: String,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub md5_system: Option<String>,
    /// FIFO queues only.
    pub sequence_number: Option<String>,
}

#[derive(Clone, Debug)]
struct Stored {
    id: String,
    body: String,
    md5_body: String,
    md5_attributes: Option<String>,
    attributes: BTreeMap<String, Attr>,
    trace_header: Option<String>,
    group_id: Option<String>,
    dedup_id: Option<String>,
    sequence_number: Option<String>,
    sent_ms: i64,
    first_received_ms: Option<i64>,
    receive_count: u32,
    visible_at_ms: i64,
    /// In the visible set (receivable now).
    queued: bool,
    nonce: u64,
}

impl Stored {
    /// Received and not yet visible again.
    fn in_flight(&self, now_ms: i64) -> bool {
        !self.queued && self.receive_count > 0 && self.visible_at_ms > now_ms
    }
}

/// A received message, as the receiver sees it.
#[derive(Clone, Debug)]
pub struct Received {
    pub id: String,
    pub receipt_handle: String,
    pub body: String,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub attributes: BTreeMap<String, Attr>,
    pub trace_header: Option<String>,
    pub group_id: Option<String>,
    pub dedup_id: Option<String>,
    pub sequence_number: Option<String>,
    pub sent_ms: i64,
    pub first_received_ms: i64,
    pub receive_count: u32,
}

/// Settable queue attributes with AWS's defaults.
#[derive(Clone, Debug)]
pub struct Settings {
    pub visibility_timeout_s: u32,
    pub delay_s: u32,
    pub retention_s: u32,
    pub max_message_size: u32,
    pub receive_wait_s: u32,
    /// `RedrivePolicy` as given (JSON text) and its parsed parts.
    pub redrive: Option<(String, String, u32)>,
    pub fifo: bool,
    pub content_based_dedup: bool,
    /// Attributes kept as given but not acted on (Policy, KMS, ...).
    pub other: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            visibility_timeout_s: 30,
            delay_s: 0,
            retention_s: 345_600,
            max_message_size: 262_144,
            receive_wait_s: 0,
            redrive: None,
            fifo: false,
            content_based_dedup: false,
            other: BTreeMap::new(),
        }
    }
}

/// How long a FIFO deduplication id is remembered.
const DEDUP_WINDOW_MS: i64 = 5 * 60 * 1000;
/// First FIFO sequence number: 20 digits, as AWS's.
const SEQUENCE_BASE: u64 = 10_000_000_000_000_000_000;

#[derive(Default)]
struct State {
    settings: Settings,
    tags: BTreeMap<String, String>,
    messages: HashMap<u64, Stored>,
    /// Receivable messages in send order.
    visible: BTreeSet<u64>,
    hidden: BinaryHeap<Reverse<(i64, u64)>>,
    next_seq: u64,
    modified_ms: i64,
    /// FIFO: messages in flight per group; a group with any is locked.
    groups_in_flight: HashMap<String, u32>,
    /// FIFO: deduplication id -> (expiry, message id, sequence number).
    dedup: HashMap<String, (i64, String, String)>,
}

/// One queue.
pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
    pub created_ms: i64,
    state: Mutex<State>,
    /// Woken whenever a message may have become receivable.
    pub ready: Notify,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    pub fn set_settings(&self, settings: Settings, now_ms: i64) {
        let mut s = self.lock();
        s.settings = settings;
        s.modified_ms = now_ms;
    }

    pub fn modified_ms(&self) -> i64 {
        self.lock().modified_ms
    }

    pub fn tags(&self) -> BTreeMap<String, String> {
        self.lock().tags.clone()
    }

    pub fn update_tags(&self, f: impl FnOnce(&mut BTreeMap<String, String>)) {
        f(&mut self.lock().tags);
    }

    pub fn send(&self, m: NewMessage, now_ms: i64) -> Result<Sent, ApiError> {
        let mut s = self.lock();
        if m.body.len() + attributes_size(&m.attributes) > s.settings.max_message_size as usize {
            return Err(ApiError::invalid_parameter(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                s.settings.max_message_size
            )));
        }
        let dedup_id = if s.settings.fifo {
            Some(s.fifo_checks(&m)?)
        } else {
            None
        };
        let seq = s.next_seq;
        let sequence_number = s.settings.fifo.then(|| (SEQUENCE_BASE + seq).to_string());
        let md5_attributes = md5::of_attributes(&m.attributes);
        let md5_system = m.trace_header.as_deref().map(md5::of_trace_header);
        if let Some(d) = &dedup_id {
            s.dedup.retain(|_, (expiry, _, _)| *expiry > now_ms);
            if let Some((_, id, number)) = s.dedup.get(d) {
                // A duplicate within the window: accepted, not enqueued again.
                return Ok(Sent {
                    id: id.clone(),
                    md5_body: md5::of_body(&m.body),
                    md5_attributes,
                    md5_system,
                    sequence_number: Some(number.clone()),
                });
            }
        }
        let delay = if s.settings.fifo {
            s.settings.delay_s
        } else {
            m.delay_s.unwrap_or(s.settings.delay_s)
        };
        s.next_seq += 1;
        let sent = Sent {
            id: message_id(),
            md5_body: md5::of_body(&m.body),
            md5_attributes,
            md5_system,
            sequence_number,
        };
        if let (Some(d), Some(n)) = (&dedup_id, &sent.sequence_number) {
            s.dedup.insert(
                d.clone(),
                (now_ms + DEDUP_WINDOW_MS, sent.id.clone(), n.clone()),
            );
        }
        let visible_at_ms = now_ms + i64::from(delay) * 1000;
        s.messages.insert(
            seq,
            Stored {
                id: sent.id.clone(),
                body: m.body,
                md5_body: sent.md5_body.clone(),
                md5_attributes: sent.md5_attributes.clone(),
                attributes: m.attributes,
                trace_header: m.trace_header,
                group_id: m.group_id,
                dedup_id,
                sequence_number: sent.sequence_number.clone(),
                sent_ms: now_ms,
                first_received_ms: None,
                receive_count: 0,
                visible_at_ms,
                queued: delay == 0,
                nonce: 0,
            },
        );
        if delay == 0 {
            s.visible.insert(seq);
        } else {
            s.hidden.push(Reverse((visible_at_ms, seq)));
        }
        drop(s);
        self.ready.notify_waiters();
        Ok(sent)
    }

    /// Takes up to `max` visible messages and hides them for `visibility_s`.
    /// Messages past their queue's maxReceiveCount are returned in the second
    /// list instead, removed, for the caller to move to the dead-letter queue.
    /// On a FIFO queue, messages come in send order per group, and a group
    /// with a message in flight gives none until it is settled.
    pub fn take(
        &self,
        max: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> (Vec<Received>, Vec<NewMessageWithHistory>) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.promote(now_ms);
        let visibility_s = visibility_s.unwrap_or(s.settings.visibility_timeout_s);
        let retention_ms = i64::from(s.settings.retention_s) * 1000;
        let max_receives = s.settings.redrive.as_ref().map(|r| r.2);
        let fifo = s.settings.fifo;
        let mut out = Vec::new();
        let mut dead = Vec::new();
        let mut taken_groups: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        while out.len() < max {
            let Some(seq) = s.visible.range(cursor..).next().copied() else {
                break;
            };
            cursor = seq + 1;
            let Some(m) = s.messages.get_mut(&seq) else {
                s.visible.remove(&seq);
                continue;
            };
            if fifo {
                let group = m.group_id.clone().unwrap_or_default();
                let locked = s.groups_in_flight.get(&group).is_some_and(|n| *n > 0);
                if locked && !taken_groups.contains(&group) {
                    continue;
                }
                if !taken_groups.contains(&group) {
                    taken_groups.push(group);
                }
            }
            s.visible.remove(&seq);
            m.queued = false;
            if now_ms - m.sent_ms > retention_ms {
                s.messages.remove(&seq);
                continue;
            }
            if max_receives.is_some_and(|n| m.receive_count >= n) {
                if let Some(m) = s.messages.remove(&seq) {
                    dead.push(NewMessageWithHistory::from(m));
                }
                continue;
            }
            m.receive_count += 1;
            let first = *m.first_received_ms.get_or_insert(now_ms);
            m.nonce = fastrand::u64(..);
            m.visible_at_ms = now_ms + i64::from(visibility_s) * 1000;
            let r = Received {
                id: m.id.clone(),
                receipt_handle: receipt_handle(seq, m.nonce),
                body: m.body.clone(),
                md5_body: m.md5_body.clone(),
                md5_attributes: m.md5_attributes.clone(),
                attributes: m.attributes.clone(),
                trace_header: m.trace_header.clone(),
                group_id: m.group_id.clone(),
                dedup_id: m.dedup_id.clone(),
                sequence_number: m.sequence_number.clone(),
                sent_ms: m.sent_ms,
                first_received_ms: first,
                receive_count: m.receive_count,
            };
            let at = m.visible_at_ms;
            if let Some(g) = &m.group_id {
                *s.groups_in_flight.entry(g.clone()).or_default() += 1;
            }
            s.hidden.push(Reverse((at, seq)));
            out.push(r);
        }
        (out, dead)
    }

    /// When the next hidden message becomes visible, if any.
    pub fn next_visible_at(&self) -> Option<i64> {
        self.lock().hidden.peek().map(|Reverse((at, _))| *at)
    }

    /// Deletes by receipt handle. A stale handle succeeds without deleting,
    /// as AWS documents; an unparsable one is an error.
    pub fn delete(&self, handle: &str, now_ms: i64) -> Result<(), ApiError> {
        let (seq, nonce) = parse_receipt(handle)?;
        let mut s = self.lock();
        if s.messages
            .get(&seq)
            .is_some_and(|m| m.nonce == nonce && m.receive_count > 0)
        {
            if let Some(m) = s.messages.remove(&seq) {
                s.visible.remove(&seq);
                if m.in_flight(now_ms) {
                    s.release_group(&m.group_id);
                }
            }
            drop(s);
            self.ready.notify_waiters();
        }
        Ok(())
    }

    pub fn change_visibility(
        &self,
        handle: &str,
        timeout_s: u32,
        now_ms: i64,
    ) -> Result<(), ApiError> {
        let (seq, nonce) = parse_receipt(handle)?;
        let mut s = self.lock();
        let Some(m) = s.messages.get_mut(&seq).filter(|m| m.nonce == nonce) else {
            return Err(ApiError::invalid_parameter(format!(
                "Value {handle} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
            )));
        };
        if !m.in_flight(now_ms) {
            return Err(ApiError::message_not_inflight());
        }
        m.visible_at_ms = now_ms + i64::from(timeout_s) * 1000;
        let at = m.visible_at_ms;
        if timeout_s == 0 {
            m.queued = true;
            let group = m.group_id.clone();
            s.visible.insert(seq);
            s.release_group(&group);
        } else {
            s.hidden.push(Reverse((at, seq)));
        }
        drop(s);
        // Waiting long polls re-plan their wake-up for the new time.
        self.ready.notify_waiters();
        Ok(())
    }

    pub fn purge(&self) {
        let mut s = self.lock();
        s.messages.clear();
        s.visible.clear();
        s.hidden.clear();
        s.groups_in_flight.clear();
    }

    /// Visible, in flight and delayed counts.
    pub fn counts(&self, now_ms: i64) -> (usize, usize, usize) {
        let mut s = self.lock();
        s.promote(now_ms);
        let (mut visible, mut in_flight, mut delayed) = (0, 0, 0);
        for m in s.messages.values() {
            if m.visible_at_ms <= now_ms {
                visible += 1;
            } else if m.receive_count == 0 {
                delayed += 1;
            } else {
                in_flight += 1;
            }
        }
        (visible, in_flight, delayed)
    }

    /// Re-enqueues a message moved here from another queue's redrive.
    pub fn adopt(&self, m: NewMessageWithHistory, now_ms: i64) {
        let mut s = self.lock();
        let seq = s.next_seq;
        s.next_seq += 1;
        let mut stored = m.0;
        stored.visible_at_ms = now_ms;
        stored.queued = true;
        stored.nonce = 0;
        s.messages.insert(seq, stored);
        s.visible.insert(seq);
        drop(s);
        self.ready.notify_waiters();
    }
}

/// A message leaving its queue for a dead-letter queue, history kept.
pub struct NewMessageWithHistory(Stored);

impl From<Stored> for NewMessageWithHistory {
    fn from(s: Stored) -> Self {
        NewMessageWithHistory(s)
    }
}

impl State {
    /// Moves hidden messages whose time has come to the visible set; a
    /// received one that comes back frees its FIFO group.
    fn promote(&mut self, now_ms: i64) {
        while let Some(Reverse((at, seq))) = self.hidden.peek().copied() {
            if at > now_ms {
                break;
            }
            self.hidden.pop();
            let Some(m) = self.messages.get_mut(&seq) else {
                continue;
            };
            if m.visible_at_ms == at && !m.queued {
                m.queued = true;
                let group = (m.receive_count > 0).then(|| m.group_id.clone()).flatten();
                self.visible.insert(seq);
                self.release_group(&group);
            }
        }
    }

    fn release_group(&mut self, group: &Option<String>) {
        if let Some(g) = group {
            if let Some(n) = self.groups_in_flight.get_mut(g) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.groups_in_flight.remove(g);
                }
            }
        }
    }

    /// FIFO send rules; returns the deduplication id to use.
    fn fifo_checks(&self, m: &NewMessage) -> Result<String, ApiError> {
        if m.group_id.as_deref().unwrap_or("").is_empty() {
            return Err(ApiError::missing_parameter("MessageGroupId"));
        }
        if m.delay_s.is_some_and(|d| d > 0) {
            return Err(ApiError::invalid_parameter(
                "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is not valid for this queue type.",
            ));
        }
        match (&m.dedup_id, self.settings.content_based_dedup) {
            (Some(d), _) => Ok(d.clone()),
            (None, true) => Ok(hex::encode(Sha256::digest(m.body.as_bytes()))),
            (None, false) => Err(ApiError::invalid_parameter(
                "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly",
            )),
        }
    }
}

fn attributes_size(attrs: &BTreeMap<String, Attr>) -> usize {
    attrs
        .iter()
        .map(|(k, a)| {
            k.len()
                + a.data_type.len()
                + a.string.as_ref().map_or(0, String::len)
                + a.binary.as_ref().map_or(0, Vec::len)
        })
        .sum()
}

fn receipt_handle(seq: u64, nonce: u64) -> String {
    format!("{seq:x}-{nonce:016x}")
}

fn parse_receipt(handle: &str) -> Result<(u64, u64), ApiError> {
    let parsed = handle.split_once('-').and_then(|(s, n)| {
        Some((
            u64::from_str_radix(s, 16).ok()?,
            u64::from_str_radix(n, 16).ok()?,
        ))
    });
    parsed.ok_or_else(|| ApiError::receipt_invalid(handle))
}

/// A random id in the shape of an SQS MessageId (a UUID).
pub fn message_id() -> String {
    let a = fastrand::u128(..);
    let v4 = (a & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v4:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// All queues of the server.
pub struct Store {
    /// Base of queue URLs, e.g. `http://127.0.0.1:9324`.
    pub base_url: String,
    queues: Mutex<BTreeMap<String, Arc<Queue>>>,
}

impl Store {
    pub fn new(base_url: &str) -> Store {
        Store {
            base_url: base_url.trim_end_matches('/').to_string(),
            queues: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a queue, or returns the existing one when its settings match.
    pub fn create(
        &self,
        name: &str,
        settings: Settings,
        tags: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Queue>, ApiError> {
        let mut queues = self.lock();
        if let Some(q) = queues.get(name) {
            return Ok(q.clone());
        }
        let queue = Arc::new(Queue {
            name: name.to_string(),
            url: format!("{}/{ACCOUNT}/{name}", self.base_url),
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            created_ms: now_ms,
            state: Mutex::new(State {
                settings,
                tags,
                modified_ms: now_ms,
                ..State::default()
            }),
            ready: Notify::new(),
        });
        queues.insert(name.to_string(), queue.clone());
        Ok(queue)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Queue>, ApiError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(ApiError::no_queue)
    }

    /// The queue a URL names (by its last path segment; host ignored).
    pub fn by_url(&self, url: &str) -> Result<Arc<Queue>, ApiError> {
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        self.get(name)
    }

    pub fn by_arn(&self, arn: &str) -> Option<Arc<Queue>> {
        let name = arn.rsplit(':').next()?;
        self.lock().get(name).cloned()
    }

    pub fn delete(&self, name: &str) -> Result<(), ApiError> {
        let removed = self.lock().remove(name);
        match removed {
            Some(q) => {
                q.ready.notify_waiters();
                Ok(())
            }
            None => Err(ApiError::no_queue()),
        }
    }

    pub fn list(&self, prefix: &str) -> Vec<Arc<Queue>> {
        self.lock()
            .values()
            .filter(|q| q.name.starts_with(prefix))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Arc<Queue> {
        Store::new("http://x")
            .create("q", Settings::default(), BTreeMap::new(), 0)
            .unwrap()
    }

    fn msg(body: &str) -> NewMessage {
        NewMessage {
            body: body.into(),
            ..NewMessage::default()
        }
    }

    #[test]
    fn visibility_hides_then_returns_with_new_handle() {
        let q = queue();
        q.send(msg("a"), 0).unwrap();
        let (got, _) = q.take(10, Some(5), 1000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, 1);
        assert!(q.take(10, None, 5999).0.is_empty());
        let (again, _) = q.take(10, None, 6000);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(again[0].first_received_ms, 1000);
        assert_ne!(again[0].receipt_handle, got[0].receipt_handle);
        // The stale handle does not delete.
        q.delete(&got[0].receipt_handle, 6000).unwrap();
        assert_eq!(q.counts(6000), (0, 1, 0));
        q.delete(&again[0].receipt_handle, 6000).unwrap();
        assert_eq!(q.counts(6000), (0, 0, 0));
        assert!(q.delete("garbage", 6000).is_err());
    }

    #[test]
    fn delay_and_visibility_change() {
        let q = queue();
        q.send(
            NewMessage {
                delay_s: Some(2),
                ..msg("d")
            },
            0,
        )
        .unwrap();
        assert_eq!(q.counts(0), (0, 0, 1));
        assert!(q.take(1, None, 1999).0.is_empty());
        assert_eq!(q.next_visible_at(), Some(2000));
        let (got, _) = q.take(1, None, 2000);
        q.change_visibility(&got[0].receipt_handle, 0, 2001)
            .unwrap();
        assert_eq!(q.take(1, None, 2001).0.len(), 1);
    }

    #[test]
    fn fifo_keeps_group_order_and_locks_groups() {
        let q = Store::new("http://x")
            .create(
                "f.fifo",
                Settings {
                    fifo: true,
                    content_based_dedup: true,
                    ..Settings::default()
                },
                BTreeMap::new(),
                0,
            )
            .unwrap();
        let fifo = |body: &str, group: &str| NewMessage {
            body: body.into(),
            group_id: Some(group.into()),
            ..NewMessage::default()
        };
        for (b, g) in [("a1", "a"), ("b1", "b"), ("a2", "a")] {
            q.send(fifo(b, g), 0).unwrap();
        }
        let dup = q.send(fifo("a1", "a"), 1).unwrap();
        assert_eq!(q.counts(1).0, 3, "content-based duplicate not enqueued");
        assert!(dup.sequence_number.is_some());
        let (got, _) = q.take(1, Some(30), 10);
        assert_eq!(got[0].body, "a1");
        let (got2, _) = q.take(10, Some(30), 10);
        let bodies: Vec<&str> = got2.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(
            bodies,
            vec!["b1"],
            "group a is locked while a1 is in flight"
        );
        q.delete(&got[0].receipt_handle, 20).unwrap();
        let (got3, _) = q.take(10, Some(30), 20);
        assert_eq!(got3[0].body, "a2");
        assert!(q
            .send(
                NewMessage {
                    body: "x".into(),
                    ..NewMessage::default()
                },
                0
            )
            .is_err());
    }

    #[test]
    fn redrive_hands_over_after_max_receives() {
        let q = queue();
        let s = Settings {
            redrive: Some(("{}".into(), "arn:aws:sqs:us-east-1:0:dlq".into(), 2)),
            ..Settings::default()
        };
        q.set_settings(s, 0);
        q.send(msg("x"), 0).unwrap();
        for t in [0, 40_000] {
            assert_eq!(q.take(1, Some(30), t).0.len(), 1);
        }
        let (got, dead) = q.take(1, Some(30), 80_000);
        assert!(got.is_empty());
        assert_eq!(dead.len(), 1);
    }
}
