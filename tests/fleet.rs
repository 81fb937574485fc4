//! Fleet operations (contract §12, issue 14): ECS task scale-in protection
//! against a fake ECS agent on loopback that records every PUT, and the
//! Grafana dashboard's queries against a running daemon's `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::app::{App, Recorded, Reply};
use common::{base_args, eventually, sqsd_command, Daemon, TestQueue};
use serde_json::Value as Json;

/// One PUT the fake agent took: the protection asked for, and when.
#[derive(Debug)]
struct Put {
    enabled: bool,
    minutes: Option<u64>,
    at: Instant,
}

/// The PUTs to the agent's protection endpoint, in order; panics on any
/// other request, which the daemon must never make.
fn puts(agent: &App) -> Vec<Put> {
    agent
        .requests()
        .iter()
        .map(|r: &Recorded| {
            assert_eq!(r.method, "PUT", "{r:?}");
            assert_eq!(r.target, "/api/task-1/task-protection/v1/state");
            assert_eq!(
                r.header("content-type").as_deref(),
                Some("application/json")
            );
            let body: Json = serde_json::from_slice(&r.body).expect("JSON body");
            Put {
                enabled: body["ProtectionEnabled"]
                    .as_bool()
                    .expect("ProtectionEnabled"),
                minutes: body.get("ExpiresInMinutes").and_then(Json::as_u64),
                at: r.at,
            }
        })
        .collect()
}

