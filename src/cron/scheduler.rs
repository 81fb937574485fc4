//! The scheduler: at each tick of each task, enqueue one task message into
//! the worker queue, in Elastic Beanstalk's format.
//!
//! Without a coordination table this daemon enqueues every tick itself.
//! With one, every daemon races for each tick with a conditional write and
//! only the winner enqueues (see [`super::claims`]). A periodic sweep then
//! catches up ticks of the last few minutes that nobody enqueued (every
//! scheduler was down) and takes over ticks whose claimer died before
//! enqueueing them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::claims::{Claims, Record, LEASE};
use super::file::{self, Task};
use super::format::{PATH_ATTR, SCHEDULED_TIME_ATTR, TASK_BODY, TASK_NAME_ATTR};
use super::schedule::{eb_time, Schedule};
use crate::admin::metrics::Metrics;
use crate::aws::error::SqsError;
use crate::signals::Reload;
use crate::time::Backoff;

/// How far back a returning fleet enqueues ticks that nobody enqueued.
pub const CATCH_UP: Duration = Duration::from_secs(5 * 60);
/// How late a tick must be before the sweep treats it as missed; covers the
/// normal claim path and clock skew between daemons.
pub const GRACE: Duration = Duration::from_secs(10);
/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// Most ticks of one task caught up in one sweep (the newest ones).
const MAX_CATCH_UP_TICKS: usize = 100;
/// One SendMessage may take this long before it counts as failed.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for enqueues in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Where the tasks come from, for reloads.
#[derive(Clone, Debug, Default)]
pub struct CronSource {
    /// The `cron_file` option, if set.
    pub configured: Option<PathBuf>,
    /// The file read, if any.
    pub path: Option<PathBuf>,
    pub tasks: Vec<Task>,
}

impl CronSource {
    /// Locates and reads the file: the configured path must exist; without
    /// one, Elastic Beanstalk's default places are tried and none is fine.
    pub fn load(configured: Option<PathBuf>) -> Result<CronSource, file::CronFileError> {
        let path = file::locate(configured.as_deref());
        let tasks = match &path {
            Some(p) => file::load(p)?,
            None => Vec::new(),
        };
        Ok(CronSource {
            configured,
            path,
            tasks,
        })
    }

    /// Reads the file again from the same places.
    pub fn reload(&self) -> Result<CronSource, file::CronFileError> {
        CronSource::load(self.configured.clone())
    }
}

/// Message group and deduplication ids of a task message on a FIFO queue:
/// one group per task (its ticks run in order), one id per task and tick.
pub fn fifo_ids(task: &str, tick: DateTime<Utc>) -> (String, String) {
    let usable =
        !task.is_empty() && task.len() <= 128 && task.chars().all(|c| c.is_ascii_graphic());
    let group = if usable {
        task.to_string()
    } else {
        format!(
            "sqsd-task-{}",
            &hex::encode(Sha256::digest(task.as_bytes()))[..32]
        )
    };
    let dedup = hex::encode(Sha256::digest(
        format!("{task}\n{}", tick.timestamp()).as_bytes(),
    ));
    (group, dedup)
}

/// The span of ticks a sweep looks at: from the catch-up horizon (or since
/// the task exists) to [`GRACE`] ago. `None` when empty.
pub fn catch_up_window(
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let from = (now - chrono(CATCH_UP)).max(since);
    let to = now - chrono(GRACE);
    (from <= to).then_some((from, to))
}

/// A tick a sweep must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Nobody claimed it.
    Missing(DateTime<Utc>),
    /// Claimed, but its claimer neither enqueued it nor renewed the lease.
    Abandoned(DateTime<Utc>, Record),
}

/// Which of `ticks` need catching up, given the table's records.
pub fn plan(
    ticks: &[DateTime<Utc>],
    records: &HashMap<i64, Record>,
    now: DateTime<Utc>,
) -> Vec<Due> {
    ticks
        .iter()
        .filter_map(|&t| match records.get(&t.timestamp()) {
            None => Some(Due::Missing(t)),
            Some(r) if r.is_abandoned(now) => Some(Due::Abandoned(t, r.clone())),
            Some(_) => None,
        })
        .collect()
}

/// The tick just before the catch-up window, if the task already existed
/// then: when it has no record, it was missed and is too old to enqueue.
pub fn tick_before_window(
    schedule: &Schedule,
    since: DateTime<Utc>,
    window_from: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    schedule
        .previous_before(window_from)
        .filter(|&t| t >= since)
}

