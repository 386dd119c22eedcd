//! `/metrics`: the hub's plain counters rendered for Prometheus.
//!
//! The recorder is owned by the server rather than installed globally, so
//! several servers (as in tests) can live in one process. Figures are read
//! from [`Hub::stats`] at scrape time, so the hot path records nothing.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use wshub_hub::Hub;

/// Why an upgrade was refused, as the `reason` label of
/// `wshub_rejected_upgrades_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Origin not allowed (403).
    Origin,
    /// No or bad token (401).
    Unauthorized,
    /// `limits.max_connections` reached (503).
    ServerFull,
    /// `limits.connections_per_ip` reached (429).
    PerIpConnections,
    /// `limits.new_connections_per_ip_per_second` exceeded (429).
    PerIpRate,
    /// The server is draining before shutdown (503).
    Draining,
    /// A `Host` that is not in `allowed_hosts` (403).
    Host,
    /// The application's connect hook refused, or could not decide (403, 503).
    Refused,
}

impl Rejection {
    const ALL: [Self; 8] = [
        Self::Origin,
        Self::Unauthorized,
        Self::ServerFull,
        Self::PerIpConnections,
        Self::PerIpRate,
        Self::Draining,
        Self::Host,
        Self::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Origin => "origin",
            Self::Unauthorized => "unauthorized",
            Self::ServerFull => "server_full",
            Self::PerIpConnections => "per_ip_connections",
            Self::PerIpRate => "per_ip_rate",
            Self::Draining => "draining",
            Self::Host => "host",
            Self::Refused => "connect_hook",
        }
    }
}

/// Renders the hub's figures in the Prometheus text format.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
    process: metrics_process::Collector,
    rejections: [AtomicU64; Rejection::ALL.len()],
    summary: parking_lot::Mutex<RefusalSummary>,
}

/// Refusals are expected outcomes (a full server, a flood): each is counted
/// and logged at debug, and a warning sums them up at most once per
/// [`SUMMARY_EVERY`], so a full server does not flood its log.
#[derive(Debug, Default)]
struct RefusalSummary {
    since_last: u64,
    last: Option<std::time::Instant>,
}

