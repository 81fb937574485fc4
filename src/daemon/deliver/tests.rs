//! Delivery against a scripted application and SQS, with paused time: what
//! each outcome settles to, FIFO order after a failure, and what stop and
//! abort do to messages not started or under way.

use super::*;
use crate::app::Answer;
use crate::daemon::settle::Kind;
use crate::daemon::testing::{answer, rig, FakeApp};

fn delete(id: &str) -> (String, Option<u32>) {
    (format!("rh-{id}"), None)
}

fn visible_after(id: &str, s: u32) -> (String, Option<u32>) {
    (format!("rh-{id}"), Some(s))
}

#[tokio::test(start_paused = true)]
async fn each_outcome_settles_as_the_contract_says() {
    let app = FakeApp::new(|seen| {
        let result = match seen.msgid.as_str() {
            "ok" => Ok(answer(200)),
            "busy" => Ok(Answer {
                status: 429,
                retry_after: Some("17".into()),
            }),
            "broken" => Ok(answer(500)),
            _ => Err(Failure::Connect("connection refused".into())),
        };
        (Duration::from_millis(5), result)
    });
    let r = rig(app.clone());
    let never = CancellationToken::new();
    for id in ["ok", "busy", "broken", "down"] {
        let held = r.held(id, None).await;
        r.dispatcher
            .deliver_in_order(vec![held], &never, &never)
            .await;
    }
    let mut settled = r.settled().await;
    settled.sort();
    let mut expected = vec![
        delete("ok"),
        visible_after("busy", 17),
        visible_after("broken", 7),
        visible_after("down", 0),
    ];
    expected.sort();
    assert_eq!(settled, expected);
    assert_eq!(r.room.used(), 0, "every place was given back");
}

