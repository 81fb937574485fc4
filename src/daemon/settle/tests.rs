//! The settler against an in-memory stand-in for the two batch calls, with
//! paused time: what it sends, when, and in which order.

use super::*;
use crate::daemon::testing::{Call, FakeSqs};

fn fake(
    answer: impl Fn(&Call, usize) -> Result<Vec<BatchFailure>, SqsError> + Send + Sync + 'static,
) -> Arc<FakeSqs> {
    FakeSqs::new(Duration::from_millis(15), answer)
}

fn ok() -> Arc<FakeSqs> {
    FakeSqs::ok()
}

fn terms(lease_s: u32) -> Terms {
    Terms {
        lease_s,
        linger: Duration::from_millis(20),
        max_calls: 16,
    }
}

fn start(calls: Arc<FakeSqs>, lease_s: u32) -> (Settler, SettlerTask, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let (s, t) = Settler::spawn(calls, terms(lease_s), metrics.clone());
    (s, t, metrics)
}

fn calls(f: &FakeSqs) -> Vec<Call> {
    f.calls()
}

fn refused(id: usize, sender_fault: bool) -> BatchFailure {
    BatchFailure {
        id: id.to_string(),
        sender_fault,
        code: if sender_fault {
            "ReceiptHandleIsInvalid".into()
        } else {
            "InternalError".into()
        },
        message: None,
    }
}

/// Holds a message received now.
fn hold(s: &Settler, id: &str, handle: String, deadline: Instant) -> Key {
    s.hold(id, handle, Instant::now(), deadline)
}

