//! The embedded server's queues and their semantics: visibility timeouts,
//! delays, retention, receive counts, redrive to a dead-letter queue, and
//! long polls woken as soon as a message becomes available.
//!
//! Each queue keeps its messages in a map by sequence number, a deque of the
//! ones visible now, and a min-heap of the times at which hidden ones become
//! visible. Heap and deque entries may go stale (a message deleted or hidden
//! again); they are checked against the message when taken.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::error::ApiError;
use super::md5;

/// Account id in every queue URL and ARN.
pub const ACCOUNT: &str = "000000000000";
/// Region in every ARN.
pub const REGION: &str = "us-east-1";

/// A message attribute as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub data_type: String,
    pub string: Option<String>,
    pub binary: Option<Vec<u8>>,
}

/// What a sender gives.
#[derive(Clone, Debug, Default)]
pub struct NewMessage {
    pub body: String,
    pub delay_s: Option<u32>,
    pub attributes: BTreeMap<String, Attr>,
    pub trace_header: Option<String>,
}

/// What a sender gets back.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: String,
    pub md5_body: String,
    pub md5_attributes: Option<String>,
    pub md5_system: Option<String>,
}

#[derive(Clone, Debug)]
struct Stored {
    id: String,
    body: String,
    md5_body: String,
    md5_attributes: Option<String>,
    attributes: BTreeMap<String, Attr>,
    trace_header: Option<String>,
    sent_ms: i64,
    first_received_ms: Option<i64>,
    receive_count: u32,
    visible_at_ms: i64,
    queued: bool,
    nonce: u64,
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

#[derive(Default)]
struct State {
    settings: Settings,
    tags: BTreeMap<String, String>,
    messages: HashMap<u64, Stored>,
    visible: VecDeque<u64>,
    hidden: BinaryHeap<Reverse<(i64, u64)>>,
    next_seq: u64,
    modified_ms: i64,
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
        let delay = m.delay_s.unwrap_or(s.settings.delay_s);
        let seq = s.next_seq;
        s.next_seq += 1;
        let sent = Sent {
            id: message_id(),
            md5_body: md5::of_body(&m.body),
            md5_attributes: md5::of_attributes(&m.attributes),
            md5_system: m.trace_header.as_deref().map(md5::of_trace_header),
        };
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
                sent_ms: now_ms,
                first_received_ms: None,
                receive_count: 0,
                visible_at_ms,
                queued: delay == 0,
                nonce: 0,
            },
        );
        if delay == 0 {
            s.visible.push_back(seq);
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
    pub fn take(
        &self,
        max: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
    ) -> (Vec<Received>, Vec<NewMessageWithHistory>) {
        let mut s = self.lock();
        s.promote(now_ms);
        let visibility_s = visibility_s.unwrap_or(s.settings.visibility_timeout_s);
        let retention_ms = i64::from(s.settings.retention_s) * 1000;
        let max_receives = s.settings.redrive.as_ref().map(|r| r.2);
        let mut out = Vec::new();
        let mut dead = Vec::new();
        while out.len() < max {
            let Some(seq) = s.visible.pop_front() else {
                break;
            };
            let Some(m) = s.messages.get_mut(&seq) else {
                continue;
            };
            if !m.queued || m.visible_at_ms > now_ms {
                continue;
            }
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
                sent_ms: m.sent_ms,
                first_received_ms: first,
                receive_count: m.receive_count,
            };
            let at = m.visible_at_ms;
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
    pub fn delete(&self, handle: &str) -> Result<(), ApiError> {
        let (seq, nonce) = parse_receipt(handle)?;
        let mut s = self.lock();
        if s.messages
            .get(&seq)
            .is_some_and(|m| m.nonce == nonce && m.receive_count > 0)
        {
            s.messages.remove(&seq);
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
        if m.queued || m.visible_at_ms <= now_ms {
            return Err(ApiError::message_not_inflight());
        }
        m.visible_at_ms = now_ms + i64::from(timeout_s) * 1000;
        let at = m.visible_at_ms;
        if timeout_s == 0 {
            m.queued = true;
            s.visible.push_back(seq);
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
        s.visible.push_back(seq);
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
    /// Moves hidden messages whose time has come to the visible deque.
    fn promote(&mut self, now_ms: i64) {
        while let Some(Reverse((at, seq))) = self.hidden.peek().copied() {
            if at > now_ms {
                break;
            }
            self.hidden.pop();
            if let Some(m) = self.messages.get_mut(&seq) {
                if m.visible_at_ms == at && !m.queued {
                    m.queued = true;
                    self.visible.push_back(seq);
                }
            }
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
        q.delete(&got[0].receipt_handle).unwrap();
        assert_eq!(q.counts(6000), (0, 1, 0));
        q.delete(&again[0].receipt_handle).unwrap();
        assert_eq!(q.counts(6000), (0, 0, 0));
        assert!(q.delete("garbage").is_err());
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
