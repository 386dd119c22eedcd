//! `connect`: open N connections with a ramp, hold them, report the connect
//! rate, failures by cause, and the server's memory per connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::{ServerSample, ramp};
use crate::client::{Target, check_fd_budget};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold them open once all are connected.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

pub async fn run(
    target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    check_fd_budget(args.connections)?;
    target.check_port_budget(args.connections)?;
    let before = ServerSample::take(server_pid);
    let ramp = ramp(&target, args.connections, args.concurrency, None).await;
    let connected = ramp.connections.len();
    let connects_per_second = ramp.rate();

    // Hold: keep reading so pings are answered; count connections lost.
    let readers: Vec<_> = ramp
        .connections
        .into_iter()
        .map(|(_, mut ws, _)| {
            tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
        })
        .collect();
    // Let the server settle (allocator, timers) before sampling its memory.
    tokio::time::sleep(Duration::from_secs(args.hold.clamp(1, 2))).await;
    let after = ServerSample::take(server_pid);
    tokio::time::sleep(Duration::from_secs(args.hold.saturating_sub(2))).await;
    let dropped = readers.iter().filter(|reader| reader.is_finished()).count();
    for reader in &readers {
        reader.abort();
    }

    let per_connection = match (before.rss_bytes, after.rss_bytes) {
        (Some(b), Some(a)) if connected > 0 => Some(a.saturating_sub(b) as f64 / connected as f64),
        _ => None,
    };
    Ok(json!({
        "scenario": "connect",
        "connections": args.connections,
        "connected": connected,
        "failed": ramp.failures,
        "connect_seconds": ramp.elapsed.as_secs_f64(),
        "connects_per_second": connects_per_second,
        "dropped_during_hold": dropped,
        "server_rss_before_bytes": before.rss_bytes,
        "server_rss_after_bytes": after.rss_bytes,
        "server_rss_per_connection_bytes": per_connection,
    }))
}
