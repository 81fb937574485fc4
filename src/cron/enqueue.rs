//! Sending one tick's task message once: the retries, and the writes to the
//! tick's record around each attempt (phases in [`super::tick`]).
//!
//! The rule that keeps a tick from being enqueued twice: a message is never
//! sent again after an attempt whose outcome is unknown (the request may
//! have reached SQS, but no answer came), unless SQS drops the repeat (a FIFO
//! queue, through the tick's deduplication id, within its 5-minute window).
//! An attempt that certainly failed (no connection was made, or SQS answered
//! with an error) is retried until the job's deadline.
//!
//! With a coordination table, the record says `sending` during every attempt
//! and `claimed` only between attempts that certainly failed; before each
//! retry the holder writes it again (a renewal, and the check that it still
//! holds the tick). After success the record is marked `sent`, retried until
//! no daemon looks at the tick any more.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::file::Task;
use super::lease::RENEW_AT_LEAST_EVERY;
use super::schedule::eb_time;
use super::tick::{Phase, TickStore};
use crate::admin::metrics::Metrics;
use crate::time::Backoff;

/// How long after a send that may have reached SQS a FIFO queue is still
/// trusted to drop a repeat with the same deduplication id. SQS keeps ids for
/// 5 minutes; the minute left over covers the repeat's own time in flight
/// and, for a tick taken over from another daemon, the two hosts' clocks
/// disagreeing by up to 40 seconds.
pub const FIFO_RESEND_WITHIN: Duration = Duration::from_secs(4 * 60);

/// What came of one attempt to send a task message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// SQS accepted it; its message id.
    Sent(String),
    /// The message is certainly not in the queue: no connection was made,
    /// or SQS answered with an error (`permanent`: one that will not change).
    NotSent { error: String, permanent: bool },
    /// It may be: the request may have reached SQS, but no answer came.
    Unknown(String),
}

/// Sends task messages to the worker queue.
pub trait TaskSender: Send + Sync {
    fn send(&self, task: &Task, tick: DateTime<Utc>) -> impl Future<Output = SendOutcome> + Send;

    /// Whether SQS drops a repeated send of one tick (a FIFO queue).
    fn deduplicates(&self) -> bool;
}

/// One tick to enqueue, held by this daemon (or with no table at all).
#[derive(Clone, Debug)]
pub struct Job {
    pub task: Task,
    pub tick: DateTime<Utc>,
    /// Attempts that certainly failed are retried until then.
    pub retry_until: Instant,
    /// `Some` when an earlier send of this tick may have reached SQS (a
    /// tick taken over while `sending`): a send is made only before then,
    /// while SQS still drops it as a repeat.
    pub resend_until: Option<Instant>,
    /// Marking the record `sent` is retried until then.
    pub record_until: Instant,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SQS accepted the message; `recorded`: the record says `sent`.
    Enqueued { recorded: bool },
    /// Every attempt certainly failed, until the deadline or for good.
    GaveUp,
    /// An attempt's outcome is unknown and the message is not sent again.
    Unknown,
    /// Another daemon holds the tick now.
    Lost,
    /// Shutdown came first.
    Stopped,
}

/// What to wait for between attempts.
enum Wait {
    Go,
    Deadline,
    Stopped,
}

/// Runs jobs: one sender, the table (if any), metrics and the stop signal.
pub struct Enqueuer<'a, S, Q> {
    pub store: Option<&'a S>,
    pub sender: &'a Q,
    pub metrics: &'a Metrics,
    pub stop: &'a CancellationToken,
}

