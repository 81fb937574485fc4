//! The scheduler: at each tick of each task, enqueue one task message into
//! the worker queue, in Elastic Beanstalk's format.
//!
//! Without a coordination table this daemon enqueues every tick itself.
//! With one, every daemon races for each tick with a conditional write and
//! only the winner enqueues (see [`super::claims`] and [`super::enqueue`]).
//! A periodic sweep then catches up ticks of the last few minutes that
//! nobody claimed (every scheduler was down), and takes over ticks whose
//! holder stopped renewing them ([`super::lease`]) while nothing of them can
//! be in the queue, or, on a FIFO queue, while SQS would drop a repeat.
//!
//! Within one daemon, a tick is worked on by at most one task at a time
//! (timer or sweep): a local slot is taken before any write for it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::claims::{Claims, Layout, Record};
use super::enqueue::{Enqueuer, Job, TaskSender, FIFO_RESEND_WITHIN};
use super::file::{self, Task};
use super::lease::{LeaseWatch, LEASE};
use super::schedule::{eb_time, Schedule};
use super::sender::{SqsSender, TaskQueue};
use super::tick::Phase;
use crate::admin::metrics::Metrics;
use crate::signals::Reload;
use crate::time::Backoff;

/// How far back a returning fleet enqueues ticks that nobody enqueued.
pub const CATCH_UP: Duration = Duration::from_secs(5 * 60);
/// How late a tick must be before the sweep treats it as missed; covers the
/// normal claim path and clock skew between daemons.
pub const GRACE: Duration = Duration::from_secs(10);
/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// How far back records in Elastic Beanstalk's table are kept: twice the
/// catch-up window (see where it is used).
pub const PRUNE_KEEP: Duration = Duration::from_secs(2 * 5 * 60);
/// Most ticks of one task caught up in one sweep (the newest ones).
const MAX_CATCH_UP_TICKS: usize = 100;
/// In Elastic Beanstalk's table, old records are deleted on the first
/// sweep and then every this many sweeps (no TTL can be set there).
const PRUNE_EVERY_SWEEPS: u32 = 4;
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
    /// This daemon's own claim, made while DynamoDB's answer was lost; the
    /// daemon knows it never sent the tick.
    Unfinished(DateTime<Utc>),
    /// Its holder stopped renewing it: the record as seen for a whole lease.
    Stale(DateTime<Utc>, Record),
}

/// What a sweep knows besides the table.
pub struct SweepView<'a> {
    /// This daemon's identity in records.
    pub me: &'a str,
    /// Whether SQS drops a repeated send (a FIFO queue).
    pub fifo: bool,
    /// Now, on the wall clock (tick times) and on this daemon's own clock.
    pub now: DateTime<Utc>,
    pub instant: Instant,
    /// Ticks this daemon claimed without learning whether the claim was
    /// written, and never sent.
    pub unfinished: &'a HashSet<i64>,
}

