//! sqsd's own listeners, through the binary: the admin port and the
//! embedded SQS endpoint (`sqsd sqs-server`). A connection that sends
//! nothing, or half a request, is closed after the head timeout; many idle
//! connections do not keep a new client out; running out of file
//! descriptors backs off quietly and recovers; and an SQS long poll is still
//! answered in full.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::App;
use common::{base_args, eventually, Daemon, TestQueue};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// sqsd's head (and idle keep-alive) timeout, `http1::server::HEAD_TIMEOUT`.
const HEAD_TIMEOUT: Duration = Duration::from_secs(20);
const MARGIN: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection; how long that took.
/// Fails if it is still open after `within`.
async fn until_closed(mut stream: TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {within:?}"),
        }
    }
}

/// One connection that sends nothing and one that sends half a request
/// head are both closed by the server, at the head timeout.
async fn silent_and_half_open_connections_are_closed(addr: SocketAddr) {
    let silent = TcpStream::connect(addr).await.expect("connect");
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"POST / HTTP/1.1\r\nHost: sqsd\r\nContent-Ty")
        .await
        .expect("write");
    let within = HEAD_TIMEOUT + MARGIN;
    let (silent, half) = tokio::join!(until_closed(silent, within), until_closed(half, within));
    for (what, after) in [("silent", silent), ("half a head", half)] {
        assert!(
            after >= HEAD_TIMEOUT / 2,
            "{what}: closed after {after:?}, long before the head timeout"
        );
    }
}

/// `n` connections that say nothing, kept open by the caller.
async fn idle_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    idle
}

/// `sqsd sqs-server` on a port of its own, its log collected.
struct SqsServer {
    child: Child,
    endpoint: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl SqsServer {
    /// With `max_open_files`, the server runs under that `ulimit -n`.
    async fn start(max_open_files: Option<u32>) -> SqsServer {
        let bin = env!("CARGO_BIN_EXE_sqsd");
        let mut cmd = match max_open_files {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["sqs-server", "--sqs-listen", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sqsd sqs-server");
        let stderr = child.stderr.take().expect("stderr");
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let found = logs.clone();
        let endpoint = eventually(Duration::from_secs(20), "the endpoint line", || {
            let line = found
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.split("endpoint at ").nth(1).map(str::to_string));
            async move { Some(line?.split_whitespace().next()?.to_string()) }
        })
        .await;
        SqsServer {
            child,
            endpoint,
            logs,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("endpoint address")
    }

    fn log_lines(&self, needle: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// One JSON-protocol call; the status and the answer.
    async fn call(&self, action: &str, input: Value, timeout: Duration) -> (u16, Value) {
        let answer = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .expect("client")
            .post(&self.endpoint)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", format!("AmazonSQS.{action}"))
            .body(input.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for SqsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_endpoint_closes_silent_and_half_open_connections() {
    let server = SqsServer::start(None).await;
    silent_and_half_open_connections_are_closed(server.addr()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_embedded_endpoint_serves_a_new_client_among_many_idle_connections() {
    let server = SqsServer::start(None).await;
    // More than the endpoint's cap of 512 connections.
    let _idle = idle_connections(server.addr(), 600).await;
    let started = Instant::now();
    let (status, _) = server
        .call("ListQueues", json!({}), Duration::from_secs(10))
        .await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < HEAD_TIMEOUT,
        "served without waiting out the idle ones"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_poll_on_the_embedded_endpoint_is_answered_in_full() {
    let server = SqsServer::start(None).await;
    let (status, created) = server
        .call(
            "CreateQueue",
            json!({"QueueName": "long-poll"}),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let url = created["QueueUrl"].as_str().expect("QueueUrl").to_string();
    let started = Instant::now();
    let input = json!({"QueueUrl": url, "WaitTimeSeconds": 20, "MaxNumberOfMessages": 10});
    let (status, received) = server
        .call("ReceiveMessage", input, Duration::from_secs(40))
        .await;
    let waited = started.elapsed();
    assert_eq!(status, 200, "{received}");
    let messages = received["Messages"].as_array().map_or(0, Vec::len);
    assert_eq!(messages, 0, "{received}");
    assert!(
        waited >= Duration::from_secs(19),
        "the long poll returned after {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_file_descriptors_the_endpoint_backs_off_quietly_and_recovers() {
    let server = SqsServer::start(Some(64)).await;
    // Far more connections than the server has descriptors for.
    let _idle = idle_connections(server.addr(), 200).await;
    let (status, _) = server
        .call("ListQueues", json!({}), HEAD_TIMEOUT + MARGIN)
        .await;
    assert_eq!(status, 200);
    let failed = server.log_lines("accept failed");
    assert!(failed >= 1, "the server never ran out of descriptors");
    assert!(
        failed <= 10,
        "{failed} lines logged for accept failures: one per burst expected"
    );
}

async fn daemon_with_admin() -> (Daemon, TestQueue, App) {
    let queue = TestQueue::new("admin").await;
    let app = App::ok().await;
    let daemon = Daemon::start(base_args(&queue, &app.url())).await;
    (daemon, queue, app)
}

fn admin_addr(daemon: &Daemon) -> SocketAddr {
    daemon
        .admin
        .as_deref()
        .expect("admin address")
        .parse()
        .expect("admin address")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_closes_silent_and_half_open_connections() {
    let (daemon, _queue, _app) = daemon_with_admin().await;
    silent_and_half_open_connections_are_closed(admin_addr(&daemon)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_serves_a_new_client_among_many_idle_connections() {
    let (daemon, _queue, _app) = daemon_with_admin().await;
    // More than the admin port's cap of 64 connections.
    let _idle = idle_connections(admin_addr(&daemon), 200).await;
    let started = Instant::now();
    let (status, body) = daemon.admin_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < HEAD_TIMEOUT,
        "served without waiting out the idle ones"
    );
}
