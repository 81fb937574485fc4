//! Periodic tasks from cron.yaml: the enqueued message's format, delivery
//! end to end, FIFO worker queues, a fleet of daemons coordinating through
//! a DynamoDB table (moto's server), catch-up, reload and bad files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDateTime, TimeZone, Timelike, Utc, Weekday};
use common::app::{App, Recorded, Reply};
use common::{base_args, eventually, scratch_file, Daemon, TestQueue};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TASK_BODY: &str = "elasticbeanstalk scheduled job";

fn cron_yaml(tasks: &[(&str, &str, &str)]) -> String {
    let mut text = String::from("version: 1\ncron:\n");
    for (name, url, schedule) in tasks {
        text.push_str(&format!(
            "  - name: \"{name}\"\n    url: \"{url}\"\n    schedule: \"{schedule}\"\n"
        ));
    }
    text
}

fn args_with(queue: &TestQueue, app: &App, extra: &[&str]) -> Vec<String> {
    let mut args = base_args(queue, &app.url());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The tick a delivered task message stands for (X-Aws-Sqsd-Scheduled-At).
fn tick_of(r: &Recorded) -> DateTime<Utc> {
    let text = r
        .header("x-aws-sqsd-scheduled-at")
        .expect("task POST has X-Aws-Sqsd-Scheduled-At");
    DateTime::parse_from_rfc3339(&text)
        .unwrap_or_else(|e| panic!("Scheduled-At {text:?} is not ISO 8601: {e}"))
        .with_timezone(&Utc)
}

/// Distinct message ids per tick among the POSTs for `task`.
fn messages_per_tick(app: &App, task: &str) -> BTreeMap<DateTime<Utc>, BTreeSet<String>> {
    let mut out: BTreeMap<DateTime<Utc>, BTreeSet<String>> = BTreeMap::new();
    for r in app.requests() {
        if r.header("x-aws-sqsd-taskname").as_deref() == Some(task) {
            out.entry(tick_of(&r)).or_default().insert(r.msgid());
        }
    }
    out
}

fn assert_no_tick_twice(ticks: &BTreeMap<DateTime<Utc>, BTreeSet<String>>) {
    for (tick, ids) in ticks {
        assert_eq!(
            ids.len(),
            1,
            "tick {tick} was enqueued {} times: {ids:?}",
            ids.len()
        );
    }
}

/// The tick named by a log line's `scheduled` field.
fn scheduled_in(line: &str) -> DateTime<Utc> {
    let at = line
        .find("scheduled=")
        .unwrap_or_else(|| panic!("no scheduled= in {line}"));
    let text = &line[at + "scheduled=".len()..];
    let text = text.trim_start_matches('"');
    NaiveDateTime::parse_from_str(&text[..23], "%Y-%m-%d %H:%M:%S UTC")
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .and_utc()
}

/// The value of a `name=value` field in a text log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!("{name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[at + key.len()..]
        .split_whitespace()
        .next()
        .unwrap_or("")
}

/// moto's server checks a write's condition and then applies it, serving
/// requests on parallel threads: two conditional writes racing for one item
/// can both succeed (three writers, about one round in 300), which DynamoDB
/// never allows. Daemons that race for ticks reach moto through this front,
/// which passes one request at a time and so restores DynamoDB's guarantee
/// (even for a request whose daemon hung up: it still holds its turn until
/// moto answers).
async fn serial_dynamodb() -> String {
    serial_dynamodb_recording(Arc::new(Mutex::new(BTreeSet::new()))).await
}

