//! Delivery that rides out an application that is down or unhealthy, fails
//! with backoff, or must not be called too fast (contract §11).

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{App, Reply};
use common::{base_args, eventually, Daemon, TestQueue};

const WAIT: Duration = Duration::from_secs(30);

fn args(queue: &TestQueue, worker: &str, extra: &[&str]) -> Vec<String> {
    let mut a = base_args(queue, worker);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// A loopback port nobody listens on (yet).
fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn wait_metric(d: &Daemon, name: &str, value: f64) {
    eventually(WAIT, &format!("{name} = {value}"), || async {
        (d.metric(name).await == value).then_some(())
    })
    .await
}

/// Waits until `/readyz` answers `status` with a body containing `needle`.
async fn wait_readyz(d: &Daemon, status: u16, needle: &str) {
    eventually(WAIT, &format!("/readyz {status} {needle:?}"), || async {
        let (s, body) = d.admin_get("/readyz").await;
        (s == status && body.contains(needle)).then_some(())
    })
    .await
}

/// Visible and in-flight counts of a queue.
async fn counts(queue: &TestQueue) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let visible = queue.attribute(A::ApproximateNumberOfMessages).await;
    let in_flight = queue
        .attribute(A::ApproximateNumberOfMessagesNotVisible)
        .await;
    (visible.parse().unwrap(), in_flight.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_waits_for_the_application_then_delivers() {
    let queue = TestQueue::new("appwait").await;
    let port = free_port();
    let id = queue.send("waits for the application").await;
    let d = Daemon::start(args(&queue, &format!("http://{port}"), &[])).await;
    d.wait_log(&format!("waiting for the application at {port}"), WAIT)
        .await;
    wait_readyz(&d, 503, "application unavailable").await;
    assert_eq!(d.metric("sqsd_app_available").await, 0.0);
    // Nothing was received meanwhile: the message is still visible, with
    // no receive spent on it.
    assert_eq!(counts(&queue).await, (1, 0));
    assert_eq!(d.metric("sqsd_messages_received_total").await, 0.0);

    let app = App::start_on(port, |_| Reply::status(200)).await;
    let seen = app.wait_requests(1, WAIT).await;
    assert_eq!(seen[0].msgid(), id);
    assert_eq!(seen[0].receive_count(), 1);
    queue.wait_empty(WAIT).await;
    wait_metric(&d, "sqsd_app_available", 1.0).await;
    d.wait_ready(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_outage_costs_no_message_its_place() {
    // Three receives and a message goes to the dead-letter queue.
    let (queue, dlq) = TestQueue::with_redrive("outage", 3).await;
    let app = App::ok().await;
    let port = app.addr;
    let d = Daemon::start(args(
        &queue,
        &app.url(),
        &["--error-visibility-timeout", "1"],
    ))
    .await;
    let warm = queue.send("before the outage").await;
    app.wait_requests(1, WAIT).await;
    assert_eq!(app.for_message(&warm).len(), 1);
    wait_metric(&d, "sqsd_app_available", 1.0).await;
    d.wait_ready(WAIT).await;

    app.stop().await;
    let ids: HashSet<String> = queue
        .send_many(20, |i| format!("sent during the outage {i}"))
        .await
        .into_iter()
        .collect();
    wait_metric(&d, "sqsd_app_available", 0.0).await;
    wait_readyz(&d, 503, "application unavailable").await;
    // Down for longer than ten error visibility timeouts: with EB's
    // behaviour every message would be received again each second and
    // reach the dead-letter queue within three.
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(12) {
        assert_eq!(d.metric("sqsd_app_available").await, 0.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        dlq.depth().await,
        0,
        "messages reached the dead-letter queue"
    );

    let back = App::start_on(port, |_| Reply::status(200)).await;
    let delivered = eventually(WAIT, "all 20 delivered after the outage", || async {
        let got: HashSet<String> = back.requests().iter().map(|r| r.msgid()).collect();
        ids.is_subset(&got).then_some(got)
    })
    .await;
    assert!(
        delivered.is_subset(&ids),
        "unexpected messages {delivered:?}"
    );
    queue.wait_empty(WAIT).await;
    assert_eq!(
        dlq.depth().await,
        0,
        "messages reached the dead-letter queue"
    );
    // Each message burned at most one receive during the outage.
    for r in back.requests() {
        assert!(
            r.receive_count() <= 2,
            "receive count {}",
            r.receive_count()
        );
    }
    wait_metric(&d, "sqsd_app_available", 1.0).await;
    d.wait_ready(WAIT).await;
    // One line for each transition, not one per message.
    let logs = d.log_text();
    assert_eq!(
        logs.matches("application unavailable; receiving paused")
            .count(),
        1,
        "{logs}"
    );
    assert_eq!(
        logs.matches("application available again").count(),
        1,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exponential_backoff_spaces_the_retries_of_a_failing_message() {
    let queue = TestQueue::new("backoff").await;
    let app = App::start(|r| {
        if r.receive_count() < 4 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let id = queue.send("fails three times").await;
    let _d = Daemon::start(args(
        &queue,
        &app.url(),
        &[
            "--error-visibility-timeout",
            "1",
            "--retry-backoff",
            "exponential",
            "--max-error-visibility",
            "30s",
        ],
    ))
    .await;
    let seen = app.wait_requests(4, Duration::from_secs(60)).await;
    assert!(seen.iter().all(|r| r.msgid() == id));
    let counts: Vec<u32> = seen.iter().map(|r| r.receive_count()).collect();
    assert_eq!(counts[..4], [1, 2, 3, 4]);
    // After the failure on receive n the message waits 1 s × 2^(n−1)
    // (±10%, in whole seconds: 1, 2 and 4 s), plus however long SQS takes
    // to hand it out again.
    for (n, pair) in seen.windows(2).take(3).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let want = Duration::from_secs(1 << n);
        assert!(
            gap >= want.mul_f64(0.9) - Duration::from_millis(100)
                && gap <= want.mul_f64(1.1) + Duration::from_millis(2500),
            "gap after failure {}: {gap:?}, want about {want:?}",
            n + 1
        );
    }
    queue.wait_empty(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unhealthy_application_gets_nothing_until_it_is_healthy() {
    let queue = TestQueue::new("health").await;
    let health = Arc::new(AtomicU16::new(200));
    let answer = health.clone();
    let app = App::start(move |r| {
        if r.method == "GET" {
            Reply::status(answer.load(Ordering::SeqCst))
        } else {
            Reply::status(200)
        }
    })
    .await;
    let posts = |app: &App| {
        app.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect::<Vec<_>>()
    };
    let d = Daemon::start(args(
        &queue,
        &app.url(),
        &["--health-url", "/health", "--health-interval", "1s"],
    ))
    .await;
    let first = queue.send("while healthy").await;
    eventually(WAIT, "the first message", || async {
        posts(&app).iter().any(|r| r.msgid() == first).then_some(())
    })
    .await;
    let gets = app.requests().iter().filter(|r| r.method == "GET").count();
    assert!(gets >= 1, "health_url was never asked");
    assert!(app
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .all(|r| r.target == "/health"));

    health.store(503, Ordering::SeqCst);
    let failing = Instant::now();
    wait_metric(&d, "sqsd_app_available", 0.0).await;
    // Three checks a second apart, plus a margin.
    assert!(
        failing.elapsed() <= Duration::from_secs(3 + 3),
        "{:?}",
        failing.elapsed()
    );
    wait_readyz(&d, 503, "application unavailable").await;
    let second = queue.send("while unhealthy").await;
    let posted = posts(&app).len();
    // A long poll that was open when receiving paused may still catch the
    // message; it is then held, and given back (visible, not in flight)
    // once no receive is under way. Either way it is not delivered.
    eventually(
        Duration::from_secs(40),
        "the message visible in the queue",
        || async { (counts(&queue).await == (1, 0)).then_some(()) },
    )
    .await;
    // Long enough for a delivery to happen several times over.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts(&queue).await, (1, 0), "received while unhealthy");
    assert_eq!(posts(&app).len(), posted, "delivered while unhealthy");

    health.store(200, Ordering::SeqCst);
    eventually(WAIT, "the second message once healthy", || async {
        posts(&app)
            .iter()
            .any(|r| r.msgid() == second)
            .then_some(())
    })
    .await;
    wait_metric(&d, "sqsd_app_available", 1.0).await;
    d.wait_ready(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn max_rate_paces_deliveries() {
    let queue = TestQueue::new("rate").await;
    let app = App::ok().await;
    queue.send_many(320, |i| format!("paced {i}")).await;
    let _d = Daemon::start(args(&queue, &app.url(), &["--max-rate", "20"])).await;
    let seen = app.wait_requests(240, Duration::from_secs(60)).await;
    let t0 = seen[0].at;
    let in_window = seen
        .iter()
        .filter(|r| r.at - t0 < Duration::from_secs(10))
        .count();
    // 20 a second for 10 s, ±10%.
    assert!(
        (180..=220).contains(&in_window),
        "{in_window} deliveries in the first 10 s"
    );
    // No second much above the rate.
    for second in 0..10 {
        let lo = Duration::from_secs(second);
        let n = seen
            .iter()
            .filter(|r| {
                let t = r.at - t0;
                t >= lo && t < lo + Duration::from_secs(1)
            })
            .count();
        assert!(n <= 26, "{n} deliveries in second {second}");
    }
}
