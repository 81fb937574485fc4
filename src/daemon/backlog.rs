//! The queue's backlog as gauges for autoscaling: every
//! `queue_metrics_interval`, one GetQueueAttributes call sets
//! `sqsd_queue_messages{state}` and `sqsd_queue_metrics_timestamp_seconds`.
//! A failed read keeps the last figures (their timestamp shows their age)
//! and is logged once per run of failures.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::Client;
use tokio_util::sync::CancellationToken;

use crate::admin::metrics::Metrics;
use crate::aws::queue::{self, Backlog};
use crate::time::Clock;

/// Longest one read may take: a read still hanging by then is dropped.
fn read_timeout(every: Duration) -> Duration {
    every.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Sets the gauges from `backlog`, read at `now_ms`.
pub fn publish(metrics: &Metrics, backlog: Backlog, now_ms: i64) {
    for (state, n) in [
        ("visible", backlog.visible),
        ("in_flight", backlog.in_flight),
        ("delayed", backlog.delayed),
    ] {
        metrics
            .queue_messages
            .with_label_values(&[state])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    metrics.queue_metrics_timestamp.set(now_ms / 1000);
}

/// Reads the backlog every `every` until `stop` fires.
pub async fn watch(
    sdk: Client,
    url: String,
    every: Duration,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = queue::backlog(&sdk, &url, &metrics, read_timeout(every)) => r,
        };
        match read {
            Ok(backlog) => {
                if failing {
                    tracing::info!("queue backlog readable again");
                }
                failing = false;
                publish(&metrics, backlog, clock.now_ms());
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the queue's backlog; sqsd_queue_messages keeps its last figures");
                }
                failing = true;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_take_the_counts_and_the_time_in_seconds() {
        let m = Metrics::new();
        publish(
            &m,
            Backlog {
                visible: 7,
                in_flight: 3,
                delayed: 1,
            },
            1_795_000_000_999,
        );
        let get = |s: &str| m.queue_messages.with_label_values(&[s]).get();
        assert_eq!(
            (get("visible"), get("in_flight"), get("delayed")),
            (7, 3, 1)
        );
        assert_eq!(m.queue_metrics_timestamp.get(), 1_795_000_000);
        publish(
            &m,
            Backlog {
                visible: u64::MAX,
                ..Backlog::default()
            },
            0,
        );
        assert_eq!(get("visible"), i64::MAX);
        assert_eq!(get("in_flight"), 0);
    }

    #[test]
    fn a_read_never_hangs_longer_than_ten_seconds() {
        assert_eq!(
            read_timeout(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(read_timeout(Duration::from_secs(2)), Duration::from_secs(2));
        assert_eq!(
            read_timeout(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
    }
}