#[tokio::test(start_paused = true)]
async fn a_fifo_group_gives_back_the_rest_after_a_failure() {
    let app = FakeApp::new(|seen| {
        let status = if seen.msgid == "g2" { 500 } else { 200 };
        (Duration::from_millis(5), Ok(answer(status)))
    });
    let r = rig(app.clone());
    let never = CancellationToken::new();
    let list = vec![
        r.held("g1", Some("g")).await,
        r.held("g2", Some("g")).await,
        r.held("g3", Some("g")).await,
        r.held("g4", Some("g")).await,
    ];
    r.dispatcher.deliver_in_order(list, &never, &never).await;
    let seen = app.seen();
    let posted: Vec<&str> = seen.iter().map(|s| s.msgid.as_str()).collect();
    assert_eq!(posted, vec!["g1", "g2"]);
    assert!(
        seen[1].at >= seen[0].at + Duration::from_millis(5),
        "g2 starts only once g1 was answered"
    );
    assert!(seen.iter().all(|s| s.target == "/work"), "{seen:?}");
    let mut settled = r.settled().await;
    settled.sort();
    assert_eq!(
        settled,
        vec![
            delete("g1"),
            visible_after("g2", 7),
            visible_after("g3", 0),
            visible_after("g4", 0)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_gives_back_what_has_not_started_and_lets_the_post_under_way_finish() {
    let app = FakeApp::status(200, Duration::from_secs(5));
    let r = rig(app.clone());
    let stop = CancellationToken::new();
    let never = CancellationToken::new();
    let list = vec![r.held("a", Some("g")).await, r.held("b", Some("g")).await];
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        stopper.cancel();
    });
    r.dispatcher.deliver_in_order(list, &stop, &never).await;
    assert_eq!(app.seen().len(), 1);
    let mut settled = r.settled().await;
    settled.sort();
    assert_eq!(settled, vec![delete("a"), visible_after("b", 0)]);
}

#[tokio::test(start_paused = true)]
async fn abort_abandons_the_post_and_releases_its_message_at_once() {
    let app = FakeApp::status(200, Duration::from_secs(600));
    let r = rig(app.clone());
    let abort = CancellationToken::new();
    let never = CancellationToken::new();
    let held = r.held("slow", None).await;
    let aborter = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        aborter.cancel();
    });
    let t0 = Instant::now();
    r.dispatcher
        .deliver_in_order(vec![held], &never, &abort)
        .await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(r.settled().await, vec![visible_after("slow", 0)]);
    assert_eq!(r.dispatcher.metrics.released.get(), 1);
    assert_eq!(r.dispatcher.metrics.in_flight.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_message_past_retention_on_sqs_clock_is_deleted_unsent() {
    let app = FakeApp::status(200, Duration::ZERO);
    let r = rig(app.clone());
    let never = CancellationToken::new();
    let mut old = r.held("old", None).await;
    old.msg.first_received_at_ms = Some(1_000_000);
    old.msg.sqs_received_ms = Some(1_000_000 + 61_000);
    // The same age, but SQS's clock unknown: delivered.
    let mut unknown = r.held("unknown", None).await;
    unknown.msg.first_received_at_ms = Some(1_000_000);
    r.dispatcher
        .deliver_in_order(vec![old], &never, &never)
        .await;
    r.dispatcher
        .deliver_in_order(vec![unknown], &never, &never)
        .await;
    let posted: Vec<String> = app.seen().into_iter().map(|s| s.msgid).collect();
    assert_eq!(posted, vec!["unknown"]);
    assert_eq!(r.dispatcher.metrics.expired.get(), 1);
    let mut settled = r.settled().await;
    settled.sort();
    assert_eq!(settled, vec![delete("old"), delete("unknown")]);
    assert!(r.sqs.calls().iter().all(|c| c.kind == Kind::Delete));
}

/// An application that refuses connections until `up` is set.
fn refusing_until(up: Arc<std::sync::atomic::AtomicBool>) -> Arc<FakeApp> {
    FakeApp::new(move |_| {
        let result = if up.load(std::sync::atomic::Ordering::SeqCst) {
            Ok(answer(200))
        } else {
            Err(Failure::Connect("connection refused".into()))
        };
        (Duration::from_millis(1), result)
    })
}

#[tokio::test(start_paused = true)]
async fn a_refused_post_waits_held_and_is_delivered_when_the_application_is_back() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = refusing_until(up.clone());
    let r = rig(app.clone());
    let never = CancellationToken::new();
    // A receive of this daemon is under way: giving the message back now
    // would let it catch the message again.
    let receiving = r.dispatcher.gate.receiving();
    let list = vec![r.held("a", Some("g")).await, r.held("b", Some("g")).await];
    let dispatcher = &r.dispatcher;
    let delivery = dispatcher.deliver_in_order(list, &never, &never);
    let reopen = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !dispatcher.gate.is_open(),
            "the refused POST closed the gate"
        );
        up.store(true, std::sync::atomic::Ordering::SeqCst);
        dispatcher.gate.open();
    };
    tokio::join!(delivery, reopen);
    drop(receiving);
    let posted: Vec<String> = app.seen().into_iter().map(|s| s.msgid).collect();
    assert_eq!(posted, vec!["a", "a", "b"], "a again once back, then b");
    let mut settled = r.settled().await;
    settled.sort();
    assert_eq!(settled, vec![delete("a"), delete("b")]);
    assert_eq!(r.dispatcher.metrics.released.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn while_the_application_is_down_messages_are_given_back_once_no_receive_is_under_way() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = refusing_until(up);
    let r = rig(app.clone());
    let never = CancellationToken::new();
    let receiving = r.dispatcher.gate.receiving();
    let first = r.held("first", None).await;
    let waiting = r.held("waiting", None).await;
    let dispatcher = &r.dispatcher;
    let t0 = Instant::now();
    let deliveries = async {
        tokio::join!(
            dispatcher.deliver_in_order(vec![first], &never, &never),
            async {
                // Starts once the gate is closed: never POSTed.
                dispatcher.gate.closed().await;
                dispatcher
                    .deliver_in_order(vec![waiting], &never, &never)
                    .await
            }
        )
    };
    let receive_ends = async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        drop(receiving);
    };
    tokio::join!(deliveries, receive_ends);
    assert!(
        t0.elapsed() >= Duration::from_secs(15),
        "given back before the receive ended"
    );
    let posted: Vec<String> = app.seen().into_iter().map(|s| s.msgid).collect();
    assert_eq!(posted, vec!["first"]);
    let mut settled = settlements(r.settled().await);
    settled.sort();
    // Both visible at once, neither waiting out error_visibility_timeout.
    assert_eq!(
        settled,
        vec![visible_after("first", 0), visible_after("waiting", 0)]
    );
    assert_eq!(r.dispatcher.metrics.released.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_message_held_for_an_unavailable_application_goes_back_at_its_visibility_timeout() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = refusing_until(up);
    let r = rig(app.clone());
    let never = CancellationToken::new();
    // A receive that never ends (as if stuck): the hold limit still ends it.
    let _receiving = r.dispatcher.gate.receiving();
    let held = r.held("stuck", None).await;
    let t0 = Instant::now();
    r.dispatcher
        .deliver_in_order(vec![held], &never, &never)
        .await;
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(299) && waited <= Duration::from_secs(301),
        "{waited:?}"
    );
    let told = r.settled().await;
    // Its lease was renewed meanwhile, then it went back.
    assert!(told.len() > 2, "{told:?}");
    assert_eq!(settlements(told), vec![visible_after("stuck", 0)]);
}