const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Every metric and its HELP text: a metric without one here is a bug
/// (`tests` check that every TYPE line has a HELP line).
const DESCRIPTIONS: &[(&str, &str)] = &[
    (
        "wshub_build_info",
        "Always 1; the version label says which build runs",
    ),
    ("wshub_connections", "WebSocket connections registered now"),
    ("wshub_rooms", "Rooms held now (with members, or lingering)"),
    (
        "wshub_draining",
        "1 while the server drains before shutdown",
    ),
    (
        "wshub_outbox_queued_bytes",
        "Bytes waiting in every connection's outbox together",
    ),
    (
        "wshub_outbox_queued_bytes_max",
        "Bytes waiting in the fullest outbox",
    ),
    (
        "wshub_connections_total",
        "Connections registered since start",
    ),
    (
        "wshub_messages_published_total",
        "Messages published to rooms or users since start",
    ),
    (
        "wshub_broadcasts_total",
        "Broadcasts to every connection since start",
    ),
    (
        "wshub_deliveries_total",
        "Frames delivered to recipients by fan-out since start",
    ),
    (
        "wshub_deliveries_written_directly_total",
        "Of the deliveries, those the fan-out wrote straight to an idle connection's socket (no queue, no wake-up)",
    ),
    (
        "wshub_slow_consumer_disconnects_total",
        "Connections cut off because their queue overflowed",
    ),
    (
        "wshub_dropped_frames_total",
        "Queued frames dropped under the drop_oldest policy",
    ),
    (
        "wshub_room_resyncs_total",
        "Members taken out of a room because this node missed some of its messages (told to re-join with since)",
    ),
    (
        "wshub_connections_closed_total",
        "Connections ended, by cause",
    ),
    (
        "wshub_rejected_upgrades_total",
        "Connections or upgrades refused, by reason",
    ),
    (
        "wshub_api_requests_total",
        "Server API requests, by endpoint and HTTP status",
    ),
    (
        "wshub_api_request_duration_seconds",
        "Server API request handling time",
    ),
    (
        "wshub_sockets_without_direct_writes_total",
        "WebSockets accepted on a stream the fan-out cannot write to directly (TLS): their deliveries go through the queue",
    ),
    (
        "wshub_messages_compressed_total",
        "Messages compressed for permessage-deflate connections: a publication counts once, however many recipients share its compressed form",
    ),
    (
        "wshub_proxy_requests_total",
        "Requests to the application's backend by hook (connect, subscribe, publish, refresh, rpc) and result (allow, refuse, disconnect, or why no decision came: backend_unreachable, backend_timeout, bad_answer)",
    ),
    (
        "wshub_proxy_request_duration_seconds",
        "Time the application's backend took to decide, by hook",
    ),
    (
        "wshub_broker_up",
        "1 while the broker's link to Redis is up, by link (publish, subscribe)",
    ),
    (
        "wshub_room_store_up",
        "1 while the room store's link to Redis is up (absent with the memory store)",
    ),
    (
        "wshub_broker_channels",
        "Redis channels this node is subscribed to",
    ),
    (
        "wshub_broker_channels_held",
        "Subscriptions Redis counted on this node's subscribing link at its last probe (differs from wshub_broker_channels only until the link is replaced)",
    ),
    (
        "wshub_broker_published_total",
        "Publications Redis accepted from this node",
    ),
    (
        "wshub_broker_publish_failures_total",
        "Publications that did not reach Redis (down, or the publish queue full): other nodes missed them",
    ),
    (
        "wshub_broker_publish_refused_total",
        "Publications refused to their publisher because the queue to Redis was full (nobody got them)",
    ),
    (
        "wshub_broker_received_total",
        "Messages received from Redis and handed to the hub",
    ),
    (
        "wshub_broker_malformed_total",
        "Messages on this hub's Redis channels not in wshub's format",
    ),
    (
        "wshub_broker_missed_total",
        "Publications of other nodes this node never received (gaps in their sequence numbers, e.g. during a Redis outage)",
    ),
    (
        "wshub_broker_reconnects_total",
        "Redis links replaced after a failure or an unanswered probe",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        // Process figures (RSS, CPU seconds, open descriptors, threads) under
        // the conventional `process_*` names, read at scrape time.
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || {
            for (name, help) in DESCRIPTIONS {
                metrics::describe_counter!(*name, *help);
            }
            process.describe();
        });
        Self {
            recorder,
            process,
            rejections: Default::default(),
            summary: parking_lot::Mutex::default(),
        }
    }
}

