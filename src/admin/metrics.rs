//! Prometheus metrics of one daemon, registered in a registry of its own so
//! that several daemons (in tests) never share counters.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the daemon moves.
pub struct Metrics {
    registry: Registry,
    pub received: IntCounter,
    pub delivered: IntCounterVec,
    pub deleted: IntCounter,
    pub expired: IntCounter,
    pub in_flight: IntGauge,
    pub post_duration: Histogram,
    pub sqs_requests: IntCounterVec,
    pub settle_failures: IntCounterVec,
    pub attributes_dropped: IntCounterVec,
    pub visibility_extended: IntCounter,
    pub lease_renewals: IntCounter,
    pub lease_renewal_failures: IntCounter,
    pub held: IntGauge,
    /// 1 while the application is available, 0 while receiving is paused
    /// for it.
    pub app_available: IntGauge,
    /// The queue's backlog by state, read every `queue_metrics_interval`.
    pub queue_messages: IntGaugeVec,
    /// When the backlog was last read, in seconds since the epoch.
    pub queue_metrics_timestamp: IntGauge,
    pub released: IntCounter,
    pub dead_lettered: IntCounterVec,
    pub dead_letter_failures: IntCounter,
    pub tasks_enqueued: IntCounterVec,
    pub ticks_claimed: IntCounterVec,
    pub ticks_lost: IntCounterVec,
    pub ticks_skipped: IntCounterVec,
    pub ticks_unknown: IntCounterVec,
    pub enqueue_failures: IntCounterVec,
    pub task_next_run: IntGaugeVec,
    /// 1 while the ECS agent has accepted scale-in protection for this task.
    pub ecs_protected: IntGauge,
    /// Protection requests the ECS agent did not take.
    pub ecs_protection_failures: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let in_flight =
            IntGauge::new("sqsd_messages_in_flight", "POSTs in flight now").expect("valid metric");
        r.register(Box::new(in_flight.clone()))
            .expect("unique metric");
        let held = IntGauge::new(
            "sqsd_messages_held",
            "Messages received and not yet settled with SQS (being delivered, waiting, or settling)",
        )
        .expect("valid metric");
        r.register(Box::new(held.clone())).expect("unique metric");
        let app_available = IntGauge::new(
            "sqsd_app_available",
            "1 while the application is available; 0 while it is unreachable or failing its health checks (receiving paused)",
        )
        .expect("valid metric");
        r.register(Box::new(app_available.clone()))
            .expect("unique metric");
        let queue_messages = IntGaugeVec::new(
            Opts::new(
                "sqsd_queue_messages",
                "Messages in the worker queue by state (visible, in_flight, delayed), as SQS counts them; read every queue_metrics_interval",
            ),
            &["state"],
        )
        .expect("valid metric");
        r.register(Box::new(queue_messages.clone()))
            .expect("unique metric");
        let queue_metrics_timestamp = IntGauge::new(
            "sqsd_queue_metrics_timestamp_seconds",
            "When sqsd_queue_messages was last read (Unix seconds)",
        )
        .expect("valid metric");
        r.register(Box::new(queue_metrics_timestamp.clone()))
            .expect("unique metric");
        let post_duration = Histogram::with_opts(
            HistogramOpts::new(
                "sqsd_post_duration_seconds",
                "Duration of POSTs to the application",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(post_duration.clone()))
            .expect("unique metric");
        let build = IntGaugeVec::new(
            Opts::new("sqsd_build_info", "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build.clone())).expect("unique metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        Metrics {
            received: counter(
                &r,
                "sqsd_messages_received_total",
                "Messages received from SQS",
            ),
            delivered: counter_vec(
                &r,
                "sqsd_messages_delivered_total",
                "POSTs finished, by outcome",
                &["outcome"],
            ),
            deleted: counter(
                &r,
                "sqsd_messages_deleted_total",
                "Messages deleted from the queue",
            ),
            expired: counter(
                &r,
                "sqsd_messages_expired_total",
                "Messages deleted unsent because they outlived the retention period",
            ),
            in_flight,
            post_duration,
            sqs_requests: counter_vec(
                &r,
                "sqsd_sqs_requests_total",
                "SQS API requests, by action and result",
                &["action", "result"],
            ),
            settle_failures: counter_vec(
                &r,
                "sqsd_settle_failures_total",
                "Deletes or visibility changes that failed for good",
                &["action"],
            ),
            attributes_dropped: counter_vec(
                &r,
                "sqsd_attributes_dropped_total",
                "Message attributes not sent because they are not valid headers",
                &["reason"],
            ),
            visibility_extended: counter(
                &r,
                "sqsd_visibility_extensions_total",
                "Visibility extensions of held messages (the same count as sqsd_lease_renewals_total)",
            ),
            lease_renewals: counter(
                &r,
                "sqsd_lease_renewals_total",
                "Lease renewals of held messages that SQS accepted",
            ),
            lease_renewal_failures: counter(
                &r,
                "sqsd_lease_renewal_failures_total",
                "Lease renewals SQS refused (or that failed until the lease ran out)",
            ),
            held,
            app_available,
            queue_messages,
            queue_metrics_timestamp,
            released: counter(
                &r,
                "sqsd_messages_released_total",
                "Messages given back to the queue undelivered (visible at once): at shutdown, or while the application is unavailable",
            ),
            dead_lettered: counter_vec(
                &r,
                "sqsd_messages_dead_lettered_total",
                "Messages copied to the dead-letter queue and deleted, by the application's status",
                &["status"],
            ),
            dead_letter_failures: counter(
                &r,
                "sqsd_dead_letter_failures_total",
                "Dead-letter copies SQS did not take; each message was left to the ordinary retry path",
            ),
            tasks_enqueued: counter_vec(
                &r,
                "sqsd_periodic_tasks_enqueued_total",
                "Periodic-task messages enqueued, by task",
                &["task"],
            ),
            ticks_claimed: counter_vec(
                &r,
                "sqsd_periodic_ticks_claimed_total",
                "Ticks this daemon won in the coordination table, by task",
                &["task"],
            ),
            ticks_lost: counter_vec(
                &r,
                "sqsd_periodic_ticks_lost_total",
                "Ticks another daemon claimed first, by task",
                &["task"],
            ),
            ticks_skipped: counter_vec(
                &r,
                "sqsd_periodic_ticks_skipped_total",
                "Ticks not enqueued: too old to catch up, or given up after retries, by task",
                &["task"],
            ),
            ticks_unknown: counter_vec(
                &r,
                "sqsd_periodic_ticks_unknown_total",
                "Ticks whose send got no answer and was not repeated: perhaps not enqueued, by task",
                &["task"],
            ),
            enqueue_failures: counter_vec(
                &r,
                "sqsd_periodic_enqueue_failures_total",
                "Failed attempts to enqueue a task message (each is retried), by task",
                &["task"],
            ),
            task_next_run: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "sqsd_periodic_task_next_run_timestamp_seconds",
                        "Unix time of each task's next tick",
                    ),
                    &["task"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            ecs_protected: {
                let g = IntGauge::new(
                    "sqsd_ecs_task_protected",
                    "1 while the ECS agent has accepted scale-in protection for this task (ecs_task_protection)",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            ecs_protection_failures: counter(
                &r,
                "sqsd_ecs_protection_failures_total",
                "ECS task scale-in protection requests the agent did not take (each is tried again)",
            ),
            registry: r,
        }
    }

    /// Counts one SQS API request.
    pub fn sqs_request(&self, action: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.sqs_requests.with_label_values(&[action, result]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_metrics() {
        let m = Metrics::new();
        m.received.inc();
        m.delivered.with_label_values(&["success"]).inc();
        m.sqs_request("ReceiveMessage", true);
        m.post_duration.observe(0.01);
        let text = m.render();
        for name in [
            "sqsd_messages_received_total 1",
            "sqsd_messages_delivered_total{outcome=\"success\"} 1",
            "sqsd_messages_deleted_total 0",
            "sqsd_messages_expired_total 0",
            "sqsd_messages_in_flight 0",
            "sqsd_post_duration_seconds_count 1",
            "sqsd_sqs_requests_total{action=\"ReceiveMessage\",result=\"ok\"} 1",
            "sqsd_build_info{version=",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
