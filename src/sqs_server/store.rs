//! The embedded server's queues and their semantics: visibility timeouts,
//! delays, retention, receive counts, redrive to a dead-letter queue, and
//! long polls woken as soon as a message becomes available.
//!
//! Each queue keeps its messages in a map by sequence number, the set of the
//! ones visible now (in send order, which FIFO queues need), a min-heap of
//! the times at which hidden ones become visible, and the set of all of them
//! by send time, so that retention expires the oldest first whether or not
//! anyone reads the queue. Heap entries may go stale (a message deleted or
//! hidden again); they are checked against the message when they come up,
//! and the heap is rebuilt when stale entries outnumber live ones.
//!
//! Every byte a message (or a FIFO deduplication id) holds is counted
//! against one limit for the whole server; past it, sends are refused with
//! `OverLimit` rather than growing without bound.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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

/// Default bound on the bytes all queues of a server hold.
pub const DEFAULT_MEMORY_LIMIT: usize = 512 * 1024 * 1024;
/// Most queues one server holds.
pub const MAX_QUEUES: usize = 10_000;
/// Bytes counted for a message beyond its body and attributes (ids,
/// digests, bookkeeping).
const MESSAGE_OVERHEAD: usize = 512;
/// Bytes counted for a remembered FIFO deduplication id beyond the id.
const DEDUP_OVERHEAD: usize = 128;
/// How often, at most, one request sweeps every queue for expired messages.
const SWEEP_INTERVAL_MS: i64 = 1000;
/// AWS allows one PurgeQueue per queue in this time.
const PURGE_INTERVAL_MS: i64 = 60_000;

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
    /// Receives over the message's life (`ApproximateReceiveCount`).
    receive_count: u32,
    /// Receives from the queue it is in now, which its redrive policy
    /// counts: a message moved in must be delivered here before it moves on.
    receives_here: u32,
    visible_at_ms: i64,
    /// In the visible set (receivable now).
    queued: bool,
    /// Counted in its FIFO group's lock (received, not yet back or gone).
    holds_group: bool,
    nonce: u64,
    /// Bytes counted against the server's limit.
    size: usize,
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

/// Bytes held by all queues of one server, against its limit.
#[derive(Debug)]
struct Usage {
    bytes: AtomicUsize,
    limit: usize,
}