impl<S: TickStore, Q: TaskSender> Enqueuer<'_, S, Q> {
    /// Enqueues `job`'s tick (see the module documentation for the rules).
    pub async fn run(&self, job: &Job) -> Ending {
        let name = job.task.name.as_str();
        let scheduled = eb_time(job.tick);
        // Capped below the renewal interval: the holder writes the record at
        // least that often while it retries.
        let mut backoff = Backoff::new(Duration::from_millis(500), RENEW_AT_LEAST_EVERY);
        let mut resend_until = job.resend_until;
        // The claim (or takeover) leaves the record `sending`; every retry
        // writes it so again first.
        let mut retry = false;
        loop {
            if retry {
                match self.hold(job, Phase::Sending).await {
                    Ok(true) => {}
                    Ok(false) => return self.lost(job),
                    Err(error) => {
                        tracing::warn!(task = %name, scheduled = %scheduled, %error,
                            "cannot renew the claim on the tick; not sending until it is renewed");
                        match self.wait(&mut backoff, job.retry_until).await {
                            Wait::Go => continue,
                            Wait::Deadline => return self.end(job, resend_until, &error),
                            Wait::Stopped => return Ending::Stopped,
                        }
                    }
                }
            }
            if let Some(until) = resend_until {
                if !self.sender.deduplicates() || Instant::now() >= until {
                    return self.unknown(job, "the deduplication window is over");
                }
            }
            let started = Instant::now();
            let (error, until) = match self.sender.send(&job.task, job.tick).await {
                SendOutcome::Sent(id) => {
                    self.metrics.tasks_enqueued.with_label_values(&[name]).inc();
                    tracing::info!(task = %name, scheduled = %scheduled, message_id = %id,
                        "periodic task enqueued");
                    let recorded = self.record_sent(job).await;
                    return Ending::Enqueued { recorded };
                }
                SendOutcome::NotSent { error, permanent } => {
                    self.count_failure(name);
                    retry = true;
                    if resend_until.is_none() {
                        // Nothing of this tick is in the queue: let another
                        // daemon send it if this one stops.
                        match self.hold(job, Phase::Claimed).await {
                            Ok(true) => {}
                            Ok(false) => return self.lost(job),
                            Err(e) => tracing::debug!(task = %name, error = %e,
                                "cannot mark the tick as not sent; retrying anyway"),
                        }
                    }
                    if permanent {
                        return self.end(job, resend_until, &error);
                    }
                    (error, job.retry_until)
                }
                SendOutcome::Unknown(error) => {
                    self.count_failure(name);
                    retry = true;
                    let window = started + FIFO_RESEND_WITHIN;
                    let until = resend_until.map_or(window, |u| u.min(window));
                    resend_until = Some(until);
                    if !self.sender.deduplicates() {
                        return self.unknown(job, &error);
                    }
                    (error, job.retry_until.min(until))
                }
            };
            match self.wait(&mut backoff, until).await {
                Wait::Go => {
                    tracing::warn!(task = %name, scheduled = %scheduled, %error,
                        "cannot enqueue the periodic task; retrying");
                }
                Wait::Deadline => return self.end(job, resend_until, &error),
                Wait::Stopped => return Ending::Stopped,
            }
        }
    }

    async fn hold(&self, job: &Job, phase: Phase) -> Result<bool, String> {
        let Some(store) = self.store else {
            return Ok(true);
        };
        store
            .hold(&job.task.name, job.tick, phase)
            .await
            .map_err(|e| e.to_string())
    }

    fn count_failure(&self, name: &str) {
        self.metrics
            .enqueue_failures
            .with_label_values(&[name])
            .inc();
    }

    /// Waits out the next backoff delay, unless it would end past `until`.
    async fn wait(&self, backoff: &mut Backoff, until: Instant) -> Wait {
        let delay = backoff.next_delay();
        if Instant::now() + delay >= until {
            return Wait::Deadline;
        }
        tokio::select! {
            _ = self.stop.cancelled() => Wait::Stopped,
            _ = tokio::time::sleep(delay) => Wait::Go,
        }
    }

    fn lost(&self, job: &Job) -> Ending {
        tracing::info!(task = %job.task.name, scheduled = %eb_time(job.tick),
            "another daemon took the tick over; not sending it here");
        Ending::Lost
    }

    /// Gives up: the tick is not in the queue, or (after an attempt whose
    /// outcome is unknown) may be.
    fn end(&self, job: &Job, resend_until: Option<Instant>, error: &str) -> Ending {
        match resend_until {
            Some(_) => self.unknown(job, error),
            None => self.give_up(job, error),
        }
    }

    fn give_up(&self, job: &Job, error: &str) -> Ending {
        self.metrics
            .ticks_skipped
            .with_label_values(&[&job.task.name])
            .inc();
        tracing::error!(task = %job.task.name, scheduled = %eb_time(job.tick), %error,
            "giving up enqueueing the periodic task: its retry time is over or SQS refuses it for good");
        Ending::GaveUp
    }

    fn unknown(&self, job: &Job, error: &str) -> Ending {
        self.metrics
            .ticks_unknown
            .with_label_values(&[&job.task.name])
            .inc();
        tracing::error!(task = %job.task.name, scheduled = %eb_time(job.tick), %error,
            "the periodic task may or may not be in the queue (a send got no answer); \
             not sending it again, so that the tick is never enqueued twice");
        Ending::Unknown
    }

    /// Marks the tick `sent`, retrying until `job.record_until`. Until it
    /// is marked, the record says `sending`, which no daemon sends again
    /// (on a FIFO queue: only with the same deduplication id, in its window).
    async fn record_sent(&self, job: &Job) -> bool {
        let Some(store) = self.store else {
            return true;
        };
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let error = match store.mark_sent(&job.task.name, job.tick).await {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::info!(task = %job.task.name, scheduled = %eb_time(job.tick),
                        "another daemon took the enqueued tick over before it was recorded; \
                         its send repeats this one's deduplication id");
                    return false;
                }
                Err(e) => e,
            };
            match self.wait(&mut backoff, job.record_until).await {
                Wait::Go => tracing::warn!(task = %job.task.name, scheduled = %eb_time(job.tick),
                    %error, "cannot record the tick as enqueued yet; retrying"),
                Wait::Deadline | Wait::Stopped => {
                    tracing::warn!(task = %job.task.name, scheduled = %eb_time(job.tick), %error,
                        "cannot record the tick as enqueued; its record stays `sending`, which no daemon sends again");
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::cron::schedule::Schedule;
    use crate::cron::tick::DbError;

    /// What happened, in order, on this process's (paused) clock.
    #[derive(Clone, Debug, PartialEq, Eq)]
    enum Event {
        Hold(Phase),
        MarkSent,
        Send,
    }

    type Log = Mutex<Vec<(Instant, Event)>>;

    /// A table that answers as scripted.
    struct Store<'a> {
        log: &'a Log,
        /// Writes fail (no answer) until then.
        down_until: Instant,
        /// `mark_sent` fails until then.
        mark_down_until: Instant,
        /// Another daemon holds the tick (from the first hold on).
        taken: bool,
    }

    impl TickStore for Store<'_> {
        async fn hold(&self, _: &str, _: DateTime<Utc>, phase: Phase) -> Result<bool, DbError> {
            self.log
                .lock()
                .unwrap()
                .push((Instant::now(), Event::Hold(phase)));
            if Instant::now() < self.down_until {
                return Err(DbError::transient("no answer"));
            }
            Ok(!self.taken)
        }

        async fn mark_sent(&self, _: &str, _: DateTime<Utc>) -> Result<bool, DbError> {
            self.log
                .lock()
                .unwrap()
                .push((Instant::now(), Event::MarkSent));
            if Instant::now() < self.mark_down_until.max(self.down_until) {
                return Err(DbError::transient("no answer"));
            }
            Ok(true)
        }
    }

    /// A queue whose sends come out as scripted, then as `then`.
    struct Sender<'a> {
        log: &'a Log,
        script: Mutex<VecDeque<SendOutcome>>,
        then: SendOutcome,
        fifo: bool,
    }

    impl TaskSender for Sender<'_> {
        async fn send(&self, _: &Task, _: DateTime<Utc>) -> SendOutcome {
            self.log.lock().unwrap().push((Instant::now(), Event::Send));
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| self.then.clone())
        }

        fn deduplicates(&self) -> bool {
            self.fifo
        }
    }

    fn unknown() -> SendOutcome {
        SendOutcome::Unknown("no answer within 20s".into())
    }

    fn not_sent() -> SendOutcome {
        SendOutcome::NotSent {
            error: "connection refused".into(),
            permanent: false,
        }
    }

    fn sent() -> SendOutcome {
        SendOutcome::Sent("id-1".into())
    }

    struct Case {
        script: Vec<SendOutcome>,
        then: SendOutcome,
        fifo: bool,
        retry_for: Duration,
        record_for: Duration,
        db_down_for: Duration,
        mark_down_for: Duration,
        taken: bool,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                script: vec![],
                then: sent(),
                fifo: false,
                retry_for: Duration::from_secs(3600),
                record_for: Duration::from_secs(3600),
                db_down_for: Duration::ZERO,
                mark_down_for: Duration::ZERO,
                taken: false,
            }
        }
    }

    struct Run {
        ending: Ending,
        start: Instant,
        events: Vec<(Instant, Event)>,
        metrics: Metrics,
    }

    impl Run {
        fn sends(&self) -> Vec<Instant> {
            self.times(&Event::Send)
        }

        fn times(&self, e: &Event) -> Vec<Instant> {
            self.events
                .iter()
                .filter(|(_, x)| x == e)
                .map(|(t, _)| *t)
                .collect()
        }

        fn count(&self, metric: &prometheus::IntCounterVec) -> u64 {
            metric.with_label_values(&["job"]).get()
        }
    }

    async fn run(case: Case) -> Run {
        let start = Instant::now();
        let log = Log::default();
        let store = Store {
            log: &log,
            down_until: start + case.db_down_for,
            mark_down_until: start + case.mark_down_for,
            taken: case.taken,
        };
        let sender = Sender {
            log: &log,
            script: Mutex::new(case.script.into()),
            then: case.then,
            fifo: case.fifo,
        };
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let job = Job {
            task: Task {
                name: "job".into(),
                url: "/job".into(),
                schedule: Schedule::parse("* * * * *").unwrap(),
            },
            tick: Utc::now(),
            retry_until: start + case.retry_for,
            resend_until: None,
            record_until: start + case.record_for,
        };
        let ending = Enqueuer {
            store: Some(&store),
            sender: &sender,
            metrics: &metrics,
            stop: &stop,
        }
        .run(&job)
        .await;
        let events = log.lock().unwrap().clone();
        Run {
            ending,
            start,
            events,
            metrics,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_without_an_answer_is_never_repeated_on_a_standard_queue() {
        let r = run(Case {
            script: vec![unknown()],
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Unknown);
        assert_eq!(r.sends().len(), 1);
        // The record stays `sending`: no other daemon sends it either.
        assert!(r.times(&Event::Hold(Phase::Claimed)).is_empty());
        assert_eq!(r.count(&r.metrics.ticks_unknown), 1);
        assert_eq!(r.count(&r.metrics.tasks_enqueued), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fifo_queue_repeats_it_with_the_same_id_inside_the_window_only() {
        let r = run(Case {
            script: vec![unknown(), unknown()],
            fifo: true,
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Enqueued { recorded: true });
        assert_eq!(r.sends().len(), 3);
        // Each repeat is preceded by renewing the hold on the tick.
        let kinds: Vec<Event> = r.events.iter().map(|(_, e)| e.clone()).collect();
        let hold = Event::Hold(Phase::Sending);
        assert_eq!(
            kinds,
            [
                Event::Send,
                hold.clone(),
                Event::Send,
                hold,
                Event::Send,
                Event::MarkSent
            ]
        );

        let r = run(Case {
            then: unknown(),
            fifo: true,
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Unknown);
        let sends = r.sends();
        let last = *sends.last().unwrap();
        assert!(last < r.start + FIFO_RESEND_WITHIN, "{:?}", last - r.start);
        assert!(
            last > r.start + FIFO_RESEND_WITHIN - RENEW_AT_LEAST_EVERY * 2,
            "kept trying: {:?}",
            last - r.start
        );
    }

    #[tokio::test(start_paused = true)]
    async fn certain_failures_are_retried_until_the_deadline_renewing_the_hold() {
        let r = run(Case {
            then: not_sent(),
            retry_for: Duration::from_secs(120),
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::GaveUp);
        let sends = r.sends();
        assert!(sends.len() >= 5, "{} sends", sends.len());
        assert!(*sends.last().unwrap() < r.start + Duration::from_secs(120));
        // Between attempts the record says `claimed` (nothing is in the
        // queue), and `sending` again before each one.
        let kinds: Vec<Event> = r.events.iter().map(|(_, e)| e.clone()).collect();
        for pair in kinds.windows(2) {
            if pair[1] == Event::Send {
                assert!(
                    pair[0] == Event::Hold(Phase::Sending) || kinds[0] == pair[1],
                    "{kinds:?}"
                );
            }
        }
        assert_eq!(kinds.last(), Some(&Event::Hold(Phase::Claimed)));
        // The holder's writes are never further apart than a third of the
        // lease, so that others see it alive.
        let writes: Vec<Instant> = r
            .events
            .iter()
            .filter(|(_, e)| *e != Event::Send)
            .map(|(t, _)| *t)
            .collect();
        for w in writes.windows(2) {
            assert!(w[1] - w[0] <= RENEW_AT_LEAST_EVERY, "{:?}", w[1] - w[0]);
        }
        assert_eq!(r.count(&r.metrics.ticks_skipped), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_refusal_is_not_retried() {
        let r = run(Case {
            then: SendOutcome::NotSent {
                error: "AccessDenied".into(),
                permanent: true,
            },
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::GaveUp);
        assert_eq!(r.sends().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn marking_sent_is_retried_past_the_lease_and_never_resends() {
        let down = crate::cron::lease::LEASE * 3;
        let r = run(Case {
            mark_down_for: down,
            record_for: Duration::from_secs(330),
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Enqueued { recorded: true });
        assert_eq!(r.sends().len(), 1);
        let marks = r.times(&Event::MarkSent);
        assert!(marks.len() > 5, "{} tries", marks.len());
        assert!(*marks.last().unwrap() >= r.start + down);

        // Past its deadline the record is left `sending`: still one send.
        let r = run(Case {
            mark_down_for: Duration::from_secs(3600),
            record_for: Duration::from_secs(330),
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Enqueued { recorded: false });
        assert_eq!(r.sends().len(), 1);
        let last = *r.times(&Event::MarkSent).last().unwrap();
        assert!(
            last > r.start + Duration::from_secs(300) && last < r.start + Duration::from_secs(330)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_without_the_hold_renewed() {
        // The table does not answer for 40 s after a certain failure: no
        // send until the hold is written again.
        let r = run(Case {
            script: vec![not_sent()],
            db_down_for: Duration::from_secs(40),
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Enqueued { recorded: true });
        let sends = r.sends();
        assert_eq!(sends.len(), 2);
        assert!(sends[1] >= r.start + Duration::from_secs(40));

        // Another daemon took the tick over: this one stops.
        let r = run(Case {
            script: vec![not_sent()],
            taken: true,
            ..Case::default()
        })
        .await;
        assert_eq!(r.ending, Ending::Lost);
        assert_eq!(r.sends().len(), 1);
    }
}
