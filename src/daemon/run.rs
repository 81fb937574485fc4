//! Wiring one daemon together and taking it down cleanly.
//!
//! [`run`] takes its shutdown trigger as a parameter, so callers (signal
//! handling in `main`, or tests) decide when it stops. Shutdown order:
//! stop receiving, release messages not yet started, wait for in-flight POSTs
//! up to the drain timeout (then abandon and release them), flush every
//! pending delete and visibility change, give up ECS task scale-in
//! protection, stop the admin listener.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_sqs::types::QueueAttributeName;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deliver::{DeadLetters, Dispatcher};
use super::gate::{self, Gate};
use super::message::Template;
use super::pace::Pacer;
use super::policy::Retry;
use super::poller::{poller_count, Poller, Visibility};
use super::room::Room;
use super::settle::{Settler, SettlerTask, Terms};
use crate::admin::health::Health;
use crate::admin::metrics::Metrics;
use crate::admin::{self, Admin};
use crate::app::probe::Probe;
use crate::app::{AppClient, Signer};
use crate::aws::dead_letter::{DeadLetterError, DeadLetterQueue};
use crate::aws::sqs_json::SqsJson;
use crate::aws::{self, queue, Queue, QueueError};
use crate::config::{self, Config};
use crate::cron::claims::{Claims, Layout};
use crate::cron::{CronSource, Scheduler, TaskQueue};
use crate::signals::Reload;
use crate::time::SystemClock;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on admin address {addr}: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("a receive loop stopped unexpectedly")]
    LoopDied,
    #[error("{0} message(s) left unsettled at shutdown (each is logged with its id); SQS will deliver them again")]
    Unsettled(usize),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot probe the application: {0}")]
    Probe(String),
    #[error("cannot set up local mode: {0}")]
    Local(String),
    #[error("cannot use the SQS endpoint: {0}")]
    Endpoint(String),
    #[error(transparent)]
    CronFile(#[from] crate::cron::CronFileError),
    #[error(transparent)]
    CronTable(#[from] crate::cron::claims::TableError),
}

impl RunError {
    /// Process exit code: 64 (EX_USAGE) for a queue that cannot be used, as
    /// for other configuration mistakes; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Queue(_)
            | RunError::DeadLetter(_)
            | RunError::Endpoint(_)
            | RunError::CronFile(_)
            | RunError::CronTable(_)
            | RunError::Probe(_) => 64,
            RunError::Unsettled(_) => EXIT_UNSETTLED,
            _ => 1,
        }
    }
}

/// Exit code when shutdown could not settle everything (EX_TEMPFAIL).
pub const EXIT_UNSETTLED: u8 = 75;

/// Batch calls to SQS under way at once.
const MAX_SETTLE_CALLS: usize = 16;

/// The least time the final flush gets after POSTs were abandoned at the
/// drain deadline, so their releases still reach SQS.
const FLUSH_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How received messages are kept invisible, from the configuration and the
/// queue's own VisibilityTimeout.
fn visibility(
    config: &Config,
    attributes: &HashMap<QueueAttributeName, String>,
) -> Result<Visibility, RunError> {
    let queue_own = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u32>().ok());
    plan_visibility(
        config.visibility_timeout,
        config.visibility_lease,
        queue_own,
    )
    .ok_or_else(|| {
        RunError::Queue(QueueError::Unusable {
            url: config.queue_url.clone(),
            reason: "visibility_timeout is 0 (the queue's own VisibilityTimeout), and the \
                         queue's VisibilityTimeout is 0: every message would be handed out again \
                         at once; set visibility_timeout or the queue's VisibilityTimeout"
                .into(),
        })
    })
}

/// The visibility each receive asks for, and the lease the settler keeps
/// renewing while a message is held. `timeout` 0 means the queue's own
/// VisibilityTimeout (`queue_own`); the receive then leaves the parameter out
/// unless a shorter lease is asked for. `lease` 0 turns leases off (EB's
/// behaviour): messages are received for the whole visibility timeout, and
/// renewed only while a POST or its FIFO group outlives it. `None` when the
/// visibility would be 0, which hands every message out again at once.
fn plan_visibility(timeout: u32, lease: u32, queue_own: Option<u32>) -> Option<Visibility> {
    let effective = match timeout {
        0 => queue_own.unwrap_or(0),
        v => v,
    };
    if effective == 0 {
        return None;
    }
    let lease_s = match lease {
        0 => effective,
        l => effective.min(l),
    };
    let receive_s = (timeout != 0 || lease_s != effective).then_some(lease_s);
    Some(Visibility {
        receive_s,
        lease_s,
        timeout_s: effective,
    })
}