/// Lets the settler run until paused time has moved `d` on.
async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn deletes_go_out_ten_at_a_time_and_the_rest_after_the_linger() {
    let f = ok();
    let (s, task, metrics) = start(f.clone(), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    let keys: Vec<Key> = (0..25)
        .map(|i| hold(&s, &format!("m{i}"), format!("r{i}"), deadline))
        .collect();
    for k in &keys {
        s.settle(*k, Action::Delete);
    }
    wait(Duration::from_millis(10)).await;
    let sizes: Vec<usize> = calls(&f).iter().map(|c| c.entries.len()).collect();
    assert_eq!(sizes, vec![10, 10], "full batches go out at once");
    wait(Duration::from_millis(100)).await;
    let all = calls(&f);
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].entries.len(), 5);
    assert!(all.iter().all(|c| c.kind == Kind::Delete));
    assert!(
        all[2].at - all[0].at >= Duration::from_millis(20),
        "the partial batch lingered"
    );
    assert_eq!(metrics.deleted.get(), 25);
    assert_eq!(s.held(), 0);
    drop(s);
    assert_eq!(
        task.finish(Instant::now() + Duration::from_secs(1)).await,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_delete_is_retried_while_sqs_is_down_until_it_goes_through() {
    // SQS answers nothing for 5 s (a cut connection), then works again.
    let start_at = Instant::now();
    let f = fake(move |_, _| {
        if Instant::now() < start_at + Duration::from_secs(5) {
            Err(SqsError::transient("connection refused"))
        } else {
            Ok(Vec::new())
        }
    });
    let (s, task, metrics) = start(f.clone(), 30);
    let k = hold(
        &s,
        "m",
        "r".into(),
        Instant::now() + Duration::from_secs(30),
    );
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(10)).await;
    let tries = calls(&f).len();
    assert!(
        tries > 5,
        "only {tries} tries: a fixed count, not the deadline"
    );
    assert_eq!(metrics.deleted.get(), 1);
    assert_eq!(
        metrics
            .settle_failures
            .with_label_values(&["DeleteMessageBatch"])
            .get(),
        0
    );
    drop(s);
    assert_eq!(task.finish(Instant::now()).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_delete_is_given_up_only_when_the_visibility_runs_out() {
    let f = fake(|_, _| Err(SqsError::transient("connection refused")));
    let (s, task, metrics) = start(f.clone(), 30);
    let deadline = Instant::now() + Duration::from_secs(4);
    let k = hold(&s, "m", "r".into(), deadline);
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(8)).await;
    let all = calls(&f);
    let last = all.last().expect("at least one try").at;
    assert!(last <= deadline, "tried after the deadline");
    assert!(
        last >= deadline - Duration::from_secs(1),
        "gave up early: last try at {:?} before the deadline",
        deadline - last
    );
    assert_eq!(
        metrics
            .settle_failures
            .with_label_values(&["DeleteMessageBatch"])
            .get(),
        1
    );
    assert_eq!(s.held(), 0);
    drop(s);
    assert_eq!(task.finish(Instant::now()).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_for_good_is_not_retried() {
    let f = fake(|c, _| Ok((0..c.entries.len()).map(|i| refused(i, true)).collect()));
    let (s, _task, metrics) = start(f.clone(), 30);
    let k = hold(
        &s,
        "m",
        "r".into(),
        Instant::now() + Duration::from_secs(30),
    );
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(5)).await;
    assert_eq!(calls(&f).len(), 1);
    assert_eq!(
        metrics
            .settle_failures
            .with_label_values(&["DeleteMessageBatch"])
            .get(),
        1
    );
    assert_eq!(metrics.deleted.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_refused_entry_does_not_hold_back_the_others() {
    // Entry 1 of the first call fails on the server side once.
    let f = fake(|_, n| {
        Ok(if n == 1 {
            vec![refused(1, false)]
        } else {
            Vec::new()
        })
    });
    let (s, _task, metrics) = start(f.clone(), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        let k = hold(&s, &format!("m{i}"), format!("r{i}"), deadline);
        s.settle(k, Action::Delete);
    }
    wait(Duration::from_secs(5)).await;
    let all = calls(&f);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].entries, vec![("r1".to_string(), None)]);
    assert_eq!(metrics.deleted.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn held_messages_are_renewed_before_the_lease_runs_out() {
    let f = ok();
    let (s, _task, metrics) = start(f.clone(), 6);
    let t0 = Instant::now();
    hold(&s, "m", "r".into(), t0 + Duration::from_secs(6));
    wait(Duration::from_secs(30)).await;
    let all = calls(&f);
    assert!(
        all.len() >= 6,
        "{} renewals in 30 s with a 6 s lease",
        all.len()
    );
    assert!(all
        .iter()
        .all(|c| c.kind == Kind::Visibility && c.entries == vec![("r".to_string(), Some(6))]));
    // Each renewal comes before the previous lease ran out, with room to spare.
    let mut lease_end = t0 + Duration::from_secs(6);
    for c in &all {
        assert!(
            c.at + Duration::from_secs(1) < lease_end,
            "renewal at {:?} too close to the lease end",
            c.at - t0
        );
        lease_end = c.at + Duration::from_secs(6);
    }
    assert_eq!(metrics.lease_renewals.get() as usize, all.len());
    assert_eq!(s.held(), 1);
}

#[tokio::test(start_paused = true)]
async fn renewals_due_close_together_share_one_call() {
    let f = ok();
    let (s, _task, _) = start(f.clone(), 30);
    let t0 = Instant::now();
    for i in 0..10 {
        // Received over one second.
        hold(
            &s,
            &format!("m{i}"),
            format!("r{i}"),
            t0 + Duration::from_secs(30) + Duration::from_millis(100 * i),
        );
    }
    wait(Duration::from_secs(25)).await;
    let all = calls(&f);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].entries.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn fast_messages_cost_no_renewal() {
    let f = ok();
    let (s, _task, _) = start(f.clone(), 30);
    let k = hold(
        &s,
        "m",
        "r".into(),
        Instant::now() + Duration::from_secs(30),
    );
    wait(Duration::from_millis(5)).await;
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(60)).await;
    let all = calls(&f);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].kind, Kind::Delete);
}

#[tokio::test(start_paused = true)]
async fn a_settlement_replaces_a_queued_renewal_and_never_follows_it_late() {
    // Renewals take 1 s to answer; the retry delay is decided meanwhile.
    let f = FakeSqs::new(Duration::from_secs(1), |_, _| Ok(Vec::new()));
    let (s, _task, _) = start(f.clone(), 3);
    let t0 = Instant::now();
    let k = hold(&s, "m", "r".into(), t0 + Duration::from_secs(3));
    // The renewal goes out at 1.48 s (half the lease and the linger before
    // its end), and is answered at 2.48 s.
    wait(Duration::from_millis(2000)).await;
    assert_eq!(calls(&f).len(), 1);
    s.settle(k, Action::ChangeVisibility(7));
    wait(Duration::from_secs(10)).await;
    let all = calls(&f);
    let sent: Vec<Option<u32>> = all.iter().map(|c| c.entries[0].1).collect();
    assert_eq!(
        sent,
        vec![Some(3), Some(7)],
        "the retry delay must be the last word"
    );
    assert!(
        all[1].at >= all[0].at + Duration::from_secs(1),
        "sent while the renewal was under way"
    );
}

#[tokio::test(start_paused = true)]
async fn a_delete_cancels_the_renewal_waiting_for_its_batch() {
    let f = ok();
    let (s, _task, _) = start(f.clone(), 3);
    let t0 = Instant::now();
    let a = hold(&s, "a", "ra".into(), t0 + Duration::from_secs(3));
    // The renewal is due at 1.48 s; the delete comes within the linger.
    wait(Duration::from_millis(1485)).await;
    s.settle(a, Action::Delete);
    wait(Duration::from_secs(5)).await;
    let all = calls(&f);
    assert!(
        all.iter().all(|c| c.kind == Kind::Delete),
        "a renewal went out after the delete was decided: {all:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_renewal_is_counted_and_the_settlement_still_goes_out() {
    let f = fake(|c, _| {
        Ok(match c.kind {
            Kind::Visibility => vec![refused(0, true)],
            Kind::Delete => Vec::new(),
        })
    });
    let (s, _task, metrics) = start(f.clone(), 3);
    let k = hold(&s, "m", "r".into(), Instant::now() + Duration::from_secs(3));
    wait(Duration::from_secs(10)).await;
    assert_eq!(metrics.lease_renewal_failures.get(), 1);
    assert_eq!(calls(&f).len(), 1, "no renewal after a refusal for good");
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(1)).await;
    assert_eq!(calls(&f).len(), 2);
    assert_eq!(metrics.deleted.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_flushes_at_once_and_gives_back_what_nobody_settled() {
    let f = ok();
    let (s, task, _) = start(f.clone(), 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    let k = hold(&s, "done", "r1".into(), deadline);
    s.settle(k, Action::Delete);
    hold(&s, "orphan", "r2".into(), deadline);
    drop(s);
    let t0 = Instant::now();
    let left = task.finish(t0 + Duration::from_secs(5)).await;
    assert_eq!(left, 0);
    assert!(
        Instant::now() - t0 < Duration::from_millis(100),
        "the linger was waited out"
    );
    let mut sent: Vec<(String, Option<u32>)> =
        calls(&f).into_iter().flat_map(|c| c.entries).collect();
    sent.sort();
    assert_eq!(
        sent,
        vec![("r1".to_string(), None), ("r2".to_string(), Some(0))]
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_reports_what_sqs_never_accepted() {
    let f = fake(|_, _| Err(SqsError::transient("connection refused")));
    let (s, task, metrics) = start(f.clone(), 300);
    for i in 0..3 {
        let k = hold(
            &s,
            &format!("m{i}"),
            format!("r{i}"),
            Instant::now() + Duration::from_secs(300),
        );
        s.settle(k, Action::Delete);
    }
    drop(s);
    let t0 = Instant::now();
    let left = task.finish(t0 + Duration::from_secs(4)).await;
    assert_eq!(left, 3);
    let waited = Instant::now() - t0;
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(calls(&f).len() > 3, "retried during the drain");
    assert_eq!(
        metrics
            .settle_failures
            .with_label_values(&["DeleteMessageBatch"])
            .get(),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn calls_under_way_are_bounded() {
    let f = FakeSqs::new(Duration::from_secs(1), |_, _| Ok(Vec::new()));
    let metrics = Arc::new(Metrics::new());
    let (s, _task) = Settler::spawn(
        f.clone(),
        Terms {
            max_calls: 2,
            ..terms(30)
        },
        metrics.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..50 {
        let k = hold(&s, &format!("m{i}"), format!("r{i}"), deadline);
        s.settle(k, Action::Delete);
    }
    wait(Duration::from_millis(500)).await;
    assert_eq!(calls(&f).len(), 2);
    wait(Duration::from_secs(3)).await;
    assert_eq!(calls(&f).len(), 5);
    assert_eq!(metrics.deleted.get(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_delete_refused_for_an_expired_handle_stretches_the_visibility_first() {
    // LocalStack's FIFO queues refuse a delete once the last visibility
    // timeout, counted from the receive, has passed.
    let f = fake(|c, n| {
        Ok(match (c.kind, n) {
            (Kind::Delete, 1) => vec![BatchFailure {
                id: "0".into(),
                sender_fault: false,
                code: "InvalidParameterValueException".into(),
                message: Some("Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.".into()),
            }],
            _ => Vec::new(),
        })
    });
    let (s, _task, metrics) = start(f.clone(), 30);
    let k = hold(
        &s,
        "m",
        "r".into(),
        Instant::now() + Duration::from_secs(30),
    );
    wait(Duration::from_secs(12)).await;
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(5)).await;
    let sent: Vec<(Kind, Option<u32>)> =
        calls(&f).iter().map(|c| (c.kind, c.entries[0].1)).collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent[0], (Kind::Delete, None));
    assert_eq!(sent[1].0, Kind::Visibility);
    let stretched = sent[1].1.unwrap();
    assert!(
        (42..=44).contains(&stretched),
        "stretch of {stretched} s for 12 s held + 30 s lease"
    );
    assert_eq!(sent[2], (Kind::Delete, None));
    assert_eq!(metrics.deleted.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_renewal_is_cut_off_in_time_for_another() {
    // The first renewal call hangs (60 s); the next ones are answered.
    let f = FakeSqs::new(Duration::ZERO, |_, _| Ok(Vec::new()));
    let hang = FakeSqs::new(Duration::from_secs(60), |_, _| Ok(Vec::new()));
    let calls_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let either = Arc::new(Either {
        first: hang.clone(),
        rest: f.clone(),
        n: calls_seen.clone(),
    });
    let metrics = Arc::new(Metrics::new());
    let (s, _task) = Settler::spawn(either, terms(30), metrics.clone());
    let t0 = Instant::now();
    let k = hold(&s, "m", "r".into(), t0 + Duration::from_secs(30));
    // The renewal goes out at ~15 s and hangs; it is cut off before the
    // lease ends at 30 s and tried again, in time.
    wait(Duration::from_secs(29)).await;
    assert_eq!(hang.calls().len(), 1);
    let retried = f.calls();
    assert!(
        !retried.is_empty(),
        "no second renewal before the lease ran out"
    );
    assert!(retried[0].at < t0 + Duration::from_secs(30));
    assert_eq!(metrics.lease_renewals.get(), 1);
    s.settle(k, Action::Delete);
    wait(Duration::from_secs(1)).await;
    assert_eq!(f.calls().last().map(|c| c.kind), Some(Kind::Delete));
}

/// Sends the first call to `first`, every later one to `rest`.
struct Either {
    first: Arc<FakeSqs>,
    rest: Arc<FakeSqs>,
    n: Arc<std::sync::atomic::AtomicUsize>,
}

impl BatchCalls for Either {
    fn batch<'a>(
        &'a self,
        kind: Kind,
        entries: &'a [BatchEntry<'a>],
    ) -> Pin<Box<dyn Future<Output = Result<Vec<BatchFailure>, SqsError>> + Send + 'a>> {
        if self.n.fetch_add(1, Ordering::SeqCst) == 0 {
            self.first.batch(kind, entries)
        } else {
            self.rest.batch(kind, entries)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_delete_given_up_while_draining_is_reported_unsettled() {
    // SQS fails every call; the message's visibility runs out at 3 s, well
    // before the drain deadline at 60 s.
    let f = fake(|_, _| Err(SqsError::transient("connection refused")));
    let (s, task, _) = start(f.clone(), 30);
    let k = hold(&s, "m", "r".into(), Instant::now() + Duration::from_secs(3));
    s.settle(k, Action::Delete);
    let unsettled = task.finish(Instant::now() + Duration::from_secs(60)).await;
    assert_eq!(unsettled, 1);
}
