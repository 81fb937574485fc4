//! Throughput of the embedded SQS endpoint alone: concurrent clients each
//! loop SendMessageBatch(10) -> ReceiveMessage(10) -> DeleteMessageBatch, so
//! every message goes through the whole life cycle. Requests are plain AWS
//! JSON protocol over keep-alive HTTP (the endpoint accepts any signature),
//! so the client's cost stays small next to the server's on two cores.
//!
//! Starts its own `sqsd sqs-server` (release build). Settings:
//! SQSD_BENCH_CLIENTS (default 8), SQSD_BENCH_SECONDS (default 10).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    action: &str,
    body: Value,
) -> Result<Value, Error> {
    let r = http
        .post(url)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amz-target", format!("AmazonSQS.{action}"))
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status();
    let v: Value = serde_json::from_slice(&r.bytes().await?)?;
    if !status.is_success() {
        return Err(format!("{action}: {status} {v}").into());
    }
    Ok(v)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let clients = env_u64("SQSD_BENCH_CLIENTS", 8);
    let seconds = env_u64("SQSD_BENCH_SECONDS", 10);
    let port = 20_000 + fastrand::u16(..20_000);
    let mut server = Command::new(env!("CARGO_BIN_EXE_sqsd"))
        .args([
            "sqs-server",
            "--sqs-listen",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let endpoint = format!("http://127.0.0.1:{port}/");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()?;
    let mut queue = None;
    for _ in 0..100 {
        if let Ok(v) = call(
            &http,
            &endpoint,
            "CreateQueue",
            json!({"QueueName": "bench"}),
        )
        .await
        {
            queue = v["QueueUrl"].as_str().map(String::from);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = queue.ok_or("the server did not start")?;

    let moved = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu_before = cpu_seconds(server.id())?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, endpoint, queue) = (http.clone(), endpoint.clone(), queue.clone());
        let (moved, requests) = (moved.clone(), requests.clone());
        tasks.spawn(async move {
            let body = "x".repeat(256);
            while Instant::now() < deadline {
                let entries: Vec<Value> = (0..10)
                    .map(|i| json!({"Id": format!("m{i}"), "MessageBody": format!("{c}-{i}-{body}")}))
                    .collect();
                call(&http, &endpoint, "SendMessageBatch", json!({"QueueUrl": queue, "Entries": entries}))
                    .await?;
                let got = call(&http, &endpoint, "ReceiveMessage",
                    json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1,
                           "MessageSystemAttributeNames": ["All"], "MessageAttributeNames": ["All"]}))
                .await?;
                let handles: Vec<Value> = got["Messages"]
                    .as_array()
                    .map(|ms| {
                        ms.iter()
                            .enumerate()
                            .map(|(i, m)| json!({"Id": format!("d{i}"), "ReceiptHandle": m["ReceiptHandle"]}))
                            .collect()
                    })
                    .unwrap_or_default();
                let n = handles.len() as u64;
                if n > 0 {
                    call(&http, &endpoint, "DeleteMessageBatch", json!({"QueueUrl": queue, "Entries": handles}))
                        .await?;
                }
                moved.fetch_add(n, Ordering::Relaxed);
                requests.fetch_add(if n > 0 { 3 } else { 2 }, Ordering::Relaxed);
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(server.id())? - cpu_before;
    let rss_kb = status_kb(server.id(), "VmHWM:")?;
    let _ = server.kill();
    let _ = server.wait();

    let n = moved.load(Ordering::Relaxed) as f64;
    println!("embedded SQS endpoint: {clients} clients, {seconds} s, send(10) -> receive(10) -> delete(10)");
    println!("  messages through the whole cycle {:>10.0}", n);
    println!(
        "  throughput                       {:>10.0} messages/s",
        n / elapsed
    );
    println!(
        "  requests                         {:>10.0} /s",
        requests.load(Ordering::Relaxed) as f64 / elapsed
    );
    println!(
        "  server CPU per message           {:>10.1} us",
        cpu * 1e6 / n.max(1.0)
    );
    println!(
        "  server peak RSS                  {:>10.1} MB",
        rss_kb as f64 / 1024.0
    );
    Ok(())
}

fn cpu_seconds(pid: u32) -> Result<f64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / 100.0)
}

fn status_kb(pid: u32, key: &str) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .ok_or("no status line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("bad status")?
        .parse()?)
}