/// The scheduler of one daemon.
pub struct Scheduler {
    pub client: aws_sdk_sqs::Client,
    pub queue_url: String,
    pub claims: Option<Claims>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
    sends: TaskTracker,
}

impl Scheduler {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        claims: Option<Claims>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Scheduler {
        Scheduler {
            client,
            queue_url,
            claims,
            metrics,
            stop,
            sends: TaskTracker::new(),
        }
    }

    fn fifo(&self) -> bool {
        self.queue_url.ends_with(".fifo")
    }

    /// Schedules `source`'s tasks until `stop`, re-reading the file on each
    /// reload signal; then waits briefly for enqueues in flight.
    /// `table_check`: `Some(create)` when startup went on before DynamoDB
    /// answered about the table; nothing is scheduled until it does.
    pub async fn run(
        self: Arc<Self>,
        mut source: CronSource,
        mut reload: Reload,
        table_check: Option<bool>,
    ) {
        if let (Some(claims), Some(create_table)) = (&self.claims, table_check) {
            let prepared = tokio::select! {
                _ = self.stop.cancelled() => return,
                prepared = claims.prepare(create_table) => prepared,
            };
            if let Err(e) = prepared {
                tracing::error!(error = %e, "periodic tasks are not scheduled: the cron table cannot be used");
                self.stop.cancelled().await;
                return;
            }
        }
        self.announce(&source);
        let mut generation = self.start(&source.tasks);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                changed = reload.changed() => {
                    if changed.is_err() {
                        self.stop.cancelled().await;
                        break;
                    }
                    match source.reload() {
                        Ok(new) => {
                            generation.cancel();
                            let kept: HashSet<&str> =
                                new.tasks.iter().map(|t| t.name.as_str()).collect();
                            for old in &source.tasks {
                                if !kept.contains(old.name.as_str()) {
                                    let _ = self.metrics.task_next_run.remove_label_values(&[&old.name]);
                                }
                            }
                            source = new;
                            self.announce(&source);
                            generation = self.start(&source.tasks);
                        }
                        Err(e) => tracing::error!(error = %e.to_string().replace('\n', " "),
                            "cron.yaml not reloaded; the running schedule stays in place"),
                    }
                }
            }
        }
        generation.cancel();
        self.sends.close();
        if tokio::time::timeout(STOP_WAIT, self.sends.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "stopped with periodic-task enqueues still retrying; with a cron table another daemon takes them over"
            );
        }
    }

    fn announce(&self, source: &CronSource) {
        match &source.path {
            None => tracing::info!("no cron.yaml found; no periodic tasks"),
            Some(path) => {
                for t in &source.tasks {
                    tracing::info!(task = %t.name, url = %t.url, schedule = %t.schedule.as_str(),
                        file = %path.display(), "periodic task scheduled");
                }
                match (&self.claims, source.tasks.is_empty()) {
                    (_, true) => tracing::info!(file = %path.display(), "cron.yaml has no tasks"),
                    (Some(c), false) => tracing::info!(table = %c.table(), instance = %c.me(),
                        "periodic tasks coordinated through the cron table; each tick is enqueued once across daemons"),
                    (None, false) => tracing::warn!(
                        "no cron_table configured: this daemon schedules periodic tasks alone; \
                         if several daemons share the queue, each enqueues every tick (set cron_table)"),
                }
            }
        }
    }

    /// Starts one timer per task (and the sweep); cancel the token to stop them.
    fn start(self: &Arc<Self>, tasks: &[Task]) -> CancellationToken {
        let token = self.stop.child_token();
        for task in tasks {
            tokio::spawn(self.clone().timer(task.clone(), token.clone()));
        }
        if self.claims.is_some() && !tasks.is_empty() {
            tokio::spawn(self.clone().sweep(tasks.to_vec(), token.clone()));
        }
        token
    }

    async fn timer(self: Arc<Self>, task: Task, token: CancellationToken) {
        let mut after = Utc::now();
        loop {
            // Ticks that passed while this process was stopped or starved
            // are not fired late here; the sweep catches them up.
            let from = after.max(Utc::now() - chrono::Duration::seconds(1));
            let Some(tick) = task.schedule.next_after(from) else {
                tracing::warn!(task = %task.name, "the schedule has no further tick");
                return;
            };
            self.metrics
                .task_next_run
                .with_label_values(&[&task.name])
                .set(tick.timestamp());
            if !sleep_until(tick, &token).await {
                return;
            }
            let deadline = task
                .schedule
                .next_after(tick)
                .unwrap_or(tick + chrono::Duration::hours(1));
            let me = self.clone();
            let t = task.clone();
            self.sends
                .spawn(async move { me.fire(&t, tick, deadline).await });
            after = tick;
        }
    }

    async fn fire(&self, task: &Task, tick: DateTime<Utc>, deadline: DateTime<Utc>) {
        let Some(claims) = &self.claims else {
            self.enqueue(task, tick, deadline, false).await;
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match claims.claim(&task.name, tick, Utc::now()).await {
                Ok(true) => {
                    self.metrics
                        .ticks_claimed
                        .with_label_values(&[&task.name])
                        .inc();
                    self.enqueue(task, tick, deadline, true).await;
                    return;
                }
                Ok(false) => {
                    self.metrics
                        .ticks_lost
                        .with_label_values(&[&task.name])
                        .inc();
                    tracing::debug!(task = %task.name, scheduled = %eb_time(tick),
                        "tick claimed by another daemon");
                    return;
                }
                Err(e) => {
                    self.metrics
                        .enqueue_failures
                        .with_label_values(&[&task.name])
                        .inc();
                    let delay = backoff.next_delay();
                    if e.permanent
                        || Utc::now() + chrono(delay) >= deadline
                        || self.stop.is_cancelled()
                    {
                        tracing::error!(task = %task.name, scheduled = %eb_time(tick), error = %e,
                            "cannot claim the tick in the cron table; a sweep catches it up once DynamoDB answers");
                        return;
                    }
                    tracing::warn!(task = %task.name, scheduled = %eb_time(tick), error = %e,
                        retry_in = ?delay, "cannot claim the tick in the cron table; retrying");
                    if !self.pause(delay).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps unless shutdown comes first; `false` on shutdown.
    async fn pause(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Sends the task message, retrying with backoff until `deadline`. With
    /// `claimed`, the claim's lease is renewed between attempts and the tick
    /// is marked sent after success.
    async fn enqueue(
        &self,
        task: &Task,
        tick: DateTime<Utc>,
        deadline: DateTime<Utc>,
        claimed: bool,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(15));
        let scheduled = eb_time(tick);
        loop {
            let error = match tokio::time::timeout(SEND_TIMEOUT, self.send(task, tick)).await {
                Ok(Ok(id)) => {
                    self.metrics
                        .tasks_enqueued
                        .with_label_values(&[&task.name])
                        .inc();
                    tracing::info!(task = %task.name, scheduled = %scheduled, message_id = %id,
                        "periodic task enqueued");
                    if claimed {
                        self.mark_sent(task, tick).await;
                    }
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => format!("no answer within {SEND_TIMEOUT:?}"),
            };
            self.metrics
                .enqueue_failures
                .with_label_values(&[&task.name])
                .inc();
            let delay = backoff.next_delay();
            if Utc::now() + chrono(delay) >= deadline || self.stop.is_cancelled() {
                self.metrics
                    .ticks_skipped
                    .with_label_values(&[&task.name])
                    .inc();
                tracing::error!(task = %task.name, scheduled = %scheduled, error = %error,
                    attempts = backoff.failures(),
                    "giving up enqueueing the periodic task: its retry time is over");
                return;
            }
            tracing::warn!(task = %task.name, scheduled = %scheduled, error = %error,
                retry_in = ?delay, "cannot enqueue the periodic task; retrying");
            if !self.pause(delay).await {
                return;
            }
            if let (true, Some(claims)) = (claimed, &self.claims) {
                match claims.renew(&task.name, tick, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::info!(task = %task.name, scheduled = %scheduled,
                            "another daemon took the tick over; not retrying here");
                        return;
                    }
                    Err(e) => tracing::warn!(task = %task.name, error = %e,
                        "cannot renew the claim on the tick; retrying the enqueue anyway"),
                }
            }
        }
    }

    async fn mark_sent(&self, task: &Task, tick: DateTime<Utc>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let Some(claims) = &self.claims else { return };
        loop {
            match claims.mark_sent(&task.name, tick).await {
                Ok(()) => return,
                Err(e) if e.permanent || backoff.failures() >= 5 => {
                    tracing::warn!(task = %task.name, scheduled = %eb_time(tick), error = %e,
                        "cannot mark the tick as enqueued; another daemon may enqueue it again once the claim's lease ends");
                    return;
                }
                Err(_) => tokio::time::sleep(backoff.next_delay()).await,
            }
        }
    }

    async fn send(&self, task: &Task, tick: DateTime<Utc>) -> Result<String, String> {
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| e.to_string())
        };
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(TASK_BODY)
            .message_attributes(PATH_ATTR, attr(&task.url)?)
            .message_attributes(TASK_NAME_ATTR, attr(&task.name)?)
            .message_attributes(SCHEDULED_TIME_ATTR, attr(&eb_time(tick))?);
        if self.fifo() {
            let (group, dedup) = fifo_ids(&task.name, tick);
            request = request
                .message_group_id(group)
                .message_deduplication_id(dedup);
        }
        let result = request.send().await;
        self.metrics.sqs_request("SendMessage", result.is_ok());
        match result {
            Ok(out) => Ok(out.message_id.unwrap_or_default()),
            Err(e) => Err(SqsError::from(e).to_string()),
        }
    }

    /// Every [`SWEEP_EVERY`]: catch up missed ticks and take over abandoned
    /// claims (see the module documentation).
    async fn sweep(self: Arc<Self>, tasks: Vec<Task>, token: CancellationToken) {
        let Some(claims) = &self.claims else { return };
        let mut since: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut reported: HashSet<String> = HashSet::new();
        loop {
            for task in &tasks {
                if token.is_cancelled() {
                    return;
                }
                let now = Utc::now();
                let started = match since.get(&task.name) {
                    Some(s) => *s,
                    None => match claims
                        .task_since(&task.name, task.schedule.as_str(), now)
                        .await
                    {
                        Ok(s) => *since.entry(task.name.clone()).or_insert(s),
                        Err(e) => {
                            tracing::warn!(task = %task.name, error = %e,
                                "cannot read the task's record in the cron table; catch-up waits");
                            continue;
                        }
                    },
                };
                let first = reported.insert(task.name.clone());
                match self.sweep_task(claims, task, started, now, first).await {
                    Ok(()) => tracing::debug!(task = %task.name, "cron table sweep done"),
                    Err(e) => tracing::warn!(task = %task.name, error = %e,
                        "cron table sweep failed; trying again later"),
                }
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    }

    async fn sweep_task(
        self: &Arc<Self>,
        claims: &Claims,
        task: &Task,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
        report_older: bool,
    ) -> Result<(), super::claims::DbError> {
        let Some((from, to)) = catch_up_window(since, now) else {
            return Ok(());
        };
        let ticks = task.schedule.ticks_between(from, to, MAX_CATCH_UP_TICKS);
        let older = if report_older {
            tick_before_window(
                &task.schedule,
                since,
                ticks.first().copied().unwrap_or(from),
            )
        } else {
            None
        };
        let Some(query_from) = older.or(ticks.first().copied()) else {
            return Ok(());
        };
        let records = claims.records(&task.name, query_from, to).await?;
        if let Some(t) = older.filter(|t| !records.contains_key(&t.timestamp())) {
            self.metrics
                .ticks_skipped
                .with_label_values(&[&task.name])
                .inc();
            tracing::warn!(task = %task.name, scheduled = %eb_time(t),
                catch_up = ?CATCH_UP, "a missed tick is older than the catch-up window; skipping it");
        }
        for due in plan(&ticks, &records, now) {
            let (tick, won) = match &due {
                Due::Missing(t) => (*t, claims.claim(&task.name, *t, now).await?),
                Due::Abandoned(t, r) => (*t, claims.take_over(&task.name, r, now).await?),
            };
            if !won {
                self.metrics
                    .ticks_lost
                    .with_label_values(&[&task.name])
                    .inc();
                continue;
            }
            self.metrics
                .ticks_claimed
                .with_label_values(&[&task.name])
                .inc();
            match &due {
                Due::Missing(_) => tracing::warn!(task = %task.name, scheduled = %eb_time(tick),
                    "catching up a tick that no daemon enqueued"),
                Due::Abandoned(_, r) => {
                    tracing::warn!(task = %task.name, scheduled = %eb_time(tick),
                    previous = %r.claimed_by,
                    "taking over a tick whose claimer stopped before enqueueing it")
                }
            }
            let deadline = (tick + chrono(CATCH_UP)).max(now + chrono(LEASE));
            let me = self.clone();
            let t = task.clone();
            self.sends
                .spawn(async move { me.enqueue(&t, tick, deadline, true).await });
        }
        Ok(())
    }
}

/// Sleeps until the wall clock reaches `t` (re-checking, so clock steps are
/// followed); `false` when `token` is cancelled first.
async fn sleep_until(t: DateTime<Utc>, token: &CancellationToken) -> bool {
    loop {
        let Ok(left) = (t - Utc::now()).to_std() else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = token.cancelled() => return false,
            _ = tokio::time::sleep(left.min(Duration::from_secs(10))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, m, s).unwrap()
    }

    #[test]
    fn fifo_ids_are_stable_per_task_and_tick() {
        let (g1, d1) = fifo_ids("backup-job", at(12, 0, 0));
        let (g2, d2) = fifo_ids("backup-job", at(12, 0, 0));
        let (g3, d3) = fifo_ids("backup-job", at(12, 0, 1));
        assert_eq!((g1.as_str(), d1.as_str()), (g2.as_str(), d2.as_str()));
        assert_eq!(g1, "backup-job");
        assert_eq!(g3, g1);
        assert_ne!(d3, d1);
        assert_eq!(d1.len(), 64);
        assert_ne!(fifo_ids("other", at(12, 0, 0)).1, d1);
        // Names SQS would refuse as a group id are hashed.
        let (g, _) = fifo_ids("nightly report", at(12, 0, 0));
        assert!(
            g.starts_with("sqsd-task-") && g.chars().all(|c| c.is_ascii_graphic()),
            "{g}"
        );
        let long = "x".repeat(200);
        assert!(fifo_ids(&long, at(12, 0, 0)).0.len() <= 128);
    }

    #[test]
    fn catch_up_window_starts_at_the_horizon_or_the_tasks_birth() {
        let now = at(12, 0, 0);
        let long_ago = at(0, 0, 0);
        assert_eq!(
            catch_up_window(long_ago, now),
            Some((at(11, 55, 0), at(11, 59, 50)))
        );
        assert_eq!(
            catch_up_window(at(11, 58, 0), now),
            Some((at(11, 58, 0), at(11, 59, 50)))
        );
        // A task that appeared just now has nothing to catch up.
        assert_eq!(catch_up_window(at(11, 59, 55), now), None);
    }

    fn record(tick: DateTime<Utc>, sent: bool, lease_until: DateTime<Utc>) -> Record {
        Record {
            tick: tick.timestamp(),
            claimed_by: "other".into(),
            sent,
            lease_until_ms: lease_until.timestamp_millis(),
        }
    }

    #[test]
    fn plan_picks_missing_and_abandoned_ticks_only() {
        let now = at(12, 0, 0);
        let ticks: Vec<_> = (0..5).map(|m| at(11, 55 + m, 0)).collect();
        let records = HashMap::from([
            // Enqueued.
            (ticks[0].timestamp(), record(ticks[0], true, at(11, 55, 45))),
            // Claimed, lease still running: its claimer is at work.
            (ticks[1].timestamp(), record(ticks[1], false, at(12, 0, 30))),
            // Claimed, lease over, never sent.
            (
                ticks[2].timestamp(),
                record(ticks[2], false, at(11, 57, 45)),
            ),
            // Sent, even though the lease is over.
            (ticks[4].timestamp(), record(ticks[4], true, at(11, 59, 45))),
        ]);
        let due = plan(&ticks, &records, now);
        assert_eq!(
            due,
            vec![
                Due::Abandoned(ticks[2], records[&ticks[2].timestamp()].clone()),
                Due::Missing(ticks[3]),
            ]
        );
        assert!(plan(&ticks[..1], &records, now).is_empty());
    }

    #[test]
    fn only_ticks_from_when_the_task_existed_count_as_missed() {
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let window_from = at(11, 55, 0);
        assert_eq!(
            tick_before_window(&every_minute, at(9, 0, 0), window_from),
            Some(at(11, 54, 0))
        );
        assert_eq!(
            tick_before_window(&every_minute, at(11, 54, 30), window_from),
            None
        );
        let daily = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            tick_before_window(&daily, at(0, 0, 0), window_from),
            Some(at(3, 0, 0))
        );
    }
}