/// [`serial_dynamodb`] that also records each DynamoDB action it passes on
/// (from `X-Amz-Target`) into `actions`.
async fn serial_dynamodb_recording(actions: Arc<Mutex<BTreeSet<String>>>) -> String {
    let upstream = common::dynamodb_endpoint()
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (upstream, turn, client) = (upstream.clone(), turn.clone(), client.clone());
            let actions = actions.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (upstream, turn, client) = (upstream.clone(), turn.clone(), client.clone());
                    if let Some(target) = req
                        .headers()
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                    {
                        let action = target.rsplit('.').next().unwrap_or(target);
                        actions.lock().unwrap().insert(format!("dynamodb:{action}"));
                    }
                    async move { Ok::<_, Infallible>(forward_one(req, &upstream, &turn, &client).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

async fn forward_one(
    req: hyper::Request<hyper::body::Incoming>,
    upstream: &str,
    turn: &Arc<tokio::sync::Mutex<()>>,
    client: &reqwest::Client,
) -> hyper::Response<Full<Bytes>> {
    use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = client
        .request(parts.method.clone(), format!("{upstream}{target}"))
        .body(body);
    for (k, v) in &parts.headers {
        if k != HOST && k != CONTENT_LENGTH {
            request = request.header(k, v);
        }
    }
    // The exchange with moto runs in its own task, holding the turn until
    // moto has answered: a daemon that hangs up (a cut link) drops this
    // future, and must not let the next request into moto while its own is
    // still being applied there.
    let turn = turn.clone();
    let exchange = tokio::spawn(async move {
        let _turn = turn.lock_owned().await;
        let answer = request.send().await.ok()?;
        let status = answer.status();
        let headers = answer.headers().clone();
        let bytes = answer.bytes().await.unwrap_or_default();
        Some((status, headers, bytes))
    });
    let Ok(Some((status, headers, bytes))) = exchange.await else {
        let mut bad = hyper::Response::new(Full::new(Bytes::new()));
        *bad.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        return bad;
    };
    let mut response = hyper::Response::new(Full::new(bytes));
    *response.status_mut() = status;
    for (k, v) in &headers {
        if k != TRANSFER_ENCODING && k != CONTENT_LENGTH && k != CONNECTION {
            response.headers_mut().append(k, v.clone());
        }
    }
    response
}

/// What the SQS gate does to the next SendMessage passing through.
enum OnSend {
    /// Runs this before the request goes on to SQS.
    Before(Box<dyn FnOnce() + Send>),
    /// Lets SQS take it, then closes the connection instead of answering.
    LoseAnswer,
}

/// Between a daemon and SQS: refuses connections outright (its port
/// closed) while "refusing", and can act on the next SendMessage.
struct SqsGate {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    next_send: Arc<Mutex<Option<OnSend>>>,
}

impl SqsGate {
    async fn start() -> SqsGate {
        let upstream = common::endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let first = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = first.local_addr().expect("addr");
        let (up, mut up_rx) = watch::channel(true);
        let next_send: Arc<Mutex<Option<OnSend>>> = Arc::default();
        let on_send = next_send.clone();
        tokio::spawn(async move {
            let mut listener = Some(first);
            loop {
                let Some(l) = listener.as_ref() else {
                    if up_rx.wait_for(|u| *u).await.is_err() {
                        return;
                    }
                    listener = Some(rebind(addr).await);
                    continue;
                };
                tokio::select! {
                    accepted = l.accept() => {
                        if let Ok((client, _)) = accepted {
                            tokio::spawn(pipe(client, upstream.clone(), up_rx.clone(), on_send.clone()));
                        }
                    }
                    changed = up_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        if !*up_rx.borrow() {
                            // Closing the listener: connections are refused.
                            listener = None;
                        }
                    }
                }
            }
        });
        SqsGate {
            addr,
            up,
            next_send,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_refusing(&self, refusing: bool) {
        self.up.send_replace(!refusing);
    }

    fn on_next_send(&self, action: OnSend) {
        *self.next_send.lock().unwrap() = Some(action);
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot listen on {addr} again");
}

async fn pipe(
    client: TcpStream,
    upstream: String,
    mut up: watch::Receiver<bool>,
    next_send: Arc<Mutex<Option<OnSend>>>,
) {
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let lose = Arc::new(AtomicBool::new(false));
    let lose_next = lose.clone();
    let requests = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            let marker = b"AmazonSQS.SendMessage\r\n";
            if chunk.windows(marker.len()).any(|w| w == marker) {
                let action = next_send.lock().unwrap().take();
                match action {
                    Some(OnSend::Before(f)) => f(),
                    Some(OnSend::LoseAnswer) => lose_next.store(true, Ordering::SeqCst),
                    None => {}
                }
            }
            if server_tx.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let answers = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if lose.load(Ordering::SeqCst) {
                // SQS answered; the daemon never learns it.
                return;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = requests => {}
        _ = answers => {}
        _ = up.wait_for(|u| !*u) => {}
    }
}

/// A daemon with its DynamoDB at `dynamodb`; its instance id in the table.
async fn fleet_daemon(
    queue_url: &str,
    app: &App,
    dynamodb: &str,
    extra: &[&str],
) -> (Daemon, String) {
    let mut args: Vec<String> = [
        "--queue-url",
        queue_url,
        "--worker-url",
        &app.url(),
        "--admin-addr",
        "127.0.0.1:0",
        "--log-level",
        "debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = common::sqsd_command(&args);
    cmd.env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb);
    let d = Daemon::start_with(cmd).await;
    let line = d
        .wait_log(
            "coordinated through the cron table",
            Duration::from_secs(30),
        )
        .await;
    let instance = field(&line, "instance").to_string();
    (d, instance)
}

/// The partition key of `task`'s records: the queue's ARN and the task.
async fn task_key(queue: &TestQueue, task: &str) -> String {
    format!(
        "{}#{task}",
        queue.attribute(QueueAttributeName::QueueArn).await
    )
}

/// Phase and holder of a tick's record, read straight from moto.
async fn tick_record(table: &str, key: &str, tick: DateTime<Utc>) -> Option<(String, String)> {
    let item = common::dynamodb()
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(key.to_string()))
        .key("tick", AttributeValue::N(tick.timestamp().to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("get tick record")
        .item?;
    let text = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    Some((text("phase"), text("claimed_by")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_message_has_elastic_beanstalks_exact_format() {
    let queue = TestQueue::new("cron-format").await;
    // The application holds the first POST, and with one connection the
    // daemon receives nothing else: later task messages wait in the queue.
    let app = App::start(|_| Reply::status(200).after(Duration::from_secs(60))).await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("format-job", "/jobs/format?x=1", "* * * * * *")]),
    );
    let _d = Daemon::start(args_with(
        &queue,
        &app,
        &[
            "--http-connections",
            "1",
            "--cron-file",
            file.to_str().unwrap(),
        ],
    ))
    .await;
    eventually(Duration::from_secs(20), "the first task POST", || {
        let n = app.in_flight();
        async move { (n == 1).then_some(()) }
    })
    .await;

    let out = queue
        .client
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .wait_time_seconds(10)
        .visibility_timeout(120)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    let messages = out.messages.unwrap_or_default();
    assert!(!messages.is_empty(), "no task message waiting in the queue");
    for m in &messages {
        assert_eq!(m.body(), Some(TASK_BODY));
        let attrs = m.message_attributes().expect("attributes");
        let names: BTreeSet<&str> = attrs.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "beanstalk.sqsd.path",
                "beanstalk.sqsd.task_name",
                "beanstalk.sqsd.scheduled_time"
            ])
        );
        for v in attrs.values() {
            assert_eq!(v.data_type(), "String");
        }
        let text = |k: &str| attrs[k].string_value().unwrap_or_default().to_string();
        assert_eq!(text("beanstalk.sqsd.path"), "/jobs/format?x=1");
        assert_eq!(text("beanstalk.sqsd.task_name"), "format-job");
        let scheduled = text("beanstalk.sqsd.scheduled_time");
        let tick = NaiveDateTime::parse_from_str(&scheduled, "%Y-%m-%d %H:%M:%S UTC")
            .unwrap_or_else(|e| panic!("{scheduled:?} is not YYYY-MM-DD HH:MM:SS UTC: {e}"))
            .and_utc();
        assert_eq!(scheduled.len(), "2026-11-22 05:40:52 UTC".len());
        // Enqueued within one second of its tick.
        let sent_ms: i64 = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
            .expect("SentTimestamp")
            .parse()
            .expect("number");
        let late = sent_ms - tick.timestamp_millis();
        assert!(
            (0..1000).contains(&late),
            "sent {late} ms after its tick {scheduled}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_is_delivered_to_its_path_with_task_headers() {
    let queue = TestQueue::new("cron-deliver").await;
    let app = App::ok().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[
            ("report", "/tasks/report", "* * * * * *"),
            ("hourly", "/tasks/hourly", "0 * * * *"),
        ]),
    );
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &["--cron-file", file.to_str().unwrap()],
    ))
    .await;
    d.wait_log("no cron_table configured", Duration::from_secs(10))
        .await;
    eventually(Duration::from_secs(20), "three report ticks", || {
        let n = messages_per_tick(&app, "report").len();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    let posts: Vec<Recorded> = app
        .requests()
        .into_iter()
        .filter(|r| r.header("x-aws-sqsd-taskname").as_deref() == Some("report"))
        .collect();
    for r in &posts {
        assert_eq!(r.method, "POST");
        assert_eq!(r.target, "/tasks/report");
        assert_eq!(r.header("x-aws-sqsd-taskname").as_deref(), Some("report"));
        assert!(r.body.is_empty(), "a task POST has an empty body");
        let tick = tick_of(r);
        assert_eq!(tick.nanosecond(), 0);
    }
    let ticks = messages_per_tick(&app, "report");
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert_no_tick_twice(&ticks);
    let enqueued = eventually(Duration::from_secs(10), "enqueued metric", || async {
        let n = d
            .metric("sqsd_periodic_tasks_enqueued_total{task=\"report\"}")
            .await;
        (n >= 3.0).then_some(n)
    })
    .await;
    assert!(enqueued >= 3.0);
    // The hourly task's next run is exported, on the hour, in the future.
    let next = d
        .metric("sqsd_periodic_task_next_run_timestamp_seconds{task=\"hourly\"}")
        .await as i64;
    let now = Utc::now().timestamp();
    assert!(
        next > now && next <= now + 3600 && next % 3600 == 0,
        "next run {next}"
    );
    assert_eq!(d.admin_get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_worker_queue_gets_each_tick_once() {
    let queue = TestQueue::fifo("cron-fifo").await;
    let app = App::ok().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("fifo job", "/fifo", "* * * * * *")]),
    );
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &["--cron-file", file.to_str().unwrap()],
    ))
    .await;
    let posts = app.wait_requests(3, Duration::from_secs(20)).await;
    assert!(posts.iter().all(|r| r.target == "/fifo"));
    let ticks = messages_per_tick(&app, "fifo job");
    assert!(ticks.len() >= 3, "{ticks:?}");
    assert_no_tick_twice(&ticks);
    assert!(
        d.find_log("InvalidParameterValue").is_none() && d.find_log("MissingParameter").is_none(),
        "the FIFO queue refused a task message:\n{}",
        d.log_text()
    );
}

