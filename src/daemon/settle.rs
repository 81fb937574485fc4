//! The one owner of what SQS must be told about each message the daemon
//! holds: its lease, and how it is settled.
//!
//! From the moment a message is received ([`Settler::hold`]) until SQS has
//! accepted its settlement, the settler keeps it invisible to other
//! consumers by renewing its visibility before the lease runs out, gathering
//! the renewals of many messages into one `ChangeMessageVisibilityBatch`.
//! A settlement ([`Settler::settle`]: delete, or visible again after some
//! seconds) replaces any renewal still queued for the same message, and is
//! never sent while another call for that message is under way, so the
//! actions SQS sees for one receipt handle always come in the order they
//! were decided: a late renewal can never undo a retry delay or a release.
//!
//! Deletes and visibility changes are batched (up to ten per call), sent
//! when a batch is full or has waited the linger. Every failed entry of a
//! batch result is looked at: a refusal for good (the sender's fault, such
//! as an expired receipt handle) is logged and counted; anything else is
//! retried with backoff until the message's visibility runs out, after
//! which SQS hands the message out again anyway. At shutdown,
//! [`SettlerTask::finish`] flushes until a deadline and reports what is
//! still unsettled.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::admin::metrics::Metrics;
use crate::aws::sqs_json::{self, BatchEntry, BatchFailure};
use crate::aws::{Queue, SqsError, MAX_BATCH};
use crate::daemon::policy::MAX_VISIBILITY_S;

/// What to do with one message once it is delivered (or not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Delete,
    /// Visible again after this many seconds (0: at once).
    ChangeVisibility(u32),
}

/// The two batch calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Delete,
    Visibility,
}

impl Kind {
    fn of(action: Action) -> Kind {
        match action {
            Action::Delete => Kind::Delete,
            Action::ChangeVisibility(_) => Kind::Visibility,
        }
    }

    pub fn call(self) -> sqs_json::Action {
        match self {
            Kind::Delete => sqs_json::Action::DeleteBatch,
            Kind::Visibility => sqs_json::Action::VisibilityBatch,
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Delete => 0,
            Kind::Visibility => 1,
        }
    }
}

/// A held message, as the rest of the daemon refers to it.
pub type Key = u64;

type Calls<'a> = Pin<Box<dyn Future<Output = Result<Vec<BatchFailure>, SqsError>> + Send + 'a>>;

/// The batch calls the settler makes; the real one is the worker queue.
pub trait BatchCalls: Send + Sync + 'static {
    fn batch<'a>(&'a self, kind: Kind, entries: &'a [BatchEntry<'a>]) -> Calls<'a>;
}

impl BatchCalls for Queue {
    fn batch<'a>(&'a self, kind: Kind, entries: &'a [BatchEntry<'a>]) -> Calls<'a> {
        Box::pin(self.api.batch(kind.call(), &self.url, entries))
    }
}

/// How the settler keeps leases and batches.
#[derive(Clone, Copy, Debug)]
pub struct Terms {
    /// Visibility (seconds) each renewal asks for: the lease.
    pub lease_s: u32,
    /// How long a settlement waits for others to fill a batch.
    pub linger: Duration,
    /// Most batch calls under way at once.
    pub max_calls: usize,
}

impl Terms {
    /// A held message's visibility is renewed this long before it runs out:
    /// half the lease, so that one renewal that fails (or hangs until its
    /// call is cut off) still leaves time for another, plus the linger the
    /// renewal may wait for its batch.
    pub fn renew_before(&self) -> Duration {
        Duration::from_secs(u64::from(self.lease_s)) / 2 + self.linger
    }
}

enum Command {
    Hold {
        key: Key,
        message_id: String,
        receipt_handle: String,
        received: Instant,
        deadline: Instant,
    },
    Settle {
        key: Key,
        action: Action,
    },
}

/// Hands messages to the settler task; cheap to clone.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Command>,
    next_key: Arc<AtomicU64>,
    held: Arc<AtomicUsize>,
}

impl Settler {
    /// Starts the settler task over `calls`.
    pub fn spawn(
        calls: Arc<dyn BatchCalls>,
        terms: Terms,
        metrics: Arc<Metrics>,
    ) -> (Settler, SettlerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (drain_tx, drain_rx) = oneshot::channel();
        let held = Arc::new(AtomicUsize::new(0));
        let state = State::new(calls, terms, metrics, held.clone());
        let task = tokio::spawn(state.run(rx, drain_rx));
        (
            Settler {
                tx,
                next_key: Arc::new(AtomicU64::new(1)),
                held,
            },
            SettlerTask {
                drain: drain_tx,
                task,
            },
        )
    }