/// What SQS was told, less the lease renewals (30 s in the rig).
fn settlements(told: Vec<(String, Option<u32>)>) -> Vec<(String, Option<u32>)> {
    told.into_iter().filter(|(_, v)| *v != Some(30)).collect()
}

/// A dead-letter queue that takes every copy but those of `refuse`, takes
/// an hour to answer for `hang`, and records what it took: message id, status and
/// group.
struct FakeDeadLetters {
    refuse: &'static str,
    hang: &'static str,
    sent: std::sync::Mutex<Vec<(String, u16, Option<String>)>>,
}

impl DeadLetterSink for FakeDeadLetters {
    fn send<'a>(&'a self, copy: Copy<'a>) -> crate::aws::dead_letter::Sending<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if copy.message_id == self.hang {
                // Paused time: an hour passes at once if nothing cuts it.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if copy.message_id == self.refuse {
                return Err(NotSent("refused".into()));
            }
            if let Ok(mut sent) = self.sent.lock() {
                sent.push((
                    copy.message_id.to_string(),
                    copy.status,
                    copy.group_id.map(String::from),
                ));
            }
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_listed_status_deletes_only_after_its_copy_was_taken() {
    let app = FakeApp::new(|seen| {
        let status = if seen.msgid == "broken" { 500 } else { 410 };
        (Duration::from_millis(5), Ok(answer(status)))
    });
    let mut r = rig(app.clone());
    let sink = Arc::new(FakeDeadLetters {
        refuse: "refused",
        hang: "",
        sent: Default::default(),
    });
    r.dispatcher.dead_letters = Some(DeadLetters {
        codes: vec![400, 410],
        queue: sink.clone(),
    });
    let never = CancellationToken::new();
    for (id, group) in [("gone", Some("g")), ("refused", None), ("broken", None)] {
        let held = r.held(id, group).await;
        r.dispatcher
            .deliver_in_order(vec![held], &never, &never)
            .await;
    }
    let mut settled = r.settled().await;
    settled.sort();
    // The copy taken: deleted. The copy refused, and the status not
    // listed: the ordinary retry after error_visibility (7 s).
    let mut expected = vec![
        delete("gone"),
        visible_after("refused", 7),
        visible_after("broken", 7),
    ];
    expected.sort();
    assert_eq!(settled, expected);
    let sent = sink.sent.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(sent, vec![("gone".to_string(), 410, Some("g".to_string()))]);
    let metrics = &r.dispatcher.metrics;
    assert_eq!(metrics.dead_lettered.with_label_values(&["410"]).get(), 1);
    assert_eq!(metrics.dead_letter_failures.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn abort_cuts_a_hanging_copy_short_and_keeps_the_message() {
    let mut r = rig(FakeApp::status(410, Duration::from_millis(5)));
    let sink = Arc::new(FakeDeadLetters {
        refuse: "",
        hang: "slow",
        sent: Default::default(),
    });
    r.dispatcher.dead_letters = Some(DeadLetters {
        codes: vec![410],
        queue: sink.clone(),
    });
    let never = CancellationToken::new();
    let abort = CancellationToken::new();
    let held = r.held("slow", None).await;
    let started = Instant::now();
    let cut = abort.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        cut.cancel();
    });
    r.dispatcher
        .deliver_in_order(vec![held], &never, &abort)
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.settled().await, vec![visible_after("slow", 7)]);
    assert_eq!(r.dispatcher.metrics.dead_letter_failures.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_post_that_cannot_connect_right_after_a_reopening_settles_as_a_failure() {
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = refusing_until(up);
    let r = rig(app.clone());
    let never = CancellationToken::new();
    // The probe said the application is back, moments ago.
    r.dispatcher.gate.close("cannot connect");
    assert!(r.dispatcher.gate.open());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _receiving = r.dispatcher.gate.receiving();
    let held = r.held("flap", None).await;
    let t0 = Instant::now();
    r.dispatcher
        .deliver_in_order(vec![held], &never, &never)
        .await;
    // Not held for another reopening: an ordinary failure at once.
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(app.seen().len(), 1);
    assert_eq!(
        settlements(r.settled().await),
        vec![visible_after("flap", 7)]
    );
    // Long after the reopening, a refused POST waits for the application.
    r.dispatcher.gate.open();
    tokio::time::sleep(FLAP_WINDOW).await;
    let later = r.held("later", None).await;
    let waiting = r.dispatcher.deliver_in_order(vec![later], &never, &never);
    let timed = tokio::time::timeout(Duration::from_secs(30), waiting).await;
    assert!(
        timed.is_err(),
        "held while a receive is under way and the gate is shut"
    );
}
