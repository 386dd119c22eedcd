//! `/metrics`: the hub's plain counters rendered for Prometheus.
//!
//! The recorder is owned by the server rather than installed globally, so
//! several servers (as in tests) can live in one process. Figures are read
//! from [`Hub::stats`] at scrape time, so the hot path records nothing.

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use wshub_hub::Hub;

/// Renders the hub's figures in the Prometheus text format.
#[derive(Debug)]
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            recorder: PrometheusBuilder::new().build_recorder(),
        }
    }
}

impl Metrics {
    /// Samples `hub` and renders every metric.
    pub fn render(&self, hub: &Hub, draining: bool) -> String {
        let stats = hub.stats();
        metrics::with_local_recorder(&self.recorder, || {
            gauge!("wshub_connections").set(stats.connections as f64);
            gauge!("wshub_rooms").set(stats.rooms as f64);
            gauge!("wshub_draining").set(if draining { 1.0 } else { 0.0 });
            counter!("wshub_connections_total").absolute(stats.connections_total);
            counter!("wshub_messages_published_total").absolute(stats.published);
            counter!("wshub_broadcasts_total").absolute(stats.broadcasts);
            counter!("wshub_deliveries_total").absolute(stats.delivered);
            counter!("wshub_slow_consumer_disconnects_total")
                .absolute(stats.slow_consumer_disconnects);
            counter!("wshub_dropped_frames_total").absolute(stats.dropped_frames);
        });
        self.recorder.handle().render()
    }
}