fn table_args(table: &str) -> Vec<&str> {
    vec!["--cron-table", table]
}

fn table_name(prefix: &str) -> String {
    format!("{prefix}-{:08x}", fastrand::u32(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_enqueue_each_tick_once_even_when_one_dies() {
    let queue = TestQueue::new("cron-fleet").await;
    let app = App::ok().await;
    let table = table_name("sqsd-fleet");
    let dynamodb = serial_dynamodb().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("every-second", "/tick", "* * * * * *")]),
    );
    // A killed daemon's open long polls may still take messages on the
    // server side; a short visibility timeout brings those back quickly.
    let extra = [
        "--cron-table",
        table.as_str(),
        "--cron-file",
        file.to_str().unwrap(),
        "--visibility-timeout",
        "5",
    ];
    let mut daemons = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let (d, instance) = fleet_daemon(&queue.url, &app, &dynamodb, &extra).await;
        daemons.push(d);
        instances.push(instance);
    }
    for d in &daemons {
        d.wait_ready(Duration::from_secs(20)).await;
    }
    let all_started = Utc::now();

    // 20 ticks with all three running.
    let before_kill = eventually(
        Duration::from_secs(60),
        "20 ticks with three daemons",
        || {
            let ticks = messages_per_tick(&app, "every-second");
            let after: usize = ticks.keys().filter(|t| **t > all_started).count();
            async move { (after >= 20).then_some(ticks) }
        },
    )
    .await;
    assert_no_tick_twice(&before_kill);
    let mut dead = daemons.remove(0);
    let dead_instance = instances.remove(0);
    dead.kill9();
    let killed_at = Utc::now();

    // 20 more with two left.
    eventually(Duration::from_secs(60), "20 ticks after the kill", || {
        let n = messages_per_tick(&app, "every-second")
            .keys()
            .filter(|t| **t > killed_at)
            .count();
        async move { (n >= 20).then_some(()) }
    })
    .await;

    // Every second from the first tick to 20 s after the kill, exactly once.
    // A tick the killed daemon had claimed but not yet tried to send is
    // taken over once its claim goes unrenewed for a lease. One it was
    // sending when it died may be in the queue or not: on a standard queue
    // nobody sends it again, and its record says so.
    let key = task_key(&queue, "every-second").await;
    let first = *before_kill.keys().next().expect("a tick");
    let last = killed_at.with_nanosecond(0).unwrap() + chrono::Duration::seconds(20);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (ticks, excused) = loop {
        let ticks = messages_per_tick(&app, "every-second");
        assert_no_tick_twice(&ticks);
        let mut missing = Vec::new();
        let mut excused = Vec::new();
        let mut t = first;
        while t <= last {
            if !ticks.contains_key(&t) {
                match tick_record(&table, &key, t).await {
                    Some((phase, by)) if phase == "sending" && by == dead_instance => {
                        excused.push(t)
                    }
                    record => missing.push((t, record)),
                }
            }
            t += chrono::Duration::seconds(1);
        }
        if missing.is_empty() {
            break (ticks, excused);
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = daemons.iter().map(|d| d.log_text()).collect();
            panic!(
                "ticks never enqueued: {missing:?} (killed at {killed_at}); logs:\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        excused.len() <= 2,
        "the killed daemon cannot have been sending {excused:?} all at once"
    );
    assert!(ticks.len() >= 40, "{} ticks", ticks.len());
    let mut lost = 0.0;
    for d in &daemons {
        lost += d.metric("sqsd_periodic_ticks_lost_total").await;
        assert!(d.metric("sqsd_periodic_ticks_claimed_total").await > 0.0);
    }
    assert!(lost > 0.0, "the survivors never raced for a tick");
}

/// The actions EB's worker-tier instance role allows on its leader
/// registry (the managed policy for the worker tier), and nothing else.
const EB_ROLE_ACTIONS: &[&str] = &[
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:UpdateItem",
];

/// A table shaped like EB's leader registry: hash key `id` (S) only.
async fn create_eb_table(name: &str) {
    common::dynamodb()
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create EB-style table");
}

/// Every item of `table`, by `id`.
async fn items_by_id(
    table: &str,
) -> BTreeMap<String, std::collections::HashMap<String, AttributeValue>> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = common::dynamodb()
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items() {
            let id = item["id"].as_s().unwrap().clone();
            out.insert(id, item.clone());
        }
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eb_mode_three_daemons_share_ebs_table_with_item_actions_only() {
    let queue = TestQueue::new("cron-eb").await;
    let app = App::ok().await;
    let table = table_name("awseb-e-test-stack-AWSEBWorkerCronLeaderRegistry");
    create_eb_table(&table).await;
    let arn = queue.attribute(QueueAttributeName::QueueArn).await;
    // EB's own records, which sqsd must leave alone.
    let eb_ids = [
        "leader-election-record",
        "registration-record",
        "every-second",
    ];
    for id in eb_ids {
        common::dynamodb()
            .put_item()
            .table_name(&table)
            .item("id", AttributeValue::S(id.into()))
            .item("leader_id", AttributeValue::S("i-0123456789abcdef0".into()))
            .item("expires_at", AttributeValue::N("1700000000".into()))
            .send()
            .await
            .expect("seed EB record");
    }
    // Claims of a fleet that ran an hour ago: all but the newest go.
    let hour_ago = Utc::now().timestamp() - 3600;
    for i in 0..30 {
        let tick = hour_ago + i;
        common::dynamodb()
            .put_item()
            .table_name(&table)
            .item(
                "id",
                AttributeValue::S(format!("sqsd#{arn}#every-second#{tick}")),
            )
            .item("tick", AttributeValue::N(tick.to_string()))
            .item("sqsd_task", AttributeValue::S("every-second".into()))
            .item("phase", AttributeValue::S("sent".into()))
            .item("claimed_by", AttributeValue::S("gone".into()))
            .item("version", AttributeValue::N("2".into()))
            .send()
            .await
            .expect("seed old claim");
    }
    let eb_before = items_by_id(&table).await;
    let actions = Arc::new(Mutex::new(BTreeSet::new()));
    let dynamodb = serial_dynamodb_recording(actions.clone()).await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("every-second", "/tick", "* * * * * *")]),
    );
    let extra = [
        "--cron-table",
        table.as_str(),
        "--cron-table-mode",
        "eb",
        "--cron-file",
        file.to_str().unwrap(),
        "--visibility-timeout",
        "5",
    ];
    let mut daemons = Vec::new();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let (d, instance) = fleet_daemon(&queue.url, &app, &dynamodb, &extra).await;
        daemons.push(d);
        instances.push(instance);
    }
    for d in &daemons {
        d.wait_ready(Duration::from_secs(20)).await;
    }
    let all_started = Utc::now();
    let before_kill = eventually(
        Duration::from_secs(60),
        "15 ticks with three daemons",
        || {
            let ticks = messages_per_tick(&app, "every-second");
            let after = ticks.keys().filter(|t| **t > all_started).count();
            async move { (after >= 15).then_some(ticks) }
        },
    )
    .await;
    assert_no_tick_twice(&before_kill);
    let mut dead = daemons.remove(0);
    let dead_instance = instances.remove(0);
    dead.kill9();
    let killed_at = Utc::now();
    eventually(Duration::from_secs(60), "15 ticks after the kill", || {
        let n = messages_per_tick(&app, "every-second")
            .keys()
            .filter(|t| **t > killed_at)
            .count();
        async move { (n >= 15).then_some(()) }
    })
    .await;
    // Each tick once, every second from the first: a tick the killed daemon
    // had claimed but not sent is taken over after its lease; one it was
    // sending when it died may be missing, and its record says so.
    let first = *before_kill.keys().next().expect("a tick");
    let last = killed_at.with_nanosecond(0).unwrap() + chrono::Duration::seconds(15);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let excused = loop {
        let ticks = messages_per_tick(&app, "every-second");
        assert_no_tick_twice(&ticks);
        let mut missing = Vec::new();
        let mut excused = Vec::new();
        let mut t = first;
        while t <= last {
            if !ticks.contains_key(&t) {
                let id = format!("sqsd#{arn}#every-second#{}", t.timestamp());
                let record = common::dynamodb()
                    .get_item()
                    .table_name(&table)
                    .key("id", AttributeValue::S(id))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("get record")
                    .item;
                let text = |k: &str| {
                    record
                        .as_ref()
                        .and_then(|i| i.get(k))
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                if text("phase") == "sending" && text("claimed_by") == dead_instance {
                    excused.push(t);
                } else {
                    missing.push((t, text("phase"), text("claimed_by")));
                }
            }
            t += chrono::Duration::seconds(1);
        }
        if missing.is_empty() {
            break excused;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ticks never enqueued: {missing:?} (killed at {killed_at})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(excused.len() <= 2, "{excused:?}");

    // EB's records untouched; the old claims pruned to the newest one; the
    // records of this run bounded by the ticks it ran.
    let items = items_by_id(&table).await;
    for id in eb_ids {
        assert_eq!(items.get(id), eb_before.get(id), "EB's record {id} changed");
    }
    let prefix = format!("sqsd#{arn}#every-second#");
    let ours: Vec<i64> = items
        .keys()
        .filter_map(|id| id.strip_prefix(&prefix))
        .filter_map(|t| t.parse().ok())
        .collect();
    let old_left = ours
        .iter()
        .filter(|t| **t > 0 && **t < hour_ago + 30)
        .count();
    assert!(old_left <= 1, "{old_left} old claims left: {ours:?}");
    let ran = (Utc::now() - all_started).num_seconds() + 30;
    assert!(
        (ours.len() as i64) <= ran + 2,
        "{} records for about {ran} ticks",
        ours.len()
    );
    assert!(
        items
            .keys()
            .all(|id| eb_ids.contains(&id.as_str()) || id.starts_with("sqsd#")),
        "{:?}",
        items.keys().collect::<Vec<_>>()
    );
    // Only what EB's instance role allows.
    let used = actions.lock().unwrap().clone();
    let allowed: BTreeSet<String> = EB_ROLE_ACTIONS.iter().map(|a| a.to_string()).collect();
    assert!(
        used.is_subset(&allowed),
        "{:?} not allowed to EB's role",
        used.difference(&allowed).collect::<Vec<_>>()
    );
    assert!(
        used.contains("dynamodb:PutItem") && used.contains("dynamodb:Scan"),
        "{used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_spellings_of_one_queue_share_each_tick() {
    let queue = TestQueue::new("cron-spelling").await;
    let app = App::ok().await;
    let table = table_name("sqsd-spelling");
    let dynamodb = serial_dynamodb().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("spelled", "/spelled", "* * * * * *")]),
    );
    let extra = [
        "--cron-table",
        table.as_str(),
        "--cron-file",
        file.to_str().unwrap(),
    ];
    // The same queue, with and without a trailing slash.
    let slashed = format!("{}/", queue.url);
    let (a, _) = fleet_daemon(&queue.url, &app, &dynamodb, &extra).await;
    let (b, _) = fleet_daemon(&slashed, &app, &dynamodb, &extra).await;
    a.wait_ready(Duration::from_secs(20)).await;
    b.wait_ready(Duration::from_secs(20)).await;
    let started = Utc::now();
    let ticks = eventually(Duration::from_secs(60), "15 ticks with both", || {
        let ticks = messages_per_tick(&app, "spelled");
        let n = ticks.keys().filter(|t| **t > started).count();
        async move { (n >= 15).then_some(ticks) }
    })
    .await;
    assert_no_tick_twice(&ticks);
    // Both raced for the same records, keyed by the queue's ARN.
    let lost = a.metric("sqsd_periodic_ticks_lost_total").await
        + b.metric("sqsd_periodic_ticks_lost_total").await;
    assert!(lost > 0.0, "the two daemons never raced for a tick");
    let key = task_key(&queue, "spelled").await;
    let newest = *ticks.keys().last().unwrap();
    let (phase, _) = tick_record(&table, &key, newest)
        .await
        .expect("the tick's record under the queue's ARN");
    assert!(phase == "sent" || phase == "sending", "{phase}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrecorded_send_is_not_enqueued_again_after_the_lease() {
    let queue = TestQueue::new("cron-unrecorded").await;
    let app = App::ok().await;
    let table = table_name("sqsd-unrecorded");
    let dynamodb = serial_dynamodb().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("recorded", "/recorded", "* * * * * *")]),
    );
    let extra = [
        "--cron-table",
        table.as_str(),
        "--cron-file",
        file.to_str().unwrap(),
    ];
    // Daemon A reaches SQS through a gate and DynamoDB through a proxy;
    // B reaches both directly. Both race for every tick.
    let gate = SqsGate::start().await;
    let cut = Arc::new(common::proxy::Proxy::start(&dynamodb).await);
    let gate_url = gate.url();
    let cut_url = cut.url();
    let mut a_extra = extra.to_vec();
    a_extra.extend(["--endpoint-url", gate_url.as_str()]);
    let (a, a_instance) = fleet_daemon(&queue.url, &app, &cut_url, &a_extra).await;
    let (b, _) = fleet_daemon(&queue.url, &app, &dynamodb, &extra).await;
    a.wait_ready(Duration::from_secs(20)).await;
    b.wait_ready(Duration::from_secs(20)).await;

    // The moment A sends a tick it claimed, DynamoDB goes away for A: the
    // send reaches SQS, marking it sent cannot.
    let cutter = cut.clone();
    gate.on_next_send(OnSend::Before(Box::new(move || cutter.set_up(false))));
    // A may have enqueued (and recorded) ticks before the gate was set: the
    // tick that matters is the one whose record A cannot write.
    let unrecorded = a
        .wait_log(
            "cannot record the tick as enqueued yet",
            Duration::from_secs(60),
        )
        .await;
    let tick = scheduled_in(&unrecorded);
    let enqueued = a
        .log_text()
        .lines()
        .any(|l| l.contains("periodic task enqueued") && scheduled_in(l) == tick);
    assert!(enqueued, "A never sent {tick}:\n{}", a.log_text());
    // Longer than a lease plus two sweeps: ample time for B to take the
    // tick over, if it were to.
    tokio::time::sleep(Duration::from_secs(75)).await;
    let key = task_key(&queue, "recorded").await;
    assert_eq!(
        tick_record(&table, &key, tick).await,
        Some(("sending".to_string(), a_instance.clone()))
    );
    cut.set_up(true);
    eventually(
        Duration::from_secs(30),
        "A records the tick as sent",
        || {
            let (table, key) = (table.clone(), key.clone());
            async move {
                let record = tick_record(&table, &key, tick).await;
                (record.as_ref().map(|r| r.0.as_str()) == Some("sent")).then_some(())
            }
        },
    )
    .await;
    eventually(Duration::from_secs(30), "the tick delivered", || {
        let seen = messages_per_tick(&app, "recorded").contains_key(&tick);
        async move { seen.then_some(()) }
    })
    .await;
    let ticks = messages_per_tick(&app, "recorded");
    assert_eq!(ticks[&tick].len(), 1, "tick {tick} enqueued twice");
    assert_no_tick_twice(&ticks);
    assert!(
        b.find_log("taking over a tick").is_none(),
        "B took a tick over:\n{}",
        b.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_is_lost_is_not_repeated_on_a_standard_queue() {
    let queue = TestQueue::new("cron-lost-answer").await;
    let app = App::ok().await;
    let gate = SqsGate::start().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("answerless", "/answerless", "*/2 * * * * *")]),
    );
    let gate_url = gate.url();
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &[
            "--cron-file",
            file.to_str().unwrap(),
            "--endpoint-url",
            &gate_url,
        ],
    ))
    .await;
    d.wait_ready(Duration::from_secs(20)).await;
    gate.on_next_send(OnSend::LoseAnswer);
    let line = d
        .wait_log("may or may not be in the queue", Duration::from_secs(20))
        .await;
    let tick = scheduled_in(&line);
    // SQS did take it: it is delivered, once.
    eventually(
        Duration::from_secs(20),
        "the answerless tick delivered",
        || {
            let seen = messages_per_tick(&app, "answerless").contains_key(&tick);
            async move { seen.then_some(()) }
        },
    )
    .await;
    // Later ticks go on as usual, and nothing repeats the answerless one.
    eventually(Duration::from_secs(20), "two later ticks", || {
        let n = messages_per_tick(&app, "answerless")
            .keys()
            .filter(|t| **t > tick)
            .count();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let ticks = messages_per_tick(&app, "answerless");
    assert_eq!(ticks[&tick].len(), 1, "tick {tick} enqueued twice");
    assert_no_tick_twice(&ticks);
    assert_eq!(
        d.metric("sqsd_periodic_ticks_unknown_total{task=\"answerless\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_queue_repeats_a_send_whose_answer_is_lost_and_sqs_drops_the_repeat() {
    let queue = TestQueue::fifo("cron-lost-fifo").await;
    let app = App::ok().await;
    let gate = SqsGate::start().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("fifo-answerless", "/fifo", "*/2 * * * * *")]),
    );
    let gate_url = gate.url();
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &[
            "--cron-file",
            file.to_str().unwrap(),
            "--endpoint-url",
            &gate_url,
        ],
    ))
    .await;
    d.wait_ready(Duration::from_secs(20)).await;
    gate.on_next_send(OnSend::LoseAnswer);
    let line = d
        .wait_log(
            "cannot enqueue the periodic task; retrying",
            Duration::from_secs(20),
        )
        .await;
    let tick = scheduled_in(&line);
    eventually(Duration::from_secs(20), "two later ticks", || {
        let n = messages_per_tick(&app, "fifo-answerless")
            .keys()
            .filter(|t| **t > tick)
            .count();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let ticks = messages_per_tick(&app, "fifo-answerless");
    assert_eq!(
        ticks.get(&tick).map(BTreeSet::len),
        Some(1),
        "tick {tick}: {ticks:?}"
    );
    assert_no_tick_twice(&ticks);
    assert_eq!(
        d.metric("sqsd_periodic_ticks_unknown_total").await,
        0.0,
        "the repeat was sent"
    );
}

async fn create_table(name: &str) {
    let attribute = |n: &str, t| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(t)
            .build()
            .unwrap()
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    common::dynamodb()
        .create_table()
        .table_name(name)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute("tick", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("tick", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_caught_up_once_and_older_ones_skipped() {
    let queue = TestQueue::new("cron-catchup").await;
    let app = App::ok().await;
    let table = table_name("sqsd-catchup");
    create_table(&table).await;
    // The fleet has scheduled this task for an hour, and every daemon was
    // down for the last ten minutes: the table knows the task, no ticks.
    let schedule = "* * * * *";
    let since = Utc::now() - chrono::Duration::hours(1);
    common::dynamodb()
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(task_key(&queue, "minutely").await))
        .item("tick", AttributeValue::N("0".into()))
        .item("schedule", AttributeValue::S(schedule.into()))
        .item("since", AttributeValue::N(since.timestamp().to_string()))
        .send()
        .await
        .expect("put task record");

    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("minutely", "/minutely", schedule)]),
    );
    let started = Utc::now();
    let mut extra = table_args(&table);
    extra.extend([
        "--cron-file",
        file.to_str().unwrap(),
        "--cron-create-table",
        "false",
    ]);
    let d = Daemon::start(args_with(&queue, &app, &extra)).await;

    // The minutes of the last five (less the grace) come back, once each.
    let ticks = eventually(Duration::from_secs(30), "caught-up ticks", || {
        let ticks = messages_per_tick(&app, "minutely");
        async move { (ticks.len() >= 4).then_some(ticks) }
    })
    .await;
    let skipped = d
        .wait_log("older than the catch-up window", Duration::from_secs(10))
        .await;
    for tick in ticks.keys() {
        assert_eq!(tick.second(), 0, "{tick}");
        assert!(
            *tick >= started - chrono::Duration::seconds(301),
            "{tick} is older than the window"
        );
        assert!(*tick <= Utc::now(), "{tick}");
    }
    // The minute before the window is reported, not enqueued.
    let oldest = *ticks.keys().next().unwrap();
    let before = oldest - chrono::Duration::minutes(1);
    assert!(
        skipped.contains(&before.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        "expected {before} in {skipped}"
    );
    assert!(d.metric("sqsd_periodic_ticks_skipped_total").await >= 1.0);
    // Later sweeps do not enqueue them again.
    eventually(Duration::from_secs(40), "two more sweeps", || {
        let sweeps = d
            .logs()
            .iter()
            .filter(|l| l.contains("cron table sweep done"))
            .count();
        async move { (sweeps >= 3).then_some(()) }
    })
    .await;
    assert_no_tick_twice(&messages_per_tick(&app, "minutely"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_bad_file_keeps_the_schedule() {
    let queue = TestQueue::new("cron-reload").await;
    let app = App::ok().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("first", "/first", "* * * * * *")]),
    );
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &["--cron-file", file.to_str().unwrap()],
    ))
    .await;
    eventually(Duration::from_secs(20), "a POST to /first", || {
        let n = app
            .requests()
            .iter()
            .filter(|r| r.target == "/first")
            .count();
        async move { (n > 0).then_some(()) }
    })
    .await;

    std::fs::write(&file, cron_yaml(&[("second", "/second", "* * * * * *")])).unwrap();
    d.signal("HUP");
    d.wait_log("task=second", Duration::from_secs(10)).await;
    let switched = Utc::now() + chrono::Duration::seconds(2);
    eventually(Duration::from_secs(20), "POSTs to /second only", || {
        let reqs = app.requests();
        let second = reqs.iter().filter(|r| r.target == "/second").count();
        let first_late = reqs
            .iter()
            .filter(|r| r.target == "/first" && tick_of(r) > switched)
            .count();
        assert_eq!(first_late, 0, "the removed task still fires");
        async move { (second >= 2).then_some(()) }
    })
    .await;

    std::fs::write(
        &file,
        "version: 1\ncron:\n  - name: broken\n    url: nope\n",
    )
    .unwrap();
    d.signal("HUP");
    let line = d.wait_log("not reloaded", Duration::from_secs(10)).await;
    assert!(
        line.contains("cron entry 1") && line.contains("url"),
        "{line}"
    );
    let seen = app.count();
    app.wait_requests(seen + 2, Duration::from_secs(20)).await;
    assert!(app.requests()[seen..].iter().all(|r| r.target == "/second"));
    assert_eq!(d.admin_get("/healthz").await.0, 200);
}