/// How long startup waits for DynamoDB to answer about the cron table.
const TABLE_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the daemon until `shutdown` is cancelled, then drains and returns.
/// Each change of `reload` re-reads `cron.yaml` and the signing keys.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Reload,
) -> Result<(), RunError> {
    let cron_source = CronSource::load(config.cron_file.clone())?;
    let probe = Probe::new(&config).map_err(RunError::Probe)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());

    let listener = admin::bind(config.admin_addr)
        .await
        .map_err(|source| RunError::AdminBind {
            addr: config.admin_addr,
            source,
        })?;
    let admin_addr = listener.local_addr().unwrap_or(config.admin_addr);
    tracing::info!(addr = %admin_addr, "admin endpoints listening (/healthz, /readyz, /metrics)");
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        Admin {
            health: health.clone(),
            metrics: metrics.clone(),
        },
        admin_stop.clone(),
    ));

    let setup = aws::aws_setup(&config).await;
    let sdk = setup.sqs(&config);
    let (attributes, endpoint) = tokio::select! {
        checked = queue::check_queue(&sdk, &config.queue_url, &metrics) => checked?,
        _ = shutdown.cancelled() => {
            admin_stop.cancel();
            return Ok(());
        }
    };
    tracing::debug!(%endpoint, "SQS endpoint");
    let visibility = visibility(&config, &attributes)?;
    let api = SqsJson::new(
        &endpoint,
        setup.region(),
        setup.sqs_credentials(&config),
        // Every poller's long poll, every batch call in flight, some spare.
        poller_count(config.http_connections) + MAX_SETTLE_CALLS + 4,
    )
    .map_err(RunError::Endpoint)?;
    let queue = Queue {
        api: Arc::new(api),
        url: config.queue_url.clone(),
        metrics: metrics.clone(),
    };
    let dead_letters = if config.dead_letter_codes.is_empty() {
        None
    } else {
        let found = DeadLetterQueue::find(
            sdk.clone(),
            &config.queue_url,
            &attributes,
            config.queue_name(),
            metrics.clone(),
        );
        let dlq = tokio::select! {
            found = found => found?,
            _ = shutdown.cancelled() => {
                admin_stop.cancel();
                return Ok(());
            }
        };
        tracing::info!(dead_letter_queue = %dlq.url, codes = ?config.dead_letter_codes,
            "answers in dead_letter_codes send messages to the dead-letter queue");
        Some(DeadLetters {
            codes: config.dead_letter_codes.clone(),
            queue: Arc::new(dlq),
        })
    };

    queue::warn_about_redrive(&attributes, config.max_retries, &config.queue_url);

    // Still to be done by the scheduler: `Some(create)`.
    let mut table_check = None;
    // The queue as periodic tasks know it: by its ARN, whichever URL names it.
    let task_queue = TaskQueue::from_attributes(&config.queue_url, &attributes);
    let claims = match &config.cron_table {
        None => None,
        Some(table) => {
            let claims = Claims::new(
                setup.dynamodb(),
                table.clone(),
                &task_queue.scope,
                instance_id(),
                match config.cron_table_mode {
                    crate::config::CronTableMode::Standard => Layout::Standard,
                    crate::config::CronTableMode::Eb => Layout::Eb,
                },
            );
            // A missing or unusable table stops startup. DynamoDB that does
            // not answer yet must not hold up message delivery: the
            // scheduler keeps checking and starts the tasks once it answers.
            let checked = tokio::select! {
                checked = tokio::time::timeout(TABLE_CHECK_WAIT, claims.prepare(config.cron_create_table)) => checked,
                _ = shutdown.cancelled() => {
                    admin_stop.cancel();
                    return Ok(());
                }
            };
            match checked {
                Ok(prepared) => prepared?,
                Err(_) => {
                    tracing::warn!(table = %table, waited = ?TABLE_CHECK_WAIT,
                        "DynamoDB does not answer yet; delivering messages meanwhile, periodic tasks start once the cron table answers");
                    table_check = Some(config.cron_create_table);
                }
            }
            Some(claims)
        }
    };
    let scheduler_stop = CancellationToken::new();
    let backlog_stop = CancellationToken::new();
    let backlog_task = (!config.queue_metrics_interval.is_zero()).then(|| {
        tokio::spawn(super::backlog::watch(
            sdk.clone(),
            config.queue_url.clone(),
            config.queue_metrics_interval,
            metrics.clone(),
            Arc::new(SystemClock),
            backlog_stop.clone(),
        ))
    });
    let scheduler = Arc::new(Scheduler::new(
        sdk,
        task_queue,
        claims,
        metrics.clone(),
        scheduler_stop.clone(),
    ));
    let signer = Arc::new(Signer::new(config.signing_keys.clone()));
    let keys_task = tokio::spawn(reload_keys_on_signal(
        signer.clone(),
        config.clone(),
        reload.clone(),
        scheduler_stop.clone(),
    ));
    let scheduler_task = tokio::spawn(scheduler.run(cron_source, reload, table_check));

    // Nothing is received until the application is reached.
    let gate = Arc::new(Gate::new(health.clone(), metrics.clone()));
    let watcher_stop = CancellationToken::new();
    let watcher = tokio::spawn(gate::watch(
        gate.clone(),
        Arc::new(probe),
        config
            .health_url
            .is_some()
            .then_some(config.health_interval),
        watcher_stop.clone(),
    ));

    let (settler, settler_task) = Settler::spawn(
        Arc::new(queue.clone()),
        Terms {
            lease_s: visibility.lease_s,
            linger: config.batch_linger,
            max_calls: MAX_SETTLE_CALLS,
        },
        metrics.clone(),
    );
    let protection_stop = CancellationToken::new();
    let protection_task = super::protection::start(
        config.ecs_task_protection,
        config.ecs_task_protection_minutes,
        &|name| std::env::var(name).ok(),
        settler.clone(),
        metrics.clone(),
        protection_stop.clone(),
    );
    let dispatcher = Arc::new(Dispatcher {
        http: Arc::new(AppClient::new(&config)?),
        template: Template::new(
            &config.worker_url,
            &config.http_path,
            &config.mime_type,
            config.queue_name(),
        )
        .signed_by(signer)
        .with_token(config.app_token.as_deref())
        .unwrapping_sns(config.sns_unwrap),
        success_codes: config.success_codes,
        retry: Retry {
            error_visibility_s: config.error_visibility_timeout,
            backoff: config.retry_backoff,
            max_error_visibility_s: config.max_error_visibility,
        },
        retention: config.retention_period,
        settler,
        metrics: metrics.clone(),
        clock: Arc::new(SystemClock),
        connections: Arc::new(Semaphore::new(config.http_connections)),
        gate: gate.clone(),
        hold_limit: std::time::Duration::from_secs(u64::from(visibility.timeout_s)),
        dead_letters,
    });
    let pacer = (config.max_rate > 0.0).then(|| {
        Arc::new(Pacer::new(
            config.max_rate,
            Pacer::burst_for(config.max_rate, config.http_connections),
            tokio::time::Instant::now(),
        ))
    });

    let room = Room::new(config.http_connections);
    let deliveries = TaskTracker::new();
    let abort = CancellationToken::new();
    let mut pollers = JoinSet::new();
    let count = poller_count(config.http_connections);
    for _ in 0..count {
        pollers.spawn(
            Poller {
                queue: queue.clone(),
                dispatcher: dispatcher.clone(),
                room: room.clone(),
                visibility,
                health: health.clone(),
                gate: gate.clone(),
                pacer: pacer.clone(),
                deliveries: deliveries.clone(),
                stop: shutdown.clone(),
                abort: abort.clone(),
                cut_receive: if config.finish_polls_on_shutdown {
                    abort.clone()
                } else {
                    shutdown.clone()
                },
            }
            .run(),
        );
    }
    drop(dispatcher);
    tracing::info!(
        queue = %config.queue_url,
        worker = %format!("{}{}", config.worker_url, config.http_path),
        http_connections = config.http_connections,
        pollers = count,
        lease_s = visibility.lease_s,
        max_rate = config.max_rate,
        "sqsd started"
    );

    let mut result = Ok(());
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        _ = pollers.join_next() => {
            // Pollers end by themselves on shutdown; only an end without one
            // is a failure.
            if !shutdown.is_cancelled() {
                health.died();
                tracing::error!("a receive loop stopped unexpectedly; shutting down");
                result = Err(RunError::LoopDied);
            }
        }
    }

    // Stop receiving: pollers start no new receive; those in flight finish
    // and give back what they bring. Then wait for in-flight POSTs. Both
    // share the drain deadline; past it, everything left is abandoned.
    health.shutting_down();
    scheduler_stop.cancel();
    if result.is_err() {
        pollers.abort_all();
    }
    let stopping = Stopping {
        pollers,
        deliveries,
        abort,
        settler: settler_task,
    };
    let (unsettled, _, _) = tokio::join!(
        stopping.drain(config.drain_timeout),
        scheduler_task,
        keys_task
    );
    // Drained: scale-in may take this task now.
    protection_stop.cancel();
    if let Some(task) = protection_task {
        let _ = task.await;
    }
    watcher_stop.cancel();
    let _ = watcher.await;
    backlog_stop.cancel();
    if let Some(task) = backlog_task {
        let _ = task.await;
    }
    if unsettled > 0 && result.is_ok() {
        result = Err(RunError::Unsettled(unsettled));
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("sqsd stopped");
    result
}