    /// Takes charge of a message received by an answer that came at
    /// `received`, whose visibility runs out at `deadline`; from now on its
    /// lease is renewed until it is settled.
    pub fn hold(
        &self,
        message_id: &str,
        receipt_handle: String,
        received: Instant,
        deadline: Instant,
    ) -> Key {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.held.fetch_add(1, Ordering::Relaxed);
        let command = Command::Hold {
            key,
            message_id: message_id.to_string(),
            receipt_handle,
            received,
            deadline,
        };
        if self.tx.send(command).is_err() {
            self.held.fetch_sub(1, Ordering::Relaxed);
            tracing::error!(message_id, "message received after the settler stopped");
        }
        key
    }

    /// Settles a held message: its lease ends, and `action` is sent.
    pub fn settle(&self, key: Key, action: Action) {
        if self.tx.send(Command::Settle { key, action }).is_err() {
            tracing::error!(key, ?action, "settle requested after the settler stopped");
        }
    }

    /// Messages held now: received and not yet settled with SQS.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// The settler task; see [`SettlerTask::finish`].
pub struct SettlerTask {
    drain: oneshot::Sender<Instant>,
    task: JoinHandle<usize>,
}

impl SettlerTask {
    /// Sends everything still pending at once, retrying failures until each
    /// message's visibility runs out or `deadline` passes, whichever comes
    /// first. Returns how many messages were left unsettled (each is logged).
    pub async fn finish(self, deadline: Instant) -> usize {
        let _ = self.drain.send(deadline);
        match self.task.await {
            Ok(unsettled) => unsettled,
            Err(e) => {
                tracing::error!(error = %e, "the settler stopped abnormally; some settles may be lost");
                usize::MAX
            }
        }
    }
}

/// What is next for one held message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Renew the lease at this time (never, once SQS refused a renewal).
    Renew(Option<Instant>),
    /// Send this settlement.
    Send(Action),
}

struct Entry {
    message_id: String,
    receipt_handle: String,
    /// When SQS makes the message visible again, as far as we know (never
    /// later than the truth).
    deadline: Instant,
    next: Next,
    /// A batch call carrying this entry is under way.
    busy: bool,
    /// The ready queue the entry sits in, if any.
    queued: Option<Kind>,
    /// Failed tries of what is being sent now, for the backoff.
    failures: u32,
    /// When a failed settlement is tried again.
    retry_at: Option<Instant>,
    /// When the receive that brought the message answered.
    received: Instant,
    /// Before the delete goes out again, stretch the visibility to cover the
    /// whole time held (see [`Sent::Stretch`]).
    stretch: bool,
}

impl Entry {
    /// The call the next step goes out in.
    fn kind(&self) -> Kind {
        match self.next {
            Next::Send(Action::Delete) if !self.stretch => Kind::Delete,
            _ => Kind::Visibility,
        }
    }
}

/// What one entry of a call carried.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Renewal,
    Settlement(Action),
    /// A visibility change covering the whole time the message was held,
    /// before a delete is tried again. LocalStack (4.x) refuses to delete a
    /// FIFO message once the visibility timeout last set, counted from the
    /// *receive* rather than from the change, has passed ("The receipt
    /// handle has expired"), although the message is still in flight. AWS
    /// counts from the change and does not refuse such a delete.
    Stretch,
}

struct Done {
    kind: Kind,
    sent_at: Instant,
    keys: Vec<(Key, Sent)>,
    result: Result<Vec<BatchFailure>, SqsError>,
}

/// A timer: something to look at for `key` at `at`.
#[derive(PartialEq, Eq)]
struct Due {
    at: Instant,
    key: Key,
}

impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Earliest first out of the max-heap.
        other.at.cmp(&self.at).then(other.key.cmp(&self.key))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Entries ready to go out in one kind of call.
#[derive(Default)]
struct Ready {
    keys: VecDeque<Key>,
    /// When the oldest of them became ready (for the linger).
    since: Option<Instant>,
}