/// Runs sqsd to its end: exit code and standard error.
fn run_sqsd(args: &[&str]) -> (i32, String) {
    let (code, _, err) = common::run_to_end(args, &[]);
    (code, err)
}

#[test]
fn bad_cron_files_stop_startup_naming_entry_and_field() {
    let cases: &[(&str, &[&str])] = &[
        ("version: 2\ncron: []\n", &["version", "must be 1"]),
        ("version: 1\ncron:\n  - url: /a\n    schedule: \"* * * * *\"\n", &["cron entry 1", "name: missing"]),
        ("version: 1\ncron:\n  - name: a\n    url: /a\n    schedule: \"* * * * *\"\n  - name: a\n    url: /b\n    schedule: \"* * * * *\"\n", &["cron entry 2 (\"a\")", "name: duplicate"]),
        ("version: 1\ncron:\n  - name: a\n    url: /a\n    schedule: \"0 25 * * *\"\n", &["cron entry 1 (\"a\")", "schedule"]),
        ("version: 1\ncron:\n  - name: a\n    url: https://x.example/a\n    schedule: \"* * * * *\"\n", &["cron entry 1 (\"a\")", "url", "not a path"]),
        ("version: 1\ncron:\n  - name: a\n    url: /a\n    schedule: \"* * * * *\"\n    when: now\n", &["cron entry 1 (\"a\")", "unknown field \"when\""]),
    ];
    for (text, wanted) in cases {
        let file = scratch_file("cron.yaml", text);
        let path = file.to_str().unwrap();
        for mode in [&[][..], &["check-config"][..]] {
            let mut args: Vec<&str> = mode.to_vec();
            args.extend([
                "--queue-url",
                "http://127.0.0.1:9/000000000000/never-reached",
                "--cron-file",
                path,
            ]);
            let (code, err) = run_sqsd(&args);
            assert_eq!(code, 64, "{mode:?} {text:?}: {err}");
            for w in *wanted {
                assert!(err.contains(w), "{mode:?}: {err:?} should mention {w:?}");
            }
            assert!(err.contains(path), "{err}");
        }
    }
    // A configured file that does not exist is an error too.
    let (code, err) = run_sqsd(&[
        "--queue-url",
        "http://127.0.0.1:9/000000000000/never-reached",
        "--cron-file",
        "/nonexistent/cron.yaml",
    ]);
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/cron.yaml"), "{err}");
}