impl Usage {
    /// Counts `n` more bytes unless that passes the limit.
    fn reserve(&self, n: usize) -> Result<(), ApiError> {
        let mut current = self.bytes.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(n) > self.limit {
                return Err(ApiError::over_limit(format!(
                    "The embedded SQS server holds its limit of {} bytes of messages; delete or purge some first.",
                    self.limit
                )));
            }
            match self.bytes.compare_exchange_weak(
                current,
                current + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts bytes moved in from elsewhere, which must not be refused.
    fn force(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }
}

struct State {
    settings: Settings,
    tags: BTreeMap<String, String>,
    messages: HashMap<u64, Stored>,
    /// Receivable messages in send order.
    visible: BTreeSet<u64>,
    hidden: BinaryHeap<Reverse<(i64, u64)>>,
    /// Every message by send time, for retention.
    by_age: BTreeSet<(i64, u64)>,
    next_seq: u64,
    modified_ms: i64,
    /// FIFO: messages in flight per group; a group with any is locked.
    groups_in_flight: HashMap<String, u32>,
    /// FIFO: deduplication id -> (expiry, message id, sequence number).
    dedup: HashMap<String, (i64, String, String)>,
    /// FIFO: deduplication ids in the order they expire.
    dedup_order: VecDeque<(i64, String)>,
    last_purge_ms: Option<i64>,
    /// Deleted from the store: takes no more messages.
    closed: bool,
    usage: Arc<Usage>,
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

    pub fn update_tags<T>(&self, f: impl FnOnce(&mut BTreeMap<String, String>) -> T) -> T {
        f(&mut self.lock().tags)
    }

    pub fn send(&self, m: NewMessage, now_ms: i64) -> Result<Sent, ApiError> {
        let mut s = self.lock();
        s.expire(now_ms);
        let payload = m.body.len() + attributes_size(&m.attributes);
        if payload > s.settings.max_message_size as usize {
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
        let size = payload
            + MESSAGE_OVERHEAD
            + m.trace_header.as_ref().map_or(0, String::len)
            + m.group_id.as_ref().map_or(0, String::len)
            + dedup_id.as_ref().map_or(0, String::len);
        let dedup_size = dedup_id.as_ref().map_or(0, |d| d.len() + DEDUP_OVERHEAD);
        s.usage.reserve(size + dedup_size)?;
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
            let expiry = now_ms + DEDUP_WINDOW_MS;
            s.dedup
                .insert(d.clone(), (expiry, sent.id.clone(), n.clone()));
            s.dedup_order.push_back((expiry, d.clone()));
        }
        let visible_at_ms = now_ms + i64::from(delay) * 1000;
        s.insert(
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
                receives_here: 0,
                visible_at_ms,
                queued: delay == 0,
                holds_group: false,
                nonce: 0,
                size,
            },
        );
        if delay > 0 {
            s.hidden.push(Reverse((visible_at_ms, seq)));
        }
        drop(s);
        self.ready.notify_waiters();
        Ok(sent)
    }

    /// Takes up to `max` visible messages and hides them for `visibility_s`.
    /// When `may_redrive` (the dead-letter queue exists and is another
    /// queue), messages received here maxReceiveCount times already are
    /// returned in the second list instead, removed, for the caller to move
    /// to the dead-letter queue; otherwise they are delivered as usual, as
    /// AWS keeps them when it cannot move them.
    /// On a FIFO queue, messages come in send order per group, and a group
    /// with a message in flight gives none until it is settled.
    pub fn take(
        &self,
        max: usize,
        visibility_s: Option<u32>,
        now_ms: i64,
        may_redrive: bool,
    ) -> (Vec<Received>, Vec<NewMessageWithHistory>) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.promote(now_ms);
        s.expire(now_ms);
        let visibility_s = visibility_s.unwrap_or(s.settings.visibility_timeout_s);
        let max_receives = s
            .settings
            .redrive
            .as_ref()
            .map(|r| r.2)
            .filter(|_| may_redrive);
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
            if max_receives.is_some_and(|n| m.receives_here >= n) {
                if let Some(m) = s.remove(seq) {
                    dead.push(NewMessageWithHistory(Box::new(m)));
                }
                continue;
            }
            s.visible.remove(&seq);
            m.queued = false;
            m.receive_count += 1;
            m.receives_here += 1;
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
            if let (Some(g), false) = (&m.group_id, m.holds_group) {
                m.holds_group = true;
                *s.groups_in_flight.entry(g.clone()).or_default() += 1;
            }
            s.hidden.push(Reverse((at, seq)));
            out.push(r);
        }
        s.compact_hidden();
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
            // Frees the message's FIFO group if it holds it, whether or not
            // its visibility has run out yet.
            s.remove(seq);
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
        let mut guard = self.lock();
        let s = &mut *guard;
        let Some(m) = s.messages.get_mut(&seq).filter(|m| m.nonce == nonce) else {
            return Err(ApiError::invalid_parameter(format!(
                "Value {} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change.",
                super::error::echo(handle)
            )));
        };
        if !m.in_flight(now_ms) {
            return Err(ApiError::message_not_inflight());
        }
        m.visible_at_ms = now_ms + i64::from(timeout_s) * 1000;
        let at = m.visible_at_ms;
        if timeout_s == 0 {
            m.queued = true;
            let group = m.group_id.clone().filter(|_| m.holds_group);
            m.holds_group = false;
            s.visible.insert(seq);
            s.release_group(&group);
        } else {
            s.hidden.push(Reverse((at, seq)));
        }
        drop(guard);
        // Waiting long polls re-plan their wake-up for the new time.
        self.ready.notify_waiters();
        Ok(())
    }

    /// Deletes every message; AWS allows this once a minute per queue.
    pub fn purge(&self, now_ms: i64) -> Result<(), ApiError> {
        let mut s = self.lock();
        if s.last_purge_ms
            .is_some_and(|t| now_ms - t < PURGE_INTERVAL_MS)
        {
            return Err(ApiError::purge_in_progress(&self.name));
        }
        s.last_purge_ms = Some(now_ms);
        s.clear();
        Ok(())
    }

    /// Visible, in flight and delayed counts.
    pub fn counts(&self, now_ms: i64) -> (usize, usize, usize) {
        let mut s = self.lock();
        s.promote(now_ms);
        s.expire(now_ms);
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

    /// Drops messages past the queue's retention period.
    pub fn expire(&self, now_ms: i64) {
        self.lock().expire(now_ms);
    }

    /// Re-enqueues a message moved here from another queue's redrive; gives
    /// it back if this queue has been deleted meanwhile.
    pub fn adopt(
        &self,
        m: NewMessageWithHistory,
        now_ms: i64,
    ) -> Result<(), NewMessageWithHistory> {
        let mut s = self.lock();
        if s.closed {
            return Err(m);
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        let mut stored = *m.0;
        stored.visible_at_ms = now_ms;
        stored.queued = true;
        stored.holds_group = false;
        stored.receives_here = 0;
        stored.nonce = 0;
        s.usage.force(stored.size);
        s.insert(seq, stored);
        drop(s);
        self.ready.notify_waiters();
        Ok(())
    }

    /// Marks the queue deleted and lets go of its messages.
    fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.clear();
        let remembered: usize = s
            .dedup_order
            .iter()
            .map(|(_, id)| id.len() + DEDUP_OVERHEAD)
            .sum();
        s.usage.release(remembered);
        s.dedup_order.clear();
        s.dedup.clear();
    }
}

