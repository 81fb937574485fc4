//! Settling that survives SQS trouble, and visibility that lasts as long as
//! the daemon holds a message: deletes retried until the visibility runs
//! out, FIFO groups longer than the visibility timeout, long POSTs, and
//! what shutdown reports when SQS never accepts a settlement.

mod common;

use std::collections::HashMap;
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