/// Runs sqsd in both modes (startup and `check-config`) on `cron_file`:
/// exit code, standard error and how long it took, for each. `before_each`
/// runs before each of the two.
fn run_both_modes(cron_file: &str, before_each: impl Fn()) -> Vec<(i32, String, Duration)> {
    [&[][..], &["check-config"][..]]
        .iter()
        .map(|mode| {
            let mut args: Vec<&str> = mode.to_vec();
            args.extend([
                "--queue-url",
                "http://127.0.0.1:9/000000000000/never-reached",
                "--cron-file",
                cron_file,
            ]);
            before_each();
            let started = std::time::Instant::now();
            let (code, err) = run_sqsd(&args);
            (code, err, started.elapsed())
        })
        .collect()
}

#[test]
fn cron_files_past_the_bounds_stop_startup_naming_file_and_limit() {
    // Endless input: a device, and a pipe whose writer never stops.
    for (code, err, took) in run_both_modes("/dev/zero", || {}) {
        assert_eq!(code, 64, "{err}");
        assert!(
            err.contains("/dev/zero") && err.contains("1048576"),
            "{err}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
    let dir = scratch_file("unused", "").parent().unwrap().to_path_buf();
    let fifo = dir.join("cron.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    // Each run gets its own writer: one that opened the pipe for an earlier
    // run may be gone, and a reader with no writer waits in open().
    let writer = || {
        let path = fifo.clone();
        // Writes until the reader goes away (then the write fails).
        std::thread::spawn(move || {
            use std::io::Write;
            let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&path) else {
                return;
            };
            let chunk = vec![b'#'; 64 * 1024];
            while w.write_all(&chunk).is_ok() {}
        });
    };
    for (code, err, took) in run_both_modes(fifo.to_str().unwrap(), writer) {
        assert_eq!(code, 64, "{err}");
        assert!(
            err.contains("cron.fifo") && err.contains("1048576"),
            "{err}"
        );
        assert!(took < Duration::from_secs(20), "{took:?}");
    }

    // A regular file of 2 MiB, even of valid YAML.
    let mut big = cron_yaml(&[("a", "/a", "0 3 * * *")]);
    while big.len() <= 2 << 20 {
        big.push_str("# padding padding padding padding padding padding padding\n");
    }
    let file = scratch_file("cron.yaml", &big);
    for (code, err, _) in run_both_modes(file.to_str().unwrap(), || {}) {
        assert_eq!(code, 64, "{err}");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("1048576"),
            "{err}"
        );
    }

    // More entries than allowed, in well under 1 MiB.
    let many: Vec<(String, &str, &str)> = (0..1001)
        .map(|i| (format!("t{i}"), "/t", "0 3 * * *"))
        .collect();
    let refs: Vec<(&str, &str, &str)> = many.iter().map(|(n, u, s)| (n.as_str(), *u, *s)).collect();
    let file = scratch_file("cron.yaml", &cron_yaml(&refs));
    for (code, err, _) in run_both_modes(file.to_str().unwrap(), || {}) {
        assert_eq!(code, 64, "{err}");
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("1001 tasks; at most 1000"),
            "{err}"
        );
    }
}

