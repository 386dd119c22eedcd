//! `churn`: workers connect, join, publish, leave and disconnect in a loop
//! for T seconds; afterwards the server's connection and room counts must
//! return to zero and its memory near the baseline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{ServerSample, progress};
use crate::client::{Target, check_fd_budget, http_get, join, metric, request};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent workers (each holds at most one connection).
    #[arg(long, default_value_t = 100)]
    pub workers: usize,
    /// Seconds to churn.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Rooms the workers spread over.
    #[arg(long, default_value_t = 20)]
    pub rooms: usize,
    /// The server's admin listener, whose `/metrics` says whether
    /// connections and rooms returned to zero.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin: std::net::SocketAddr,
}

async fn cycle(target: &Target, room: &str, seq: u64) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    let (mut ws, _) = target.connect().await?;
    join(&mut ws, room).await?;
    request(
        &mut ws,
        json!({"type":"publish","room":room,"content":{"seq":seq}}),
        "p",
    )
    .await?;
    request(&mut ws, json!({"type":"leave","room":room}), "l").await?;
    ws.send(Message::Close(None)).await?;
    // Finish the close handshake (bounded) so the server side is released.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    Ok(())
}

pub async fn run(
    target: Arc<Target>,
    args: &Args,
    server_pid: Option<u32>,
) -> anyhow::Result<serde_json::Value> {
    check_fd_budget(args.workers)?;
    let base = format!("http://{}", args.admin);
    let baseline = ServerSample::take(server_pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration);
    let bar = progress(args.duration, "seconds");
    let tag = std::process::id();
    let workers: Vec<_> = (0..args.workers)
        .map(|worker| {
            let target = Arc::clone(&target);
            let room = format!("churn-{tag}-{}", worker % args.rooms.max(1));
            tokio::spawn(async move {
                let mut cycles = 0u64;
                let mut failures: BTreeMap<String, u64> = BTreeMap::new();
                while Instant::now() < until {
                    match cycle(&target, &room, cycles).await {
                        Ok(()) => cycles += 1,
                        Err(err) => *failures.entry(format!("{err:#}")).or_default() += 1,
                    }
                }
                (cycles, failures)
            })
        })
        .collect();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bar.set_position(started.elapsed().as_secs().min(args.duration));
    }
    let mut cycles = 0;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let (done, failed) = worker.await?;
        cycles += done;
        for (cause, count) in failed {
            *failures.entry(cause).or_default() += count;
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();

    // The server releases connections asynchronously; give it a moment.
    let settle_deadline = Instant::now() + Duration::from_secs(10);
    let (connections, rooms) = loop {
        let metrics = http_get(&base, "/metrics").await?;
        let connections = metric(&metrics, "wshub_connections").unwrap_or(f64::NAN);
        let rooms = metric(&metrics, "wshub_rooms").unwrap_or(f64::NAN);
        if (connections == 0.0 && rooms == 0.0) || Instant::now() > settle_deadline {
            break (connections, rooms);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = ServerSample::take(server_pid);
    Ok(json!({
        "scenario": "churn",
        "workers": args.workers,
        "seconds": elapsed,
        "cycles": cycles,
        "cycles_per_second": cycles as f64 / elapsed.max(1e-9),
        "failed": failures,
        "server_connections_after": connections,
        "server_rooms_after": rooms,
        "server_rss_baseline_bytes": baseline.rss_bytes,
        "server_rss_after_bytes": after.rss_bytes,
        "returned_to_zero": connections == 0.0 && rooms == 0.0,
    }))
}
