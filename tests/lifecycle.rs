//! Concurrency bounds, shutdown, crashes and SQS outages.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::app::{App, Reply};
use common::proxy::Proxy;
use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(30);

async fn peak_concurrency_is_exactly(n: usize) {
    let queue = TestQueue::new(&format!("conc{n}")).await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_millis(400))).await;
    let ids = queue.send_many(n * 4, |i| format!("m{i}")).await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--http-connections".into(), n.to_string()]);
    let _d = Daemon::start(a).await;
    queue.wait_empty(Duration::from_secs(60)).await;
    let seen: HashSet<String> = app.requests().iter().map(|r| r.msgid()).collect();
    assert!(
        ids.iter().all(|id| seen.contains(id)),
        "a message was not delivered"
    );
    assert_eq!(
        app.peak(),
        n,
        "peak concurrency must be exactly http_connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_http_connections_in_flight_one_poller() {
    peak_concurrency_is_exactly(4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_http_connections_in_flight_several_pollers() {
    peak_concurrency_is_exactly(23).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_posts_and_deletes_them() {
    let queue = TestQueue::new("drain").await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(3))).await;
    let ids = queue.send_many(5, |i| format!("m{i}")).await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--http-connections".into(), "5".into()]);
    let mut d = Daemon::start(a).await;
    eventually(WAIT, "5 POSTs in flight", || async {
        (app.in_flight() == 5).then_some(())
    })
    .await;

    d.signal("TERM");
    eventually(WAIT, "/readyz 503 while draining", || async {
        let (status, body) = d.admin_get("/readyz").await;
        (status == 503 && body.contains("shutting down")).then_some(())
    })
    .await;
    let status = d.wait_exit(WAIT).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", d.log_text());
    assert_eq!(app.completed(), 5, "every in-flight POST completes");
    let seen: HashSet<String> = app.requests().iter().map(|r| r.msgid()).collect();
    assert!(ids.iter().all(|id| seen.contains(id)));
    // Everything the application answered 200 for is deleted before exit.
    assert_eq!(queue.depth().await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_timeout_releases_what_is_still_running() {
    let queue = TestQueue::new("draintimeout").await;
    let app = App::start(|r| {
        let slow = r.receive_count() < 2;
        Reply::status(200).after(if slow {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        })
    })
    .await;
    let id = queue.send("x").await;
    let mut a = base_args(&queue, &app.url());
    // One connection, busy with the slow POST: no long poll is open at
    // shutdown that the server could hand the released message to.
    a.extend([
        "--drain-timeout".into(),
        "1s".into(),
        "--http-connections".into(),
        "1".into(),
    ]);
    let mut d = Daemon::start(a).await;
    app.wait_requests(1, WAIT).await;
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0));
    // Released with visibility 0: a new daemon gets it at once (not after 300 s).
    let _d2 = Daemon::start(base_args(&queue, &app.url())).await;
    let seen = app.wait_requests(2, WAIT).await;
    assert_eq!(seen[1].msgid(), id);
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn second_signal_exits_at_once() {
    let queue = TestQueue::new("twice").await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(30))).await;
    queue.send("x").await;
    let mut d = Daemon::start(base_args(&queue, &app.url())).await;
    app.wait_requests(1, WAIT).await;
    d.signal("TERM");
    d.wait_log("shutting down", WAIT).await;
    d.signal("INT");
    let status = d.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(130));
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_load_then_restart_delivers_everything() {
    let queue = TestQueue::new("kill9").await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_millis(30))).await;
    let ids = queue.send_many(150, |i| format!("m{i}")).await;
    let mut a = base_args(&queue, &app.url());
    a.extend([
        "--visibility-timeout".into(),
        "3".into(),
        "--http-connections".into(),
        "10".into(),
    ]);
    let mut d = Daemon::start(a.clone()).await;
    eventually(WAIT, "some deliveries", || async {
        (app.count() >= 30).then_some(())
    })
    .await;
    d.kill9();
    assert!(
        app.count() < ids.len(),
        "the kill came too late to test anything"
    );

    let _d2 = Daemon::start(a).await;
    queue.wait_empty(Duration::from_secs(90)).await;
    let seen: HashSet<String> = app.requests().iter().map(|r| r.msgid()).collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} messages never delivered",
        missing.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_outage_is_survived_and_readyz_follows_it() {
    let queue = TestQueue::new("outage").await;
    let app = App::ok().await;
    let proxy = Proxy::start(&common::endpoint()).await;
    let mut a = base_args(&queue, &app.url());
    // A long poll cut by the outage may still be served by SQS, which then
    // hides a message for the visibility timeout: keep it short here.
    a.extend([
        "--endpoint-url".into(),
        proxy.url(),
        "--visibility-timeout".into(),
        "5".into(),
    ]);
    let d = Daemon::start(a).await;
    d.wait_ready(WAIT).await;
    queue.send("before").await;
    app.wait_requests(1, WAIT).await;

    proxy.set_up(false);
    eventually(WAIT, "/readyz 503 during the outage", || async {
        let (status, body) = d.admin_get("/readyz").await;
        (status == 503 && body.contains("SQS")).then_some(())
    })
    .await;
    assert_eq!(
        d.admin_get("/healthz").await.0,
        200,
        "still alive during an outage"
    );
    let id = queue.send("during").await;
    // Keep SQS away for a few seconds, so several receives fail and back off.
    eventually(WAIT, "several failed receives", || async {
        (d.metric("sqsd_sqs_requests_total{action=\"ReceiveMessage\",result=\"error\"}")
            .await
            >= 3.0)
            .then_some(())
    })
    .await;

    proxy.set_up(true);
    d.wait_ready(WAIT).await;
    let seen = app.wait_requests(2, WAIT).await;
    assert_eq!(seen[1].msgid(), id);
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_while_sqs_is_down_and_recovers() {
    let queue = TestQueue::new("startdown").await;
    let app = App::ok().await;
    let proxy = Proxy::start(&common::endpoint()).await;
    proxy.set_up(false);
    let mut a = base_args(&queue, &app.url());
    a.extend(["--endpoint-url".into(), proxy.url()]);
    let d = Daemon::start(a).await;
    d.wait_log("cannot reach SQS", WAIT).await;
    assert_eq!(d.admin_get("/readyz").await.0, 503);
    proxy.set_up(true);
    let id = queue.send("x").await;
    let seen = app.wait_requests(1, WAIT).await;
    assert_eq!(seen[0].msgid(), id);
    d.wait_ready(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn message_caught_by_a_poll_at_shutdown_is_given_back_at_once() {
    let queue = TestQueue::new("giveback").await;
    let app = App::ok().await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--http-connections".into(), "10".into()]);
    let mut d = Daemon::start(a).await;
    d.wait_ready(WAIT).await;
    // The first poll is short; wait until a long one is open.
    d.wait_log("receiving max=10 long=true", WAIT).await;
    d.signal("TERM");
    d.wait_log("stopping", WAIT).await;
    let id = queue.send("late").await;
    let line = d.wait_log("message given back", WAIT).await;
    assert!(line.contains(&id), "{line}");
    assert_eq!(d.wait_exit(WAIT).await.code(), Some(0));
    assert!(
        app.for_message(&id).is_empty(),
        "nothing is delivered after the signal"
    );

    // Visible again at once, not after the 300 s visibility timeout.
    let got = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .wait_time_seconds(5)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 1, "the message must be visible again");
    assert_eq!(got[0].message_id.as_deref(), Some(id.as_str()));
    let count = got[0]
        .attributes
        .as_ref()
        .and_then(|a| {
            a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
        })
        .cloned();
    assert_eq!(
        count.as_deref(),
        Some("2"),
        "the daemon's poll received it once"
    );
}
