//! Fleet coordination in a DynamoDB table: each tick of each task is claimed
//! by exactly one daemon with a conditional write, and only the holder sends
//! it (the phases of a tick's record are in [`super::tick`]).
//!
//! Table layout (created on start if allowed): partition key `pk` (string,
//! `<queue ARN>#<task name>`), sort key `tick` (number, the tick's Unix
//! second). A tick record holds who holds it, its phase and a version that
//! every write of the holder raises. Records expire through the `expires_at`
//! TTL attribute. The record at `tick = 0` remembers since when a task (with
//! that schedule) exists, so that a new task is not "caught up" into the past.
//!
//! Keys use the queue's ARN, not the URL the daemon was given: one queue has
//! many URLs (a trailing slash, the legacy `queue.amazonaws.com` host,
//! LocalStack's host forms), and daemons given different ones must still
//! race for the same record.
//!
//! In Elastic Beanstalk's mode ([`Layout::Eb`]) the records live in EB's
//! own leader-registry table, whose only key is the string hash key `id`,
//! and EB's instance role allows item actions only (GetItem, PutItem,
//! UpdateItem, DeleteItem, Query, Scan, BatchGetItem, BatchWriteItem). Each
//! record's `id` is `sqsd#<queue ARN>#<task name>#<tick>`, a prefix EB's own
//! records (`leader-election-record`, `registration-record`, task names)
//! never have; the tick and task are also kept as plain attributes. Nothing
//! is created or described, and since no TTL can be set, the daemons delete
//! old records themselves ([`Claims::prune`]).
//!
//! Correctness rests on conditional writes, not on clocks: two daemons whose
//! clocks differ compute the same tick and race for the same item, and who
//! may send is decided by the condition on the holder's identity.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    KeysAndAttributes, ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};

use super::schedule::eb_time;
pub use super::tick::DbError;
use super::tick::{Phase, TickStore};
use crate::time::Backoff;

/// How long tick records are kept (through the TTL attribute).
pub const RECORD_TTL: Duration = Duration::from_secs(2 * 24 * 3600);

const PK: &str = "pk";
const TICK: &str = "tick";
const CLAIMED_BY: &str = "claimed_by";
const PHASE: &str = "phase";
const VERSION: &str = "version";
const EXPIRES_AT: &str = "expires_at";
const SCHEDULED: &str = "scheduled_time";
const SCHEDULE: &str = "schedule";
const SINCE: &str = "since";
/// EB's leader registry: its only key.
const EB_ID: &str = "id";
/// The task of a record in EB's table (its key is one opaque string).
const EB_TASK: &str = "sqsd_task";
/// Prefix of every `id` sqsd writes in EB's table.
pub const EB_PREFIX: &str = "sqsd#";

/// How records are keyed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// sqsd's own table: `pk` (S) and `tick` (N).
    #[default]
    Standard,
    /// Elastic Beanstalk's leader registry: `id` (S) only.
    Eb,
}

/// Why the table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cron_table {table:?} does not exist and cron_create_table is false; create it (partition key pk: S, sort key tick: N) or allow sqsd to")]
    Missing { table: String },
    #[error("cron_table {table:?} has key schema {found}; sqsd needs partition key pk (S) and sort key tick (N)")]
    WrongSchema { table: String, found: String },
    #[error("cron_table {table:?} cannot be used: {reason}")]
    Unusable { table: String, reason: String },
    #[error("cron_table {table:?} does not exist; in cron_table_mode eb sqsd creates nothing: name Elastic Beanstalk's leader registry (registry_table of eb_config), whose hash key is id (S)")]
    EbMissing { table: String },
    #[error("cron_table {table:?} does not take a key of id (S) alone: {reason}; cron_table_mode eb needs Elastic Beanstalk's leader registry")]
    EbWrongSchema { table: String, reason: String },
}