/// A daemon with `ecs_task_protection` on for `minutes`, and `ECS_AGENT_URI`
/// pointing at `agent`.
async fn protected_daemon(queue: &TestQueue, app: &App, agent: &App, minutes: u32) -> Daemon {
    let mut args = base_args(queue, &app.url());
    args.extend([
        "--ecs-task-protection".into(),
        "true".into(),
        "--ecs-task-protection-minutes".into(),
        minutes.to_string(),
        "--http-connections".into(),
        "4".into(),
    ]);
    let mut cmd = sqsd_command(&args);
    cmd.env("ECS_AGENT_URI", format!("{}/api/task-1", agent.url()));
    Daemon::start_with(cmd).await
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_is_on_under_load_renewed_and_off_after_thirty_idle_seconds() {
    let queue = TestQueue::new("fleet-protect").await;
    let agent = App::start(|_| Reply::status(200)).await;
    // One message held past the renewal point (half of one minute).
    let app = App::start(|r| {
        let slow = r.body.as_ref() == b"slow";
        Reply::status(200).after(Duration::from_millis(if slow { 33_000 } else { 100 }))
    })
    .await;
    let d = protected_daemon(&queue, &app, &agent, 1).await;
    d.wait_ready(Duration::from_secs(20)).await;
    assert!(puts(&agent).is_empty(), "no protection while idle");

    queue.send("slow").await;
    queue.send_many(12, |i| format!("quick {i}")).await;
    let on = eventually(Duration::from_secs(20), "protection on", || {
        let p = puts(&agent);
        async move { (!p.is_empty()).then_some(p) }
    })
    .await;
    assert!(on[0].enabled && on[0].minutes == Some(1), "{on:?}");
    assert!(app.count() <= 13, "protected at the start of the work");
    assert_eq!(d.metric("sqsd_ecs_task_protected").await, 1.0);

    // Renewed while the slow message is still held, about 30 s after the first.
    let renewed = eventually(Duration::from_secs(45), "protection renewed", || {
        let p = puts(&agent);
        async move { (p.len() >= 2).then_some(p) }
    })
    .await;
    assert!(
        renewed[1].enabled && renewed[1].minutes == Some(1),
        "{renewed:?}"
    );
    let gap = renewed[1].at - renewed[0].at;
    assert!(
        gap >= Duration::from_secs(29) && gap <= Duration::from_secs(40),
        "renewed after {gap:?}"
    );
    assert_eq!(
        app.completed(),
        12,
        "renewal came while the slow POST was in flight"
    );

    queue.wait_empty(Duration::from_secs(30)).await;
    let idle_from = Instant::now();
    let off = eventually(Duration::from_secs(50), "protection off when idle", || {
        let p = puts(&agent);
        async move { p.last().is_some_and(|p| !p.enabled).then_some(p) }
    })
    .await;
    let last = off.last().expect("a PUT");
    assert!(last.minutes.is_none(), "{off:?}");
    // 30 s after the last message was settled (which was at most a few
    // seconds before the queue read empty).
    let after_idle = last.at.saturating_duration_since(idle_from);
    assert!(
        last.at > renewed[1].at + Duration::from_secs(25) && after_idle <= Duration::from_secs(35),
        "off {after_idle:?} after the queue emptied: {off:?}"
    );
    assert_eq!(d.metric("sqsd_ecs_task_protected").await, 0.0);
    assert_eq!(d.metric("sqsd_ecs_protection_failures_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn protection_is_given_up_at_shutdown_after_the_drain() {
    let queue = TestQueue::new("fleet-shutdown").await;
    let agent = App::start(|_| Reply::status(200)).await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(3))).await;
    let mut d = protected_daemon(&queue, &app, &agent, 5).await;
    queue.send("held through the shutdown").await;
    let post = app.wait_requests(1, Duration::from_secs(30)).await;
    eventually(Duration::from_secs(10), "protection on", || {
        let p = puts(&agent);
        async move { p.first().is_some_and(|p| p.enabled).then_some(()) }
    })
    .await;

    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}; log:\n{}", d.log_text());
    let all = puts(&agent);
    let last = all.last().expect("PUTs");
    assert!(!last.enabled, "the last PUT turns protection off: {all:?}");
    assert_eq!(all.iter().filter(|p| !p.enabled).count(), 1, "{all:?}");
    // Off only once the POST under way at SIGTERM was answered and settled.
    assert_eq!(app.completed(), 1);
    assert!(
        last.at >= post[0].at + Duration::from_secs(3),
        "off before the drain ended: {all:?}"
    );
    queue.wait_empty(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_fails_is_counted_and_delivery_goes_on() {
    let queue = TestQueue::new("fleet-agent-500").await;
    let agent = App::start(|_| Reply::status(500)).await;
    let app = App::start(|_| Reply::status(200).after(Duration::from_millis(200))).await;
    let d = protected_daemon(&queue, &app, &agent, 60).await;
    queue.send_many(20, |i| format!("m{i}")).await;
    queue.wait_empty(Duration::from_secs(30)).await;
    assert!(app.count() >= 20);
    eventually(Duration::from_secs(10), "failures counted", || async {
        (d.metric("sqsd_ecs_protection_failures_total").await >= 2.0).then_some(())
    })
    .await;
    // Each try is a second or more after the last: tied to time, not a loop.
    let tries = puts(&agent);
    for pair in tries.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(900),
            "{tries:?}"
        );
    }
    let warnings = d
        .logs()
        .iter()
        .filter(|l| l.contains("protection not updated"))
        .count();
    assert_eq!(
        warnings,
        1,
        "one warning per run of failures:\n{}",
        d.log_text()
    );
    assert_eq!(d.metric("sqsd_ecs_task_protected").await, 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_ecs_agent_uri_it_warns_once_and_delivers() {
    let queue = TestQueue::new("fleet-no-agent").await;
    let app = App::ok().await;
    let mut args = base_args(&queue, &app.url());
    args.extend(["--ecs-task-protection".into(), "true".into()]);
    let d = Daemon::start(args).await;
    queue.send_many(3, |i| format!("m{i}")).await;
    queue.wait_empty(Duration::from_secs(30)).await;
    let warnings: Vec<String> = d
        .logs()
        .into_iter()
        .filter(|l| l.contains("ECS_AGENT_URI is not set"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", d.log_text());
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
}

// ---------------------------------------------------------------- dashboard

/// Every metric name in a PromQL expression: identifiers that start with
/// `sqsd_`; histogram series name their family through `_bucket`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("sqsd_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Every `expr` of every panel (rows included) of a Grafana dashboard.
fn panel_queries(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<&Json> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((
                    panel["title"].as_str().unwrap_or("").to_string(),
                    expr.to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(sqsd_post_duration_seconds_bucket{job=~\"$job\"}[5m]))) / x_sqsd_no",
    );
    assert_eq!(
        names,
        BTreeSet::from(["sqsd_post_duration_seconds_bucket".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_queries_is_exported_by_a_running_daemon() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/sqsd.json"),
    )
    .expect("deploy/grafana/sqsd.json");
    let dashboard: Json = serde_json::from_str(&text).expect("dashboard JSON");
    let datasource_variable = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus");
    assert!(datasource_variable, "a Prometheus datasource variable");
    let queries = panel_queries(&dashboard);
    let titles: BTreeSet<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    assert!(titles.len() >= 8, "{titles:?}");
    let wanted: BTreeSet<String> = queries.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for family in [
        "sqsd_messages_delivered_total",
        "sqsd_post_duration_seconds_bucket",
        "sqsd_messages_in_flight",
        "sqsd_sqs_requests_total",
        "sqsd_queue_messages",
        "sqsd_lease_renewals_total",
        "sqsd_lease_renewal_failures_total",
        "sqsd_messages_dead_lettered_total",
        "sqsd_app_available",
        "sqsd_periodic_tasks_enqueued_total",
    ] {
        assert!(wanted.contains(family), "no panel queries {family}");
    }

    // A daemon that has done a bit of everything: delivered, dead-lettered,
    // enqueued a periodic task, read the backlog.
    let (queue, _dlq) = TestQueue::with_redrive("fleet-dash", 5).await;
    let app = App::start(|r| {
        if r.body.as_ref() == b"poison" {
            Reply::status(422)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let cron = common::scratch_file(
        "cron.yaml",
        "version: 1\ncron:\n  - name: every-second\n    url: /tick\n    schedule: \"* * * * * *\"\n",
    );
    let mut args = base_args(&queue, &app.url());
    args.extend([
        "--queue-metrics-interval".into(),
        "1s".into(),
        "--dead-letter-codes".into(),
        "422".into(),
        "--cron-file".into(),
        cron.to_string_lossy().into_owned(),
    ]);
    let d = Daemon::start(args).await;
    queue.send_many(3, |i| format!("m{i}")).await;
    queue.send("poison").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let exported = loop {
        let (_, body) = d.admin_get("/metrics").await;
        let present: BTreeSet<String> = body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|n| !present.contains(*n)).collect();
        if missing.is_empty() {
            break present;
        }
        assert!(
            Instant::now() < deadline,
            "queried by the dashboard, never exported: {missing:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(exported.contains("sqsd_messages_dead_lettered_total"));
}
