//! The shutdown sequence with paused time: POSTs under way finish and their
//! deletes go out, POSTs past the drain timeout are abandoned and released,
//! and what SQS never accepts is counted.

use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::aws::SqsError;
use crate::daemon::testing::{rig, FakeApp, FakeSqs, Rig};

/// Starts `ids` as one delivery each, and a poller whose receive under way
/// ends after `receive_left`; returns what the daemon has when it stops.
async fn stopping_with(r: Rig, ids: &[&str], receive_left: Duration) -> (Stopping, Arc<FakeSqs>) {
    let deliveries = TaskTracker::new();
    let abort = CancellationToken::new();
    let never = CancellationToken::new();
    let mut held = Vec::new();
    for id in ids {
        held.push(r.held(id, None).await);
    }
    let dispatcher = Arc::new(r.dispatcher);
    for held in held {
        let d = dispatcher.clone();
        let (stop, cut) = (never.clone(), abort.clone());
        deliveries.spawn(async move { d.deliver_in_order(vec![held], &stop, &cut).await });
    }
    drop(dispatcher);
    let mut pollers = JoinSet::new();
    pollers.spawn(tokio::time::sleep(receive_left));
    (
        Stopping {
            pollers,
            deliveries,
            abort,
            settler: r.task,
        },
        r.sqs,
    )
}

#[tokio::test(start_paused = true)]
async fn posts_under_way_finish_and_their_deletes_go_out_before_the_end() {
    let app = FakeApp::status(200, Duration::from_secs(3));
    let (stopping, sqs) =
        stopping_with(rig(app.clone()), &["a", "b"], Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let unsettled = stopping.drain(Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert_eq!(unsettled, 0);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "ends once the POSTs are answered and settled, not at the drain timeout: {took:?}"
    );
    let mut sent = sqs.entries();
    sent.sort();
    assert_eq!(sent, vec![("rh-a".into(), None), ("rh-b".into(), None)]);
    assert_eq!(app.seen().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn posts_past_the_drain_timeout_are_abandoned_and_their_messages_released() {
    let app = FakeApp::status(200, Duration::from_secs(600));
    let (stopping, sqs) = stopping_with(rig(app.clone()), &["slow"], Duration::ZERO).await;
    let t0 = Instant::now();
    let unsettled = stopping.drain(Duration::from_secs(5)).await;
    let took = t0.elapsed();
    assert_eq!(unsettled, 0);
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(sqs.entries(), vec![("rh-slow".into(), Some(0))]);
}

#[tokio::test(start_paused = true)]
async fn a_receive_under_way_is_waited_for_within_the_drain_timeout() {
    let app = FakeApp::status(200, Duration::ZERO);
    let (stopping, _) = stopping_with(rig(app), &[], Duration::from_secs(2)).await;
    let t0 = Instant::now();
    assert_eq!(stopping.drain(Duration::from_secs(10)).await, 0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn deletes_sqs_never_accepts_are_retried_to_the_deadline_then_counted() {
    let app = FakeApp::status(200, Duration::from_millis(10));
    let mut r = rig(app);
    let down = FakeSqs::new(Duration::from_millis(15), |_, _| {
        Err(SqsError::transient("connection refused"))
    });
    // The same dispatcher, its settler now talking to an SQS that is down.
    let (settler, task) = Settler::spawn(
        down.clone(),
        Terms {
            lease_s: 30,
            linger: Duration::from_millis(20),
            max_calls: 16,
        },
        r.dispatcher.metrics.clone(),
    );
    r.dispatcher.settler = settler;
    r.task = task;
    let (stopping, _) = stopping_with(r, &["a", "b"], Duration::ZERO).await;
    let t0 = Instant::now();
    let unsettled = stopping.drain(Duration::from_secs(20)).await;
    let took = t0.elapsed();
    assert_eq!(unsettled, 2);
    assert!(
        took >= Duration::from_secs(19) && took <= Duration::from_secs(21),
        "retries run until the drain deadline: {took:?}"
    );
    assert!(down.calls().len() > 3, "{} calls", down.calls().len());
}

fn planned(timeout: u32, lease: u32, queue_own: Option<u32>) -> Option<(Option<u32>, u32)> {
    plan_visibility(timeout, lease, queue_own).map(|v| (v.receive_s, v.lease_s))
}

#[test]
fn messages_are_received_for_the_lease_when_it_is_shorter() {
    assert_eq!(planned(300, 30, Some(45)), Some((Some(30), 30)));
    assert_eq!(planned(10, 30, Some(45)), Some((Some(10), 10)));
}

#[test]
fn lease_zero_receives_for_the_whole_visibility_timeout() {
    assert_eq!(planned(300, 0, Some(45)), Some((Some(300), 300)));
    assert_eq!(planned(0, 0, Some(45)), Some((None, 45)));
}

#[test]
fn visibility_timeout_zero_means_the_queues_own() {
    // The queue's own is shorter than the lease: the receive leaves it out.
    assert_eq!(planned(0, 30, Some(20)), Some((None, 20)));
    // The lease is shorter: the receive asks for the lease.
    assert_eq!(planned(0, 30, Some(120)), Some((Some(30), 30)));
    // Nothing usable: refused at start.
    assert_eq!(planned(0, 30, Some(0)), None);
    assert_eq!(planned(0, 30, None), None);
}