struct State {
    calls: Arc<dyn BatchCalls>,
    terms: Terms,
    metrics: Arc<Metrics>,
    held: Arc<AtomicUsize>,
    entries: HashMap<Key, Entry>,
    timers: BinaryHeap<Due>,
    ready: [Ready; 2],
    in_flight: JoinSet<Done>,
    /// Shutting down: no linger, and stop once nothing is left.
    draining: Option<Instant>,
    /// Settlements given up while draining: reported at the end.
    given_up_draining: usize,
}

/// Shortest and longest wait before retrying a failed settlement.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(3);
/// A retry is sent at least this long (plus the linger) before the
/// message's visibility runs out, or not at all.
const LAST_TRY_MARGIN: Duration = Duration::from_millis(50);

/// Timers of settled messages tolerated before the heap is swept.
const STALE_TIMERS_SLACK: usize = 1024;

/// Bounds of how long one batch call may take before it is cut off and
/// counted as failed (the client's own limit is 15 s).
const MIN_CALL_PATIENCE: Duration = Duration::from_secs(1);
const MAX_CALL_PATIENCE: Duration = Duration::from_secs(15);

impl State {
    fn new(
        calls: Arc<dyn BatchCalls>,
        terms: Terms,
        metrics: Arc<Metrics>,
        held: Arc<AtomicUsize>,
    ) -> State {
        State {
            calls,
            terms,
            metrics,
            held,
            entries: HashMap::new(),
            timers: BinaryHeap::new(),
            ready: [Ready::default(), Ready::default()],
            in_flight: JoinSet::new(),
            draining: None,
            given_up_draining: 0,
        }
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut drain: oneshot::Receiver<Instant>,
    ) -> usize {
        let mut open = true;
        loop {
            self.send_what_is_due(Instant::now());
            if let Some(deadline) = self.draining {
                // Deliveries have ended by the time the drain is asked for.
                if self.entries.is_empty() && self.in_flight.is_empty() {
                    return self.given_up_draining;
                }
                if Instant::now() >= deadline {
                    return self.abandon();
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                biased;
                Some(done) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    match done {
                        Ok(done) => self.completed(done),
                        Err(e) => tracing::error!(error = %e, "a settle call panicked"),
                    }
                }
                command = rx.recv(), if open => match command {
                    Some(c) => self.command(c),
                    None => open = false,
                },
                at = &mut drain, if self.draining.is_none() => {
                    // A dropped task handle drains at once.
                    let deadline = at.unwrap_or_else(|_| Instant::now());
                    self.start_draining(deadline);
                }
                _ = sleep_until(wake), if wake.is_some() => {}
                // Nothing can happen any more: no handles, no drain order.
                else => return self.abandon(),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Hold {
                key,
                message_id,
                receipt_handle,
                received,
                deadline,
            } => {
                let renew_at = self.renew_at(deadline);
                self.entries.insert(
                    key,
                    Entry {
                        message_id,
                        receipt_handle,
                        deadline,
                        next: Next::Renew(Some(renew_at)),
                        busy: false,
                        queued: None,
                        failures: 0,
                        retry_at: None,
                        received,
                        stretch: false,
                    },
                );
                self.timers.push(Due { at: renew_at, key });
                self.metrics.held.set(self.entries.len() as i64);
            }
            Command::Settle { key, action } => {
                let Some(entry) = self.entries.get_mut(&key) else {
                    tracing::error!(
                        key,
                        ?action,
                        "settle of a message the settler does not hold"
                    );
                    return;
                };
                entry.next = Next::Send(action);
                entry.failures = 0;
                entry.retry_at = None;
                if !entry.busy {
                    self.enqueue(key, Instant::now());
                }
            }
        }
    }

    fn renew_at(&self, deadline: Instant) -> Instant {
        deadline
            .checked_sub(self.terms.renew_before())
            .unwrap_or(deadline)
    }

    /// Puts an idle entry whose next step is a settlement into its ready
    /// queue (once).
    fn enqueue(&mut self, key: Key, now: Instant) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let kind = entry.kind();
        if entry.queued == Some(kind) {
            return;
        }
        entry.queued = Some(kind);
        let ready = &mut self.ready[kind.index()];
        ready.keys.push_back(key);
        ready.since.get_or_insert(now);
    }

