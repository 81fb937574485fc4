//! Settling messages with SQS: deletes and visibility changes are gathered
//! into batches of up to ten (`DeleteMessageBatch`,
//! `ChangeMessageVisibilityBatch`), sent when a batch is full or has waited
//! the linger, and every failed entry of a batch result is looked at: server
//! faults are retried with backoff, the rest are logged and counted. None is
//! dropped silently.
//!
//! The [`Settler`] handle is cheap to clone; the batching task ends, after
//! flushing everything, once every handle is dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::aws::sqs_json::{self, BatchEntry, BatchFailure};
use crate::aws::{Queue, SqsError, MAX_BATCH};
use crate::time::Backoff;

/// Batch calls in flight at once; more wait, so SQS sees bounded load.
pub const CONCURRENT_FLUSHES: usize = 16;
/// Tries of one batch before its remaining entries are given up.
const ATTEMPTS: u32 = 5;

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Delete,
    /// Visible again after this many seconds.
    ChangeVisibility(u32),
}

#[derive(Debug)]
struct Entry {
    message_id: String,
    receipt_handle: String,
    action: Action,
}

/// Sends settle requests to the batching task.
#[derive(Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Entry>,
}

impl Settler {
    /// Starts the batching task; await the handle after dropping every
    /// [`Settler`] to know that all settles were sent.
    pub fn spawn(queue: Queue, linger: Duration) -> (Settler, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(queue, linger, rx));
        (Settler { tx }, task)
    }

    pub fn settle(&self, message_id: &str, receipt_handle: &str, action: Action) {
        let entry = Entry {
            message_id: message_id.to_string(),
            receipt_handle: receipt_handle.to_string(),
            action,
        };
        if self.tx.send(entry).is_err() {
            tracing::error!(
                message_id,
                ?action,
                "settle requested after the settler stopped"
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Delete,
    Visibility,
}

impl Kind {
    fn call(self) -> sqs_json::Action {
        match self {
            Kind::Delete => sqs_json::Action::DeleteBatch,
            Kind::Visibility => sqs_json::Action::VisibilityBatch,
        }
    }

    fn action_name(self) -> &'static str {
        self.call().name()
    }
}

#[derive(Default)]
struct Pending {
    entries: Vec<Entry>,
    since: Option<Instant>,
}

impl Pending {
    fn push(&mut self, e: Entry) {
        self.since.get_or_insert_with(Instant::now);
        self.entries.push(e);
    }

    fn take(&mut self) -> Vec<Entry> {
        self.since = None;
        std::mem::take(&mut self.entries)
    }
}

async fn run(queue: Queue, linger: Duration, mut rx: mpsc::UnboundedReceiver<Entry>) {
    let mut deletes = Pending::default();
    let mut changes = Pending::default();
    let mut flushes = JoinSet::new();
    let limit = Arc::new(Semaphore::new(CONCURRENT_FLUSHES));

    loop {
        let due = [&deletes, &changes]
            .iter()
            .filter_map(|p| p.since)
            .min()
            .map(|t| t + linger);
        tokio::select! {
            entry = rx.recv() => {
                let Some(entry) = entry else { break };
                let (kind, pending) = match entry.action {
                    Action::Delete => (Kind::Delete, &mut deletes),
                    Action::ChangeVisibility(_) => (Kind::Visibility, &mut changes),
                };
                pending.push(entry);
                if pending.entries.len() >= MAX_BATCH {
                    let batch = pending.take();
                    start_flush(&mut flushes, &limit, &queue, kind, batch).await;
                }
            }
            _ = sleep_until_opt(due), if due.is_some() => {
                let now = Instant::now();
                for (kind, pending) in [(Kind::Delete, &mut deletes), (Kind::Visibility, &mut changes)] {
                    if pending.since.is_some_and(|t| t + linger <= now) {
                        let batch = pending.take();
                        start_flush(&mut flushes, &limit, &queue, kind, batch).await;
                    }
                }
            }
            Some(_) = flushes.join_next(), if !flushes.is_empty() => {}
        }
    }
    for (kind, pending) in [
        (Kind::Delete, &mut deletes),
        (Kind::Visibility, &mut changes),
    ] {
        let mut rest = pending.take();
        while !rest.is_empty() {
            let batch: Vec<Entry> = rest.drain(..rest.len().min(MAX_BATCH)).collect();
            start_flush(&mut flushes, &limit, &queue, kind, batch).await;
        }
    }
    while flushes.join_next().await.is_some() {}
}

async fn sleep_until_opt(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t).await;
    }
}

