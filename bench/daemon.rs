//! End-to-end benchmark of the daemon against a real SQS-compatible endpoint
//! (`SQSD_TEST_SQS_ENDPOINT`, started by `bench/run.sh`).
//!
//! 1. Idle: the daemon on an empty queue; its resident memory after a few
//!    seconds.
//! 2. Load: a queue preloaded with N messages, drained by the daemon into a
//!    sink application that answers 200 at once. Prints messages per second,
//!    daemon CPU time per message, peak RSS, SQS requests per message (from
//!    the daemon's own metrics) and POST latency percentiles (from its
//!    histogram).
//!
//! Settings: SQSD_BENCH_MESSAGES (default 5000), SQSD_BENCH_CONNECTIONS (50),
//! SQSD_BENCH_SQS_LATENCY_MS (0): when set, the daemon reaches SQS through an
//! in-process TCP proxy that holds every request for that long before
//! passing it on, as a real SQS region far from a test endpoint would. The
//! preload goes straight to the endpoint.

use std::convert::Infallible;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoint = std::env::var("SQSD_TEST_SQS_ENDPOINT")
        .map_err(|_| "SQSD_TEST_SQS_ENDPOINT is not set; run bench/run.sh")?;
    let messages = env_usize("SQSD_BENCH_MESSAGES", 5000);
    let connections = env_usize("SQSD_BENCH_CONNECTIONS", 50);
    let latency = Duration::from_millis(env_usize("SQSD_BENCH_SQS_LATENCY_MS", 0) as u64);
    let daemon_endpoint = if latency.is_zero() {
        endpoint.clone()
    } else {
        delay_proxy(&endpoint, latency).await?
    };
    let client = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .endpoint_url(&endpoint)
            .build(),
    );
    let name = format!("bench-{:08x}", fastrand::u32(..));
    let queue = client
        .create_queue()
        .queue_name(&name)
        .send()
        .await?
        .queue_url
        .ok_or("no url")?;
    let (sink_url, delivered) = start_sink().await?;

    // 1. Idle, on a queue of its own.
    let idle_queue = client
        .create_queue()
        .queue_name(format!("{name}-idle"))
        .send()
        .await?
        .queue_url
        .ok_or("no url")?;
    let mut idle = Daemon::start(&daemon_endpoint, &idle_queue, &sink_url, connections)?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_rss = idle.status_kb("VmRSS:")?;
    idle.stop();

    // 2. Load.
    let load_started = Instant::now();
    preload(&client, &queue, messages).await?;
    let load_time = load_started.elapsed();
    let mut daemon = Daemon::start(&daemon_endpoint, &queue, &sink_url, connections)?;
    let admin = daemon.wait_admin().await?;
    let cpu_before = daemon.cpu_seconds()?;
    let requests_before = metric_sum(&admin, "sqsd_sqs_requests_total").await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    while metric_sum(&admin, "sqsd_messages_deleted_total").await? < messages as f64 {
        if Instant::now() > deadline {
            return Err("the daemon did not drain the queue within 15 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu = daemon.cpu_seconds()? - cpu_before;
    let requests = metric_sum(&admin, "sqsd_sqs_requests_total").await? - requests_before;
    let peak_rss = daemon.status_kb("VmHWM:")?;
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    daemon.stop();
    for q in [&queue, &idle_queue] {
        let _ = client.delete_queue().queue_url(q).send().await;
    }

    let n = messages as f64;
    println!(
        "sqsd benchmark: {messages} messages, http_connections={connections}, endpoint {endpoint}, added SQS latency {} ms",
        latency.as_millis()
    );
    println!(
        "  preload (SendMessageBatch)     {:>10.1} s",
        load_time.as_secs_f64()
    );
    println!(
        "  drained in                     {:>10.2} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput                     {:>10.0} messages/s",
        n / elapsed.as_secs_f64()
    );
    println!(
        "  daemon CPU per message         {:>10.1} us",
        cpu * 1e6 / n
    );
    println!("  SQS requests per message       {:>10.3}", requests / n);
    println!(
        "  POST latency p50 / p99         {:>10} / {} (histogram bucket bounds)",
        quantile(&metrics, 0.50),
        quantile(&metrics, 0.99)
    );
    println!(
        "  RSS idle                       {:>10.1} MB",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  RSS peak under load            {:>10.1} MB",
        peak_rss as f64 / 1024.0
    );
    println!(
        "  POSTs seen by the sink         {:>10}",
        delivered.load(Ordering::Relaxed)
    );
    Ok(())
}

/// A TCP proxy to `endpoint` that delivers every byte the daemon sends
/// `delay` after it arrived (answers come back at once); its URL.
async fn delay_proxy(endpoint: &str, delay: Duration) -> Result<String, Error> {
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (tx, mut rx) =
                    tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
                let reader = async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let due = tokio::time::Instant::now() + delay;
                                if tx.send((due, buf[..n].to_vec())).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                };
                let writer = async move {
                    use tokio::io::AsyncWriteExt;
                    while let Some((due, bytes)) = rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        if server_write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let back = tokio::io::copy(&mut server_read, &mut client_write);
                let _ = tokio::join!(reader, writer, back);
            });
        }
    });
    Ok(url)
}

