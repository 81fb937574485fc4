//! Settling that survives SQS trouble, and visibility that lasts as long as
//! the daemon holds a message: deletes retried until the visibility runs
//! out, FIFO groups longer than the visibility timeout, long POSTs, and
//! what shutdown reports when SQS never accepts a settlement.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::app::{App, Reply};
use common::proxy::Proxy;
use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(60);

/// Daemon arguments that reach SQS through `proxy`.
fn via_proxy(queue: &TestQueue, app: &App, proxy: &Proxy) -> Vec<String> {
    let mut a = base_args(queue, &app.url());
    a.extend(["--endpoint-url".into(), proxy.url()]);
    a
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_outlives_an_sqs_cut_right_after_the_200() {
    let queue = TestQueue::new("delcut").await;
    let proxy = Proxy::start(&common::endpoint()).await;
    // The application cuts SQS off as it answers: the delete meets a dead
    // link for 5 s. Old behaviour: five tries within a second, then the
    // delete was dropped and the message came back after its visibility.
    let cut = proxy.switch();
    let app = App::start(move |_| {
        cut.down_for(Duration::from_secs(5));
        Reply::status(200)
    })
    .await;
    let id = queue.send("once").await;
    let mut a = via_proxy(&queue, &app, &proxy);
    a.extend(["--visibility-timeout".into(), "10".into()]);
    let d = Daemon::start(a).await;
    app.wait_requests(1, WAIT).await;
    queue.wait_empty(WAIT).await;
    // Deleted, so it can never come back: exactly one POST.
    assert_eq!(app.for_message(&id).len(), 1);
    assert!(d.find_log("could not delete").is_none(), "{}", d.log_text());
    let deleted = d.metric("sqsd_messages_deleted_total").await;
    assert_eq!(deleted, 1.0);
    let failed_calls = d
        .metric("sqsd_sqs_requests_total{action=\"DeleteMessageBatch\",result=\"error\"}")
        .await;
    assert!(failed_calls >= 1.0, "the outage did not hit the delete");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_reports_deletes_sqs_never_accepted_and_exits_non_zero() {
    let queue = TestQueue::new("unsettled").await;
    let proxy = Proxy::start(&common::endpoint()).await;
    let cut = proxy.switch();
    let app = App::start(move |_| {
        cut.down_for(Duration::from_secs(600));
        Reply::status(200)
    })
    .await;
    let id = queue.send("lost link").await;
    let mut a = via_proxy(&queue, &app, &proxy);
    a.extend(["--drain-timeout".into(), "2".into()]);
    let mut d = Daemon::start(a).await;
    app.wait_requests(1, WAIT).await;
    d.wait_log("batch call failed", WAIT).await;
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(75), "{}", d.log_text());
    let line = d
        .find_log("shutdown deadline passed before SQS accepted")
        .unwrap_or_else(|| panic!("no line for the unsettled message:\n{}", d.log_text()));
    assert!(line.contains(&id), "{line}");
    assert!(d.find_log("left unsettled at shutdown").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_group_longer_than_the_visibility_timeout_runs_once_in_order() {
    let client = common::client();
    let name = format!("longgroup-{:08x}.fifo", fastrand::u32(..));
    let url = client
        .create_queue()
        .queue_name(&name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url
        .expect("url");
    let queue = TestQueue {
        client: client.clone(),
        url: url.clone(),
        name,
    };
    let mut ids = Vec::new();
    for i in 0..4 {
        let out = client
            .send_message()
            .queue_url(&url)
            .message_body(format!("step {i}"))
            .message_group_id("g")
            .send()
            .await
            .expect("send");
        ids.push(out.message_id.expect("id"));
    }
    // 4 × 1.2 s of work against a 2 s visibility timeout.
    let app = App::start(|_| Reply::status(200).after(Duration::from_millis(1200))).await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--visibility-timeout".into(), "2".into()]);
    let d = Daemon::start(a).await;
    queue.wait_empty(WAIT).await;
    let seen: Vec<String> = app.requests().iter().map(|r| r.msgid()).collect();
    assert_eq!(seen, ids, "each message once, in order");
    assert!(d.metric("sqsd_lease_renewals_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_lasting_three_leases_is_delivered_once_and_renewed_meanwhile() {
    let queue = TestQueue::new("longpost").await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(9))).await;
    let id = queue.send("slow work").await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--visibility-timeout".into(), "3".into()]);
    let d = Daemon::start(a).await;
    app.wait_requests(1, WAIT).await;
    // While the POST runs, SQS counts the message in flight, and the daemon
    // keeps renewing it.
    eventually(WAIT, "two renewals", || async {
        (d.metric("sqsd_lease_renewals_total").await >= 2.0).then_some(())
    })
    .await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.for_message(&id).len(), 1);
    assert!(d.metric("sqsd_lease_renewals_total").await >= 3.0);
    assert_eq!(d.metric("sqsd_lease_renewal_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_timeout_zero_uses_the_queues_own_and_delivers_once() {
    let attributes = HashMap::from([(QueueAttributeName::VisibilityTimeout, "30".to_string())]);
    let queue = TestQueue::with_attributes("vis0", attributes).await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(3))).await;
    let id = queue.send("one").await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--visibility-timeout".into(), "0".into()]);
    let _d = Daemon::start(a).await;
    queue.wait_empty(WAIT).await;
    // Old behaviour: received with VisibilityTimeout=0, POSTed again and
    // again while the first POST ran.
    assert_eq!(app.for_message(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn visibility_timeout_zero_on_a_queue_whose_own_is_zero_is_refused() {
    let attributes = HashMap::from([(QueueAttributeName::VisibilityTimeout, "0".to_string())]);
    let queue = TestQueue::with_attributes("vis00", attributes).await;
    let mut a = base_args(&queue, "http://127.0.0.1:9");
    a.extend(["--visibility-timeout".into(), "0".into()]);
    let mut d = Daemon::start(a).await;
    let status = d.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(64));
    assert!(
        d.find_log("VisibilityTimeout is 0").is_some(),
        "{}",
        d.log_text()
    );
}

/// Starts the daemon with its wall clock shifted by `offset` ("+120s"),
/// through libfaketime (installed by `scripts/test-env.sh`); its monotonic
/// clock is left alone.
async fn daemon_with_clock(args: &[String], offset: &str) -> common::Daemon {
    let lib = std::env::var("SQSD_TEST_FAKETIME_LIB")
        .expect("SQSD_TEST_FAKETIME_LIB is not set: run the suite through scripts/test.sh");
    let mut cmd = common::sqsd_command(args);
    cmd.env("LD_PRELOAD", lib)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("FAKETIME_DONT_RESET", "1");
    common::Daemon::start_with(cmd).await
}

/// The id of the next message a receive from `queue` brings, asking for
/// `visibility` seconds (or the queue's own), within `within`.
async fn receive_one(queue: &TestQueue, visibility: Option<i32>, within: Duration) -> String {
    let client = common::client();
    eventually(within, "a message from the queue", || {
        let client = client.clone();
        let url = queue.url.clone();
        async move {
            let out = client
                .receive_message()
                .queue_url(url)
                .set_visibility_timeout(visibility)
                .wait_time_seconds(1)
                .send()
                .await
                .ok()?;
            out.messages?.into_iter().find_map(|m| m.message_id)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_clock_ahead_of_sqs_does_not_expire_fresh_messages() {
    // Old behaviour: the age was the host clock minus SQS's first-receive
    // time, so a host clock 2 minutes fast deleted every message unsent
    // as "expired" with a 60 s retention period.
    let queue = TestQueue::new("skewed").await;
    let app = App::ok().await;
    let id = queue.send("fresh").await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--retention-period".into(), "60".into()]);
    let d = daemon_with_clock(&a, "+120s").await;
    app.wait_requests(1, WAIT).await;
    queue.wait_empty(WAIT).await;
    assert_eq!(app.for_message(&id).len(), 1, "{}", d.log_text());
    assert_eq!(d.metric("sqsd_messages_expired_total").await, 0.0);
    assert_eq!(d.metric("sqsd_messages_deleted_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_held_by_a_daemon_that_dies_is_back_within_the_lease() {
    let queue = TestQueue::new("lease").await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(600))).await;
    let id = queue.send("held when the daemon dies").await;
    let mut a = base_args(&queue, &app.url());
    a.extend([
        "--visibility-timeout".into(),
        "300".into(),
        "--visibility-lease".into(),
        "4".into(),
    ]);
    let mut d = Daemon::start(a).await;
    app.wait_requests(1, WAIT).await;
    // Held past a few leases: renewed, never handed out twice.
    eventually(WAIT, "two renewals", || async {
        (d.metric("sqsd_lease_renewals_total").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(app.for_message(&id).len(), 1);
    d.kill9();
    let killed = std::time::Instant::now();
    // With EB's behaviour the message would stay hidden for the whole
    // visibility timeout (300 s). With a 4 s lease it is back within the
    // lease; the dead daemon's long polls, still open on the server for up
    // to 20 s, may each catch it once more, but each only for a lease.
    let back = receive_one(&queue, None, Duration::from_secs(60)).await;
    assert_eq!(back, id);
    let after = killed.elapsed();
    assert!(after <= Duration::from_secs(30), "back after {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_is_judged_on_sqs_clock_even_with_a_host_clock_behind() {
    let queue = TestQueue::new("aged").await;
    let app = App::ok().await;
    let id = queue.send("too old").await;
    // A first receive starts the message's age on SQS's clock.
    let first = receive_one(&queue, Some(1), WAIT).await;
    assert_eq!(first, id);
    let received = std::time::Instant::now();
    // The retention period (60 s, the least allowed) has to pass on SQS.
    tokio::time::sleep(Duration::from_secs(62).saturating_sub(received.elapsed())).await;
    // On a host clock two minutes behind, the message looks a minute young.
    let mut a = base_args(&queue, &app.url());
    a.extend(["--retention-period".into(), "60".into()]);
    let d = daemon_with_clock(&a, "-120s").await;
    queue.wait_empty(WAIT).await;
    eventually(WAIT, "the expired count", || async {
        (d.metric("sqsd_messages_expired_total").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(app.count(), 0, "an expired message is deleted unsent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_caught_by_a_long_poll_whose_link_broke_is_back_within_the_lease() {
    let queue = TestQueue::new("pollcut").await;
    let app = App::ok().await;
    let proxy = Proxy::start(&common::endpoint()).await;
    let mut a = via_proxy(&queue, &app, &proxy);
    a.extend(
        [
            "--http-connections",
            "1",
            "--visibility-timeout",
            "300",
            "--visibility-lease",
            "5",
        ]
        .map(String::from),
    );
    let d = Daemon::start(a).await;
    d.wait_ready(WAIT).await;
    // The daemon's only poller has a long poll open at SQS.
    d.wait_log("long=true", WAIT).await;
    proxy.cut_leaving_server_side_open();
    // Sent while the link is down: only the orphaned long poll is waiting
    // at SQS, so SQS hands the message to it, and the answer is lost.
    let id = queue.send("caught by a dead poll").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_up(true);
    let back = std::time::Instant::now();
    let seen = eventually(WAIT, "the message delivered", || async {
        app.for_message(&id).first().cloned()
    })
    .await;
    let after = back.elapsed();
    // It went out once on the dead link, so this is its second receive.
    assert!(
        seen.receive_count() >= 2,
        "receive count {}",
        seen.receive_count()
    );
    // Back within the lease (5 s) plus a margin, not after 300 s.
    assert!(
        after <= Duration::from_secs(5 + 10),
        "delivered {after:?} after the link returned"
    );
    queue.wait_empty(WAIT).await;
}

/// An application that holds every POST for ten minutes until the flag it
/// returns is cleared, then answers 200 at once.
async fn slow_until_released() -> (App, Arc<AtomicBool>) {
    let slow = Arc::new(AtomicBool::new(true));
    let answer = slow.clone();
    let app = App::start(move |_| {
        if answer.load(Ordering::SeqCst) {
            Reply::status(200).after(Duration::from_secs(600))
        } else {
            Reply::status(200)
        }
    })
    .await;
    (app, slow)
}

/// Sends `n` messages, and starts a daemon whose application holds each
/// POST for a long time, and kills it (-9) once it holds `held` of them.
/// Returns the ids, the ids held at the kill and when it died.
async fn kill_under_load(
    queue: &TestQueue,
    app: &App,
    extra: &[&str],
    held: usize,
) -> (Vec<String>, Vec<String>, std::time::Instant) {
    let ids = queue.send_many(30, |i| format!("load {i}")).await;
    let mut a = base_args(queue, &app.url());
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--http-connections".into(), "10".into()]);
    let mut d = Daemon::start(a).await;
    let seen = app.wait_requests(held, WAIT).await;
    d.kill9();
    let killed = std::time::Instant::now();
    let held_ids = seen.iter().map(|r| r.msgid()).collect();
    (ids, held_ids, killed)
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_kill_9_under_load_every_message_is_delivered_within_the_lease() {
    let queue = TestQueue::new("kill9").await;
    let (app, slow) = slow_until_released().await;
    let (ids, held, killed) = kill_under_load(
        &queue,
        &app,
        &["--visibility-timeout", "300", "--visibility-lease", "10"],
        10,
    )
    .await;
    assert!(held.len() >= 10);
    slow.store(false, Ordering::SeqCst);
    let d = Daemon::start(base_args(&queue, &app.url())).await;
    queue.wait_empty(Duration::from_secs(60)).await;
    let after = killed.elapsed();
    assert!(
        after <= Duration::from_secs(40),
        "all delivered {after:?} after the kill"
    );
    // Every message reached the application once the daemon was back.
    for id in &ids {
        assert!(!app.for_message(id).is_empty(), "{id} never delivered");
    }
    assert_eq!(
        d.metric("sqsd_messages_deleted_total").await,
        ids.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_leases_messages_held_at_a_kill_9_come_back_only_after_the_visibility_timeout() {
    let queue = TestQueue::new("kill9eb").await;
    let (app, slow) = slow_until_released().await;
    let (_, held, killed) = kill_under_load(
        &queue,
        &app,
        &["--visibility-timeout", "30", "--visibility-lease", "0"],
        10,
    )
    .await;
    slow.store(false, Ordering::SeqCst);
    let before = app.count();
    let _d = Daemon::start(base_args(&queue, &app.url())).await;
    // The held messages come back only when the 30 s visibility runs out.
    let again = eventually(
        Duration::from_secs(90),
        "a held message delivered again",
        || {
            let requests = app.requests();
            let held = held.clone();
            async move {
                requests[before..]
                    .iter()
                    .find(|r| held.contains(&r.msgid()))
                    .map(|r| r.at)
            }
        },
    )
    .await;
    let after = again.duration_since(killed);
    assert!(
        after >= Duration::from_secs(20),
        "a held message was back {after:?} after the kill, before its visibility timeout"
    );
}