async fn start_flush(
    flushes: &mut JoinSet<()>,
    limit: &Arc<Semaphore>,
    queue: &Queue,
    kind: Kind,
    batch: Vec<Entry>,
) {
    let Ok(permit) = limit.clone().acquire_owned().await else {
        return;
    };
    let queue = queue.clone();
    flushes.spawn(async move {
        flush(&queue, kind, batch).await;
        drop(permit);
    });
}

/// One entry the server refused.
struct Failure {
    index: usize,
    sender_fault: bool,
    reason: String,
}

/// Sends one batch, retrying server-side failures, until done or given up.
async fn flush(queue: &Queue, kind: Kind, mut pending: Vec<Entry>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(3));
    for attempt in 1..=ATTEMPTS {
        let result = send_batch(queue, kind, &pending).await;
        queue
            .metrics
            .sqs_request(kind.action_name(), result.is_ok());
        match result {
            Ok(failures) => {
                let failed: Vec<usize> = failures.iter().map(|f| f.index).collect();
                if kind == Kind::Delete {
                    queue
                        .metrics
                        .deleted
                        .inc_by((pending.len() - failed.len()) as u64);
                }
                let mut retry = Vec::new();
                let mut entries: Vec<Option<Entry>> = pending.into_iter().map(Some).collect();
                for f in failures {
                    let Some(entry) = entries.get_mut(f.index).and_then(Option::take) else {
                        continue;
                    };
                    if f.sender_fault {
                        give_up(queue, kind, &entry, &f.reason);
                    } else {
                        retry.push(entry);
                    }
                }
                pending = retry;
            }
            Err(e) if e.permanent => {
                for entry in &pending {
                    give_up(queue, kind, entry, &e.message);
                }
                return;
            }
            Err(e) => {
                tracing::warn!(action = kind.action_name(), entries = pending.len(), attempt,
                    error = %e, "batch call failed; retrying");
            }
        }
        if pending.is_empty() {
            return;
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }
    for entry in &pending {
        give_up(queue, kind, entry, "still failing after retries");
    }
}

fn give_up(queue: &Queue, kind: Kind, entry: &Entry, reason: &str) {
    queue
        .metrics
        .settle_failures
        .with_label_values(&[kind.action_name()])
        .inc();
    match entry.action {
        Action::Delete => tracing::error!(message_id = %entry.message_id, reason,
            "could not delete a delivered message; SQS will deliver it again"),
        Action::ChangeVisibility(s) => tracing::warn!(message_id = %entry.message_id, reason,
            visibility_s = s, "could not change visibility; the message keeps its current timeout"),
    }
}

/// The failed entries of a batch result; entry ids are indexes into the batch.
fn failures(failed: Vec<BatchFailure>) -> Vec<Failure> {
    failed
        .into_iter()
        .filter_map(|f| {
            Some(Failure {
                index: f.id.parse().ok()?,
                sender_fault: f.sender_fault,
                reason: format!("{}: {}", f.code, f.message.as_deref().unwrap_or("")),
            })
        })
        .collect()
}

async fn send_batch(
    queue: &Queue,
    kind: Kind,
    entries: &[Entry],
) -> Result<Vec<Failure>, SqsError> {
    let batch: Vec<BatchEntry<'_>> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| BatchEntry {
            id: i.to_string(),
            receipt_handle: &e.receipt_handle,
            visibility_timeout: match e.action {
                Action::ChangeVisibility(s) => Some(s),
                Action::Delete => None,
            },
        })
        .collect();
    let failed = queue.api.batch(kind.call(), &queue.url, &batch).await?;
    Ok(failures(failed))
}