    /// Renewals that are due, and batches that are full or have lingered.
    fn send_what_is_due(&mut self, now: Instant) {
        // Leases due for renewal, plus those due soon when a batch of
        // renewals goes out anyway; and settlements due for another try.
        let slack = self.terms.renew_before() / 2;
        while let Some(due) = self.timers.peek() {
            let (at, key) = (due.at, due.key);
            let entry = self.entries.get(&key);
            let renewal = entry.is_some_and(|e| e.next == Next::Renew(Some(at)));
            let retry =
                entry.is_some_and(|e| e.retry_at == Some(at) && matches!(e.next, Next::Send(_)));
            let batching = !self.ready[Kind::Visibility.index()].keys.is_empty();
            let take = at <= now || (renewal && batching && at <= now + slack);
            if entry.is_some() && (renewal || retry) && !take {
                break;
            }
            self.timers.pop();
            let idle = entry.is_some_and(|e| !e.busy);
            if (renewal || retry) && idle && at <= now + slack {
                if let Some(e) = self.entries.get_mut(&key) {
                    e.retry_at = None;
                }
                self.enqueue(key, now);
            }
        }
        for kind in [Kind::Delete, Kind::Visibility] {
            loop {
                if self.in_flight.len() >= self.terms.max_calls {
                    return;
                }
                let ready = &self.ready[kind.index()];
                let full = ready.keys.len() >= MAX_BATCH;
                let lingered = ready
                    .since
                    .is_some_and(|t| t + self.terms.linger <= now || self.draining.is_some());
                if !(full || (lingered && !ready.keys.is_empty())) {
                    break;
                }
                self.start_call(kind, now);
            }
        }
    }