#[test]
fn the_most_tasks_allowed_load_quickly_even_when_every_one_is_wrong() {
    // Every schedule valid, and every one that never fires (each of which
    // once cost a search to the year 5000): both judged in seconds.
    for (schedule, good) in [("*/7 3-9 1,15 * MON-FRI", true), ("0 0 30 2 *", false)] {
        let many: Vec<String> = (0..1000).map(|i| format!("task-{i}")).collect();
        let tasks: Vec<(&str, &str, &str)> =
            many.iter().map(|n| (n.as_str(), "/t", schedule)).collect();
        let file = scratch_file("cron.yaml", &cron_yaml(&tasks));
        let started = std::time::Instant::now();
        let (code, out, err) = common::run_to_end(
            &[
                "check-config",
                "--queue-url",
                "http://127.0.0.1:9/000000000000/q",
                "--cron-file",
                file.to_str().unwrap(),
            ],
            &[],
        );
        let took = started.elapsed();
        if good {
            assert_eq!(code, 0, "{err}");
            assert!(out.contains("task-999: POST /t"), "{out}");
        } else {
            assert_eq!(code, 64);
            assert_eq!(err.matches("never fires").count(), 1000);
        }
        assert!(took < Duration::from_secs(30), "{schedule}: {took:?}");
    }
}