impl Metrics {
    /// Counts a refused upgrade (or connection, or request).
    pub fn reject(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Ordering::Relaxed);
        let mut summary = self.summary.lock();
        summary.since_last += 1;
        if summary
            .last
            .is_none_or(|last| last.elapsed() >= SUMMARY_EVERY)
        {
            tracing::warn!(
                refused = summary.since_last,
                last_reason = why.label(),
                "refusing connections (count since the last summary; per reason in wshub_rejected_upgrades_total)"
            );
            summary.since_last = 0;
            summary.last = Some(std::time::Instant::now());
        }
    }

    /// Counts one API request by endpoint and status, and its duration.
    pub fn api_request(&self, endpoint: &'static str, status: u16, elapsed: std::time::Duration) {
        metrics::with_local_recorder(&self.recorder, || {
            counter!("wshub_api_requests_total", "endpoint" => endpoint, "status" => status.to_string())
                .increment(1);
            metrics::histogram!("wshub_api_request_duration_seconds", "endpoint" => endpoint)
                .record(elapsed.as_secs_f64());
        });
    }

    /// Counts one request to the application's backend by hook and result,
    /// and its duration.
    pub fn proxy_request(
        &self,
        hook: &'static str,
        result: &'static str,
        elapsed: std::time::Duration,
    ) {
        metrics::with_local_recorder(&self.recorder, || {
            counter!("wshub_proxy_requests_total", "hook" => hook, "result" => result).increment(1);
            metrics::histogram!("wshub_proxy_request_duration_seconds", "hook" => hook)
                .record(elapsed.as_secs_f64());
        });
    }

    /// Samples `hub` and renders every metric.
    pub fn render(
        &self,
        hub: &Hub,
        draining: bool,
        links: Option<&crate::broker::NodeLinks>,
    ) -> String {
        let stats = hub.stats();
        let depth = hub.queue_depth();
        metrics::with_local_recorder(&self.recorder, || {
            self.process.collect();
            gauge!("wshub_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            gauge!("wshub_connections").set(stats.connections as f64);
            gauge!("wshub_rooms").set(stats.rooms as f64);
            gauge!("wshub_draining").set(if draining { 1.0 } else { 0.0 });
            gauge!("wshub_outbox_queued_bytes").set(depth.total_bytes as f64);
            gauge!("wshub_outbox_queued_bytes_max").set(depth.max_bytes as f64);
            counter!("wshub_connections_total").absolute(stats.connections_total);
            counter!("wshub_sockets_without_direct_writes_total")
                .absolute(wshub_transport::sockets_without_direct_writes());
            counter!("wshub_messages_compressed_total")
                .absolute(wshub_transport::messages_compressed());
            counter!("wshub_messages_published_total").absolute(stats.published);
            counter!("wshub_broadcasts_total").absolute(stats.broadcasts);
            counter!("wshub_deliveries_total").absolute(stats.delivered);
            counter!("wshub_deliveries_written_directly_total").absolute(stats.written_directly);
            counter!("wshub_slow_consumer_disconnects_total")
                .absolute(stats.slow_consumer_disconnects);
            counter!("wshub_dropped_frames_total").absolute(stats.dropped_frames);
            counter!("wshub_room_resyncs_total").absolute(stats.resyncs);
            for (cause, count) in wshub_hub::CloseCause::ALL.iter().zip(stats.closed) {
                counter!("wshub_connections_closed_total", "reason" => cause.label())
                    .absolute(count);
            }
            for why in Rejection::ALL {
                let count = self.rejections[why as usize].load(Ordering::Relaxed);
                counter!("wshub_rejected_upgrades_total", "reason" => why.label()).absolute(count);
            }
            if let Some(up) = links.and_then(crate::broker::NodeLinks::store_up) {
                gauge!("wshub_room_store_up").set(if up { 1.0 } else { 0.0 });
            }
            if let Some(status) = links.and_then(crate::broker::NodeLinks::figures) {
                let up = |flag: bool| if flag { 1.0 } else { 0.0 };
                gauge!("wshub_broker_up", "link" => "publish").set(up(status.publisher_up));
                gauge!("wshub_broker_up", "link" => "subscribe").set(up(status.subscriber_up));
                gauge!("wshub_broker_channels").set(status.channels as f64);
                gauge!("wshub_broker_channels_held").set(status.channels_held as f64);
                counter!("wshub_broker_published_total").absolute(status.published);
                counter!("wshub_broker_publish_failures_total").absolute(status.publish_failures);
                counter!("wshub_broker_publish_refused_total").absolute(status.refused);
                counter!("wshub_broker_received_total").absolute(status.received);
                counter!("wshub_broker_malformed_total").absolute(status.malformed);
                counter!("wshub_broker_missed_total").absolute(status.missed);
                counter!("wshub_broker_reconnects_total").absolute(status.reconnects);
            }
        });
        let mut text = self.recorder.handle().render();
        render_latency(&mut text, &hub.delivery_latency());
        text
    }
}

/// `wshub_delivery_latency_seconds`, a Prometheus histogram of the
/// drivers' samples (publish to socket write, one delivery in 64).
fn render_latency(out: &mut String, latency: &wshub_hub::LatencySnapshot) {
    use std::fmt::Write as _;
    let name = "wshub_delivery_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From a publish entering the hub to its frame written to a recipient's socket (sampled, one delivery in {})",
        wshub_hub::SAMPLE_EVERY
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, count) in wshub_hub::BUCKETS_MS.iter().zip(latency.buckets) {
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {count}",
            *bound as f64 / 1000.0
        );
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", latency.count);
    let _ = writeln!(out, "{name}_sum {}", latency.sum_ms as f64 / 1000.0);
    let _ = writeln!(out, "{name}_count {}", latency.count);
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_rendered_metric_has_help() {
        let metrics = super::Metrics::default();
        metrics.api_request("publish", 200, std::time::Duration::from_millis(1));
        let text = metrics.render(&wshub_hub::Hub::default(), false, None);
        let types: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        assert!(types.len() >= 15, "{text}");
        for name in types {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}:\n{text}"
            );
        }
        assert!(text.contains("wshub_build_info{version=\""), "{text}");
        for process in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
        ] {
            assert!(
                text.contains(&format!("\n{process} ")),
                "no {process}:\n{text}"
            );
        }
    }
}