    /// Takes up to ten ready entries of `kind` into one call.
    fn start_call(&mut self, kind: Kind, now: Instant) {
        let mut keys = Vec::with_capacity(MAX_BATCH);
        let mut handles = Vec::with_capacity(MAX_BATCH);
        let ready = &mut self.ready[kind.index()];
        while keys.len() < MAX_BATCH {
            let Some(key) = ready.keys.pop_front() else {
                break;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.queued != Some(kind) || entry.busy {
                continue;
            }
            entry.queued = None;
            if entry.kind() != kind {
                // Moved on to the other kind of call; it is queued there.
                continue;
            }
            let (sent, timeout) = match entry.next {
                Next::Send(Action::Delete) if entry.stretch => {
                    let held_s = entry.received.elapsed().as_secs().saturating_add(1);
                    let cover = held_s.saturating_add(u64::from(self.terms.lease_s));
                    (
                        Sent::Stretch,
                        Some(cover.min(u64::from(MAX_VISIBILITY_S)) as u32),
                    )
                }
                Next::Send(action @ Action::Delete) => (Sent::Settlement(action), None),
                Next::Send(action @ Action::ChangeVisibility(s)) => {
                    (Sent::Settlement(action), Some(s))
                }
                Next::Renew(_) => (Sent::Renewal, Some(self.terms.lease_s)),
            };
            entry.busy = true;
            keys.push((key, sent));
            handles.push((entry.receipt_handle.clone(), timeout));
        }
        ready.since = if ready.keys.is_empty() {
            None
        } else {
            Some(now)
        };
        if keys.is_empty() {
            return;
        }
        tracing::debug!(
            action = kind.call().name(),
            entries = keys.len(),
            renewals = keys
                .iter()
                .filter(|(_, s)| matches!(s, Sent::Renewal))
                .count(),
            "settle call"
        );
        // A call that hangs must not outlive the leases it is meant to keep:
        // it is cut off halfway to the earliest of its messages' visibility
        // deadlines, so a retry can still go out in time.
        let earliest = keys
            .iter()
            .filter_map(|(k, _)| self.entries.get(k).map(|e| e.deadline))
            .min()
            .unwrap_or(now);
        let patience = (earliest.saturating_duration_since(now) / 2)
            .clamp(MIN_CALL_PATIENCE, MAX_CALL_PATIENCE);
        let calls = self.calls.clone();
        let metrics = self.metrics.clone();
        self.in_flight.spawn(async move {
            let entries: Vec<BatchEntry<'_>> = handles
                .iter()
                .enumerate()
                .map(|(i, (handle, timeout))| BatchEntry {
                    id: i.to_string(),
                    receipt_handle: handle,
                    visibility_timeout: *timeout,
                })
                .collect();
            let sent_at = Instant::now();
            let result = match tokio::time::timeout(patience, calls.batch(kind, &entries)).await {
                Ok(result) => result,
                Err(_) => Err(SqsError::transient(format!(
                    "no answer within {} ms",
                    patience.as_millis()
                ))),
            };
            metrics.sqs_request(kind.call().name(), result.is_ok());
            Done {
                kind,
                sent_at,
                keys,
                result,
            }
        });
    }

    fn completed(&mut self, done: Done) {
        let now = Instant::now();
        let Done {
            kind,
            sent_at,
            keys,
            result,
        } = done;
        // Per entry: None = accepted; Some((for good, reason)) = refused.
        let mut outcome: Vec<Option<(bool, String)>> = vec![None; keys.len()];
        match result {
            Ok(failures) => {
                for f in failures {
                    if let Some(slot) = f.id.parse::<usize>().ok().and_then(|i| outcome.get_mut(i))
                    {
                        let reason = format!("{}: {}", f.code, f.message.as_deref().unwrap_or(""));
                        *slot = Some((f.sender_fault, reason));
                    }
                }
            }
            Err(e) => {
                if !e.permanent {
                    tracing::warn!(action = kind.call().name(), entries = keys.len(),
                        error = %e, "batch call failed; retrying while the messages' visibility lasts");
                }
                for slot in &mut outcome {
                    *slot = Some((e.permanent, e.message.clone()));
                }
            }
        }
        for ((key, sent), result) in keys.into_iter().zip(outcome) {
            self.entry_completed(key, sent, result, sent_at, now);
        }
        self.metrics.held.set(self.entries.len() as i64);
    }

    fn entry_completed(
        &mut self,
        key: Key,
        sent: Sent,
        result: Option<(bool, String)>,
        sent_at: Instant,
        now: Instant,
    ) {
        let lease = Duration::from_secs(u64::from(self.terms.lease_s));
        let renew_before = self.terms.renew_before();
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.busy = false;
        let still_renewing = matches!(entry.next, Next::Renew(_));
        match (sent, result) {
            (Sent::Renewal, None) => {
                self.metrics.lease_renewals.inc();
                self.metrics.visibility_extended.inc();
                entry.deadline = sent_at + lease;
                entry.failures = 0;
                if still_renewing {
                    let at = entry.deadline.checked_sub(renew_before).unwrap_or(now);
                    entry.next = Next::Renew(Some(at));
                    self.timers.push(Due { at, key });
                }
            }
            (Sent::Renewal, Some((for_good, reason))) => {
                let retry = retry_at(entry, now, self.terms.linger, for_good);
                match retry {
                    Some(at) if still_renewing => {
                        entry.next = Next::Renew(Some(at));
                        self.timers.push(Due { at, key });
                    }
                    Some(_) => {}
                    None => {
                        self.metrics.lease_renewal_failures.inc();
                        tracing::warn!(message_id = %entry.message_id, reason,
                            "could not renew the message's lease; delivery goes on, and its settlement reports its own result");
                        if still_renewing {
                            entry.next = Next::Renew(None);
                        }
                    }
                }
            }
            (Sent::Settlement(action), None) if entry.next == Next::Send(action) => {
                if action == Action::Delete {
                    self.metrics.deleted.inc();
                }
                self.remove(key);
                return;
            }
            (Sent::Settlement(action), Some((for_good, reason)))
                if entry.next == Next::Send(action) =>
            {
                let retry = retry_at(entry, now, self.terms.linger, for_good);
                if action == Action::Delete && reason.contains("receipt handle has expired") {
                    entry.stretch = true;
                }
                match retry {
                    Some(at) => {
                        entry.retry_at = Some(at);
                        self.timers.push(Due { at, key });
                    }
                    None if for_good => self.give_up(key, &reason),
                    None => {
                        self.give_up(key, &format!("{reason}; the message's visibility ran out"))
                    }
                }
                return;
            }
            // A different settlement was decided while this call was under
            // way; it goes out below.
            (Sent::Settlement(_), _) => {}
            (Sent::Stretch, None) => entry.stretch = false,
            (Sent::Stretch, Some((for_good, reason))) => {
                let retry = retry_at(entry, now, self.terms.linger, for_good);
                match retry {
                    Some(at) => {
                        entry.retry_at = Some(at);
                        self.timers.push(Due { at, key });
                    }
                    None => self.give_up(key, &reason),
                }
                return;
            }
        }
        // A settlement decided while the call was under way goes out now.
        if matches!(entry.next, Next::Send(_)) {
            self.enqueue(key, now);
        }
    }

    fn remove(&mut self, key: Key) {
        if self.entries.remove(&key).is_some() {
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        // Timers of settled messages wait in the heap until they come due,
        // which with long leases can be hours: sweep them out once they
        // far outnumber the messages still held.
        if self.timers.len() > STALE_TIMERS_SLACK + 4 * self.entries.len() {
            let entries = &self.entries;
            self.timers.retain(|d| entries.contains_key(&d.key));
        }
    }

    fn give_up(&mut self, key: Key, reason: &str) {
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        let action = match entry.next {
            Next::Send(a) => a,
            Next::Renew(_) => Action::ChangeVisibility(0),
        };
        let kind = Kind::of(action);
        self.metrics
            .settle_failures
            .with_label_values(&[kind.call().name()])
            .inc();
        match action {
            Action::Delete => tracing::error!(message_id = %entry.message_id, reason,
                "could not delete a delivered message; SQS will deliver it again"),
            Action::ChangeVisibility(s) => tracing::warn!(message_id = %entry.message_id, reason,
                visibility_s = s, "could not change visibility; the message keeps its current timeout"),
        }
        if self.draining.is_some() {
            tracing::error!(message_id = %entry.message_id, ?action,
                "shutting down with this message's settlement not accepted by SQS");
            self.given_up_draining += 1;
        }
        self.remove(key);
    }

    fn start_draining(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        // Whatever is still held with no settlement (a delivery that ended
        // without one) is given back at once rather than left hidden.
        let now = Instant::now();
        let orphans: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e.next, Next::Renew(_)))
            .map(|(k, _)| *k)
            .collect();
        for key in orphans {
            if let Some(e) = self.entries.get_mut(&key) {
                tracing::warn!(message_id = %e.message_id, "held message with no settlement at shutdown; giving it back");
                e.next = Next::Send(Action::ChangeVisibility(0));
                if !e.busy {
                    self.enqueue(key, now);
                }
            }
        }
    }