/// What is still running once the daemon stops receiving.
struct Stopping {
    pollers: JoinSet<()>,
    deliveries: TaskTracker,
    abort: CancellationToken,
    settler: SettlerTask,
}

impl Stopping {
    /// The shutdown sequence. Receives under way finish and give back what
    /// they bring; POSTs under way may finish until `drain_timeout`. Past
    /// it, the rest are abandoned and their messages released. Then the
    /// settler sends everything left, retrying until the drain deadline
    /// (with a short grace for the releases of abandoned POSTs). Returns
    /// how many messages SQS never accepted a settlement for.
    async fn drain(mut self, drain_timeout: std::time::Duration) -> usize {
        self.deliveries.close();
        tracing::info!(
            in_flight = self.deliveries.len(),
            drain_timeout = ?drain_timeout,
            "stopping: no new receives; draining what is in flight"
        );
        let drain_deadline = tokio::time::Instant::now() + drain_timeout;
        let pollers = &mut self.pollers;
        let deliveries = &self.deliveries;
        let drain = async {
            while pollers.join_next().await.is_some() {}
            deliveries.wait().await;
        };
        if tokio::time::timeout_at(drain_deadline, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = self.deliveries.len(),
                "drain timeout passed; abandoning the remaining POSTs and releasing their messages"
            );
            self.abort.cancel();
            while self.pollers.join_next().await.is_some() {}
            self.deliveries.wait().await;
        }
        let flush_deadline = drain_deadline.max(tokio::time::Instant::now() + FLUSH_GRACE);
        self.settler.finish(flush_deadline).await
    }
}