/// A message leaving its queue for a dead-letter queue, history kept.
pub struct NewMessageWithHistory(Box<Stored>);

impl State {
    /// Adds a message: visible now if `queued`, hidden otherwise (the
    /// caller schedules it).
    fn insert(&mut self, seq: u64, m: Stored) {
        if m.queued {
            self.visible.insert(seq);
        }
        self.by_age.insert((m.sent_ms, seq));
        self.messages.insert(seq, m);
    }

    /// Removes a message wherever it is, freeing its FIFO group and its
    /// bytes.
    fn remove(&mut self, seq: u64) -> Option<Stored> {
        let mut m = self.messages.remove(&seq)?;
        self.visible.remove(&seq);
        self.by_age.remove(&(m.sent_ms, seq));
        if m.holds_group {
            m.holds_group = false;
            self.release_group(&m.group_id);
        }
        self.usage.release(m.size);
        Some(m)
    }

    fn clear(&mut self) {
        let held: usize = self.messages.values().map(|m| m.size).sum();
        self.usage.release(held);
        self.messages.clear();
        self.visible.clear();
        self.hidden.clear();
        self.by_age.clear();
        self.groups_in_flight.clear();
    }

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
                let group = m.group_id.clone().filter(|_| m.holds_group);
                m.holds_group = false;
                self.visible.insert(seq);
                self.release_group(&group);
            }
        }
    }

    /// Drops messages older than the retention period, in flight or not,
    /// and deduplication ids past their window.
    fn expire(&mut self, now_ms: i64) {
        let retention_ms = i64::from(self.settings.retention_s) * 1000;
        while let Some(&(sent_ms, seq)) = self.by_age.first() {
            if now_ms - sent_ms <= retention_ms {
                break;
            }
            if self.remove(seq).is_none() {
                self.by_age.remove(&(sent_ms, seq));
            }
        }
        while let Some((expiry, _)) = self.dedup_order.front() {
            if *expiry > now_ms {
                break;
            }
            let Some((expiry, id)) = self.dedup_order.pop_front() else {
                break;
            };
            if self.dedup.get(&id).is_some_and(|(e, _, _)| *e == expiry) {
                self.dedup.remove(&id);
            }
            self.usage.release(id.len() + DEDUP_OVERHEAD);
        }
    }

    /// Rebuilds the heap of hidden messages when stale entries (messages
    /// deleted, or hidden again since) outnumber live ones.
    fn compact_hidden(&mut self) {
        if self.hidden.len() <= 2 * self.messages.len() + 1024 {
            return;
        }
        let live: Vec<Reverse<(i64, u64)>> = self
            .messages
            .iter()
            .filter(|(_, m)| !m.queued)
            .map(|(seq, m)| Reverse((m.visible_at_ms, *seq)))
            .collect();
        self.hidden = BinaryHeap::from(live);
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

/// Message size as AWS counts it: body plus each attribute's name, type and
/// value.
pub fn attributes_size(attrs: &BTreeMap<String, Attr>) -> usize {
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
    usage: Arc<Usage>,
    last_sweep_ms: AtomicI64,
}

impl Store {
    pub fn new(base_url: &str) -> Store {
        Store {
            base_url: base_url.trim_end_matches('/').to_string(),
            queues: Mutex::default(),
            usage: Arc::new(Usage {
                bytes: AtomicUsize::new(0),
                limit: DEFAULT_MEMORY_LIMIT,
            }),
            last_sweep_ms: AtomicI64::new(i64::MIN),
        }
    }

    /// The same store with another bound on the bytes its queues hold.
    pub fn with_memory_limit(mut self, bytes: usize) -> Store {
        self.usage = Arc::new(Usage {
            bytes: AtomicUsize::new(0),
            limit: bytes,
        });
        self
    }

    /// Bytes the queues hold now, as counted against the limit.
    pub fn stored_bytes(&self) -> usize {
        self.usage.bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a queue, or returns the existing one of that name.
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
        if queues.len() >= MAX_QUEUES {
            return Err(ApiError::over_limit(format!(
                "The embedded SQS server holds its limit of {MAX_QUEUES} queues."
            )));
        }
        let queue = Arc::new(Queue {
            name: name.to_string(),
            url: format!("{}/{ACCOUNT}/{name}", self.base_url),
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"),
            created_ms: now_ms,
            state: Mutex::new(State {
                settings,
                tags,
                messages: HashMap::new(),
                visible: BTreeSet::new(),
                hidden: BinaryHeap::new(),
                by_age: BTreeSet::new(),
                next_seq: 0,
                modified_ms: now_ms,
                groups_in_flight: HashMap::new(),
                dedup: HashMap::new(),
                dedup_order: VecDeque::new(),
                last_purge_ms: None,
                closed: false,
                usage: self.usage.clone(),
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
                q.close();
                q.ready.notify_waiters();
                Ok(())
            }
            None => Err(ApiError::no_queue()),
        }
    }

    /// Queues whose names start with `prefix` and come after `after`, in
    /// name order.
    pub fn list(&self, prefix: &str, after: Option<&str>) -> Vec<Arc<Queue>> {
        use std::ops::Bound;
        let start = match after {
            Some(name) => Bound::Excluded(name.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        self.lock()
            .range((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix) || name.as_str() < prefix)
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, q)| q.clone())
            .collect()
    }

    /// Expires old messages in every queue, at most once a second however
    /// often it is called: called on every request, so that queues nobody
    /// reads are swept too.
    pub fn sweep(&self, now_ms: i64) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_INTERVAL_MS
            || self
                .last_sweep_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let queues: Vec<Arc<Queue>> = self.lock().values().cloned().collect();
        for q in queues {
            q.expire(now_ms);
        }
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
        let (got, _) = q.take(10, Some(5), 1000, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, 1);
        assert!(q.take(10, None, 5999, true).0.is_empty());
        let (again, _) = q.take(10, None, 6000, true);
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
        assert!(q.take(1, None, 1999, true).0.is_empty());
        assert_eq!(q.next_visible_at(), Some(2000));
        let (got, _) = q.take(1, None, 2000, true);
        q.change_visibility(&got[0].receipt_handle, 0, 2001)
            .unwrap();
        assert_eq!(q.take(1, None, 2001, true).0.len(), 1);
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
        let (got, _) = q.take(1, Some(30), 10, true);
        assert_eq!(got[0].body, "a1");
        let (got2, _) = q.take(10, Some(30), 10, true);
        let bodies: Vec<&str> = got2.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(
            bodies,
            vec!["b1"],
            "group a is locked while a1 is in flight"
        );
        q.delete(&got[0].receipt_handle).unwrap();
        let (got3, _) = q.take(10, Some(30), 20, true);
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
            assert_eq!(q.take(1, Some(30), t, true).0.len(), 1);
        }
        let (got, dead) = q.take(1, Some(30), 80_000, true);
        assert!(got.is_empty());
        assert_eq!(dead.len(), 1);
    }
}