#[test]
fn check_config_lists_each_tasks_next_three_runs_in_utc() {
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[
            ("monday", "/monday", "0 9 * * 1"),
            ("sunday", "/sunday", "30 6 * * 7"),
        ]),
    );
    let (code, out, err) = common::run_to_end(
        &[
            "check-config",
            "--queue-url",
            "http://127.0.0.1:9/000000000000/q",
            "--cron-file",
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let text = out;
    // Worked out here with chrono, independently of the daemon's parser.
    let next_three = |weekday: Weekday, hour: u32, minute: u32| -> Vec<String> {
        let now = Utc::now();
        let mut day = now.date_naive();
        let mut out = Vec::new();
        while out.len() < 3 {
            let t = Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0).unwrap());
            if day.weekday() == weekday && t > now {
                out.push(t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
            }
            day = day.succ_opt().unwrap();
        }
        out
    };
    for (task, weekday, h, m) in [
        ("monday", Weekday::Mon, 9, 0),
        ("sunday", Weekday::Sun, 6, 30),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{task}:")))
            .unwrap_or_else(|| panic!("no line for {task} in\n{text}"));
        assert_eq!(line.matches(" UTC").count(), 3, "{line}");
        for t in next_three(weekday, h, m) {
            assert!(line.contains(&t), "{line} should list {t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_table_is_an_error_unless_creation_is_allowed() {
    let queue = TestQueue::new("cron-table").await;
    let file = scratch_file("cron.yaml", &cron_yaml(&[("t", "/t", "0 0 1 1 *")]));
    let table = table_name("sqsd-absent");
    let args = [
        "--queue-url",
        queue.url.as_str(),
        "--cron-file",
        file.to_str().unwrap(),
        "--cron-table",
        table.as_str(),
        "--admin-addr",
        "127.0.0.1:0",
    ];
    let mut refused = args.to_vec();
    refused.extend(["--cron-create-table", "false"]);
    let (code, err) = run_sqsd(&refused);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains(&table) && err.contains("does not exist"),
        "{err}"
    );

    // Allowed (the default): the daemon creates it with the documented keys.
    let app = App::ok().await;
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &[
            "--cron-file",
            file.to_str().unwrap(),
            "--cron-table",
            &table,
        ],
    ))
    .await;
    d.wait_log(
        "coordinated through the cron table",
        Duration::from_secs(30),
    )
    .await;
    let described = common::dynamodb()
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("the table exists now");
    let keys: Vec<(String, String)> = described
        .table
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_string(),
                k.key_type().as_str().to_string(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("pk".to_string(), "HASH".to_string()),
            ("tick".to_string(), "RANGE".to_string())
        ]
    );
    // Records expire through TTL, so the table does not grow forever.
    let ttl = common::dynamodb()
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .expect("describe TTL")
        .time_to_live_description
        .expect("TTL description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(
        ttl.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_enqueue_is_retried_logged_and_counted() {
    let queue = TestQueue::new("cron-retry").await;
    let app = App::ok().await;
    // SQS out of reach: connections to it are refused, so an attempt
    // certainly did not enqueue anything and is retried.
    let gate = SqsGate::start().await;
    let file = scratch_file(
        "cron.yaml",
        &cron_yaml(&[("retried", "/retried", "*/10 * * * * *")]),
    );
    let proxy_url = gate.url();
    let d = Daemon::start(args_with(
        &queue,
        &app,
        &[
            "--cron-file",
            file.to_str().unwrap(),
            "--endpoint-url",
            &proxy_url,
            "--visibility-timeout",
            "5",
        ],
    ))
    .await;
    d.wait_ready(Duration::from_secs(20)).await;
    // Cut SQS off shortly before a tick, bring it back once the enqueue failed.
    let tick = eventually(
        Duration::from_secs(20),
        "a tick at least 2 s away",
        || async {
            let next = d
                .metric("sqsd_periodic_task_next_run_timestamp_seconds{task=\"retried\"}")
                .await as i64;
            (next - Utc::now().timestamp() >= 2).then_some(next)
        },
    )
    .await;
    gate.set_refusing(true);
    eventually(Duration::from_secs(20), "a failed enqueue", || async {
        (d.metric("sqsd_periodic_enqueue_failures_total{task=\"retried\"}")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    gate.set_refusing(false);
    let tick = Utc.timestamp_opt(tick, 0).unwrap();
    eventually(
        Duration::from_secs(30),
        "the retried tick delivered",
        || {
            let ticks = messages_per_tick(&app, "retried");
            async move { ticks.contains_key(&tick).then_some(()) }
        },
    )
    .await;
    assert_no_tick_twice(&messages_per_tick(&app, "retried"));
    let line = d
        .find_log("cannot enqueue the periodic task; retrying")
        .expect("the failure is logged");
    assert!(line.contains("retried"), "{line}");
    assert_eq!(d.metric("sqsd_periodic_ticks_skipped_total").await, 0.0);
    // Refused connections are certain failures: the tick is never counted
    // as possibly sent. (A send of the tick before, if still in flight when
    // the gate closed its connection, is rightly unknown: it may be in the
    // queue.)
    let unknown: Vec<String> = d
        .log_text()
        .lines()
        .filter(|l| l.contains("may or may not be in the queue"))
        .filter(|l| scheduled_in(l) == tick)
        .map(str::to_string)
        .collect();
    assert!(unknown.is_empty(), "{unknown:?}");
}

#[test]
fn cron_yaml_in_the_working_directory_is_found_without_configuration() {
    let file = scratch_file("cron.yaml", &cron_yaml(&[("found", "/found", "0 3 * * *")]));
    let dir = file.parent().unwrap();
    let mut cmd = common::sqsd_command(&[
        "check-config".to_string(),
        "--queue-url".to_string(),
        "http://127.0.0.1:9/000000000000/q".to_string(),
    ]);
    let out = cmd.current_dir(dir).output().expect("run sqsd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("periodic tasks from cron.yaml"), "{text}");
    assert!(text.contains("found: POST /found"), "{text}");
    // Elsewhere, with no file at all, there are simply no tasks.
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = common::sqsd_command(&[
        "check-config".to_string(),
        "--queue-url".to_string(),
        "http://127.0.0.1:9/000000000000/q".to_string(),
    ])
    .current_dir(empty)
    .output()
    .expect("run sqsd");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("periodic tasks: none"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_down_at_start_holds_up_tasks_not_messages() {
    let queue = TestQueue::new("cron-ddb-down").await;
    let app = App::ok().await;
    let dynamodb = common::proxy::Proxy::start(&common::dynamodb_endpoint()).await;
    dynamodb.set_up(false);
    let table = table_name("sqsd-late");
    let file = scratch_file("cron.yaml", &cron_yaml(&[("late", "/late", "* * * * * *")]));
    let mut args = args_with(&queue, &app, &["--cron-file", file.to_str().unwrap()]);
    args.extend(table_args(&table).into_iter().map(String::from));
    let mut cmd = common::sqsd_command(&args);
    cmd.env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb.url());
    let d = Daemon::start_with(cmd).await;

    // Messages flow while DynamoDB is away...
    d.wait_log("DynamoDB does not answer yet", Duration::from_secs(30))
        .await;
    d.wait_ready(Duration::from_secs(10)).await;
    let id = queue.send("while the table is away").await;
    eventually(Duration::from_secs(20), "the message delivered", || {
        let seen = !app.for_message(&id).is_empty();
        async move { seen.then_some(()) }
    })
    .await;
    assert!(
        messages_per_tick(&app, "late").is_empty(),
        "no task without the table"
    );

    // ...and the tasks start once it answers.
    dynamodb.set_up(true);
    eventually(
        Duration::from_secs(30),
        "task POSTs once DynamoDB answers",
        || {
            let n = messages_per_tick(&app, "late").len();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    assert_no_tick_twice(&messages_per_tick(&app, "late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eb_mode_creates_nothing_and_refuses_a_table_of_another_shape() {
    let queue = TestQueue::new("cron-eb-table").await;
    let file = scratch_file("cron.yaml", &cron_yaml(&[("t", "/t", "0 0 1 1 *")]));
    let absent = table_name("awseb-absent-AWSEBWorkerCronLeaderRegistry");
    let standard = table_name("sqsd-shaped");
    create_table(&standard).await;
    for (table, says) in [
        (absent.as_str(), "creates nothing"),
        (standard.as_str(), "id (S)"),
    ] {
        let (code, err) = run_sqsd(&[
            "--queue-url",
            queue.url.as_str(),
            "--cron-file",
            file.to_str().unwrap(),
            "--cron-table",
            table,
            "--cron-table-mode",
            "eb",
            "--admin-addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(code, 64, "{err}");
        assert!(err.contains(table) && err.contains(says), "{err}");
    }
    let exists = common::dynamodb()
        .describe_table()
        .table_name(&absent)
        .send()
        .await;
    assert!(exists.is_err(), "eb mode created {absent}");
}