/// Which of `ticks` of `task` need catching up or taking over.
///
/// A stale `claimed` record is taken over: nothing of it can be in the
/// queue. A stale `sending` record may be in the queue: it is taken over
/// only on a FIFO queue, and only while SQS's deduplication still covers
/// a send its holder may have made ([`FIFO_RESEND_WITHIN`] after the tick,
/// as no send of a tick happens before it).
pub fn plan(
    task: &str,
    ticks: &[DateTime<Utc>],
    records: &HashMap<i64, Record>,
    watch: &mut LeaseWatch,
    view: &SweepView<'_>,
) -> Vec<Due> {
    let mut due = Vec::new();
    for &t in ticks {
        let Some(r) = records.get(&t.timestamp()) else {
            due.push(Due::Missing(t));
            continue;
        };
        if r.phase == Phase::Sent {
            watch.stale(task, r, view.instant);
            continue;
        }
        if r.claimed_by == view.me
            && r.phase == Phase::Sending
            && view.unfinished.contains(&t.timestamp())
        {
            due.push(Due::Unfinished(t));
            continue;
        }
        if !watch.stale(task, r, view.instant) {
            continue;
        }
        let deduplicated = view.fifo && view.now < t + chrono(FIFO_RESEND_WITHIN);
        if r.phase == Phase::Claimed || deduplicated {
            due.push(Due::Stale(t, r.clone()));
        }
    }
    due
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

/// The wall-clock time `t` on this process's monotonic clock (now, if past).
fn instant_at(t: DateTime<Utc>) -> Instant {
    Instant::now() + (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// Ticks (of one task each) some task of this daemon is working on.
type Busy = Arc<Mutex<HashSet<(String, i64)>>>;

/// This daemon's exclusive right to work on one tick; released on drop.
struct Slot {
    busy: Busy,
    key: (String, i64),
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The scheduler of one daemon.
pub struct Scheduler {
    sender: SqsSender,
    pub claims: Option<Claims>,
    pub metrics: Arc<Metrics>,
    pub stop: CancellationToken,
    sends: TaskTracker,
    busy: Busy,
    /// Per task: ticks claimed without an answer, never sent (see [`Due`]).
    unfinished: Mutex<HashMap<String, HashSet<i64>>>,
}

impl Scheduler {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue: TaskQueue,
        claims: Option<Claims>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Scheduler {
        Scheduler {
            sender: SqsSender {
                client,
                queue,
                metrics: metrics.clone(),
            },
            claims,
            metrics,
            stop,
            sends: TaskTracker::new(),
            busy: Arc::default(),
            unfinished: Mutex::default(),
        }
    }

    /// Takes the slot of `tick` of `task`; `None` while another task of
    /// this daemon works on it.
    fn slot(&self, task: &str, tick: DateTime<Utc>) -> Option<Slot> {
        let key = (task.to_string(), tick.timestamp());
        let fresh = self
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        fresh.then(|| Slot {
            busy: self.busy.clone(),
            key,
        })
    }

    fn unfinished(&self, task: &str) -> HashSet<i64> {
        let all = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        all.get(task).cloned().unwrap_or_default()
    }

    fn set_unfinished(&self, task: &str, tick: DateTime<Utc>, unfinished: bool) {
        let mut all = self.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        let ticks = all.entry(task.to_string()).or_default();
        if unfinished {
            ticks.insert(tick.timestamp());
        } else {
            ticks.remove(&tick.timestamp());
        }
        // Past the catch-up window nobody looks at a tick again.
        let horizon = (Utc::now() - chrono(CATCH_UP) - chrono(SWEEP_EVERY)).timestamp();
        ticks.retain(|&t| t >= horizon);
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
                "stopped with periodic-task enqueues still retrying; with a cron table, a tick not yet sent is taken over by another daemon"
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
                        queue = %self.sender.queue.scope,
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
            let next = task
                .schedule
                .next_after(tick)
                .unwrap_or(tick + chrono::Duration::hours(1));
            if let Some(slot) = self.slot(&task.name, tick) {
                let me = self.clone();
                let t = task.clone();
                self.sends
                    .spawn(async move { me.fire(slot, t, tick, next).await });
            }
            after = tick;
        }
    }

    /// A job for `tick`, retried until `retry_until`; `resend_until` as in
    /// [`Job`].
    fn job(
        &self,
        task: &Task,
        tick: DateTime<Utc>,
        retry_until: DateTime<Utc>,
        resend_until: Option<DateTime<Utc>>,
    ) -> Job {
        // The record matters until no sweep looks at the tick any more.
        let record_until =
            (tick + chrono(CATCH_UP) + chrono(SWEEP_EVERY)).max(Utc::now() + chrono(LEASE));
        Job {
            task: task.clone(),
            tick,
            retry_until: instant_at(retry_until),
            resend_until: resend_until.map(instant_at),
            record_until: instant_at(record_until),
        }
    }

    async fn run_job(&self, job: Job) {
        let enqueuer = Enqueuer {
            store: self.claims.as_ref(),
            sender: &self.sender,
            metrics: &self.metrics,
            stop: &self.stop,
        };
        let ending = enqueuer.run(&job).await;
        tracing::debug!(task = %job.task.name, scheduled = %eb_time(job.tick), ?ending, "tick done");
    }

    /// Claims and enqueues a tick at its time; retries until `next` tick.
    async fn fire(&self, _slot: Slot, task: Task, tick: DateTime<Utc>, next: DateTime<Utc>) {
        let job = self.job(&task, tick, next, None);
        let Some(claims) = &self.claims else {
            self.run_job(job).await;
            return;
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match claims.claim(&task.name, tick).await {
                Ok(true) => {
                    self.set_unfinished(&task.name, tick, false);
                    self.metrics
                        .ticks_claimed
                        .with_label_values(&[&task.name])
                        .inc();
                    self.run_job(job).await;
                    return;
                }
                Ok(false) => {
                    self.set_unfinished(&task.name, tick, false);
                    self.metrics
                        .ticks_lost
                        .with_label_values(&[&task.name])
                        .inc();
                    tracing::debug!(task = %task.name, scheduled = %eb_time(tick),
                        "tick claimed by another daemon");
                    return;
                }
                Err(e) => {
                    // The write may have happened: if the claim is this
                    // daemon's, the sweep finishes it.
                    self.set_unfinished(&task.name, tick, true);
                    self.metrics
                        .enqueue_failures
                        .with_label_values(&[&task.name])
                        .inc();
                    let delay = backoff.next_delay();
                    if e.permanent
                        || Instant::now() + delay >= job.retry_until
                        || self.stop.is_cancelled()
                    {
                        tracing::error!(task = %task.name, scheduled = %eb_time(tick), error = %e,
                            "cannot claim the tick in the cron table; a sweep catches it up once DynamoDB answers");
                        return;
                    }
                    tracing::warn!(task = %task.name, scheduled = %eb_time(tick), error = %e,
                        retry_in = ?delay, "cannot claim the tick in the cron table; retrying");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Every [`SWEEP_EVERY`]: catch up missed ticks and take over abandoned
    /// ones (see the module documentation).
    async fn sweep(self: Arc<Self>, tasks: Vec<Task>, token: CancellationToken) {
        let Some(claims) = &self.claims else { return };
        let mut since: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut reported: HashSet<String> = HashSet::new();
        let mut watch = LeaseWatch::default();
        let mut sweeps: u32 = 0;
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
                match self
                    .sweep_task(claims, task, started, first, &mut watch)
                    .await
                {
                    Ok(()) => tracing::debug!(task = %task.name, "cron table sweep done"),
                    Err(e) => tracing::warn!(task = %task.name, error = %e,
                        "cron table sweep failed; trying again later"),
                }
            }
            if claims.layout() == Layout::Eb && sweeps % PRUNE_EVERY_SWEEPS == 0 {
                // Twice the catch-up window: a record is kept well past the
                // last sweep (of a daemon whose clock runs behind, or a job
                // still holding a late tick) that could still look it up.
                let keep_from = Utc::now() - chrono(PRUNE_KEEP);
                match claims.prune(keep_from).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, table = %claims.table(),
                        "deleted old periodic-task records from Elastic Beanstalk's table"),
                    Err(e) => tracing::warn!(error = %e,
                        "cannot delete old periodic-task records; trying again later"),
                }
            }
            sweeps = sweeps.wrapping_add(1);
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
        report_older: bool,
        watch: &mut LeaseWatch,
    ) -> Result<(), super::claims::DbError> {
        let now = Utc::now();
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
        let wanted: Vec<DateTime<Utc>> = older.into_iter().chain(ticks.iter().copied()).collect();
        let records = claims.records(&task.name, query_from, to, &wanted).await?;
        if let Some(t) = older.filter(|t| !records.contains_key(&t.timestamp())) {
            self.metrics
                .ticks_skipped
                .with_label_values(&[&task.name])
                .inc();
            tracing::warn!(task = %task.name, scheduled = %eb_time(t),
                catch_up = ?CATCH_UP, "a missed tick is older than the catch-up window; skipping it");
        }
        watch.forget_before(&task.name, from.timestamp());
        let unfinished = self.unfinished(&task.name);
        let view = SweepView {
            me: claims.me(),
            fifo: self.sender.deduplicates(),
            now,
            instant: Instant::now(),
            unfinished: &unfinished,
        };
        for due in plan(&task.name, &ticks, &records, watch, &view) {
            let tick = match &due {
                Due::Missing(t) | Due::Unfinished(t) | Due::Stale(t, _) => *t,
            };
            // A tick this daemon is working on is left to that work.
            let Some(slot) = self.slot(&task.name, tick) else {
                continue;
            };
            let (written, nothing_sent) = match &due {
                Due::Missing(t) | Due::Unfinished(t) => (claims.claim(&task.name, *t).await, true),
                Due::Stale(_, r) => (
                    claims.take_over(&task.name, r).await,
                    r.phase == Phase::Claimed,
                ),
            };
            let won = match written {
                Ok(won) => won,
                Err(e) => {
                    // The write may have happened; when nothing of the tick
                    // can be in the queue, a later sweep finishes it.
                    if nothing_sent {
                        self.set_unfinished(&task.name, tick, true);
                    }
                    return Err(e);
                }
            };
            if !won {
                self.metrics
                    .ticks_lost
                    .with_label_values(&[&task.name])
                    .inc();
                continue;
            }
            self.set_unfinished(&task.name, tick, false);
            self.metrics
                .ticks_claimed
                .with_label_values(&[&task.name])
                .inc();
            let mut resend_until = None;
            match &due {
                Due::Missing(_) => tracing::warn!(task = %task.name, scheduled = %eb_time(tick),
                    "catching up a tick that no daemon enqueued"),
                Due::Unfinished(_) => tracing::warn!(task = %task.name, scheduled = %eb_time(tick),
                    "finishing a tick whose claim got no answer"),
                Due::Stale(_, r) => {
                    if r.phase == Phase::Sending {
                        resend_until = Some(tick + chrono(FIFO_RESEND_WITHIN));
                    }
                    tracing::warn!(task = %task.name, scheduled = %eb_time(tick),
                        previous = %r.claimed_by, phase = %r.phase.as_str(),
                        "taking over a tick whose holder stopped renewing it")
                }
            }
            let retry_until = (tick + chrono(CATCH_UP)).max(now + chrono(LEASE));
            let job = self.job(task, tick, retry_until, resend_until);
            let me = self.clone();
            self.sends.spawn(async move {
                let _slot = slot;
                me.run_job(job).await
            });
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

    fn record(tick: DateTime<Utc>, by: &str, phase: Phase, version: i64) -> Record {
        Record {
            tick: tick.timestamp(),
            claimed_by: by.into(),
            phase,
            version,
        }
    }

    /// Runs `plan` over two sweeps a lease apart, the records unchanged.
    async fn plan_after_a_lease(
        ticks: &[DateTime<Utc>],
        records: &HashMap<i64, Record>,
        fifo: bool,
        now: DateTime<Utc>,
        unfinished: &HashSet<i64>,
    ) -> (Vec<Due>, Vec<Due>) {
        let mut watch = LeaseWatch::default();
        let view = |instant| SweepView {
            me: "me",
            fifo,
            now,
            instant,
            unfinished,
        };
        let first = plan("t", ticks, records, &mut watch, &view(Instant::now()));
        tokio::time::advance(LEASE).await;
        let second = plan("t", ticks, records, &mut watch, &view(Instant::now()));
        (first, second)
    }

    #[tokio::test(start_paused = true)]
    async fn standard_queue_takes_over_only_ticks_that_cannot_be_in_the_queue() {
        let now = at(12, 0, 0);
        let ticks: Vec<_> = (0..5).map(|m| at(11, 55 + m, 0)).collect();
        let records = HashMap::from([
            (ticks[0].timestamp(), record(ticks[0], "a", Phase::Sent, 3)),
            // Holder stopped after a certain failure: nothing in the queue.
            (
                ticks[1].timestamp(),
                record(ticks[1], "a", Phase::Claimed, 4),
            ),
            // Holder may have sent it: never again on a standard queue.
            (
                ticks[2].timestamp(),
                record(ticks[2], "a", Phase::Sending, 1),
            ),
            // This daemon's own claim that got no answer, never sent.
            (
                ticks[4].timestamp(),
                record(ticks[4], "me", Phase::Sending, 1),
            ),
        ]);
        let unfinished = HashSet::from([ticks[4].timestamp()]);
        let (first, second) = plan_after_a_lease(&ticks, &records, false, now, &unfinished).await;
        // At first sight only what needs no lease.
        assert_eq!(
            first,
            vec![Due::Missing(ticks[3]), Due::Unfinished(ticks[4])]
        );
        assert_eq!(
            second,
            vec![
                Due::Stale(ticks[1], records[&ticks[1].timestamp()].clone()),
                Due::Missing(ticks[3]),
                Due::Unfinished(ticks[4]),
            ]
        );
        // Without the local knowledge, the own `sending` record is left alone.
        let (_, second) = plan_after_a_lease(&ticks, &records, false, now, &HashSet::new()).await;
        assert!(!second.contains(&Due::Unfinished(ticks[4])), "{second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_queue_takes_over_sending_ticks_only_within_deduplication() {
        let ticks = [at(11, 55, 0), at(11, 58, 0)];
        let records: HashMap<i64, Record> = ticks
            .iter()
            .map(|t| (t.timestamp(), record(*t, "a", Phase::Sending, 2)))
            .collect();
        let now = at(11, 59, 30);
        let (first, second) =
            plan_after_a_lease(&ticks, &records, true, now, &HashSet::new()).await;
        assert!(first.is_empty(), "{first:?}");
        // 11:55 is 4.5 minutes old: a repeat might not be dropped any more.
        assert_eq!(
            second,
            vec![Due::Stale(ticks[1], records[&ticks[1].timestamp()].clone())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewing_holder_is_never_taken_over() {
        let tick = at(11, 58, 0);
        let mut watch = LeaseWatch::default();
        let unfinished = HashSet::new();
        for version in 1..20 {
            let records =
                HashMap::from([(tick.timestamp(), record(tick, "a", Phase::Claimed, version))]);
            let view = SweepView {
                me: "me",
                fifo: true,
                now: at(11, 59, 0),
                instant: Instant::now(),
                unfinished: &unfinished,
            };
            assert!(plan("t", &[tick], &records, &mut watch, &view).is_empty());
            // A sweep every 15 s, the holder writing in between.
            tokio::time::advance(SWEEP_EVERY).await;
        }
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