    /// The drain deadline passed: report and count what is left.
    fn abandon(&mut self) -> usize {
        let left: Vec<Key> = self.entries.keys().copied().collect();
        for key in &left {
            if let Some(entry) = self.entries.get(key) {
                let action = match entry.next {
                    Next::Send(a) => a,
                    Next::Renew(_) => Action::ChangeVisibility(0),
                };
                self.metrics
                    .settle_failures
                    .with_label_values(&[Kind::of(action).call().name()])
                    .inc();
                tracing::error!(message_id = %entry.message_id, ?action,
                    "shutdown deadline passed before SQS accepted this message's settlement");
            }
            self.remove(*key);
        }
        self.in_flight.abort_all();
        left.len() + self.given_up_draining
    }

    fn next_wake(&self) -> Option<Instant> {
        let timer = self.timers.peek().map(|d| d.at);
        // With every call slot taken, only a finished call can let a batch
        // go out: no reason to wake for the linger.
        let can_send = self.in_flight.len() < self.terms.max_calls;
        let linger = self
            .ready
            .iter()
            .filter(|r| can_send && !r.keys.is_empty())
            .filter_map(|r| r.since)
            .map(|t| t + self.terms.linger)
            .min();
        [timer, linger, self.draining].into_iter().flatten().min()
    }
}

/// When to try again after a failure: never when SQS refused `for_good`;
/// otherwise after a growing backoff with jitter, and never so late that the
/// try (after the batch linger) could reach SQS after the message's
/// visibility ran out; `None` when no time is left for another try.
fn retry_at(entry: &mut Entry, now: Instant, linger: Duration, for_good: bool) -> Option<Instant> {
    if for_good {
        return None;
    }
    entry.failures = entry.failures.saturating_add(1);
    let exp = RETRY_MIN.saturating_mul(1u32 << entry.failures.min(8).saturating_sub(1));
    let ceiling = exp.min(RETRY_MAX);
    let wait = ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0);
    let last_chance = entry.deadline.checked_sub(linger + LAST_TRY_MARGIN)?;
    (last_chance > now).then(|| (now + wait).min(last_chance))
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

#[cfg(test)]
mod tests;
