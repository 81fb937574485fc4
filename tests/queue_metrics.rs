//! The queue's backlog as gauges, for autoscaling (contract §12,
//! `queue_metrics_interval`).

mod common;

use std::time::Duration;

use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(30);

async fn gauges(d: &Daemon) -> (f64, f64, f64) {
    (
        d.metric("sqsd_queue_messages{state=\"visible\"}").await,
        d.metric("sqsd_queue_messages{state=\"in_flight\"}").await,
        d.metric("sqsd_queue_messages{state=\"delayed\"}").await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backlog_gauges_follow_the_queue() {
    let queue = TestQueue::new("backlog").await;
    queue.send_many(3, |i| format!("visible {i}")).await;
    queue
        .client
        .send_message()
        .queue_url(&queue.url)
        .message_body("delayed")
        .delay_seconds(600)
        .send()
        .await
        .expect("send delayed");
    // Taken by someone else for a while: in flight.
    let taken = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .visibility_timeout(600)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("receive");
    assert_eq!(taken.messages().len(), 1);

    // The application is down, so this daemon receives nothing and the
    // counts stay as the test made them.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut a = base_args(&queue, &format!("http://{nobody}"));
    a.extend(["--queue-metrics-interval".into(), "1s".into()]);
    let d = Daemon::start(a).await;
    eventually(WAIT, "2 visible, 1 in flight, 1 delayed", || async {
        (gauges(&d).await == (2.0, 1.0, 1.0)).then_some(())
    })
    .await;
    let stamp = d.metric("sqsd_queue_metrics_timestamp_seconds").await;
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - stamp).abs() <= 5.0, "timestamp {stamp}, now {now}");

    // One more taken: the gauges follow at the next read.
    let more = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .visibility_timeout(600)
        .send()
        .await
        .expect("receive");
    assert_eq!(more.messages().len(), 1);
    eventually(WAIT, "1 visible, 2 in flight", || async {
        (gauges(&d).await == (1.0, 2.0, 1.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interval_of_zero_reads_no_backlog() {
    let queue = TestQueue::new("nobacklog").await;
    let app = common::app::App::ok().await;
    let mut a = base_args(&queue, &app.url());
    a.extend(["--queue-metrics-interval".into(), "0".into()]);
    let d = Daemon::start(a).await;
    d.wait_ready(WAIT).await;
    let (_, text) = d.admin_get("/metrics").await;
    assert!(!text.contains("sqsd_queue_messages{"), "{text}");
    assert_eq!(
        d.metric("sqsd_sqs_requests_total{action=\"GetQueueAttributes\"")
            .await,
        1.0,
        "only the startup check reads the queue's attributes"
    );
}