/// Reads the signing keys again on every change of `reload` (SIGHUP) until
/// `stop`. A reload that fails keeps the keys in use; its error names the
/// setting and the problem, never a key.
async fn reload_keys_on_signal(
    signer: Arc<Signer>,
    config: Config,
    mut reload: Reload,
    stop: CancellationToken,
) {
    let configured = config.signing_key_file.is_some() || !config.signing_keys.is_empty();
    loop {
        tokio::select! {
            changed = reload.changed() => if changed.is_err() { return },
            _ = stop.cancelled() => return,
        }
        if !configured {
            continue;
        }
        match config::reload_signing_keys(&config, &|name| std::env::var(name).ok()) {
            Ok(keys) => {
                let count = keys.len();
                signer.replace(keys);
                tracing::info!(keys = count, "signing keys reloaded");
            }
            Err(e) => {
                // One line per log record, whatever a path holds.
                let problems: Vec<String> = e
                    .problems
                    .iter()
                    .map(|p| format!("{} (from {}): {}", p.setting, p.source, p.message))
                    .collect();
                let error = problems.join("; ").replace(char::is_control, " ");
                tracing::error!(
                    error = %error,
                    keys = signer.key_count(),
                    "signing keys not reloaded; still signing with the keys in use"
                )
            }
        }
    }
}

/// This daemon's name in the cron table: host, process and a random part,
/// so that a restarted process never mistakes an old claim for its own.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}/{}/{:08x}", std::process::id(), fastrand::u32(..))
}

#[cfg(test)]
mod tests;
