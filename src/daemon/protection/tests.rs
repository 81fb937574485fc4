//! The protection's timing, on paused tokio time against a recording agent.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::*;

/// Records every PUT with the (paused) time it came at.
#[derive(Default)]
struct FakeAgent {
    puts: Mutex<Vec<(Protection, Instant)>>,
    failing: AtomicBool,
}

impl Agent for FakeAgent {
    fn put(&self, protection: Protection) -> impl Future<Output = Result<(), AgentError>> + Send {
        self.puts.lock().unwrap().push((protection, Instant::now()));
        let failing = self.failing.load(Ordering::SeqCst);
        async move {
            if failing {
                Err(AgentError::Status {
                    status: 500,
                    answer: "boom".into(),
                })
            } else {
                Ok(())
            }
        }
    }
}

struct Rig {
    agent: Arc<FakeAgent>,
    work: Arc<Mutex<Activity>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    start: Instant,
}

impl Rig {
    fn start(minutes: u32) -> Rig {
        let agent = Arc::new(FakeAgent::default());
        let work = Arc::new(Mutex::new(Activity::default()));
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let seen = work.clone();
        let task = tokio::spawn(keep(
            agent.clone(),
            minutes,
            move || *seen.lock().unwrap(),
            metrics.clone(),
            stop.clone(),
        ));
        Rig {
            agent,
            work,
            metrics,
            stop,
            task: Some(task),
            start: Instant::now(),
        }
    }

    fn hold(&self, n: usize) {
        let mut w = self.work.lock().unwrap();
        if n > w.held {
            w.received += (n - w.held) as u64;
        }
        w.held = n;
    }

    /// The PUTs so far, each with its time since the start.
    fn puts(&self) -> Vec<(Protection, Duration)> {
        self.agent
            .puts
            .lock()
            .unwrap()
            .iter()
            .map(|(p, at)| (*p, at.duration_since(self.start)))
            .collect()
    }

