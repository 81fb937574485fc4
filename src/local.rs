//! `sqsd sqs-server` (the embedded SQS endpoint alone) and `sqsd local`
//! (the endpoint plus a worker queue, its dead-letter queue, and the daemon
//! delivering from it), for laptops and CI with nothing else installed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use serde_json::{json, Value};

use crate::config::{Config, QueueDecl};
use crate::daemon::{self, RunError};
use crate::sqs_server::api::Api;
use crate::sqs_server::store::{Settings, Store, ACCOUNT};
use crate::time::SystemClock;

/// Name of the worker queue `sqsd local` creates when none is configured.
pub const DEFAULT_QUEUE: &str = "worker-queue";

/// Base URL clients should use for a listen address (loopback for a
/// wildcard address; IPv6 in brackets).
pub fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        [127, 0, 0, 1].into()
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Binds the endpoint and starts serving; returns its base URL and the API.
pub async fn start_server(
    listen: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<(String, Arc<Api>)> {
    let listener = TcpListener::bind(listen).await?;
    let base = base_url(listener.local_addr()?);
    let api = Arc::new(Api {
        store: Store::new(&base),
        clock: Arc::new(SystemClock),
    });
    tokio::spawn(crate::sqs_server::serve(listener, api.clone(), stop));
    tracing::info!(endpoint = %base, "embedded SQS endpoint listening");
    Ok((base, api))
}

/// Creates the queues declared in the configuration, dead-letter queues
/// first, through the same actions (and checks) as an SDK's requests.
pub async fn declare_queues(api: &Api, queues: &[QueueDecl]) -> Result<(), RunError> {
    let fail = |name: &str, e: crate::sqs_server::error::ApiError| {
        RunError::Local(format!("declared queue {name}: {} ({})", e.message, e.code))
    };
    let dead_letters = queues
        .iter()
        .filter_map(|q| q.dead_letter.as_ref())
        .map(|d| &d.queue);
    for name in dead_letters {
        if !queues.iter().any(|q| &q.name == name) {
            let doc = json!({ "QueueName": name });
            api.call("CreateQueue", doc.as_object().expect("object"))
                .await
                .map_err(|e| fail(name, e))?;
        }
    }
    for q in queues {
        let attributes: serde_json::Map<String, Value> = q
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(yaml_text(v))))
            .collect();
        let doc = json!({ "QueueName": q.name, "Attributes": attributes, "tags": q.tags });
        api.call("CreateQueue", doc.as_object().expect("object"))
            .await
            .map_err(|e| fail(&q.name, e))?;
    }
    for q in queues {
        let Some(dl) = &q.dead_letter else { continue };
        let target = api.store.get(&dl.queue).map_err(|e| fail(&dl.queue, e))?;
        let queue = api.store.get(&q.name).map_err(|e| fail(&q.name, e))?;
        let policy =
            json!({ "deadLetterTargetArn": target.arn, "maxReceiveCount": dl.max_receive_count });
        let doc =
            json!({ "QueueUrl": queue.url, "Attributes": { "RedrivePolicy": policy.to_string() } });
        api.call("SetQueueAttributes", doc.as_object().expect("object"))
            .await
            .map_err(|e| fail(&q.name, e))?;
    }
    if !queues.is_empty() {
        tracing::info!(count = queues.len(), "declared queues created");
    }
    Ok(())
}

fn yaml_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Starts the endpoint on `sqs_listen` with the declared queues.
async fn start_with_queues(
    config: &Config,
    stop: CancellationToken,
) -> Result<(String, Arc<Api>), RunError> {
    let listen = config.sqs_listen;
    let (base, api) = start_server(listen, stop)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen,
            source,
        })?;
    declare_queues(&api, &config.queues).await?;
    Ok((base, api))
}

/// `sqsd sqs-server`: serves until `shutdown`.
pub async fn run_server(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let (base, _api) = start_with_queues(&config, shutdown.clone()).await?;
    eprintln!("sqsd: SQS-compatible endpoint at {base} (any credentials are accepted)");
    shutdown.cancelled().await;
    Ok(())
}

/// `sqsd local`: the endpoint, the worker queue and its dead-letter queue,
/// and the daemon against them, exactly as in production.
pub async fn run_local(
    mut config: Config,
    shutdown: CancellationToken,
    reload: crate::signals::Reload,
) -> Result<(), RunError> {
    let server_stop = CancellationToken::new();
    let (base, api) = start_with_queues(&config, server_stop.clone()).await?;
    let name = config.queue_name().to_string();
    let now = api.clock.now_ms();
    let dlq = api
        .store
        .create(
            &format!("{name}-dlq"),
            Settings::default(),
            BTreeMap::new(),
            now,
        )
        .map_err(|e| RunError::Local(e.message))?;
    let redrive = format!(
        "{{\"deadLetterTargetArn\":\"{}\",\"maxReceiveCount\":\"{}\"}}",
        dlq.arn, config.max_retries
    );
    let settings = Settings {
        visibility_timeout_s: config.visibility_timeout,
        redrive: Some((redrive, dlq.arn.clone(), config.max_retries)),
        ..Settings::default()
    };
    let queue = api
        .store
        .create(&name, settings, BTreeMap::new(), now)
        .map_err(|e| RunError::Local(e.message))?;
    config.queue_url = queue.url.clone();
    config.endpoint_url = Some(base.clone());
    config.static_credentials = true;
    config
        .region
        .get_or_insert_with(|| crate::sqs_server::store::REGION.to_string());
    // The queue lives in this process and ends with it: nothing is gained by
    // waiting for open long polls at shutdown.
    config.finish_polls_on_shutdown = false;
    eprintln!(
        "sqsd local: SQS endpoint {base}\n  worker queue    {}\n  dead letters    {} (after {} receives)\n  delivering to   {}{}\n\nSend a message:\n  AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x aws --region us-east-1 --endpoint-url {base} \\\n    sqs send-message --queue-url {} --message-body '{{\"hello\":\"world\"}}'\n",
        queue.url, dlq.url, config.max_retries, config.worker_url, config.http_path, queue.url
    );
    let result = daemon::run(config, shutdown, reload).await;
    server_stop.cancel();
    result
}

/// The queue URL `sqsd local` uses when none is configured.
pub fn default_queue_url(listen: SocketAddr) -> String {
    format!("{}/{ACCOUNT}/{DEFAULT_QUEUE}", base_url(listen))
}