/// Whether a write failed only because its condition did not hold.
fn lost_condition<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// A conditional write's result: `Ok(false)` when the condition did not hold.
fn won<T, E>(result: Result<T, SdkError<E, HttpResponse>>) -> Result<bool, DbError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if lost_condition(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A request shape the SDK refused to build (a bug, not a DynamoDB answer).
fn built<T>(result: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, DbError> {
    result.map_err(|e| DbError::new(e.to_string(), true))
}

/// What the table says about one tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub tick: i64,
    pub claimed_by: String,
    pub phase: Phase,
    /// Raised by every write of the holder: its renewals.
    pub version: i64,
}

/// The coordination table as one daemon uses it.
pub struct Claims {
    client: Client,
    table: String,
    /// Prefix of every partition key: the worker queue's ARN.
    scope: String,
    /// This daemon's identity in claim records (unique per process).
    me: String,
    layout: Layout,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Claims {
    /// `scope` names the worker queue in every key: its ARN.
    pub fn new(client: Client, table: String, scope: &str, me: String, layout: Layout) -> Claims {
        Claims {
            client,
            table,
            scope: scope.to_string(),
            me,
            layout,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Name of the attribute that exists on every record: its (first) key.
    fn key_name(&self) -> &'static str {
        match self.layout {
            Layout::Standard => PK,
            Layout::Eb => EB_ID,
        }
    }

    /// Prefix of the ids of this queue's records in EB's table.
    fn eb_prefix(&self) -> String {
        format!("{EB_PREFIX}{}#", self.scope)
    }

    /// A new record's item: its key and, in EB's table, the tick and task
    /// as plain attributes.
    fn new_item(&self, task: &str, tick: i64) -> HashMap<String, AttributeValue> {
        let mut item = self.key(task, tick);
        if self.layout == Layout::Eb {
            item.insert(TICK.to_string(), n(tick));
            item.insert(EB_TASK.to_string(), s(task));
        }
        item
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn me(&self) -> &str {
        &self.me
    }

    fn pk(&self, task: &str) -> AttributeValue {
        s(format!("{}#{task}", self.scope))
    }

    fn key(&self, task: &str, tick: i64) -> HashMap<String, AttributeValue> {
        match self.layout {
            Layout::Standard => {
                HashMap::from([(PK.to_string(), self.pk(task)), (TICK.to_string(), n(tick))])
            }
            Layout::Eb => HashMap::from([(
                EB_ID.to_string(),
                s(format!("{}{task}#{tick}", self.eb_prefix())),
            )]),
        }
    }

    /// An UpdateItem on one tick record.
    fn update(&self, task: &str, tick: i64) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(task, tick)))
    }

    /// Checks the table, creating it when missing and `create` is set.
    /// Retries while DynamoDB is unreachable; fails on answers that will not
    /// change by waiting.
    pub async fn prepare(&self, create: bool) -> Result<(), TableError> {
        if self.layout == Layout::Eb {
            return self.prepare_eb().await;
        }
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let unusable = |reason: String| TableError::Unusable {
            table: self.table.clone(),
            reason,
        };
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            match described {
                Ok(out) => {
                    let Some(table) = out.table else {
                        return Err(unusable("DescribeTable returned no table".into()));
                    };
                    self.check_schema(table.key_schema())?;
                    if table.table_status() == Some(&TableStatus::Active) {
                        return Ok(());
                    }
                    tracing::info!(table = %self.table, "waiting for the cron table to become active");
                }
                Err(e) if e.code() == Some("ResourceNotFoundException") => {
                    if !create {
                        return Err(TableError::Missing {
                            table: self.table.clone(),
                        });
                    }
                    self.create().await.map_err(|e| unusable(e.message))?;
                    tracing::info!(table = %self.table, "created the cron table");
                    continue;
                }
                Err(e) => {
                    let e = DbError::from(e);
                    if e.permanent {
                        return Err(unusable(e.message));
                    }
                    tracing::warn!(table = %self.table, error = %e, "cannot reach DynamoDB; retrying");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// EB's table is checked with a read of a record that never exists:
    /// DescribeTable is not allowed, and a key of the wrong shape is a
    /// ValidationException.
    async fn prepare_eb(&self) -> Result<(), TableError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let probe = HashMap::from([(EB_ID.to_string(), s(format!("{}check", self.eb_prefix())))]);
        loop {
            let got = self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(probe.clone()))
                .send()
                .await;
            match got {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some("ResourceNotFoundException") => {
                    return Err(TableError::EbMissing {
                        table: self.table.clone(),
                    })
                }
                Err(e) if e.code() == Some("ValidationException") => {
                    return Err(TableError::EbWrongSchema {
                        table: self.table.clone(),
                        reason: DbError::from(e).message,
                    })
                }
                Err(e) => {
                    let e = DbError::from(e);
                    if e.permanent {
                        return Err(TableError::Unusable {
                            table: self.table.clone(),
                            reason: e.message,
                        });
                    }
                    tracing::warn!(table = %self.table, error = %e, "cannot reach DynamoDB; retrying");
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    fn check_schema(&self, schema: &[KeySchemaElement]) -> Result<(), TableError> {
        let shape: Vec<(String, String)> = schema
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_string(),
                    k.key_type().as_str().to_string(),
                )
            })
            .collect();
        let wanted = [
            (PK.to_string(), "HASH".to_string()),
            (TICK.to_string(), "RANGE".to_string()),
        ];
        if shape.len() == 2 && shape.iter().all(|k| wanted.contains(k)) {
            return Ok(());
        }
        Err(TableError::WrongSchema {
            table: self.table.clone(),
            found: shape
                .iter()
                .map(|(a, t)| format!("{a} ({t})"))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    async fn create(&self) -> Result<(), DbError> {
        let attribute = |name: &str, kind| {
            built(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(kind)
                    .build(),
            )
        };
        let key = |name: &str, kind| {
            built(
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build(),
            )
        };
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attribute(PK, ScalarAttributeType::S)?)
            .attribute_definitions(attribute(TICK, ScalarAttributeType::N)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(TICK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another daemon created it first.
            Err(e) if e.code() == Some("ResourceInUseException") => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let ttl = built(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(EXPIRES_AT)
                .build(),
        )?;
        if let Err(e) = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(ttl)
            .send()
            .await
        {
            tracing::warn!(table = %self.table, error = %DbError::from(e),
                "cannot enable TTL on the cron table; old tick records will not expire");
        }
        Ok(())
    }

    /// Since when `task` has existed with `schedule`: the first daemon to see
    /// a task (or a changed schedule) records the time.
    pub async fn task_since(
        &self,
        task: &str,
        schedule: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, DbError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(task, 0)))
            .consistent_read(true)
            .send()
            .await?;
        if let Some(item) = got.item {
            let same = item
                .get(SCHEDULE)
                .and_then(|v| v.as_s().ok())
                .map(String::as_str)
                == Some(schedule);
            let since = item
                .get(SINCE)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .and_then(|v| DateTime::from_timestamp(v, 0));
            if let (true, Some(since)) = (same, since) {
                return Ok(since);
            }
        }
        // Ticks are whole seconds: the first one this task owns is the next.
        let since = now.timestamp() + 1;
        let mut item = self.new_item(task, 0);
        item.insert(SCHEDULE.into(), s(schedule));
        item.insert(SINCE.into(), n(since));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(DateTime::from_timestamp(since, 0).unwrap_or(now))
    }

    /// Tries to claim `tick` of `task` (the record starts `sending`);
    /// `Ok(false)` when another daemon has. A claim already made by this
    /// daemon (an earlier try whose answer was lost) counts as won.
    pub async fn claim(&self, task: &str, tick: DateTime<Utc>) -> Result<bool, DbError> {
        let mut item = self.new_item(task, tick.timestamp());
        item.insert(CLAIMED_BY.into(), s(&self.me));
        item.insert(PHASE.into(), s(Phase::Sending.as_str()));
        item.insert(VERSION.into(), n(1));
        item.insert(SCHEDULED.into(), s(eb_time(tick)));
        item.insert(
            EXPIRES_AT.into(),
            n(tick.timestamp() + RECORD_TTL.as_secs() as i64),
        );
        won(self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #by = :me")
            .expression_attribute_names("#pk", self.key_name())
            .expression_attribute_names("#by", CLAIMED_BY)
            .expression_attribute_values(":me", s(&self.me))
            .send()
            .await)
    }

    /// Takes over a tick whose holder stopped renewing it: `record` is what
    /// this daemon saw unchanged for a whole lease. The record becomes this
    /// daemon's, `sending`. `Ok(false)` when it changed meanwhile.
    pub async fn take_over(&self, task: &str, record: &Record) -> Result<bool, DbError> {
        let updated = self
            .update(task, record.tick)
            .update_expression("SET #by = :me, #phase = :sending ADD #version :one")
            .condition_expression(
                "#phase <> :sent AND ((#by = :old AND #version = :old_version AND #phase = :old_phase) OR #by = :me)",
            )
            .expression_attribute_names("#by", CLAIMED_BY)
            .expression_attribute_names("#phase", PHASE)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_values(":me", s(&self.me))
            .expression_attribute_values(":sending", s(Phase::Sending.as_str()))
            .expression_attribute_values(":sent", s(Phase::Sent.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":old", s(&record.claimed_by))
            .expression_attribute_values(":old_version", n(record.version))
            .expression_attribute_values(":old_phase", s(record.phase.as_str()))
            .send()
            .await;
        won(updated)
    }

    /// The tick records of `task` in `[from, to]`, by tick. EB's table has
    /// no range key to query: there the records of the `wanted` ticks (those
    /// of the window) are read by key instead.
    pub async fn records(
        &self,
        task: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        wanted: &[DateTime<Utc>],
    ) -> Result<HashMap<i64, Record>, DbError> {
        if self.layout == Layout::Eb {
            return self.records_by_key(task, wanted).await;
        }
        let mut out = HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk AND #tick BETWEEN :from AND :to")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#tick", TICK)
                .expression_attribute_values(":pk", self.pk(task))
                .expression_attribute_values(":from", n(from.timestamp().max(1)))
                .expression_attribute_values(":to", n(to.timestamp()))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items() {
                if let Some(r) = record(item) {
                    out.insert(r.tick, r);
                }
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }
}

impl Claims {
    /// Reads the records of `ticks` by key, 100 keys a call; keys DynamoDB
    /// leaves unprocessed are asked again until [`BATCH_DEADLINE`].
    async fn records_by_key(
        &self,
        task: &str,
        ticks: &[DateTime<Utc>],
    ) -> Result<HashMap<i64, Record>, DbError> {
        let mut out = HashMap::new();
        let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for chunk in ticks.chunks(100) {
            let keys: Vec<_> = chunk
                .iter()
                .map(|t| self.key(task, t.timestamp()))
                .collect();
            let mut pending = Some(built(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build(),
            )?);
            while let Some(request) = pending.take() {
                let page = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await?;
                for item in page
                    .responses
                    .as_ref()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    if let Some(r) = record(item) {
                        out.insert(r.tick, r);
                    }
                }
                pending = page
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|k| !k.keys().is_empty());
                if pending.is_some() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DbError::new(
                            "DynamoDB left keys unprocessed past the sweep's deadline",
                            false,
                        ));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        Ok(out)
    }

    /// EB's table only: deletes this queue's old records, since no TTL can
    /// be set there. Per task it keeps the `since` record, every tick from
    /// `keep_from` on, and the newest tick before it (a sweep looks at that
    /// one to tell a missed tick from one never due). At most
    /// [`MAX_PRUNE_SCAN_PAGES`] pages are scanned a call. Returns how many
    /// records were deleted.
    pub async fn prune(&self, keep_from: DateTime<Utc>) -> Result<usize, DbError> {
        if self.layout != Layout::Eb {
            return Ok(0);
        }
        let keep_from = keep_from.timestamp();
        // Per task: the ticks before `keep_from`, with their ids.
        let mut old: HashMap<String, Vec<(i64, String)>> = HashMap::new();
        let mut start = None;
        for _ in 0..MAX_PRUNE_SCAN_PAGES {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#id, :prefix)")
                .projection_expression("#id, #tick, #task")
                .expression_attribute_names("#id", EB_ID)
                .expression_attribute_names("#tick", TICK)
                .expression_attribute_names("#task", EB_TASK)
                .expression_attribute_values(":prefix", s(self.eb_prefix()))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items() {
                let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                let tick = item
                    .get(TICK)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok());
                if let (Some(id), Some(task), Some(tick)) = (text(EB_ID), text(EB_TASK), tick) {
                    if tick > 0 && tick < keep_from {
                        old.entry(task).or_default().push((tick, id));
                    }
                }
            }
            start = match page.last_evaluated_key {
                Some(k) if !k.is_empty() => Some(k),
                _ => break,
            };
        }
        let mut doomed = Vec::new();
        for (_, mut ticks) in old {
            ticks.sort_unstable();
            ticks.pop();
            doomed.extend(ticks.into_iter().map(|(_, id)| id));
        }
        let count = doomed.len();
        self.delete_ids(doomed).await?;
        Ok(count)
    }

    /// BatchWriteItem deletes, 25 a call; unprocessed ones are sent again
    /// until [`BATCH_DEADLINE`].
    async fn delete_ids(&self, ids: Vec<String>) -> Result<(), DbError> {
        let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for chunk in ids.chunks(25) {
            let mut pending = Vec::new();
            for id in chunk {
                let delete = built(DeleteRequest::builder().key(EB_ID, s(id.clone())).build())?;
                pending.push(WriteRequest::builder().delete_request(delete).build());
            }
            while !pending.is_empty() {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, std::mem::take(&mut pending))
                    .send()
                    .await?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DbError::new(
                            "DynamoDB left deletes unprocessed past the deadline",
                            false,
                        ));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        Ok(())
    }
}

/// Longest a batch read or delete keeps asking for what DynamoDB left
/// unprocessed: well under a sweep's period, so sweeps never pile up.
const BATCH_DEADLINE: Duration = Duration::from_secs(10);

/// Most pages of EB's table one prune scans (EB's own records are a few).
const MAX_PRUNE_SCAN_PAGES: usize = 20;

impl TickStore for Claims {
    async fn hold(&self, task: &str, tick: DateTime<Utc>, phase: Phase) -> Result<bool, DbError> {
        let updated = self
            .update(task, tick.timestamp())
            .update_expression("SET #phase = :phase ADD #version :one")
            .condition_expression("#by = :me AND #phase <> :sent")
            .expression_attribute_names("#phase", PHASE)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_names("#by", CLAIMED_BY)
            .expression_attribute_values(":phase", s(phase.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":me", s(&self.me))
            .expression_attribute_values(":sent", s(Phase::Sent.as_str()))
            .send()
            .await;
        won(updated)
    }

    async fn mark_sent(&self, task: &str, tick: DateTime<Utc>) -> Result<bool, DbError> {
        let updated = self
            .update(task, tick.timestamp())
            .update_expression("SET #phase = :sent ADD #version :one")
            .condition_expression("#by = :me")
            .expression_attribute_names("#phase", PHASE)
            .expression_attribute_names("#version", VERSION)
            .expression_attribute_names("#by", CLAIMED_BY)
            .expression_attribute_values(":sent", s(Phase::Sent.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":me", s(&self.me))
            .send()
            .await;
        won(updated)
    }
}

fn record(item: &HashMap<String, AttributeValue>) -> Option<Record> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let number = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(Record {
        tick: number(TICK)?,
        claimed_by: text(CLAIMED_BY).unwrap_or_default(),
        // A record in no phase this version knows is left alone.
        phase: text(PHASE).as_deref().and_then(Phase::parse)?,
        version: number(VERSION).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_back_from_items() {
        let item = HashMap::from([
            (PK.to_string(), s("arn:aws:sqs:us-east-1:1:q#t")),
            (TICK.to_string(), n(1_700_000_000)),
            (CLAIMED_BY.to_string(), s("host-1")),
            (PHASE.to_string(), s("claimed")),
            (VERSION.to_string(), n(3)),
        ]);
        let r = record(&item).unwrap();
        assert_eq!(
            r,
            Record {
                tick: 1_700_000_000,
                claimed_by: "host-1".into(),
                phase: Phase::Claimed,
                version: 3,
            }
        );
        let mut odd = item.clone();
        odd.insert(PHASE.to_string(), s("something-else"));
        assert!(record(&odd).is_none(), "unknown phases are not acted on");
        assert!(record(&HashMap::new()).is_none());
    }
}