    /// Stops the keeper and waits for its last word.
    async fn shut_down(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    async fn at(&self, since_start: Duration) {
        tokio::time::sleep_until(self.start + since_start).await;
    }
}

const ON_1: Protection = Protection::On { minutes: 1 };

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn nothing_is_asked_while_idle_not_even_at_shutdown() {
    let mut rig = Rig::start(60);
    rig.at(secs(120.0)).await;
    rig.shut_down().await;
    assert!(rig.puts().is_empty(), "{:?}", rig.puts());
}

#[tokio::test(start_paused = true)]
async fn on_when_work_starts_off_after_thirty_idle_seconds() {
    let mut rig = Rig::start(60);
    rig.at(secs(5.1)).await;
    rig.hold(3);
    rig.at(secs(6.0)).await;
    let puts = rig.puts();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].0, Protection::On { minutes: 60 });
    assert!(puts[0].1 <= secs(5.1) + TICK, "{puts:?}");
    assert_eq!(rig.metrics.ecs_protected.get(), 1);

    // Work goes on for a minute: no second request (renewal is at 30 min).
    rig.at(secs(65.1)).await;
    rig.hold(0);
    rig.at(secs(94.0)).await;
    assert_eq!(rig.puts().len(), 1, "{:?}", rig.puts());
    rig.at(secs(96.0)).await;
    let puts = rig.puts();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert_eq!(puts[1].0, Protection::Off);
    assert!(
        puts[1].1 >= secs(95.0) && puts[1].1 <= secs(95.0) + TICK,
        "{puts:?}"
    );
    assert_eq!(rig.metrics.ecs_protected.get(), 0);

    // Work again: on again.
    rig.hold(1);
    rig.at(secs(97.0)).await;
    assert_eq!(rig.puts().len(), 3);
    assert_eq!(rig.puts()[2].0, Protection::On { minutes: 60 });
    rig.shut_down().await;
    assert_eq!(rig.puts().last().unwrap().0, Protection::Off);
    assert_eq!(rig.metrics.ecs_protection_failures.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn protection_is_renewed_at_half_its_length_while_work_goes_on() {
    let rig = Rig::start(1);
    rig.hold(1);
    rig.at(secs(100.0)).await;
    let ons: Vec<Duration> = rig
        .puts()
        .into_iter()
        .inspect(|(p, _)| assert_eq!(*p, ON_1))
        .map(|(_, at)| at)
        .collect();
    // At 0, 30, 60, 90 s: each renewal half a minute after the last, so
    // never closer than 30 s to the one-minute expiry.
    assert_eq!(ons.len(), 4, "{ons:?}");
    for pair in ons.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= secs(30.0) && gap <= secs(30.0) + TICK, "{ons:?}");
    }

    // The longest allowed protection is renewed after a day, not before.
    let mut keeper = Keeper::new(2880);
    let busy = Activity {
        held: 1,
        received: 1,
    };
    let t0 = Instant::now();
    let asked = keeper.next(busy, t0);
    assert_eq!(asked, Some(Protection::On { minutes: 2880 }));
    keeper.answered(Protection::On { minutes: 2880 }, true, t0, t0);
    assert_eq!(keeper.next(busy, t0 + secs(86_399.0)), None);
    assert_eq!(
        keeper.next(busy, t0 + secs(86_400.0)),
        Some(Protection::On { minutes: 2880 })
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_settled_between_two_checks_is_still_work() {
    let rig = Rig::start(5);
    rig.at(secs(1.0)).await;
    // Received and settled before the next check saw it held.
    rig.work.lock().unwrap().received += 1;
    rig.at(secs(2.0)).await;
    assert_eq!(rig.puts().len(), 1);
    assert_eq!(rig.puts()[0].0, Protection::On { minutes: 5 });
}

#[tokio::test(start_paused = true)]
async fn a_failed_put_is_counted_and_tried_again_a_second_later() {
    let rig = Rig::start(1);
    rig.agent.failing.store(true, Ordering::SeqCst);
    rig.hold(1);
    rig.at(secs(3.6)).await;
    let tries = rig.puts();
    assert!(tries.len() >= 3 && tries.len() <= 4, "{tries:?}");
    for pair in tries.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= RETRY && gap <= RETRY + TICK, "{tries:?}");
    }
    assert_eq!(
        rig.metrics.ecs_protection_failures.get(),
        tries.len() as u64
    );
    assert_eq!(rig.metrics.ecs_protected.get(), 0);

    // The agent recovers: the next try is taken, and renewal runs from it.
    rig.agent.failing.store(false, Ordering::SeqCst);
    rig.at(secs(6.0)).await;
    let puts = rig.puts();
    let taken = puts.last().unwrap().1;
    assert_eq!(rig.metrics.ecs_protected.get(), 1);
    rig.at(taken + secs(29.0)).await;
    assert_eq!(rig.puts().len(), puts.len());
    rig.at(taken + secs(31.0)).await;
    assert_eq!(rig.puts().len(), puts.len() + 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_turns_protection_off_even_when_the_on_was_not_answered() {
    let mut rig = Rig::start(1);
    rig.agent.failing.store(true, Ordering::SeqCst);
    rig.hold(2);
    rig.at(secs(0.5)).await;
    rig.agent.failing.store(false, Ordering::SeqCst);
    rig.shut_down().await;
    let puts = rig.puts();
    assert_eq!(puts.first().unwrap().0, ON_1);
    assert_eq!(puts.last().unwrap().0, Protection::Off, "{puts:?}");
}

#[test]
fn after_an_off_whose_answer_failed_new_work_asks_for_protection_again() {
    let t0 = Instant::now();
    let mut k = Keeper::new(60);
    let busy = Activity {
        held: 1,
        received: 1,
    };
    let idle = Activity {
        held: 0,
        received: 1,
    };
    let on = k.next(busy, t0).expect("protect when work starts");
    k.answered(on, true, t0, t0);
    // Idle long enough: Off, whose answer is lost (it may have taken effect).
    let later = t0 + IDLE_OFF + Duration::from_secs(1);
    let off = k.next(idle, later).expect("off when idle");
    assert_eq!(off, Protection::Off);
    k.answered(off, false, later, later);
    // Work again, long before the first protection's renewal was due.
    let again = later + RETRY + Duration::from_millis(1);
    let busy_again = Activity {
        held: 1,
        received: 2,
    };
    assert!(
        matches!(k.next(busy_again, again), Some(Protection::On { .. })),
        "protection asked for again"
    );
}