/// A sink application that answers 200 at once and counts requests.
async fn start_sink() -> Result<(String, Arc<AtomicUsize>), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        counter.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, count))
}

async fn preload(client: &aws_sdk_sqs::Client, queue: &str, n: usize) -> Result<(), Error> {
    let batches: Vec<usize> = (0..n).step_by(10).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in batches.chunks(batches.len().div_ceil(8).max(1)) {
        let (client, queue, chunk) = (client.clone(), queue.to_string(), chunk.to_vec());
        tasks.spawn(async move {
            for start in chunk {
                let mut call = client.send_message_batch().queue_url(&queue);
                for i in start..(start + 10).min(n) {
                    call = call.entries(
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{i}"))
                            .message_body(format!(
                                "{{\"job\":{i},\"payload\":\"{}\"}}",
                                "x".repeat(200)
                            ))
                            .build()?,
                    );
                }
                call.send().await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

struct Daemon {
    child: Child,
    stderr_log: std::path::PathBuf,
}

impl Daemon {
    fn start(endpoint: &str, queue: &str, sink: &str, connections: usize) -> Result<Daemon, Error> {
        let stderr_log = std::env::temp_dir().join(format!("sqsd-bench-{}.log", fastrand::u32(..)));
        // SQSD_BENCH_BIN runs another build (to compare two side by side).
        let bin =
            std::env::var_os("SQSD_BENCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_sqsd").into());
        let child = Command::new(bin)
            .args([
                "--queue-url",
                queue,
                "--worker-url",
                sink,
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args([
                "--http-connections",
                &connections.to_string(),
                "--log-level",
                "warn,sqsd::daemon::run=info",
            ])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL_SQS", endpoint)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_log)?)
            .spawn()?;
        Ok(Daemon { child, stderr_log })
    }

    async fn wait_admin(&self) -> Result<String, Error> {
        for _ in 0..400 {
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            if let Some(line) = log
                .lines()
                .find(|l| l.contains("admin endpoints listening"))
            {
                let at = line.find("addr=").ok_or("no addr field")? + 5;
                return Ok(line[at..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err("the daemon did not start".into())
    }

    fn proc_file(&self, name: &str) -> Result<String, Error> {
        Ok(std::fs::read_to_string(format!(
            "/proc/{}/{name}",
            self.child.id()
        ))?)
    }

    /// User plus system CPU seconds so far.
    fn cpu_seconds(&self) -> Result<f64, Error> {
        let stat = self.proc_file("stat")?;
        let after_name = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    fn status_kb(&self, key: &str) -> Result<u64, Error> {
        let status = self.proc_file("status")?;
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .ok_or("no such status line")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .ok_or("bad status")?
            .parse()?)
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr_log);
    }
}

async fn metric_sum(admin: &str, name: &str) -> Result<f64, Error> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The upper bound of the histogram bucket holding quantile `q`.
fn quantile(metrics: &str, q: f64) -> String {
    let buckets: Vec<(String, f64)> = metrics
        .lines()
        .filter(|l| l.starts_with("sqsd_post_duration_seconds_bucket{le=\""))
        .filter_map(|l| {
            let le = l.split('"').nth(1)?.to_string();
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map(|b| b.1).unwrap_or(0.0);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| match le.parse::<f64>() {
            Ok(s) => format!("<= {:.1} ms", s * 1000.0),
            Err(_) => format!("> {le}"),
        })
        .unwrap_or_else(|| "n/a".into())
}
